"""NWB neuron sessions: real files written by pynwb, read back by cinebrain.io.nwb."""

from __future__ import annotations

import datetime
import uuid

import numpy as np
import pynwb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import BehavioralTimeSeries
from pynwb.image import ImageSeries

from cinebrain.errors import InputError
from cinebrain.io.neurons import NeuronSession
from cinebrain.io.nwb import read_nwb_session, write_nwb_session

RATE = 30.0
N_FRAMES, H, W, N_NEURONS = 20, 8, 12, 5


def make_session(n_trials: int = 3, seed: int = 0, positions: bool = True) -> NeuronSession:
    rng = np.random.default_rng(seed)
    T = [N_FRAMES] * n_trials
    return NeuronSession(
        name="mouse1",
        videos=[rng.random((t, H, W), dtype=np.float32) for t in T],
        responses=[rng.poisson(1.5, (t, N_NEURONS)).astype(np.float32) for t in T],
        behavior=[rng.random((t, 2), dtype=np.float32) for t in T],
        pupil_center=[rng.normal(size=(t, 2)).astype(np.float32) for t in T],
        tiers=np.array(["train", "validation", "test"][:n_trials]),
        clip_ids=np.array([f"clip{i}" for i in range(n_trials)]),
        frame_rate=RATE,
        neuron_ids=np.array([f"n{j}" for j in range(N_NEURONS)]),
        behavior_names=["pupil", "running"],
        neuron_positions=(rng.random((N_NEURONS, 2)).astype(np.float32) * 10
                          if positions else None),
    )


