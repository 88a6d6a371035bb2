"""Video reading (streamed, frame by frame) and writing, with PyAV.

:class:`VideoReader` validates a movie when it is opened and decodes it one frame at a
time, resized by FFmpeg's scaler, so a feature-length film never sits in memory. Frame
times are stimulus seconds from the first frame. A file that is truncated or corrupt
raises :class:`~cinebrain.errors.InputError`, also when the damage is found mid-stream or
when the file simply stops long before its declared duration.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from cinebrain._files import atomic_path
from cinebrain.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg")
_CONTAINER_FORMATS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".avi": "avi",
}
_REEXPORT = "re-export or re-download the file"
_NOT_A_VIDEO_FIX = "give a movie file (mp4, mkv, avi or mov)"
# FFmpeg demuxers that read a single still image (png_pipe, jpeg_pipe, ... and image2).
_IMAGE_DEMUXERS = ("image2", "image2pipe")
# Errors FFmpeg raises on damaged input (av.error.FFmpegError subclasses ValueError/OSError).
_DECODE_ERRORS = (av.error.FFmpegError, OSError, EOFError)


def _truncation_tolerance(duration: float, fps: float) -> float:
    """Seconds a decoded stream may fall short of its declared duration before we call it
    truncated: a few frames (encoder delay, rounding) or 2 % of the duration."""
    return max(5.0 / fps if fps > 0 else 0.5, 0.02 * duration)


class VideoReader:
    """A validated video file, decoded frame by frame.

    Parameters
    ----------
    path : str or PathLike
        mp4, m4v, mkv, avi or mov file (anything FFmpeg can demux and decode).

    Attributes
    ----------
    path : Path
    fps : float
        Average frame rate (frames per second).
    n_frames : int
        Number of frames, from the container header or ``duration * fps`` (an estimate:
        some containers do not store it).
    duration : float
        Declared duration of the video stream, seconds.
    width, height : int
        Native frame size, pixels.
    has_audio : bool
        Whether the file has an audio stream.

    Raises
    ------
    InputError
        The file is missing or empty, is not a video (a still image such as a PNG or
        JPEG renamed ``.mp4``, or a video stream with fewer than 2 frames), has no video
        stream, or has no decodable frame.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(
                self.path,
                "video file not found",
                "check the path (paths in a study file are relative to its folder)",
            )
        if not self.path.is_file():
            raise InputError(
                self.path, "is a folder, not a video file", "give the path of the movie file"
            )
        if self.path.stat().st_size == 0:
            raise InputError(self.path, "the video file is empty (0 bytes)", _REEXPORT)
        try:
            with av.open(str(self.path)) as container:
                self._read_header(container)
                n_decoded = self._count_frames(container, 2)
        except InputError:
            raise
        except _DECODE_ERRORS as e:
            raise InputError(
                self.path,
                f"cannot be opened as a video ({_reason(e)})",
                f"give an mp4, mkv, avi or mov movie; if it is one, it is truncated or corrupt: {_REEXPORT}",
            ) from None
        if n_decoded == 0:
            raise InputError(
                self.path,
                "the video stream has no decodable frames (truncated or corrupt)",
                _REEXPORT,
            )
        if n_decoded < 2:
            raise InputError(
                self.path,
                f"not a video: its {self._codec} stream holds a single frame (a still image)",
                _NOT_A_VIDEO_FIX,
            )

    # ------------------------------------------------------------------ header
    def _read_header(self, container: Any) -> None:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise InputError(
                self.path,
                f"has no video stream (streams: {', '.join(kinds)})",
                "give a movie file; an audio-only file belongs in the study's stimulus.audio",
            )
        stream = container.streams.video[0]
        self._codec = str(stream.codec_context.name or "video")
        demuxer = str(container.format.name or "")
        if demuxer.endswith("_pipe") or demuxer in _IMAGE_DEMUXERS:
            raise InputError(
                self.path,
                f"not a video: it is a {self._codec} still image (FFmpeg reads it with its "
                f"{demuxer} demuxer), whatever its extension",
                _NOT_A_VIDEO_FIX,
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        if self.fps <= 0:
            raise InputError(self.path, "the video stream declares no frame rate", _REEXPORT)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        n_frames = int(stream.frames or 0)
        self._header_frames = n_frames
        if n_frames <= 0:
            n_frames = int(round(duration * self.fps))
        if duration <= 0 and n_frames > 0:
            duration = n_frames / self.fps
        self.duration = float(duration)
        self.n_frames = int(n_frames)
        self.width = int(stream.codec_context.width)
        self.height = int(stream.codec_context.height)
        self.has_audio = bool(container.streams.audio)
        if self.width <= 0 or self.height <= 0:
            raise InputError(self.path, "the video stream has no frame size", _REEXPORT)

    def _count_frames(self, container: Any, limit: int) -> int:
        """Decode up to ``limit`` frames from the start; how many there were."""
        n = 0
        for _ in container.decode(video=0):
            n += 1
            if n >= limit:
                break
        return n

    # ------------------------------------------------------------------ frames
    def iter_frames(
        self, size: tuple[int, int] | None = (160, 90), gray: bool = False
    ) -> Iterator[tuple[float, np.ndarray]]:
        """Decode the movie one frame at a time.

        Parameters
        ----------
        size : (width, height) or None
            Output frame size in pixels (FFmpeg's scaler resizes each frame; the aspect
            ratio is not preserved). ``None`` keeps the native size.
        gray : bool
            Yield luminance frames ``(H, W)`` instead of RGB ``(H, W, 3)``.

        Yields
        ------
        time_s : float
            Presentation time of the frame, seconds from the first frame.
        frame : ndarray, shape (H, W, 3) or (H, W), uint8

        Raises
        ------
        InputError
            The file is truncated or corrupt (a decoding error, or the stream ends long
            before its declared duration).
        """
        width, height = (self.width, self.height) if size is None else (int(size[0]), int(size[1]))
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be positive (width, height), got {size}")
        fmt = "gray" if gray else "rgb24"
        n = 0
        t = 0.0
        start_pts: int | None = None
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                time_base = stream.time_base
                # AVI stores no presentation times: with B-frames the demuxer's pts are
                # out of order, so frames are timed by their index.
                use_pts = "avi" not in container.format.name
                frames = container.decode(video=0)
                while True:
                    try:
                        frame = next(frames)
                    except StopIteration:
                        break
                    if use_pts and frame.pts is not None and time_base is not None:
                        if start_pts is None:
                            start_pts = frame.pts
                        t_pts = float((frame.pts - start_pts) * time_base)
                        if n and t_pts <= t:  # timestamps not increasing: trust the index
                            use_pts = False
                        t = t_pts if use_pts else n / self.fps
                    else:
                        t = n / self.fps
                    img = frame.reformat(width=width, height=height, format=fmt).to_ndarray()
                    if gray and img.ndim == 3:
                        img = img[..., 0]
                    n += 1
                    yield t, np.ascontiguousarray(img, dtype=np.uint8)
        except _DECODE_ERRORS as e:
            raise self._truncated(n, t, _reason(e)) from None
        if n == 0:
            raise self._truncated(0, 0.0, "no frame could be decoded")
        covered = t + 1.0 / self.fps
        # The header's frame count survives truncation where the duration may not (an AVI
        # without its index recomputes the duration from what is left).
        declared = max(self.duration, self._header_frames / self.fps)
        if declared - covered > _truncation_tolerance(declared, self.fps):
            raise self._truncated(
                n, t, f"the stream ends at {covered:.2f} s of a declared {declared:.2f} s"
            )

    def _truncated(self, n: int, t: float, reason: str) -> InputError:
        return InputError(
            self.path,
            f"the video is truncated or corrupt after {n} frames (t={t:.2f}s; {reason})",
            _REEXPORT,
        )

    def info(self) -> dict[str, Any]:
        """The header attributes as a dict (JSON-serialisable)."""
        return {
            "path": str(self.path),
            "fps": self.fps,
            "n_frames": self.n_frames,
            "duration": self.duration,
            "width": self.width,
            "height": self.height,
            "has_audio": self.has_audio,
        }

    def __repr__(self) -> str:
        return (
            f"VideoReader({str(self.path)!r}, {self.width}x{self.height}, {self.fps:g} fps, "
            f"{self.duration:.2f} s, audio={self.has_audio})"
        )


def read_video_info(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a video and return its header: ``path, fps, n_frames, duration (s), width,
    height, has_audio``."""
    return VideoReader(path).info()


def _reason(e: BaseException) -> str:
    """A short, single-line reason from an FFmpeg / OS error."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    size: tuple[int, int],
    audio: np.ndarray | None = None,
    sr: int | None = None,
    crf: int = 18,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames (and an optional mono soundtrack) to an H.264 movie, atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file; the container follows the extension (.mp4, .m4v, .mov, .mkv, .avi).
    frames : iterable of ndarray, each shape (height, width, 3), uint8
        RGB frames, consumed one at a time (may be a generator).
    fps : float
        Frame rate, frames per second.
    size : (width, height)
        Frame size in pixels. yuv420p needs even sizes: an odd width or height is
        encoded one pixel larger (each frame rescaled by FFmpeg).
    audio : ndarray, shape (n_samples,), float32 in [-1, 1], optional
        Mono soundtrack, encoded as AAC and interleaved with the video.
    sr : int, optional
        Sampling rate of ``audio`` in Hz (required with ``audio``).
    crf : int
        x264 constant rate factor (lower is higher quality; 18 is visually lossless).
    options : dict, optional
        Extra container options, e.g. ``{"movflags": "faststart"}``.

    Returns
    -------
    Path
        ``path``, written only once encoding has finished.
    """
    path = Path(path)
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive (width, height), got {size}")
    enc_width, enc_height = width + width % 2, height + height % 2
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if audio is not None:
        if not sr or sr <= 0:
            raise ValueError("sr (Hz) is required with audio")
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    container_format = _CONTAINER_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(
            f"unsupported video extension {path.suffix!r}; use one of {sorted(_CONTAINER_FORMATS)}"
        )
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=container_format, options=options or {}) as container:
            vstream = container.add_stream("libx264", rate=rate)
            vstream.width, vstream.height = enc_width, enc_height
            vstream.pix_fmt = "yuv420p"
            # AVI cannot store presentation times, so no B-frames (frames stay in order).
            # One encoder thread: x264's threaded encodes differ from run to run, and a
            # given seed must always give the same movie.
            vstream.thread_count = 1
            vstream.options = {
                "crf": str(crf),
                "preset": "veryfast",
                **({"bf": "0"} if container_format == "avi" else {}),
            }
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=int(sr))
                astream.layout = "mono"
            audio_done = 0
            chunk = 1024  # AAC frame size

            def mux_audio_until(t_end: float | None) -> None:
                nonlocal audio_done
                if astream is None or audio is None:
                    return
                stop = len(audio) if t_end is None else min(len(audio), int(t_end * sr))
                while audio_done < stop:
                    block = audio[audio_done : audio_done + chunk]
                    aframe = av.AudioFrame.from_ndarray(
                        block[None, :], format="fltp", layout="mono"
                    )
                    aframe.sample_rate = int(sr)
                    aframe.pts = audio_done
                    container.mux(astream.encode(aframe))
                    audio_done += len(block)

            for i, img in enumerate(frames):
                img = np.asarray(img)
                if img.shape != (height, width, 3) or img.dtype != np.uint8:
                    raise ValueError(
                        f"frame {i} has shape {img.shape} dtype {img.dtype}; expected ({height}, {width}, 3) uint8"
                    )
                vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                if (enc_width, enc_height) != (width, height):
                    vframe = vframe.reformat(width=enc_width, height=enc_height)
                vframe.pts = i
                vframe.time_base = 1 / rate
                container.mux(vstream.encode(vframe))
                # Interleave: keep the soundtrack up to date with the picture, so the muxer
                # never buffers a long stretch of one stream.
                mux_audio_until((i + 1) / float(rate))
            container.mux(vstream.encode(None))
            mux_audio_until(None)
            if astream is not None:
                container.mux(astream.encode(None))
    return path
