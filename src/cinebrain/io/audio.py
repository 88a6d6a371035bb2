"""Audio reading: a sound file or a movie's soundtrack, as mono float32 at a chosen rate.

Sound files (wav, flac, ogg, ...) are read with soundfile, the soundtrack of a video
container with PyAV. Both are read block by block, downmixed to mono (channel mean) and
resampled with soxr's streaming resampler, so only the output is ever held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from cinebrain.errors import InputError
from cinebrain.io.video import VIDEO_EXTENSIONS, _reason

SOUND_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".opus")
_BLOCK = 65536  # samples per block read from a sound file
_REEXPORT = "re-export or re-download the file"


def read_audio(path: str | os.PathLike, sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read a sound file or a video's soundtrack as mono float32.

    Parameters
    ----------
    path : str or PathLike
        wav / flac / ogg (soundfile) or a video container (mp4, mkv, avi, mov; PyAV).
    sr : int or None
        Output sampling rate in Hz; ``None`` keeps the file's own rate.

    Returns
    -------
    samples : ndarray, shape (n_samples,), float32
        Mono signal (mean over channels), nominally in [-1, 1].
    sr : int
        Its sampling rate, Hz.

    Raises
    ------
    InputError
        Missing file, unreadable format, a video without an audio stream, a truncated
        file, no samples, or non-finite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path,
            "audio file not found",
            "check the path (paths in a study file are relative to its folder)",
        )
    if sr is not None and sr <= 0:
        raise ValueError(f"sr must be > 0 Hz, got {sr}")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        samples, out_sr = _read_av(path, sr)
    else:
        try:
            samples, out_sr = _read_soundfile(path, sr)
        except sf.LibsndfileError:
            # Not something libsndfile knows (e.g. m4a/aac): let FFmpeg try.
            samples, out_sr = _read_av(path, sr)
    if samples.size == 0:
        raise InputError(path, "the audio has no samples", "give a file with sound in it")
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.argmax(bad))
        raise InputError(
            path,
            f"{int(bad.sum())} audio samples are NaN or infinite (first at {first / out_sr:.3f} s)",
            _REEXPORT,
        )
    return samples, out_sr


def _resample_blocks(blocks: Iterator[np.ndarray], in_sr: int, sr: int | None) -> np.ndarray:
    """Concatenate mono float32 blocks, resampled from ``in_sr`` to ``sr`` on the fly."""
    parts: list[np.ndarray] = []
    if sr is None or sr == in_sr:
        parts.extend(blocks)
    else:
        stream = soxr.ResampleStream(in_sr, sr, 1, dtype="float32", quality="HQ")
        for block in blocks:
            parts.append(stream.resample_chunk(block))
        parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    if not parts:
        return np.zeros(0, np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def _read_soundfile(path: Path, sr: int | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        in_sr = int(f.samplerate)

        def blocks() -> Iterator[np.ndarray]:
            try:
                for block in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                    yield block.mean(axis=1).astype(np.float32, copy=False)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise InputError(
                    path, f"the audio is truncated or corrupt ({e})", _REEXPORT
                ) from None

        samples = _resample_blocks(blocks(), in_sr, sr)
    return samples, int(sr or in_sr)


def _read_av(path: Path, sr: int | None) -> tuple[np.ndarray, int]:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(
            path,
            f"cannot be read as audio or video ({_reason(e)})",
            "give a wav/flac/ogg file or a movie with a soundtrack",
        ) from None
    with container:
        if not container.streams.audio:
            raise InputError(
                path,
                "has no audio stream",
                "give a separate audio file in the study's stimulus.audio (wav or flac)",
            )
        stream = container.streams.audio[0]
        in_sr = int(stream.rate or stream.codec_context.sample_rate)
        # Planar float keeps channels apart, so the downmix is a plain mean.
        to_float = av.AudioResampler(format="fltp")
        n_done = 0

        def blocks() -> Iterator[np.ndarray]:
            nonlocal n_done
            try:
                for frame in container.decode(stream):
                    for out in to_float.resample(frame):
                        block = out.to_ndarray().mean(axis=0).astype(np.float32, copy=False)
                        n_done += block.size
                        yield block
            except (av.error.FFmpegError, OSError, EOFError) as e:
                raise InputError(
                    path,
                    f"the soundtrack is truncated or corrupt after {n_done / in_sr:.2f} s "
                    f"({_reason(e)})",
                    _REEXPORT,
                ) from None

        samples = _resample_blocks(blocks(), in_sr, sr)
    return samples, int(sr or in_sr)