def assert_same(read: NeuronSession, session: NeuronSession) -> None:
    assert read.n_trials == session.n_trials
    for a, b in zip(read.videos, session.videos, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(read.responses, session.responses, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(read.behavior, session.behavior, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(read.pupil_center, session.pupil_center, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read.tiers, session.tiers)
    np.testing.assert_array_equal(read.clip_ids, session.clip_ids)
    np.testing.assert_array_equal(read.neuron_ids, session.neuron_ids)
    np.testing.assert_allclose(read.neuron_positions, session.neuron_positions)
    assert read.behavior_names == session.behavior_names
    assert read.frame_rate == pytest.approx(RATE)
    assert read.name == session.name
    assert read.videos[0].dtype == read.responses[0].dtype == np.float32


def new_nwb() -> NWBFile:
    return NWBFile(session_description="test", identifier=str(uuid.uuid4()),
                   session_start_time=datetime.datetime(2024, 1, 1,
                                                        tzinfo=datetime.timezone.utc))


def write(nwb: NWBFile, path) -> None:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


@pytest.mark.parametrize("kind", ["spikes", "roi"])
def test_round_trip(tmp_path, kind):
    session = make_session()
    path = write_nwb_session(session, tmp_path / "s.nwb", kind=kind)
    assert [p.name for p in tmp_path.iterdir()] == ["s.nwb"]  # no temporary file left
    assert pynwb.validate(path=str(path)) == []  # the NWB schema's own validator
    read = read_nwb_session(path)
    assert read.source == str(path)
    assert_same(read, session)


def test_spike_times_are_inside_their_frame_bins(tmp_path):
    session = make_session(n_trials=2)
    path = write_nwb_session(session, tmp_path / "s.nwb", seed=3)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        starts = nwb.trials["start_time"][:]
        ts = nwb.stimulus["movie"].timestamps[:]
        spikes = [nwb.units.get_unit_spike_times(j) for j in range(N_NEURONS)]
    assert starts[1] > starts[0] + N_FRAMES / RATE  # trials apart on one clock
    np.testing.assert_allclose(ts[:N_FRAMES], starts[0] + np.arange(N_FRAMES) / RATE)
    # Independent check: counts per frame from the raw spike times with np.histogram.
    for i in range(2):
        edges = starts[i] + np.arange(N_FRAMES + 1) / RATE
        for j in range(N_NEURONS):
            counts = np.histogram(spikes[j], bins=edges)[0]
            np.testing.assert_array_equal(counts, session.responses[i][:, j])
    total = sum(len(s) for s in spikes)
    assert total == sum(int(r.sum()) for r in session.responses)
    # Seeded: the same seed writes the same times, another seed others.
    again = write_nwb_session(session, tmp_path / "t.nwb", seed=3)
    other = write_nwb_session(session, tmp_path / "u.nwb", seed=4)
    with NWBHDF5IO(str(again), "r") as a, NWBHDF5IO(str(other), "r") as b:
        np.testing.assert_array_equal(a.read().units.get_unit_spike_times(0), spikes[0])
        assert not np.array_equal(b.read().units.get_unit_spike_times(0), spikes[0])


def test_given_spike_times_are_binned_to_frames(tmp_path):
    session = make_session(n_trials=2)
    dt = 1 / RATE
    # Neuron j spikes in frames 0 and 5 of trial 0 (twice in frame 5), none in trial 1.
    times = [[np.array([0.2 * dt, 5.1 * dt, 5.9 * dt])] * N_NEURONS,
             [np.zeros(0)] * N_NEURONS]
    path = write_nwb_session(session, tmp_path / "s.nwb", spike_times=times)
    read = read_nwb_session(path)
    expected = np.zeros(N_FRAMES)
    expected[0], expected[5] = 1, 2
    np.testing.assert_array_equal(read.responses[0][:, 2], expected)
    assert not read.responses[1].any()
    with pytest.raises(InputError, match="outside the trial"):
        write_nwb_session(session, tmp_path / "bad.nwb",
                          spike_times=[[np.array([N_FRAMES * dt])] * N_NEURONS] * 2)
    assert not (tmp_path / "bad.nwb").exists()


def test_non_integer_responses_cannot_be_written_as_spikes(tmp_path):
    session = make_session(n_trials=2)
    session.responses[1] = session.responses[1] + 0.5
    with pytest.raises(InputError, match="integer spike counts"):
        write_nwb_session(session, tmp_path / "s.nwb")
    path = write_nwb_session(session, tmp_path / "s.nwb", kind="roi")
    np.testing.assert_array_equal(read_nwb_session(path).responses[1], session.responses[1])


def test_failed_write_leaves_nothing(tmp_path):
    session = make_session(n_trials=2)
    session.neuron_positions = np.array([object()] * N_NEURONS)
    with pytest.raises(InputError, match="neuron_positions of shape"):
        write_nwb_session(session, tmp_path / "s.nwb")
    assert list(tmp_path.iterdir()) == []
    session = make_session(n_trials=2)
    session.behavior_names = ["pupil", "pupil"]
    with pytest.raises(InputError, match="behaviour names"):
        write_nwb_session(session, tmp_path / "s.nwb")
    assert list(tmp_path.iterdir()) == []
    # The file is written, then its rename onto the target (a folder here) fails.
    session = make_session(n_trials=2)
    (tmp_path / "s.nwb").mkdir()
    (tmp_path / "s.nwb" / "keep").write_text("x")
    with pytest.raises(OSError):
        write_nwb_session(session, tmp_path / "s.nwb")
    assert [p.name for p in tmp_path.iterdir()] == ["s.nwb"]
    assert [p.name for p in (tmp_path / "s.nwb").iterdir()] == ["keep"]


def _movie_file(tmp_path, movie: ImageSeries, spikes_at: list[float] | None = None,
                trials: list[tuple[float, float]] | None = None) -> NWBFile:
    nwb = new_nwb()
    nwb.add_stimulus(movie)
    if trials is not None:
        for start, stop in trials:
            nwb.add_trial(start_time=start, stop_time=stop)
    nwb.add_unit(spike_times=spikes_at if spikes_at is not None else [0.05, 0.5])
    return nwb


def test_external_npy_movie_and_trials_without_tier_columns(tmp_path):
    frames = np.random.default_rng(1).random((40, H, W), dtype=np.float32)
    np.save(tmp_path / "movie.npy", frames)
    movie = ImageSeries(name="movie", external_file=["movie.npy"], starting_frame=[0],
                        format="external", rate=RATE, num_samples=40, unit="a.u.")
    nwb = _movie_file(tmp_path, movie, trials=[(0.0, 20 / RATE), (20 / RATE, 40 / RATE)])
    write(nwb, tmp_path / "ext.nwb")
    read = read_nwb_session(tmp_path / "ext.nwb", behavior=())
    assert read.n_trials == 2
    np.testing.assert_array_equal(read.videos[0], frames[:20])
    np.testing.assert_array_equal(read.videos[1], frames[20:])
    np.testing.assert_array_equal(read.tiers, ["train", "train"])
    np.testing.assert_array_equal(read.clip_ids, ["0", "1"])
    np.testing.assert_array_equal(read.responses[0][:, 0], np.eye(20)[1] + np.eye(20)[15])
    assert read.pupil_center is None and read.behavior[0].shape == (20, 0)
    assert read.name == "ext"
    (tmp_path / "movie.npy").unlink()
    with pytest.raises(InputError, match="movie.npy not found"):
        read_nwb_session(tmp_path / "ext.nwb", behavior=())


def test_external_mp4_movie(tmp_path):
    from cinebrain.io.video import write_video

    grey = np.linspace(30, 220, 12).astype(np.uint8)
    rgb = [np.full((16, 16, 3), g, np.uint8) for g in grey]
    write_video(tmp_path / "movie.mp4", rgb, fps=RATE, size=(16, 16))
    movie = ImageSeries(name="movie", external_file=["movie.mp4"], starting_frame=[0],
                        format="external", rate=RATE, num_samples=12, unit="a.u.")
    write(_movie_file(tmp_path, movie, spikes_at=[0.01], trials=[(0.0, 12 / RATE)]),
          tmp_path / "mp4.nwb")
    read = read_nwb_session(tmp_path / "mp4.nwb", behavior=())
    assert read.videos[0].shape == (12, 16, 16)
    # Lossy H.264 in limited-range luma: the frames keep their order of brightness.
    means = read.videos[0].mean(axis=(1, 2))
    assert np.all(np.diff(means) > 0)


def test_no_trials_table_cuts_trials_at_gaps(tmp_path):
    # Two stretches of 10 frames, 2 s apart; running sampled at 100 Hz on its own clock.
    ts = np.concatenate([np.arange(10), 100 + np.arange(10)]) / RATE
    frames = np.random.default_rng(2).random((20, H, W), dtype=np.float32)
    nwb = _movie_file(tmp_path, ImageSeries(name="movie", data=frames, unit="a.u.",
                                            timestamps=ts), spikes_at=[0.0, 0.04, 3.41])
    module = nwb.create_processing_module("behavior", "behaviour")
    run_t = np.arange(0, 4.0, 0.01)
    module.add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=[
        TimeSeries(name="running_speed", data=run_t * 2, unit="cm/s", timestamps=run_t)]))
    write(nwb, tmp_path / "gaps.nwb")
    read = read_nwb_session(tmp_path / "gaps.nwb", behavior=("running",))
    assert [len(v) for v in read.videos] == [10, 10]
    np.testing.assert_array_equal(read.videos[1], frames[10:])
    np.testing.assert_array_equal(read.tiers, ["train", "train"])
    np.testing.assert_array_equal(read.clip_ids, ["0", "1"])
    np.testing.assert_array_equal(read.responses[0][:3, 0], [1, 1, 0])  # 0.04 s: frame 1
    assert read.responses[1][2, 0] == 1  # 3.41 s: frame 2 of the stretch from 3.333 s
    assert read.behavior_names == ["running_speed"]
    # Causal: each frame takes the last running sample at or before it (independent
    # reference: the sample index floor(t / 0.01)).
    frame_t = ts[10:]
    expected = 2 * np.floor(frame_t / 0.01 + 1e-6) * 0.01
    np.testing.assert_allclose(read.behavior[1][:, 0], expected, rtol=1e-6)
    with pytest.raises(InputError, match="no behaviour series matches 'pupil'"):
        read_nwb_session(tmp_path / "gaps.nwb")


def test_continuous_movie_without_trials_is_refused(tmp_path):
    movie = ImageSeries(name="movie", data=np.zeros((20, H, W), np.float32), unit="a.u.",
                        rate=RATE)
    write(_movie_file(tmp_path, movie), tmp_path / "one.nwb")
    with pytest.raises(InputError, match=r"one\.nwb: no trials table.*add_trial"):
        read_nwb_session(tmp_path / "one.nwb", behavior=())


def test_overlapping_trials_and_late_spikes_are_refused(tmp_path):
    def movie():
        return ImageSeries(name="movie", data=np.zeros((40, H, W), np.float32), unit="a.u.",
                           rate=RATE)

    write(_movie_file(tmp_path, movie(), trials=[(0.0, 0.7), (0.6, 1.2)]), tmp_path / "o.nwb")
    with pytest.raises(InputError, match=r"o\.nwb: trials overlap: trial 0"):
        read_nwb_session(tmp_path / "o.nwb", behavior=())
    # Spike times in milliseconds, not seconds: far past the end of the recording.
    write(_movie_file(tmp_path, movie(), spikes_at=[50.0, 500.0], trials=[(0.0, 0.6)]),
          tmp_path / "ms.nwb")
    with pytest.raises(InputError, match=r"ms\.nwb: unit 0: spike time 50 s is outside"):
        read_nwb_session(tmp_path / "ms.nwb", behavior=())


def test_text_file_named_nwb_is_refused(tmp_path):
    path = tmp_path / "notes.nwb"
    path.write_text("not an NWB file\n")
    with pytest.raises(InputError, match=r"notes\.nwb: not an NWB file or unreadable") as e:
        read_nwb_session(path)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="not found"):
        read_nwb_session(tmp_path / "missing.nwb")
    import h5py

    with h5py.File(tmp_path / "plain.nwb", "w") as f:  # HDF5, but not NWB
        f["responses"] = np.zeros((10, 3))
    with pytest.raises(InputError, match=r"plain\.nwb: not an NWB file or unreadable"):
        read_nwb_session(tmp_path / "plain.nwb")
    whole = write_nwb_session(make_session(n_trials=2), tmp_path / "whole.nwb").read_bytes()
    (tmp_path / "cut.nwb").write_bytes(whole[: len(whole) * 2 // 3])  # a broken download
    with pytest.raises(InputError, match=r"cut\.nwb: not an NWB file or unreadable"):
        read_nwb_session(tmp_path / "cut.nwb")


def test_nwb_without_responses_or_movie_is_refused(tmp_path):
    nwb = new_nwb()
    nwb.add_stimulus(ImageSeries(name="movie", data=np.zeros((20, H, W), np.float32),
                                 unit="a.u.", rate=RATE))
    nwb.add_trial(start_time=0.0, stop_time=0.5)
    write(nwb, tmp_path / "empty.nwb")
    with pytest.raises(InputError, match=r"empty\.nwb: no responses: neither units"):
        read_nwb_session(tmp_path / "empty.nwb", behavior=())
    nwb = new_nwb()
    nwb.add_unit(spike_times=[0.1])
    write(nwb, tmp_path / "nomovie.nwb")
    with pytest.raises(InputError, match=r"nomovie\.nwb: no ImageSeries"):
        read_nwb_session(tmp_path / "nomovie.nwb")


def test_roi_without_positions_and_reader_options(tmp_path):
    session = make_session(n_trials=2, positions=False)
    path = write_nwb_session(session, tmp_path / "s.nwb", kind="roi")
    read = read_nwb_session(path, pupil_center=False, behavior=("running",), name="other")
    assert read.pupil_center is None and read.neuron_positions is None
    assert read.behavior_names == ["running"] and read.name == "other"
    np.testing.assert_array_equal(read.behavior[1][:, 0], session.behavior[1][:, 1])  # running is column 1
    with pytest.raises(InputError, match="frame_rate=60"):
        read_nwb_session(path, frame_rate=60)
    with pytest.raises(InputError, match="no RoiResponseSeries named 'dff'"):
        read_nwb_session(path, responses="dff")
    with pytest.raises(InputError, match="no units with spike_times"):
        read_nwb_session(path, responses="units")


@pytest.mark.parametrize("start, stop, problem", [(0.0, 0.3, "ends at"),
                                                  (0.2, 0.7, "starts at")])
def test_behavior_that_does_not_cover_the_trials_is_refused(tmp_path, start, stop, problem):
    movie = ImageSeries(name="movie", data=np.zeros((20, H, W), np.float32), unit="a.u.",
                        rate=RATE)
    nwb = _movie_file(tmp_path, movie, trials=[(0.0, 20 / RATE)])
    module = nwb.create_processing_module("behavior", "behaviour")
    t = np.arange(start, stop, 0.01)
    module.add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=[
        TimeSeries(name="running", data=np.ones(len(t)), unit="cm/s", timestamps=t)]))
    write(nwb, tmp_path / "short.nwb")
    with pytest.raises(InputError, match=rf"short\.nwb \(TimeSeries 'running'\): {problem}"):
        read_nwb_session(tmp_path / "short.nwb", behavior=("running",), pupil_center=False)


