"""Movie clips for self-supervised video models: frames on a fixed grid, the clips of the
training part of the movie, and (previous clip, next clip) pairs.

The video models (:mod:`cinebrain.models.vqvae`, :mod:`cinebrain.models.videogpt`) learn
from the stimulus alone, never from brain data. Which frames they may see is still a
split: by default only the stimulus segments of the runs used to train the encoding
model, so that nothing of a held-out run's movie enters the features' training (frames
of held-out segments are excluded, and no clip crosses a segment's edge).

Frames are grey (or RGB) float32 in ``[-0.5, 0.5]``, shape ``(T, H, W)`` or
``(T, H, W, 3)``; a clip tensor is ``(C, T, H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cinebrain.errors import InputError


def movie_frames(path: str | os.PathLike, size: tuple[int, int], fps: float,
                 gray: bool = True, start: float = 0.0,
                 end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a movie onto a frame grid of ``fps`` frames per second.

    Each output frame ``k`` covers stimulus time ``[start + k / fps, start + (k + 1) / fps)``
    and is the mean of the decoded frames whose presentation time falls in it (a frame
    rate that divides the movie's gives plain block averages); a grid frame that no
    decoded frame falls in repeats the previous one.

    Parameters
    ----------
    path : movie file (anything :class:`cinebrain.io.video.VideoReader` opens)
    size : (width, height) of the output frames
    fps : output frames per second (at most the movie's)
    gray : luminance frames (else RGB)
    start, end : the part of the movie to read, seconds (default: all of it)

    Returns
    -------
    frames : ndarray (T, H, W) or (T, H, W, 3), float32 in [-0.5, 0.5]
    onsets : ndarray (T,), seconds: each frame's start time
    """
    from cinebrain.io.video import VideoReader

    reader = VideoReader(path)
    if not 0 < fps <= reader.fps + 1e-6:
        raise InputError(path, f"frame rate {fps} is not in (0, {reader.fps:g}] (the movie's)",
                         "choose videogpt.video.fps at most the movie's frame rate")
    end = reader.duration if end is None else min(float(end), reader.duration)
    n_out = int(np.floor((end - start) * fps + 1e-6))
    if n_out < 1:
        raise InputError(path, f"no whole frame at {fps:g} fps between {start:g} s and {end:g} s",
                         "check the segment and the frame rate")
    w, h = int(size[0]), int(size[1])
    shape = (n_out, h, w) if gray else (n_out, h, w, 3)
    acc = np.zeros(shape, np.float64)
    count = np.zeros(n_out, np.int64)
    for t, frame in reader.iter_frames(size=(w, h), gray=gray):
        k = int(np.floor((t - start) * fps + 1e-6))
        if k < 0:
            continue
        if k >= n_out:
            break
        acc[k] += frame
        count[k] += 1
    for k in range(n_out):
        if count[k] == 0:
            if k == 0:
                raise InputError(path, f"no decoded frame in the first {1 / fps:g} s after "
                                 f"{start:g} s", "check the movie and the segment")
            acc[k], count[k] = acc[k - 1], 1
    frames = (acc / count.reshape((-1,) + (1,) * (acc.ndim - 1)) / 255.0 - 0.5).astype(np.float32)
    return frames, start + np.arange(n_out) / fps


def segment_frames(onsets: np.ndarray, fps: float,
                   segments: Sequence[tuple[float, float]]) -> list[tuple[int, int]]:
    """Frame ranges ``[i0, i1)`` of the frames lying wholly inside each segment (seconds),
    merged where segments touch or overlap."""
    ranges = []
    for a, b in sorted(segments):
        i0 = int(np.searchsorted(onsets, a - 1e-6))
        i1 = int(np.searchsorted(onsets + 1.0 / fps, b + 1e-6, side="right"))
        if i1 > i0:
            if ranges and i0 <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], max(ranges[-1][1], i1))
            else:
                ranges.append((i0, i1))
    return ranges


