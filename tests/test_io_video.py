"""Tests for cinebrain.io.video: streamed reading, validation, truncation, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cinebrain.errors import InputError
from cinebrain.io.video import VideoReader, read_video_info, write_video

FPS = 10
N_FRAMES = 30
SIZE = (64, 48)  # (width, height)


def _frames(n: int = N_FRAMES):
    """Frame i is grey 8 * i + 20 plus fresh noise (so the file is not almost empty)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        noise = rng.integers(-10, 11, (SIZE[1], SIZE[0], 3))
        yield np.clip(8 * i + 20 + noise, 0, 255).astype(np.uint8)


def _make(path: Path, audio: bool = False, options: dict | None = None) -> Path:
    sr = 8000
    sound = (
        np.sin(2 * np.pi * 440 * np.arange(N_FRAMES * sr // FPS) / sr).astype(np.float32)
        if audio
        else None
    )
    return write_video(
        path, _frames(), FPS, SIZE, audio=sound, sr=sr if audio else None, options=options
    )


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    return _make(tmp_path_factory.mktemp("video") / "movie.mp4", audio=True)


def _one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_header(movie):
    r = VideoReader(movie)
    assert r.fps == pytest.approx(FPS)
    assert r.n_frames == N_FRAMES
    assert r.duration == pytest.approx(N_FRAMES / FPS, abs=1e-3)
    assert (r.width, r.height) == SIZE
    assert r.has_audio
    info = read_video_info(movie)
    assert info["n_frames"] == N_FRAMES and info["has_audio"] is True


def test_frames_resized_and_timed(movie):
    out = list(VideoReader(movie).iter_frames(size=(32, 18)))
    assert len(out) == N_FRAMES
    times = np.array([t for t, _ in out])
    np.testing.assert_allclose(times, np.arange(N_FRAMES) / FPS, atol=1e-6)
    assert all(f.shape == (18, 32, 3) and f.dtype == np.uint8 for _, f in out)
    # content survives encoding: frame i is grey 8 * i + 20 (lossy codec: a few levels off)
    means = np.array([f.mean() for _, f in out])
    np.testing.assert_allclose(means, 8 * np.arange(N_FRAMES) + 20, atol=4)


def test_gray_and_native_size(movie):
    t, f = next(VideoReader(movie).iter_frames(size=None, gray=True))
    assert t == 0.0
    assert f.shape == (SIZE[1], SIZE[0]) and f.dtype == np.uint8


def test_iter_is_a_stream(movie):
    it = VideoReader(movie).iter_frames()
    first = next(it)
    second = next(it)
    assert first[0] < second[0]
    it.close()


@pytest.mark.parametrize("ext", [".mkv", ".mov", ".avi", ".m4v"])
def test_other_containers(tmp_path, ext):
    path = write_video(tmp_path / f"m{ext}", _frames(12), FPS, SIZE)
    r = VideoReader(path)
    assert not r.has_audio
    frames = list(r.iter_frames(size=(16, 12)))
    assert len(frames) == 12
    np.testing.assert_allclose([t for t, _ in frames], np.arange(12) / FPS, atol=1e-6)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match="not found") as e:
        VideoReader(path)
    _one_line(e, path)


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a movie\n" * 20)
    with pytest.raises(InputError, match="cannot be opened as a video") as e:
        VideoReader(path)
    _one_line(e, path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import soundfile as sf

    path = tmp_path / "sound.wav"
    sf.write(path, np.zeros(8000, np.float32), 8000)
    with pytest.raises(InputError, match="no video stream") as e:
        VideoReader(path)
    assert "stimulus.audio" in _one_line(e, path)


def _cut_in_half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_moov_at_end(tmp_path):
    """Default mp4 writes its index (moov) last: half a file cannot even be opened."""
    full = _make(tmp_path / "full.mp4")
    cut = _cut_in_half(full, tmp_path / "cut.mp4")
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        VideoReader(cut)
    _one_line(e, cut)


def test_truncated_faststart_mid_stream(tmp_path):
    """With the index first, half a file opens but stops mid-stream: raise while iterating."""
    full = _make(tmp_path / "full.mp4", options={"movflags": "faststart"})
    cut = _cut_in_half(full, tmp_path / "cut.mp4")
    reader = VideoReader(cut)  # header and first frame are fine
    seen = []
    with pytest.raises(InputError, match=r"truncated or corrupt after \d+ frames \(t=") as e:
        for t, _ in reader.iter_frames():
            seen.append(t)
    msg = _one_line(e, cut)
    assert f"after {len(seen)} frames" in msg
    assert "re-export or re-download" in msg
    assert 0 < len(seen) < N_FRAMES


def test_corrupt_payload(tmp_path):
    """Garbage bytes in the middle of the stream are reported, not decoded silently."""
    full = _make(tmp_path / "full.mp4", options={"movflags": "faststart"})
    data = bytearray(full.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    reader = VideoReader(bad)  # the header and the first frames are intact
    with pytest.raises(InputError, match=r"truncated or corrupt after \d+ frames") as e:
        for _ in reader.iter_frames():
            pass
    _one_line(e, bad)


def test_write_is_atomic_and_validates(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(ValueError, match="expected"):
        write_video(path, [np.zeros((10, 10, 3), np.uint8)], FPS, SIZE)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    odd_frames = [np.full((47, 63, 3), 100, np.uint8)] * 3
    odd = write_video(tmp_path / "odd.mp4", odd_frames, FPS, (63, 47))
    assert (VideoReader(odd).width, VideoReader(odd).height) == (64, 48)  # yuv420p needs even


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_still_image_renamed_mp4_is_not_a_video(tmp_path, fmt):
    from PIL import Image

    path = tmp_path / "movie.mp4"
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    with pytest.raises(InputError, match="not a video: it is a .* still image") as e:
        VideoReader(path)
    assert "give a movie file" in _one_line(e, path)


def test_single_frame_video_is_not_a_video(tmp_path):
    path = write_video(tmp_path / "one.mp4", _frames(1), FPS, SIZE)
    with pytest.raises(InputError, match="not a video: .* single frame") as e:
        VideoReader(path)
    assert "give a movie file" in _one_line(e, path)
    two = write_video(tmp_path / "two.mp4", _frames(2), FPS, SIZE)
    assert len(list(VideoReader(two).iter_frames())) == 2


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\)") as e:
        VideoReader(path)
    _one_line(e, path)


def test_truncated_avi_without_index(tmp_path):
    """A cut AVI loses its index and FFmpeg recomputes its duration from what is left: the
    header's frame count still tells the truncation."""
    full = write_video(tmp_path / "full.avi", _frames(), FPS, SIZE)
    assert len(list(VideoReader(full).iter_frames(size=(16, 12)))) == N_FRAMES
    cut = _cut_in_half(full, tmp_path / "cut.avi")
    with pytest.raises(InputError, match=r"truncated or corrupt after \d+ frames") as e:
        for _ in VideoReader(cut).iter_frames(size=(16, 12)):
            pass
    assert "of a declared 3." in _one_line(e, cut)