def test_spike_binning_matches_numpy_histogram(tmp_path):
    # Three trials of unequal length on a 25 Hz movie, spikes (unsorted) anywhere,
    # some exactly on frame edges and on each trial's stop time.
    rate = 25.0
    lengths, gaps = [7, 12, 5], [0.0, 0.9, 2.3]
    starts = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths)[:-1]]) / rate
    ts = np.concatenate([s + np.arange(n) / rate for s, n in zip(starts, lengths, strict=True)])
    stops = starts + np.array(lengths) / rate
    rng = np.random.default_rng(5)
    nwb = new_nwb()
    nwb.add_stimulus(ImageSeries(name="movie", data=np.zeros((len(ts), 4, 4), np.float32),
                                 unit="a.u.", timestamps=ts))
    for s, e in zip(starts, stops, strict=True):
        nwb.add_trial(start_time=s, stop_time=e)
    spikes = []
    for _ in range(4):
        t = np.concatenate([rng.uniform(0, stops[-1], 60), rng.choice(ts, 6), stops])
        spikes.append(rng.permutation(t))
        nwb.add_unit(spike_times=spikes[-1])
    write(nwb, tmp_path / "bins.nwb")
    read = read_nwb_session(tmp_path / "bins.nwb", behavior=())
    with NWBHDF5IO(str(tmp_path / "bins.nwb"), "r") as io:
        f = io.read()
        file_ts = f.stimulus["movie"].timestamps[:]
        file_stops = f.trials["stop_time"][:]
    offset = 0
    for i, n in enumerate(lengths):
        edges = np.append(file_ts[offset:offset + n], file_stops[i])
        offset += n
        for j in range(4):
            np.testing.assert_array_equal(read.responses[i][:, j],
                                          np.histogram(spikes[j], bins=edges)[0])
    np.testing.assert_array_equal(read.neuron_ids, ["0", "1", "2", "3"])


