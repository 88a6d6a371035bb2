"""Auditory features: loudness envelope and log-mel spectrogram.

Both spaces share one time grid: frame ``k`` covers ``[k * hop_s, (k + 1) * hop_s)``
seconds of the soundtrack (the last frame ends with the audio). The envelope is the RMS
of exactly those samples; the mel spectrogram's analysis window (``n_fft`` samples) is
centred on the same interval, so both describe the same stretch of sound.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace

AUDIO_SPACES = ("envelope", "mel")


def _frame_grid(n_samples: int, hop: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and durations (s) of ``ceil(n_samples / hop)`` frames of ``hop`` samples."""
    n_frames = -(-n_samples // hop)
    starts = np.arange(n_frames) * hop
    stops = np.minimum(starts + hop, n_samples)
    return starts / sr, (stops - starts) / sr


def extract_audio(
    source: str | os.PathLike | tuple[np.ndarray, int],
    spaces: Sequence[str] = AUDIO_SPACES,
    n_mels: int = 64,
    sr: int = 16000,
    hop_s: float = 0.05,
    n_fft: int | None = None,
    fmin: float = 30.0,
    fmax: float | None = None,
) -> dict[str, FeatureSpace]:
    """Extract auditory feature spaces from a sound file, a movie's soundtrack or samples.

    Parameters
    ----------
    source : path or (samples, sr)
        A file :func:`cinebrain.io.audio.read_audio` reads (wav, flac, a movie...), or a mono
        signal ``(n_samples,)`` and its sampling rate in Hz.
    spaces : sequence of {"envelope", "mel"}
    n_mels : int
        Number of mel bands.
    sr : int
        Sampling rate the audio is analysed at, Hz (resampled if needed).
    hop_s : float
        Frame step, seconds (the samples of the feature spaces).
    n_fft : int or None
        FFT window, samples; default: the smallest power of two >= max(2 * hop, 512).
    fmin, fmax : float
        Frequency range of the mel bands, Hz (``fmax`` defaults to ``sr / 2``).

    Returns
    -------
    dict name -> FeatureSpace, ``method="mean"``, float32
        ``envelope``: ``(n_frames, 1)`` RMS amplitude of each frame.
        ``mel``: ``(n_frames, n_mels)`` log power in decibels (``10 log10(power + 1e-10)``),
        feature names with each band's centre frequency.
    """
    import librosa

    spaces = tuple(spaces)
    unknown = [s for s in spaces if s not in AUDIO_SPACES]
    if unknown or not spaces:
        raise InputError("features.audio", f"unknown audio feature space(s) {unknown or '(none given)'}",
                         f"use some of {list(AUDIO_SPACES)}")
    if not hop_s > 0 or n_mels < 1 or sr <= 0:
        raise InputError("features.audio", f"hop_s, n_mels and sr must be positive, got {hop_s}, {n_mels}, {sr}")
    if isinstance(source, tuple):
        y, in_sr = np.asarray(source[0], dtype=np.float32).reshape(-1), int(source[1])
        if in_sr != sr:
            y = librosa.resample(y, orig_sr=in_sr, target_sr=sr).astype(np.float32)
        where = "audio samples"
        if y.size == 0 or not np.all(np.isfinite(y)):
            raise InputError(where, "are empty or not finite", "give a mono float signal")
    else:
        from cinebrain.io.audio import read_audio

        y, sr = read_audio(source, sr=sr)
        where = str(source)
    hop = max(1, int(round(hop_s * sr)))
    onsets, durations = _frame_grid(y.size, hop, sr)
    n_frames = onsets.size
    meta = {"source": where, "sr": sr, "hop_s": hop / sr}
    out: dict[str, FeatureSpace] = {}
    if "envelope" in spaces:
        padded = np.zeros(n_frames * hop, np.float64)
        padded[: y.size] = y
        counts = np.maximum(durations * sr, 1)
        rms = np.sqrt((padded.reshape(n_frames, hop) ** 2).sum(axis=1) / counts)
        out["envelope"] = FeatureSpace("envelope", rms[:, None], onsets, durations,
                                       feature_names=["rms"], method="mean", meta=dict(meta))
    if "mel" in spaces:
        if n_fft is None:
            n_fft = int(2 ** np.ceil(np.log2(max(2 * hop, 512))))
        # Centre window k on [k * hop, (k + 1) * hop): pad so frame k starts at
        # k * hop + hop / 2 - n_fft / 2 in the original signal.
        left = n_fft // 2 - hop // 2
        total = (n_frames - 1) * hop + n_fft
        padded = np.zeros(total, np.float32)
        padded[left : left + y.size] = y[: total - left]
        S = librosa.feature.melspectrogram(
            y=padded, sr=sr, n_fft=n_fft, hop_length=hop, center=False, n_mels=n_mels,
            fmin=fmin, fmax=fmax, power=2.0,
        )[:, :n_frames]
        logmel = 10.0 * np.log10(S.T + 1e-10)
        freqs = librosa.mel_frequencies(n_mels=n_mels + 2, fmin=fmin, fmax=fmax or sr / 2)[1:-1]
        out["mel"] = FeatureSpace("mel", logmel, onsets, durations,
                                  feature_names=[f"mel_{f:.0f}Hz" for f in freqs], method="mean",
                                  meta=dict(meta, n_fft=n_fft))
    return {s: out[s] for s in spaces}