def clip_starts(ranges: Sequence[tuple[int, int]], length: int, stride: int) -> np.ndarray:
    """Start frames of every window of ``length`` frames, every ``stride`` frames, inside
    one of the ranges (no window crosses a range's edge)."""
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    starts = [np.arange(a, b - length + 1, stride) for a, b in ranges if b - a >= length]
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


def split_starts(starts: np.ndarray, length: int,
                 val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation windows: the last ``val_fraction`` of the windows (in time)
    validate, and the training windows that overlap a validation window are dropped."""
    starts = np.sort(np.asarray(starts, np.int64))
    n_val = int(round(len(starts) * val_fraction))
    if val_fraction > 0 and n_val == 0 and len(starts) > 1:
        n_val = 1
    if n_val == 0:
        return starts, starts[:0]
    val = starts[len(starts) - n_val:]
    train = starts[starts + length <= val[0]]
    return train, val


def _clip(frames: np.ndarray, s: int, n: int) -> torch.Tensor:
    c = frames[s:s + n]
    c = c[None] if c.ndim == 3 else np.moveaxis(c, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(c, np.float32))


class ClipDataset(Dataset):
    """Clips of ``clip_frames`` frames starting at ``starts``: ``{"video": (C, T, H, W)}``."""

    def __init__(self, frames: np.ndarray, starts: Sequence[int], clip_frames: int):
        self.frames, self.starts, self.n = frames, np.asarray(starts, np.int64), int(clip_frames)
        if len(self.starts) and self.starts.max() + self.n > len(frames):
            raise ValueError("a clip runs past the last frame")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"video": _clip(self.frames, int(self.starts[i]), self.n)}


class ClipPairDataset(Dataset):
    """(previous, next) clip pairs: windows of ``2 * clip_frames`` frames starting at
    ``starts``; ``{"previous": (C, T, H, W), "next": (C, T, H, W)}``, the next clip
    directly after the previous one."""

    def __init__(self, frames: np.ndarray, starts: Sequence[int], clip_frames: int):
        self.frames, self.starts, self.n = frames, np.asarray(starts, np.int64), int(clip_frames)
        if len(self.starts) and self.starts.max() + 2 * self.n > len(frames):
            raise ValueError("a clip pair runs past the last frame")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[i])
        return {"previous": _clip(self.frames, s, self.n),
                "next": _clip(self.frames, s + self.n, self.n)}


class CodePairDataset(Dataset):
    """(previous, next) clip pairs as precomputed codes: ``codes[i]`` are the codes of the
    clip starting at ``clip_starts[i]``; item ``k`` pairs the clip at ``starts[k]`` with the
    one at ``starts[k] + clip_frames``. ``{"previous_codes", "next_codes"}`` int64 (the
    frozen VQ-VAE of a GPT encodes every clip once instead of at every step)."""

    def __init__(self, codes: torch.Tensor, clip_starts: Sequence[int], starts: Sequence[int],
                 clip_frames: int):
        index = {int(s): i for i, s in enumerate(clip_starts)}
        try:
            self.pairs = [(index[int(s)], index[int(s) + int(clip_frames)]) for s in starts]
        except KeyError as e:
            raise ValueError(f"no codes for the clip starting at frame {e.args[0]}") from None
        self.codes = codes.long()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a, b = self.pairs[i]
        return {"previous_codes": self.codes[a], "next_codes": self.codes[b]}


def encode_clips(encode, frames: np.ndarray, starts: Sequence[int], clip_frames: int,
                 batch_size: int = 32) -> torch.Tensor:
    """Codes ``(len(starts), t', h', w')`` of the clips starting at ``starts``, by
    ``encode`` (e.g. a VQ-VAE's ``encode``) under ``torch.no_grad``."""
    ds = ClipDataset(frames, starts, clip_frames)
    out = []
    with torch.no_grad():
        for i in range(0, len(ds), batch_size):
            out.append(encode(torch.stack([ds[j]["video"]
                                           for j in range(i, min(i + batch_size, len(ds)))])))
    return torch.cat(out)