def test_index_series_movie_from_images(tmp_path):
    from pynwb.base import ImageReferences
    from pynwb.image import GrayscaleImage, Images, IndexSeries, RGBImage

    rng = np.random.default_rng(7)
    grey = [rng.random((H, W), dtype=np.float32) for _ in range(2)]
    rgb = rng.random((H, W, 3), dtype=np.float32)
    imgs = [GrayscaleImage(name="b", data=grey[0]), RGBImage(name="a", data=rgb),
            GrayscaleImage(name="c", data=grey[1])]
    images = Images(name="frames", images=imgs, description="clip frames",
                    order_of_images=ImageReferences(name="order_of_images", data=imgs))
    nwb = new_nwb()
    nwb.add_stimulus_template(images)
    order = np.array([0, 1, 2, 2, 1, 0, 0, 2], np.uint32)
    nwb.add_stimulus(IndexSeries(name="movie", data=order, unit="N/A", indexed_images=images,
                                 rate=RATE))
    nwb.add_trial(start_time=0.0, stop_time=8 / RATE)
    nwb.add_unit(spike_times=[0.1])
    write(nwb, tmp_path / "index.nwb")
    read = read_nwb_session(tmp_path / "index.nwb", behavior=())
    luminance = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    expected = np.stack([grey[0], luminance, grey[1]])[order]
    np.testing.assert_allclose(read.videos[0], expected, rtol=1e-6)
    assert read.frame_rate == RATE


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3).filter(lambda n: max(n) > 1),
       sample_rate=st.floats(5.0, 200.0), seed=st.integers(0, 2**16))
