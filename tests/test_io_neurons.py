"""Neuron recordings on disk: the Sensorium 2023 folder layout and the plain NPZ / HDF5 file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cinebrain.errors import InputError
from cinebrain.io.neurons import (
    SENSORIUM_BEHAVIOR,
    NeuronSession,
    read_neuron_arrays,
    read_sensorium,
    write_neuron_arrays,
    write_sensorium,
)


def make_session(seed: int = 0, n_neurons: int = 7, pupil: bool = True,
                 positions: bool = True) -> NeuronSession:
    rng = np.random.default_rng(seed)
    lengths = [12, 9, 10, 10, 11]
    tiers = ["train", "train", "test", "test", "validation"]
    clips = ["a", "b", "t0", "t0", "v"]
    f32 = np.float32
    return NeuronSession(
        name="mouse-1",
        videos=[rng.uniform(0, 255, (t, 6, 8)).astype(f32) for t in lengths],
        responses=[rng.poisson(1.0, (t, n_neurons)).astype(f32) for t in lengths],
        behavior=[rng.normal(size=(t, 2)).astype(f32) for t in lengths],
        pupil_center=[rng.normal(size=(t, 2)).astype(f32) for t in lengths] if pupil else None,
        tiers=np.asarray(tiers),
        clip_ids=np.asarray(clips),
        frame_rate=30.0,
        neuron_ids=np.asarray([f"n{k}" for k in range(n_neurons)]),
        behavior_names=["pupil_size", "running_speed"],
        neuron_positions=rng.normal(size=(n_neurons, 3)).astype(f32) if positions else None,
    )


def assert_same(a: NeuronSession, b: NeuronSession) -> None:
    assert a.name == b.name and a.frame_rate == b.frame_rate
    assert a.behavior_names == b.behavior_names
    for key in ("tiers", "clip_ids", "neuron_ids"):
        assert list(map(str, getattr(a, key))) == list(map(str, getattr(b, key)))
    assert a.n_trials == b.n_trials
    for key in ("videos", "responses", "behavior"):
        for x, y in zip(getattr(a, key), getattr(b, key), strict=True):
            assert x.dtype == np.float32 and y.dtype == np.float32
            np.testing.assert_array_equal(x, y)
    assert (a.pupil_center is None) == (b.pupil_center is None)
    if a.pupil_center is not None:
        for x, y in zip(a.pupil_center, b.pupil_center, strict=True):
            np.testing.assert_array_equal(x, y)
    assert (a.neuron_positions is None) == (b.neuron_positions is None)
    if a.neuron_positions is not None:
        np.testing.assert_array_equal(a.neuron_positions, b.neuron_positions)


# ------------------------------------------------------------------ Sensorium round trip
@pytest.mark.parametrize("pupil,positions", [(True, True), (False, False)])
def test_sensorium_round_trip_is_exact(tmp_path, pupil, positions):
    s = make_session(pupil=pupil, positions=positions)
    out = write_sensorium(s, tmp_path / "mouse")
    # frames last and neurons first on disk, as in the published data
    assert np.load(out / "data/videos/0.npy").shape == (6, 8, 12)
    assert np.load(out / "data/responses/0.npy").shape == (7, 12)
    assert np.load(out / "data/behavior/0.npy").shape == (2, 12)
    assert list(np.load(out / "meta/trials/tiers.npy")) == [
        "train", "train", "final_test_main", "final_test_main", "oracle"]
    assert (out / "data/pupil_center").is_dir() == pupil
    back = read_sensorium(out)
    assert_same(s, back)
    assert back.source == str(out)


def test_write_sensorium_refuses_a_non_empty_folder_and_replaces_only_with_overwrite(tmp_path):
    s = make_session()
    target = tmp_path / "mouse"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        write_sensorium(s, target)
    assert (target / "keep.txt").exists()
    write_sensorium(s, target, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert_same(s, read_sensorium(target))
    assert [p.name for p in tmp_path.iterdir()] == ["mouse"]


def test_write_sensorium_leaves_nothing_behind_when_it_fails_midway(tmp_path, monkeypatch):
    s = make_session()
    real_save = np.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_sensorium(s, tmp_path / "mouse")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the published layout
def write_real_layout(root: Path) -> dict:
    """A folder as published: int unit ids, 'none' trials, withheld test responses, NaN
    padding at the end of a trial, no video_ids.npy and no cinebrain.json."""
    rng = np.random.default_rng(1)
    n, t, h, w = 5, 20, 4, 6
    tiers = np.array(["train", "oracle", "none", "live_test_main", "train", "final_test_bonus"])
    repeat = rng.uniform(0, 255, (h, w, t)).astype(np.float32)
    for k in ("videos", "responses", "behavior", "pupil_center"):
        (root / "data" / k).mkdir(parents=True)
    (root / "meta/trials").mkdir(parents=True)
    (root / "meta/neurons").mkdir(parents=True)
    arrays = {}
    for i in range(len(tiers)):
        v = repeat.copy() if i in (1, 5) else rng.uniform(0, 255, (h, w, t)).astype(np.float32)
        r = rng.poisson(2.0, (n, t)).astype(np.float32)
        b = rng.normal(size=(2, t)).astype(np.float32)
        p = rng.normal(size=(2, t)).astype(np.float32)
        if i == 4:  # a shorter trial padded with NaN: the behaviour ends at 15, the rest at 17
            v[..., 17:] = np.nan
            r[:, 17:] = np.nan
            b[:, 15:] = np.nan
            p[:, 17:] = np.nan
        if tiers[i] in ("live_test_main",):
            r[:] = np.nan  # withheld
        arrays[i] = (v, r, b, p)
        if tiers[i] == "final_test_bonus":
            r = None  # withheld by leaving the file out
        for k, a in zip(("videos", "responses", "behavior", "pupil_center"), (v, r, b, p), strict=True):
            if a is not None:
                np.save(root / "data" / k / f"{i}.npy", a)
    np.save(root / "meta/trials/tiers.npy", tiers)
    np.save(root / "meta/neurons/unit_ids.npy", np.arange(100, 100 + n))
    np.save(root / "meta/neurons/cell_motor_coordinates.npy", rng.normal(size=(n, 3)))
    return arrays


def test_reads_the_published_layout(tmp_path):
    root = tmp_path / "dynamic29156-11-10-Video-abc"
    arrays = write_real_layout(root)
    s = read_sensorium(root)
    assert s.name == root.name and s.frame_rate == 30.0
    assert s.behavior_names == list(SENSORIUM_BEHAVIOR)
    assert list(s.tiers) == ["train", "validation", "train"]  # none and withheld skipped
    assert list(s.neuron_ids) == ["100", "101", "102", "103", "104"]
    assert s.neuron_positions.dtype == np.float32 and s.neuron_positions.shape == (5, 3)
    assert [len(v) for v in s.videos] == [20, 20, 15]  # trimmed where the behaviour pads
    v, r, b, p = arrays[4]
    np.testing.assert_array_equal(s.videos[2], np.moveaxis(v[..., :15], -1, 0))
    np.testing.assert_array_equal(s.responses[2], r[:, :15].T)
    np.testing.assert_array_equal(s.behavior[2], b[:, :15].T)
    np.testing.assert_array_equal(s.pupil_center[2], p[:, :15].T)
    # without video_ids, identical frames are one clip
    assert s.clip_ids[0] != s.clip_ids[1]
    with pytest.raises(InputError, match="withheld"):
        read_sensorium(root, unlabeled="error")
    assert read_sensorium(root, "m1", frame_rate=25.0).frame_rate == 25.0


def test_video_ids_give_clip_ids_and_repeats_share_them(tmp_path):
    root = tmp_path / "m"
    write_real_layout(root)
    np.save(root / "meta/trials/video_ids.npy", np.array([3, 7, 0, 9, 4, 7]))
    s = read_sensorium(root)
    assert list(s.clip_ids) == ["3", "7", "4"]


# ------------------------------------------------------------------ bad folders
def _folder(tmp_path) -> Path:
    return write_sensorium(make_session(), tmp_path / "mouse")


def _expect(folder, match, **kwargs):
    with pytest.raises(InputError, match=match) as e:
        read_sensorium(folder, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_folder_and_files(tmp_path):
    _expect(tmp_path / "nope", "does not exist")
    f = _folder(tmp_path)
    (f / "meta/trials/tiers.npy").unlink()
    assert "tiers.npy" in _expect(f, "is missing")
    f = write_sensorium(make_session(), tmp_path / "b")
    (f / "data/behavior/3.npy").unlink()
    _expect(f, "lacks trial file")
    f = write_sensorium(make_session(), tmp_path / "c")
    (f / "meta/neurons/unit_ids.npy").unlink()
    _expect(f, "unit_ids.npy: is missing")


def test_trial_lists_must_match(tmp_path):
    f = _folder(tmp_path)
    np.save(f / "data/videos/9.npy", np.zeros((6, 8, 3), np.float32))
    _expect(f, "does not list")
    f = write_sensorium(make_session(), tmp_path / "b")
    np.save(f / "meta/trials/video_ids.npy", np.array(["a", "b"]))
    _expect(f, "2 video ids for 5 trials")
    f = write_sensorium(make_session(), tmp_path / "c")
    np.save(f / "data/videos/x.npy", np.zeros(1))
    _expect(f, "not named by a trial index")


def test_shapes_and_frame_counts(tmp_path):
    f = _folder(tmp_path)
    np.save(f / "data/videos/1.npy", np.zeros((6, 8), np.float32))
    _expect(f, "expected \\(height, width, frames\\)")
    f = write_sensorium(make_session(), tmp_path / "b")
    np.save(f / "data/responses/1.npy", np.zeros((6, 9), np.float32))
    _expect(f, "expected \\(7, frames\\)")
    f = write_sensorium(make_session(), tmp_path / "c")
    np.save(f / "data/behavior/1.npy", np.zeros((2, 8), np.float32))
    _expect(f, "different frame counts")
    f = write_sensorium(make_session(), tmp_path / "d")
    np.save(f / "data/pupil_center/1.npy", np.zeros((3, 9), np.float32))
    _expect(f, "expected \\(2, frames\\)")
    f = write_sensorium(make_session(), tmp_path / "e")
    np.save(f / "data/videos/2.npy", np.zeros((5, 8, 10), np.float32))
    _expect(f, "at one size")


def test_nan_or_inf_inside_a_trial_and_unknown_tiers(tmp_path):
    f = _folder(tmp_path)
    r = np.load(f / "data/responses/0.npy")
    r[2, 4] = np.nan
    np.save(f / "data/responses/0.npy", r)
    _expect(f, "NaN or inf at frame 4")
    f = write_sensorium(make_session(), tmp_path / "b")
    r = np.load(f / "data/responses/0.npy")
    r[0, -1] = np.inf
    np.save(f / "data/responses/0.npy", r)
    _expect(f, "NaN or inf at frame 11")
    f = write_sensorium(make_session(), tmp_path / "c")
    np.save(f / "meta/trials/tiers.npy", np.array(["train", "train", "test", "x", "oracle"]))
    _expect(f, "unknown tier")


def test_pickled_arrays_are_refused_unless_allowed(tmp_path):
    f = _folder(tmp_path)
    np.save(f / "meta/neurons/unit_ids.npy", np.array([f"n{k}" for k in range(7)], dtype=object))
    _expect(f, "pickled")
    assert list(read_sensorium(f, allow_pickle=True).neuron_ids)[0] == "n0"


def test_bad_cinebrain_json(tmp_path):
    f = _folder(tmp_path)
    (f / "meta/cinebrain.json").write_text("{oops")
    _expect(f, "not valid JSON")
    (f / "meta/cinebrain.json").write_text(json.dumps({"frame_rate": "fast"}))
    _expect(f, "not a number")


# ------------------------------------------------------------------ NPZ / HDF5
@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("pupil", [True, False])
def test_array_file_round_trip(tmp_path, suffix, pupil):
    if suffix == ".h5":
        pytest.importorskip("h5py")
    s = make_session(pupil=pupil, positions=pupil)
    path = write_neuron_arrays(s, tmp_path / f"session{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert_same(s, read_neuron_arrays(path))


def test_npz_keys_are_the_documented_ones(tmp_path):
    path = write_neuron_arrays(make_session(), tmp_path / "s.npz")
    with np.load(path) as z:
        keys = set(z.files)
        assert z["videos_0"].shape == (12, 6, 8) and z["responses_0"].shape == (12, 7)
        assert float(z["frame_rate"]) == 30.0
    assert {"tiers", "clip_ids", "neuron_ids", "behavior_names", "frame_rate",
            "pupil_center_4", "behavior_4", "name", "neuron_positions"} <= keys


def _npz(tmp_path, edit) -> Path:
    path = write_neuron_arrays(make_session(), tmp_path / "s.npz")
    with np.load(path) as z:
        items = {k: z[k] for k in z.files}
    edit(items)
    np.savez(path, **items)
    return path


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.pop("tiers"), "lacks key\\(s\\) tiers"),
    (lambda d: d.pop("responses_3"), "lacks responses_3"),
    (lambda d: d.pop("pupil_center_2"), "pupil_center for 4 of 5"),
    (lambda d: d.update(videos_5=d["videos_0"]), "not part of the layout"),
    (lambda d: d.update(responses_1=d["responses_1"][:, :3]), "expected \\(frames, 7\\)"),
    (lambda d: d.update(behavior_1=d["behavior_1"][:4]), "behaviour of shape"),
    (lambda d: d.update(frame_rate=np.array([1.0, 2.0])), "frame_rate is"),
    (lambda d: d.update(tiers=np.array(["train"] * 4 + ["oracle"])), "unknown tier"),
    (lambda d: d["responses_0"].__setitem__((0, 0), np.nan), "NaN or inf"),
    (lambda d: d.update(clip_ids=np.array(["a"])), "1 clip_ids for 5 trials"),
])
def test_bad_array_files(tmp_path, edit, match):
    path = _npz(tmp_path, edit)
    with pytest.raises(InputError, match=match) as e:
        read_neuron_arrays(path)
    assert str(path) in str(e.value)


def test_array_file_suffix_and_existence(tmp_path):
    with pytest.raises(InputError, match="suffix"):
        write_neuron_arrays(make_session(), tmp_path / "s.pkl")
    with pytest.raises(InputError, match="does not exist"):
        read_neuron_arrays(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        read_neuron_arrays(tmp_path / "bad.npz")


def test_only_test_tiers_may_withhold_responses(tmp_path):
    f = _folder(tmp_path)
    np.save(f / "data/responses/0.npy", np.full((7, 12), np.nan, np.float32))
    _expect(f, "responses of a train trial are all NaN")
    f = write_sensorium(make_session(), tmp_path / "b")
    (f / "data/responses/4.npy").unlink()  # an oracle (validation) trial
    _expect(f, "lacks trial file")
    f = write_sensorium(make_session(), tmp_path / "c")
    (f / "data/responses/2.npy").unlink()  # a test trial: withheld, skipped
    assert list(read_sensorium(f).tiers) == ["train", "train", "test", "validation"]
