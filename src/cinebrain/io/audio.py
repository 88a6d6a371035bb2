"""Audio reading: a sound file or a movie's soundtrack, as mono float32 at a chosen rate.

Sound files (wav, flac, ogg, ...) are read with soundfile, the soundtrack of a video
container with PyAV. Both are read block by block, downmixed to mono (channel mean) and
resampled with soxr's streaming resampler, so only the output is ever held in memory.

A truncated file is an :class:`~cinebrain.errors.InputError`, never silently shorter
audio: a WAV/AIFF whose data chunk is shorter than its header declares, a sound file
that yields fewer frames than it declares, and a soundtrack that ends well before the
declared duration of its stream (the same rule as :class:`~cinebrain.io.video.VideoReader`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from cinebrain.errors import InputError
from cinebrain.io.video import VIDEO_EXTENSIONS, _reason, _truncation_tolerance

SOUND_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".opus")
_BLOCK = 65536  # samples per block read from a sound file
_REEXPORT = "re-export or re-download the file"
_SF_MALFORMED = 3  # libsndfile: "Supported file format but file is malformed"
# libsndfile formats whose frame count is exact (read from the header), not estimated.
_EXACT_FRAMES = ("WAV", "WAVEX", "RF64", "W64", "AIFF", "CAF", "FLAC", "AU")
# Raw elementary streams: FFmpeg only estimates their duration (from the bit rate).
_ESTIMATED_DURATION = ("aac", "mp3", "ac3", "eac3", "dts", "truehd", "adts")


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
    if path.is_dir():
        raise InputError(path, "is a folder, not an audio file", "give the path of the sound file")
    if not path.is_file():
        raise InputError(
            path,
            "audio file not found",
            "check the path (paths in a study file are relative to its folder)",
        )
    if path.stat().st_size == 0:
        raise InputError(path, "the audio file is empty (0 bytes)", _REEXPORT)
    if sr is not None and sr <= 0:
        raise ValueError(f"sr must be > 0 Hz, got {sr}")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        samples, out_sr = _read_av(path, sr)
    else:
        try:
            samples, out_sr = _read_soundfile(path, sr)
        except sf.LibsndfileError as sf_error:
            # Not something libsndfile knows (e.g. m4a/aac): let FFmpeg try.
            try:
                samples, out_sr = _read_av(path, sr)
            except InputError:
                if sf_error.code != _SF_MALFORMED:
                    raise
                # A format libsndfile knows, but damaged: its reason is the useful one.
                raise InputError(
                    path,
                    f"the audio file is truncated or corrupt ({sf_error.error_string.rstrip('.')})",
                    _REEXPORT,
                ) from None
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


def _pcm_data_bytes(path: Path) -> tuple[int, int, int] | None:
    """``(declared, present, bytes_per_frame)`` of a WAV / RF64 / AIFF data chunk.

    ``declared`` is the size the header gives the sound data, ``present`` what the file
    holds after the chunk's start. ``None`` when the file is not one of these, or the
    header leaves the size open (0 or 0xFFFFFFFF: a stream that was never finalised).
    libsndfile quietly shortens a WAV whose data chunk runs past the end of the file, so
    this is the only way to tell a truncated file from a short one.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12:
            return None
        if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
            endian, data_id, fmt_id = "<", b"data", b"fmt "
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            endian, data_id, fmt_id = ">", b"SSND", b"COMM"
        else:
            return None
        ds64_data = None
        frame_bytes = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            start = f.tell()
            if cid == b"ds64":  # RF64: the real sizes are 64-bit, here
                body = f.read(24)
                if len(body) == 24:
                    ds64_data = struct.unpack("<Q", body[8:16])[0]
            elif cid == fmt_id:
                body = f.read(18)
                if endian == "<" and len(body) >= 14:  # WAV fmt: block align at byte 12
                    frame_bytes = struct.unpack("<H", body[12:14])[0]
                elif endian == ">" and len(body) >= 8:  # AIFF COMM: channels, frames, bits
                    channels, _, bits = struct.unpack(">hIh", body[:8])
                    frame_bytes = channels * ((bits + 7) // 8)
            elif cid == data_id:
                declared = csize
                if endian == "<" and csize == 0xFFFFFFFF and ds64_data is not None:
                    declared = ds64_data
                elif csize in (0, 0xFFFFFFFF):
                    return None
                if endian == ">":  # SSND: offset and block size come first
                    declared -= 8
                    start += 8
                return int(declared), int(max(0, size - start)), max(1, int(frame_bytes))
            f.seek(start + csize + (csize & 1))


def _read_soundfile(path: Path, sr: int | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        in_sr = int(f.samplerate)
        declared_frames = int(f.frames)
        n_read = 0

        def blocks() -> Iterator[np.ndarray]:
            nonlocal n_read
            try:
                for block in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                    n_read += block.shape[0]
                    yield block.mean(axis=1).astype(np.float32, copy=False)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise InputError(
                    path,
                    f"the audio is truncated or corrupt after {n_read / in_sr:.2f} s ({e})",
                    _REEXPORT,
                ) from None

        samples = _resample_blocks(blocks(), in_sr, sr)
        exact = f.format in _EXACT_FRAMES
    pcm = _pcm_data_bytes(path)
    if pcm is not None:
        declared, present, frame_bytes = pcm
        if declared - present >= frame_bytes:
            bps = frame_bytes * in_sr
            raise InputError(
                path,
                f"the audio is truncated: its header declares {declared / bps:.2f} s of sound "
                f"but the file holds only {present / bps:.2f} s ({present} of {declared} "
                "data bytes)",
                _REEXPORT,
            )
    short = declared_frames - n_read
    tolerance = 0 if exact else _truncation_tolerance(declared_frames / in_sr, in_sr / 1152) * in_sr
    if short > tolerance:
        raise InputError(
            path,
            f"the audio is truncated or corrupt: it ends at {n_read / in_sr:.2f} s of a "
            f"declared {declared_frames / in_sr:.2f} s",
            _REEXPORT,
        )
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
        in_sr = int(stream.rate or stream.codec_context.sample_rate or 0)
        if in_sr <= 0:
            raise InputError(
                path, "the audio stream declares no sampling rate (corrupt header)", _REEXPORT
            )
        declared = _declared_duration(container, stream)
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
    decoded = n_done / in_sr
    frame_size = int(stream.codec_context.frame_size or 1024)
    if declared > 0 and declared - decoded > _truncation_tolerance(declared, in_sr / frame_size):
        raise InputError(
            path,
            f"the soundtrack is truncated or corrupt after {decoded:.2f} s (the stream ends "
            f"at {decoded:.2f} s of a declared {declared:.2f} s)",
            _REEXPORT,
        )
    return samples, int(sr or in_sr)


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """Seconds the audio stream declares (its own duration, else the container's, or its
    packet count times a constant frame size); 0 when unknown or only estimated from the
    bit rate."""
    names = set(str(container.format.name or "").split(","))
    if names & set(_ESTIMATED_DURATION):
        return 0.0
    tagged = _hms_seconds(stream.metadata.get("DURATION", ""))  # Matroska's per-stream tag
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
    elif tagged is not None:
        declared = tagged
    elif container.duration is not None:
        declared = container.duration / av.time_base
    else:
        declared = 0.0
    # A header's frame count survives truncation where the duration may not (AVI without
    # its index recomputes the duration from what is left).
    frame_size = int(stream.codec_context.frame_size or 0)
    rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    if frame_size > 0 and rate > 0 and stream.frames:
        declared = max(declared, int(stream.frames) * frame_size / rate)
    return declared


def _hms_seconds(text: str) -> float | None:
    """``"HH:MM:SS.fff"`` as seconds, or ``None``."""
    try:
        h, m, sec = str(text).strip().split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None