def test_behavior_is_the_last_sample_at_or_before_each_frame(tmp_path, lengths, sample_rate,
                                                             seed):
    rng = np.random.default_rng(seed)
    starts = 0.5 + np.concatenate([[0], np.cumsum(np.array(lengths) / RATE + 1.0)[:-1]])
    ts = np.concatenate([s + np.arange(n) / RATE for s, n in zip(starts, lengths, strict=True)])
    nwb = new_nwb()
    nwb.add_stimulus(ImageSeries(name="movie", data=np.zeros((len(ts), 2, 2), np.float32),
                                 unit="a.u.", timestamps=ts))
    for s, n in zip(starts, lengths, strict=True):
        nwb.add_trial(start_time=s, stop_time=s + n / RATE)
    nwb.add_unit(spike_times=[starts[0]])
    # Irregular samples from 0 s to past the last frame, values = their index.
    n_samples = int((ts[-1] + 0.2) * sample_rate) + 2
    sample_t = np.sort(rng.uniform(0, ts[-1] + 0.2, n_samples))
    sample_t[0], sample_t[-1] = 0.0, ts[-1] + 0.2
    module = nwb.create_processing_module("behavior", "behaviour")
    module.add(BehavioralTimeSeries(name="BehavioralTimeSeries", time_series=[TimeSeries(
        name="running", data=np.arange(n_samples, dtype=np.float64), unit="cm/s",
        timestamps=sample_t)]))
    path = tmp_path / f"prop{seed}.nwb"
    write(nwb, path)
    read = read_nwb_session(path, behavior=("running",))
    assert read.frame_rate == pytest.approx(RATE)
    got = np.concatenate([b[:, 0] for b in read.behavior])
    # Reference by brute force: the largest sample index whose time is <= the frame's.
    expected = np.array([np.flatnonzero(sample_t <= t).max() for t in ts])
    np.testing.assert_array_equal(got, expected)


