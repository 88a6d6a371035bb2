"""cinebrain.features.audio: envelope and log-mel spectrogram."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from cinebrain.errors import InputError
from cinebrain.features.audio import extract_audio
from cinebrain.timing import resample

SR = 16000


def _tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_frame_grid_covers_the_audio():
    y = _tone(440, 2.0)[: 2 * SR + 123]
    res = extract_audio((y, SR), hop_s=0.05)
    env, mel = res["envelope"], res["mel"]
    n = -(-y.size // 800)
    assert env.n_samples == mel.n_samples == n
    np.testing.assert_allclose(env.onsets, np.arange(n) * 0.05)
    assert env.durations[0] == pytest.approx(0.05)
    assert env.end == pytest.approx(y.size / SR)
    assert mel.values.shape == (n, 64) and mel.values.dtype == np.float32
    assert len(mel.feature_names) == 64


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_tone_peaks_in_the_right_mel_band(freq):
    mel = extract_audio((_tone(freq, 1.0), SR), spaces=("mel",))["mel"]
    centres = np.array([float(n.split("_")[1][:-2]) for n in mel.feature_names])
    peak = int(np.argmax(mel.values[5:-5].mean(axis=0)))
    assert peak == int(np.argmin(np.abs(centres - freq)))


def test_envelope_follows_loudness(tmp_path):
    y = np.concatenate([_tone(500, 1.0, amp=0.1), _tone(500, 1.0, amp=0.5), np.zeros(SR, np.float32)])
    path = tmp_path / "steps.wav"
    sf.write(path, y, SR)
    env = extract_audio(path, spaces=("envelope",))["envelope"]
    assert list(env.feature_names) == ["rms"]
    per_s = resample(env, 1.0, 3)[:, 0]  # RMS of a sine = amp / sqrt(2)
    np.testing.assert_allclose(per_s, [0.1 / np.sqrt(2), 0.5 / np.sqrt(2), 0.0], atol=2e-3)


def test_resamples_input_rate():
    res = extract_audio((_tone(1000, 1.0, sr=44100), 44100), sr=SR, spaces=("envelope",))
    assert res["envelope"].n_samples == 20


def test_rejects_unknown_space():
    with pytest.raises(InputError, match="unknown audio feature space"):
        extract_audio((_tone(440, 0.5), SR), spaces=("pitch",))
