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