def test_trials_from_another_intervals_table(tmp_path):
    from pynwb.epoch import TimeIntervals

    movie = ImageSeries(name="movie", data=np.arange(30, dtype=np.float32)[:, None, None]
                        * np.ones((1, 2, 2), np.float32), unit="a.u.", rate=RATE)
    # The trials table times other stimuli; the movie's presentations are their own table.
    nwb = _movie_file(tmp_path, movie, trials=[(0.0, 0.1), (0.5, 0.9)])
    shows = TimeIntervals(name="movie_presentations", description="movie clips")
    shows.add_column("tier", "split tier")
    shows.add_column("clip_id", "clip")
    for start, tier, clip in [(0.0, "train", "a"), (10 / RATE, "test", "b"),
                              (20 / RATE, "test", "b")]:
        shows.add_interval(start_time=start, stop_time=start + 10 / RATE, tier=tier,
                           clip_id=clip)
    nwb.add_time_intervals(shows)
    write(nwb, tmp_path / "shows.nwb")
    read = read_nwb_session(tmp_path / "shows.nwb", behavior=(), trials="movie_presentations")
    np.testing.assert_array_equal(read.tiers, ["train", "test", "test"])
    np.testing.assert_array_equal(read.clip_ids, ["a", "b", "b"])
    np.testing.assert_array_equal(read.videos[2][:, 0, 0], np.arange(20, 30))
    assert [len(r) for r in read.responses] == [10, 10, 10]
    with pytest.raises(InputError, match=r"no time intervals table 'gratings' \(found: "
                                         r"movie_presentations, trials\)"):
        read_nwb_session(tmp_path / "shows.nwb", behavior=(), trials="gratings")


def test_frame_rate_from_steps_inside_trials(tmp_path):
    # Short trials far apart: most steps between timestamps are gaps, not frames.
    # Steps from one trial to the next are no frame interval either.
    starts, lengths = [0.0, 5.0, 10.0], [1, 1, 2]
    ts = np.concatenate([s + np.arange(n) / RATE for s, n in zip(starts, lengths, strict=True)])
    nwb = new_nwb()
    nwb.add_stimulus(ImageSeries(name="movie", data=np.zeros((len(ts), 2, 2), np.float32),
                                 unit="a.u.", timestamps=ts))
    for s, n in zip(starts, lengths, strict=True):
        nwb.add_trial(start_time=s, stop_time=s + n / RATE)
    nwb.add_unit(spike_times=[10.04])
    write(nwb, tmp_path / "short.nwb")
    read = read_nwb_session(tmp_path / "short.nwb", behavior=())
    assert read.frame_rate == pytest.approx(RATE)
    np.testing.assert_array_equal(read.responses[2][:, 0], [0, 1])
