"""Tests for cinebrain.data.coverage: every stimulus stream must cover every run."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.data.coverage import check_coverage, is_stream, sample_length
from cinebrain.data.study import RunTiming
from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace

TR = 2.0


def _stream(name: str, end: float, step: float = 0.1, method: str = "mean", **meta) -> FeatureSpace:
    onsets = np.arange(0.0, end - 1e-9, step)
    return FeatureSpace(name, np.ones((len(onsets), 2)), onsets, step, method=method, meta=meta)


def _runs(*segments: tuple[float, float]) -> list[RunTiming]:
    return [
        RunTiming("s1", f"r{i + 1}", int(np.ceil((b - a) / TR)) + 5, (a, b), 0.0)
        for i, (a, b) in enumerate(segments)
    ]


RUNS = _runs((0.0, 100.0), (100.0, 200.0), (200.0, 300.0))


def test_streams_that_cover_pass_unchanged():
    spaces = {"frames": _stream("frames", 300.0), "mel": _stream("mel", 299.5, step=0.05)}
    out = check_coverage(spaces, RUNS, TR)
    assert out == RUNS
    assert check_coverage(spaces, RUNS, TR, policy="truncate") == RUNS


def test_short_stream_is_an_error_naming_file_run_and_times():
    spaces = {"frames": _stream("frames", 300.0), "mel": _stream("mel", 150.0, step=0.05)}
    with pytest.raises(InputError) as e:
        check_coverage(spaces, RUNS, TR, sources={"mel": "stimuli/sound.wav"})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("stimuli/sound.wav: ")
    assert "'mel' stream ends at 150.00 s" in msg
    assert "subject s1 run r2 shows 100-200 s" in msg and "short by 50.00 s" in msg
    assert "1 later run(s) too" in msg
    assert "give a stream that covers the whole movie" in msg
    assert "set length_policy: truncate" in msg
    with pytest.raises(InputError, match=r"^mel: the 'mel' stream"):
        check_coverage(spaces, RUNS, TR)  # no sources: the space's name


def test_tolerance_is_one_tr_or_one_sample():
    # short by less than a TR: fine
    assert check_coverage({"a": _stream("a", 298.5)}, RUNS, TR) == RUNS
    # short by more than a TR: not fine
    with pytest.raises(InputError, match="short by 2.50 s"):
        check_coverage({"a": _stream("a", 297.5)}, RUNS, TR)
    # a stream with 5 s samples may end up to one sample early, not more
    coarse = FeatureSpace("b", np.ones((59, 1)), 1.0 + 5.0 * np.arange(59), 5.0)
    assert coarse.end == pytest.approx(296.0) and sample_length(coarse) == pytest.approx(5.0)
    assert check_coverage({"b": coarse}, RUNS, TR) == RUNS
    coarser = FeatureSpace("b", np.ones((58, 1)), 1.0 + 5.0 * np.arange(58), 5.0)
    with pytest.raises(InputError, match="'b' stream ends at 291.00 s"):
        check_coverage({"b": coarser}, RUNS, TR)


def test_truncate_cuts_segments_and_volumes():
    spaces = {"frames": _stream("frames", 300.0), "mel": _stream("mel", 150.0, step=0.05)}
    with pytest.raises(InputError, match="run r3 starts .* nothing of the run is left"):
        check_coverage(spaces, RUNS, TR, policy="truncate")
    two = RUNS[:2]
    out = check_coverage(spaces, two, TR, policy="truncate")
    assert out[0] == two[0]
    assert out[1].segment == (100.0, pytest.approx(150.0))
    assert out[1].n_trs == 25  # (150 - 100) s / TR: volumes past the new end are dropped
    assert (out[1].subject, out[1].name, out[1].offset) == ("s1", "r2", 0.0)


def test_event_spaces_may_end_early():
    words = FeatureSpace("words", np.ones((3, 4)), [1.0, 7.5, 30.2], [0.3, 0.4, 0.2])
    faces = _stream("faces", 40.0, step=1.0, method="overlap")
    assert not is_stream(words) and not is_stream(faces)
    assert check_coverage({"words": words, "faces": faces}, RUNS, TR) == RUNS
    forced = _stream("faces", 40.0, step=1.0, method="overlap", coverage="full")
    assert is_stream(forced)
    with pytest.raises(InputError, match="'faces' stream ends at 40.00 s"):
        check_coverage({"faces": forced}, RUNS, TR)
    dense = _stream("frames", 40.0, coverage="events")
    assert not is_stream(dense)


def test_a_dropped_frame_keeps_a_movie_a_stream():
    fs = _stream("frames", 300.0)
    keep = np.ones(fs.n_samples, bool)
    keep[[10, 500, 1200]] = False
    gappy = FeatureSpace("frames", fs.values[keep], fs.onsets[keep], fs.durations[keep])
    assert is_stream(gappy)


def test_bad_arguments():
    with pytest.raises(ValueError, match="policy"):
        check_coverage({}, RUNS, TR, policy="stretch")
    with pytest.raises(ValueError, match="tr"):
        check_coverage({}, RUNS, 0.0)
    assert check_coverage({}, RUNS, TR) == RUNS


def test_half_length_audio_against_a_movie(tmp_path):
    """A real case: a soundtrack file half as long as the movie."""
    import soundfile as sf

    from cinebrain.features.audio import extract_audio
    from cinebrain.features.video import extract_video
    from cinebrain.io.video import write_video

    fps, seconds, sr = 10, 8, 8000
    rng = np.random.default_rng(0)
    movie = write_video(
        tmp_path / "movie.mp4",
        (rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(fps * seconds)),
        fps,
        (32, 24),
    )
    sound = tmp_path / "sound.wav"
    t = np.arange(sr * seconds // 2) / sr
    sf.write(sound, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    spaces = dict(extract_video(movie, spaces=("luminance",), size=(32, 24), progress=False))
    spaces.update(extract_audio(sound, spaces=("envelope",), sr=sr))
    sources = {"luminance": str(movie), "envelope": str(sound)}
    runs = [
        RunTiming("s1", "r1", 2, (0.0, 4.0), 0.0),
        RunTiming("s1", "r2", 2, (4.0, 8.0), 0.0),
    ]
    with pytest.raises(InputError) as e:
        check_coverage(spaces, runs, tr=2.0, sources=sources)
    msg = str(e.value)
    assert msg.startswith(f"{sound}: ") and "'envelope' stream ends at 4.0" in msg
    assert "run r2 shows 4-8 s" in msg
    with pytest.raises(InputError, match="nothing of the run is left"):
        check_coverage(spaces, runs, tr=2.0, policy="truncate", sources=sources)
    assert check_coverage(spaces, runs[:1], tr=2.0, sources=sources) == runs[:1]
