"""Stimulus reconstruction written back as files: frames -> mp4, mel -> wav, embedding -> sentence.

The decoder reconstructs each modality's *input features*, one vector per TR. These
writers turn them back into something to watch, hear and read:

- :func:`write_frames_video`: reconstructed frames ``(n_trs, [n_frames,] C, H, W)`` to an
  H.264 mp4 (each TR's frames held for their share of the TR), via
  :func:`cinebrain.io.video.write_video`.
- :func:`write_mel_wav`: a reconstructed log-mel spectrogram ``(n_trs, [n_frames,] n_mels)``
  to a wav, by Griffin-Lim phase reconstruction (``librosa.feature.inverse.mel_to_audio``).
  One mel frame per TR is a coarse description of 1.5 s of sound; expect a drone of the
  right spectral colour, not intelligible speech.
- :func:`nearest_sentences` / :func:`write_nearest_text`: for each TR, the annotation
  sentence whose embedding is closest (cosine) to the reconstructed embedding.

If the features were standardised before training, pass the ``mean`` and ``std`` used,
so values go back to pixel / decibel units.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cinebrain._files import atomic_path

__all__ = [
    "frames_to_uint8",
    "mel_to_waveform",
    "nearest_sentences",
    "write_frames_video",
    "write_mel_wav",
    "write_nearest_text",
]


def _unstandardize(
    x: np.ndarray, mean: np.ndarray | float | None, std: np.ndarray | float | None
) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if std is not None:
        x = x * np.asarray(std, dtype=np.float32).reshape(x.shape[1:] if np.ndim(std) > 0 else ())
    if mean is not None:
        x = x + np.asarray(mean, dtype=np.float32).reshape(x.shape[1:] if np.ndim(mean) > 0 else ())
    return x


def frames_to_uint8(
    frames: np.ndarray,
    value_range: tuple[float, float] | None = None,
    upscale: int = 1,
) -> np.ndarray:
    """Float frames ``(n, C, H, W)`` (C = 1 or 3) -> RGB uint8 ``(n, H', W', 3)`` with even H', W'.

    value_range : (low, high) mapped to 0 and 255; default: the 1st and 99th percentiles
        of ``frames`` (reconstructions are rarely in a known range).
    upscale : integer nearest-neighbour magnification (small decoder outputs are tiny).
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames must be (n, C, H, W) with C 1 or 3, got {frames.shape}")
    lo, hi = value_range if value_range is not None else np.percentile(frames, [1, 99])
    scaled = np.clip((frames - lo) / max(float(hi - lo), 1e-12), 0, 1) * 255
    img = np.round(scaled).astype(np.uint8).transpose(0, 2, 3, 1)  # (n, H, W, C)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if upscale > 1:
        img = img.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, H, W, _ = img.shape
    return np.pad(
        img, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge"
    )  # yuv420p needs even sizes


def write_frames_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    tr: float,
    fps: float = 10.0,
    mean: np.ndarray | float | None = None,
    std: np.ndarray | float | None = None,
    value_range: tuple[float, float] | None = None,
    upscale: int = 1,
    audio: np.ndarray | None = None,
    sr: int | None = None,
) -> Path:
    """Write reconstructed frames as an mp4, atomically.

    Parameters
    ----------
    frames : ndarray (n_trs, C, H, W) or (n_trs, n_frames, C, H, W)
        Reconstructed frames, one (or ``n_frames``) per TR, in the model's input units.
    tr : float
        Seconds per TR: each TR's frames share ``tr`` seconds of the movie.
    fps : float
        Output frame rate; frames are repeated to fill their time.
    mean, std : undo a standardisation (broadcast over the per-TR shape).
    value_range, upscale : see :func:`frames_to_uint8`.
    audio, sr : optional mono soundtrack (e.g. from :func:`mel_to_waveform`).
    """
    from cinebrain.io.video import write_video

    frames = _unstandardize(frames, mean, std)
    per_tr = 1
    if frames.ndim == 5:
        per_tr = frames.shape[1]
        frames = frames.reshape(-1, *frames.shape[2:])  # (n_trs * n_frames, C, H, W)
    img = frames_to_uint8(frames, value_range, upscale)  # (n_images, H, W, 3)
    hold = tr / per_tr  # seconds each image is shown
    n_out = max(1, int(round(len(img) * hold * fps)))
    # Output frame j (at j / fps seconds) shows the image whose interval contains that time.
    order = np.minimum((np.arange(n_out) / fps / hold).astype(int), len(img) - 1)
    H, W = img.shape[1:3]
    return write_video(path, (img[k] for k in order), fps=fps, size=(W, H), audio=audio, sr=sr)


