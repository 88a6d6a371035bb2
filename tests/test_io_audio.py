"""Tests for cinebrain.io.audio: sound files and video soundtracks, mono, resampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cinebrain.errors import InputError
from cinebrain.io.audio import read_audio
from cinebrain.io.video import write_video


def _tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _check_one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_sound_files_downmixed_and_resampled(tmp_path, ext):
    sr_in = 22050
    left = _tone(sr_in, 1.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / f"s{ext}"
    sf.write(path, stereo, sr_in)
    x, sr = read_audio(path, sr=16000)
    assert sr == 16000 and x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) <= 2
    # mono = channel mean: half the amplitude of the left channel
    assert np.abs(x[1000:-1000]).max() == pytest.approx(0.25, abs=0.03)
    assert _peak_hz(x, sr) == pytest.approx(440, abs=2)


def test_native_rate_kept(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, _tone(8000, 0.5), 8000)
    x, sr = read_audio(path, sr=None)
    assert sr == 8000
    np.testing.assert_allclose(x, _tone(8000, 0.5), atol=1e-4)


def test_video_soundtrack(tmp_path):
    sr_in, fps, n = 22050, 10, 20
    frames = (np.zeros((16, 16, 3), np.uint8) for _ in range(n))
    path = write_video(
        tmp_path / "m.mp4", frames, fps, (16, 16), audio=_tone(sr_in, n / fps, 300.0), sr=sr_in
    )
    x, sr = read_audio(path, sr=16000)
    assert sr == 16000 and x.dtype == np.float32
    assert abs(len(x) / sr - n / fps) < 0.15  # AAC adds a little priming/padding
    assert _peak_hz(x, sr) == pytest.approx(300, abs=3)
    assert np.abs(x[2000:-2000]).max() == pytest.approx(0.5, abs=0.05)


def test_video_without_audio(tmp_path):
    frames = (np.zeros((16, 16, 3), np.uint8) for _ in range(5))
    path = write_video(tmp_path / "silent.mp4", frames, 10, (16, 16))
    with pytest.raises(InputError, match="no audio stream") as e:
        read_audio(path)
    assert "stimulus.audio" in _check_one_line(e, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(InputError, match="not found") as e:
        read_audio(path)
    _check_one_line(e, path)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n" * 10)
    with pytest.raises(InputError, match="cannot be read") as e:
        read_audio(path)
    _check_one_line(e, path)


def test_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError, match="no samples") as e:
        read_audio(path)
    _check_one_line(e, path)


def test_non_finite_audio(tmp_path):
    path = tmp_path / "nan.wav"
    x = _tone(16000, 0.2)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN or infinite") as e:
        read_audio(path, sr=None)
    _check_one_line(e, path)


def _cut(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


@pytest.mark.parametrize(
    ("ext", "subtype"), [(".wav", "PCM_16"), (".wav", "FLOAT"), (".aiff", "PCM_16")]
)
def test_truncated_pcm_file_is_refused(tmp_path, ext, subtype):
    """libsndfile quietly reads a cut WAV/AIFF as shorter audio: the header says more."""
    full = tmp_path / f"s{ext}"
    sf.write(full, _tone(16000, 2.0), 16000, subtype=subtype)
    assert len(read_audio(full, sr=None)[0]) == 32000
    cut = _cut(full)
    with pytest.raises(InputError, match=r"truncated: its header declares 2\.00 s") as e:
        read_audio(cut)
    msg = _check_one_line(e, cut)
    assert "holds only 1.00 s" in msg and "re-export or re-download" in msg


def test_wav_header_edge_cases_are_not_truncation(tmp_path):
    import struct

    path = tmp_path / "s.wav"
    sf.write(path, _tone(16000, 0.5), 16000)
    data = bytearray(path.read_bytes())
    i = data.find(b"data")
    # a chunk after the sound data (metadata) is not a size mismatch
    tail = data + b"LIST" + struct.pack("<I", 4) + b"INFO"
    tail[4:8] = struct.pack("<I", len(tail) - 8)
    (tmp_path / "tail.wav").write_bytes(bytes(tail))
    assert len(read_audio(tmp_path / "tail.wav", sr=None)[0]) == 8000
    # a streamed WAV whose writer never filled in the size (0xFFFFFFFF) is read as is
    open_size = bytearray(data)
    open_size[i + 4 : i + 8] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "open.wav").write_bytes(bytes(open_size))
    assert len(read_audio(tmp_path / "open.wav", sr=None)[0]) == 8000


@pytest.mark.parametrize("ext", [".flac", ".ogg"])
def test_truncated_compressed_file_is_refused(tmp_path, ext):
    full = tmp_path / f"s{ext}"
    sf.write(full, _tone(16000, 2.0), 16000)
    cut = _cut(full)
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        read_audio(cut)
    _check_one_line(e, cut)


def _movie(path: Path, options: dict | None = None) -> Path:
    sr_in, fps, n = 8000, 10, 30
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n))
    return write_video(
        path, frames, fps, (64, 48), audio=_tone(sr_in, n / fps), sr=sr_in, options=options
    )


@pytest.mark.parametrize(
    ("ext", "options"), [(".mp4", {"movflags": "faststart"}), (".mkv", None), (".avi", None)]
)
def test_truncated_soundtrack_is_refused(tmp_path, ext, options):
    """A movie cut at three quarters: the soundtrack stops long before its declared end."""
    full = _movie(tmp_path / f"m{ext}", options)
    x, sr = read_audio(full, sr=None)
    assert abs(len(x) / sr - 3.0) < 0.25
    cut = _cut(full, 0.75)
    with pytest.raises(InputError, match=r"soundtrack is truncated or corrupt after [\d.]+ s") as e:
        read_audio(cut)
    assert "re-export or re-download" in _check_one_line(e, cut)


def test_empty_file_and_folder(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\)") as e:
        read_audio(empty)
    _check_one_line(e, empty)
    folder = tmp_path / "sound.wav"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder") as e:
        read_audio(folder)
    _check_one_line(e, folder)


def test_garbage_flac_has_no_sampling_rate(tmp_path):
    path = tmp_path / "x.flac"
    path.write_text("not audio at all\n" * 10)
    with pytest.raises(InputError) as e:
        read_audio(path)
    _check_one_line(e, path)