def mel_to_waveform(
    mel: np.ndarray,
    tr: float,
    sr: int = 16000,
    n_fft: int = 512,
    hop_length: int = 160,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: str = "db",
    mean: np.ndarray | float | None = None,
    std: np.ndarray | float | None = None,
    n_iter: int = 32,
) -> np.ndarray:
    """Griffin-Lim audio from a per-TR mel spectrogram.

    Parameters
    ----------
    mel : ndarray (n_trs, n_mels) or (n_trs, n_frames, n_mels)
        Reconstructed mel spectrum per TR (or ``n_frames`` per TR).
    tr : float
        Seconds per TR; each TR's frame(s) are held over its ``tr * sr / hop_length`` STFT
        frames.
    sr, n_fft, hop_length, fmin, fmax : the analysis the mel features came from
        (``cinebrain.features.audio``: 16 kHz, ``fmax = sr / 2``).
    scale : {"db", "log", "power"}
        Units of ``mel``: ``10 log10(power)`` (cinebrain's mel features), natural log of
        power, or power.
    mean, std : undo a standardisation first.
    n_iter : Griffin-Lim iterations.

    Returns
    -------
    ndarray (n_samples,) float32 in [-1, 1], ``n_samples ~= n_trs * tr * sr``.
    """
    import librosa

    mel = _unstandardize(mel, mean, std)
    if mel.ndim == 2:
        mel = mel[:, None, :]
    if mel.ndim != 3:
        raise ValueError(
            f"mel must be (n_trs, n_mels) or (n_trs, n_frames, n_mels), got {mel.shape}"
        )
    n_trs, per_tr, n_mels = mel.shape
    if scale == "db":
        power = 10.0 ** (mel / 10.0)
    elif scale == "log":
        power = np.exp(mel)
    elif scale == "power":
        power = np.maximum(mel, 0.0)
    else:
        raise ValueError(f"scale must be 'db', 'log' or 'power', got {scale!r}")
    frames = power.reshape(n_trs * per_tr, n_mels)
    n_stft = max(1, int(round(n_trs * tr * sr / hop_length)))
    # STFT frame j (at j * hop / sr seconds) takes the mel frame whose interval contains it.
    order = np.minimum(
        (np.arange(n_stft) * hop_length / sr / (tr / per_tr)).astype(int), len(frames) - 1
    )
    M = frames[order].T.astype(np.float32)  # (n_mels, n_stft)
    y = librosa.feature.inverse.mel_to_audio(
        M,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        power=2.0,
        n_iter=n_iter,
        fmin=fmin,
        fmax=fmax,
    )
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return (y / peak * 0.9 if peak > 0 else y).astype(np.float32)


def write_mel_wav(
    path: str | os.PathLike, mel: np.ndarray, tr: float, sr: int = 16000, **kwargs
) -> Path:
    """Griffin-Lim reconstruction of ``mel`` (see :func:`mel_to_waveform`) written as a wav, atomically."""
    import soundfile as sf

    y = mel_to_waveform(mel, tr, sr=sr, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), y, sr, format="WAV", subtype="PCM_16")
    return path


def nearest_sentences(
    embeddings: np.ndarray,
    vocabulary: np.ndarray,
    sentences: Sequence[str],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """For each reconstructed embedding, the vocabulary sentence closest in cosine.

    Parameters
    ----------
    embeddings : (n_trs, d) reconstructed sentence embeddings.
    vocabulary : (n_sentences, d) embeddings of the annotation sentences
        (``cinebrain.features.text_model.embed_texts``).
    sentences : the n_sentences texts.

    Returns
    -------
    texts : list of n_trs sentences;  index : (n_trs,) int;  similarity : (n_trs,) cosine.
    TRs whose embedding is all zeros get index -1, text "" and similarity 0.
    """
    E = np.asarray(embeddings, dtype=np.float64)
    V = np.asarray(vocabulary, dtype=np.float64)
    if E.ndim != 2 or V.ndim != 2 or E.shape[1] != V.shape[1] or len(V) != len(sentences):
        raise ValueError(
            f"embeddings {E.shape}, vocabulary {V.shape} and {len(sentences)} sentences disagree"
        )
    En = np.linalg.norm(E, axis=1, keepdims=True)
    Vn = np.linalg.norm(V, axis=1, keepdims=True)
    sim = (E / np.maximum(En, 1e-12)) @ (V / np.maximum(Vn, 1e-12)).T  # (n_trs, n_sentences)
    index = sim.argmax(axis=1)
    best = sim[np.arange(len(E)), index]
    empty = En[:, 0] == 0
    index[empty], best[empty] = -1, 0.0
    return [sentences[i] if i >= 0 else "" for i in index], index, best


def write_nearest_text(
    path: str | os.PathLike,
    embeddings: np.ndarray,
    vocabulary: np.ndarray,
    sentences: Sequence[str],
    tr: float,
    target: Sequence[str] | None = None,
) -> Path:
    """Write a TSV with, per TR: onset (s), the nearest sentence, its cosine, and (optionally) the true text."""
    import pandas as pd

    texts, _, sim = nearest_sentences(embeddings, vocabulary, sentences)
    df = pd.DataFrame(
        {
            "tr": np.arange(len(texts)),
            "onset": np.arange(len(texts)) * tr,
            "reconstructed": texts,
            "cosine": np.round(sim, 4),
        }
    )
    if target is not None:
        df["presented"] = list(target)
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    return path
