"""Torch datasets of windows of consecutive TRs, for deep models with a causal HRF layer.

A model that predicts the response at TR ``t`` from the stimulus at TRs ``<= t`` through
a causal HRF layer with ``history + 1`` taps (:class:`cinebrain.nn.CausalHRF`) needs
``history`` TRs of context before the TRs it is *scored* on; a window carries them. Windows are cut within one run, never across a
run boundary: before a run starts the subject saw nothing of the movie, so positions
before the run's first TR are zero padding (``valid`` False), which is exactly what the
causal convolution of :func:`cinebrain.timing.convolve_hrf` assumes at a run start.

Every TR of every run is scored exactly once per pass over a dataset: window ``j`` of a run
scores run TRs ``[j*stride, j*stride + stride)`` and covers ``[j*stride - history,
j*stride + stride)``, with ``stride = window - history``. ``window = history + 1`` gives one
scored TR per window (its last).

Inputs are arrays already on the TR grid (stimulus features averaged per TR, e.g. by
:func:`cinebrain.timing.resample`), *not* HRF-convolved: the model's HRF layer does that.
Responses are cleaned and z-scored per voxel. A model checks the modalities and shapes
against its own configuration (e.g. :func:`cinebrain.models.autoencoder.windows_for`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cinebrain.errors import InputError

__all__ = ["WindowDataset", "collate_windows"]


class WindowDataset(Dataset):
    """Windows of ``window`` consecutive TRs within one run, for one subject.

    Parameters
    ----------
    inputs : mapping of modality name -> array, shape (n_trs, ...)
        Per-TR stimulus inputs on the subject's TR grid, runs stacked in time: e.g.
        ``video (n_trs, C, H, W)`` frames or ``(n_trs, n_pixels)`` pixel features,
        ``audio (n_trs, n_mels)`` or ``(n_trs, n_frames, n_mels)``, ``text (n_trs, 384)``.
        Arrays are referenced, not copied (memory-maps stay memory-maps).
    responses : array, shape (n_trs, n_voxels), or None
        Cleaned, z-scored responses on the same TR grid. ``None`` for prediction only.
    run_lengths : sequence of int
        TRs per run, summing to ``n_trs``; windows never cross a run boundary.
    window : int
        TRs per window (``W``), ``>= history + 1``.
    history : int
        TRs of causal context needed before a scored TR (the HRF layer's taps minus one).
    subject : str
        Subject name carried by every item.

    Items
    -----
    dict with one key per modality, ``(W, ...)`` float32 (zeros where padded), and
    ``responses (W, n_voxels)`` float32, ``valid (W,)`` bool (a real TR of the run),
    ``scored (W,)`` bool (the TRs this window is scored on), ``tr_index (W,)`` int64
    (row of the stacked arrays, -1 where padded), and ``subject`` str.
    """

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        responses: np.ndarray | None,
        run_lengths: Sequence[int],
        window: int,
        history: int,
        subject: str = "sub-01",
    ) -> None:
        if not inputs:
            raise InputError(
                "inputs", "no stimulus modality given", "pass at least one of video, audio, text"
            )
        run_lengths = [int(n) for n in run_lengths]
        n_trs = sum(run_lengths)
        if any(n <= 0 for n in run_lengths):
            raise InputError("run_lengths", f"got {run_lengths}", "every run needs at least one TR")
        for name, x in inputs.items():
            if len(x) != n_trs:
                raise InputError(
                    f"inputs[{name!r}]",
                    f"has {len(x)} TRs but the runs sum to {n_trs}",
                    "resample every modality onto the responses' TR grid",
                )
        if responses is not None and (responses.ndim != 2 or len(responses) != n_trs):
            raise InputError(
                "responses",
                f"shape {tuple(responses.shape)} does not match {n_trs} TRs",
                "pass responses as (n_trs, n_voxels) on the stimulus TR grid",
            )
        if history < 0 or window < history + 1:
            raise InputError(
                "window",
                f"window={window} with history={history}",
                "use history >= 0 and window >= history + 1",
            )
        self.inputs = dict(inputs)
        self.responses = responses
        self.run_lengths = run_lengths
        self.window = int(window)
        self.history = int(history)
        self.stride = self.window - self.history
        self.subject = str(subject)
        self.n_trs = n_trs
        # One (run_start, first scored TR in run, run length) per window.
        starts = np.cumsum([0, *run_lengths[:-1]])
        self._windows: list[tuple[int, int, int]] = [
            (int(s), j, n)
            for s, n in zip(starts, run_lengths, strict=True)
            for j in range(0, n, self.stride)
        ]
        self._window_table = np.asarray(self._windows, dtype=np.int64).reshape(-1, 3)

    @property
    def n_voxels(self) -> int | None:
        """Voxels of this subject, or None without responses."""
        return None if self.responses is None else int(self.responses.shape[1])

    def __len__(self) -> int:
        return len(self._windows)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The windows ``indices`` (what a DataLoader's batch sampler asks for), gathered in
        one indexing pass per array for the whole batch. Each item's arrays are consecutive
        views of the batch's arrays, so :func:`collate_windows` returns those without copying
        them again; any other collate function sees ordinary items."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < -len(self) or idx.max() >= len(self))):
            raise IndexError(f"window indices out of range for {len(self)} windows")
        run_start, first, n = self._window_table[idx].T
        b = idx.size
        pos = np.arange(self.window)
        run_tr = (first - self.history)[:, None] + pos[None, :]  # (B, W)
        valid = (run_tr >= 0) & (run_tr < n[:, None])
        scored = valid & (pos >= self.history)[None, :]
        rows = np.where(valid, run_start[:, None] + run_tr, -1)
        take = np.where(valid, rows, 0).ravel()
        arrays: dict = {}
        for name, x in self.inputs.items():
            out = np.asarray(x[take], dtype=np.float32).reshape(b, self.window, *x.shape[1:])
            out[~valid] = 0.0
            arrays[name] = torch.from_numpy(out)
        if self.responses is not None:
            y = np.asarray(self.responses[take], dtype=np.float32).reshape(b, self.window, -1)
            y[~valid] = 0.0
            arrays["responses"] = torch.from_numpy(y)
        arrays["valid"] = torch.from_numpy(valid)
        arrays["scored"] = torch.from_numpy(scored)
        arrays["tr_index"] = torch.from_numpy(rows.astype(np.int64))
        items = []
        for i in range(b):
            item = {key: value[i] for key, value in arrays.items()}
            item["subject"] = self.subject
            items.append(item)
        return items

    def __getitem__(self, i: int) -> dict:
        run_start, first, n = self._windows[i]
        lo = first - self.history  # run TR of window position 0 (may be < 0: padding)
        pos = np.arange(self.window)
        run_tr = lo + pos
        valid = (run_tr >= 0) & (run_tr < n)
        scored = valid & (pos >= self.history)
        rows = np.where(valid, run_start + run_tr, -1)
        take = rows[valid]
        item: dict = {}
        for name, x in self.inputs.items():
            out = np.zeros((self.window, *x.shape[1:]), dtype=np.float32)
            out[valid] = np.asarray(x[take], dtype=np.float32)
            item[name] = torch.from_numpy(out)
        if self.responses is not None:
            y = np.zeros((self.window, self.responses.shape[1]), dtype=np.float32)
            y[valid] = np.asarray(self.responses[take], dtype=np.float32)
            item["responses"] = torch.from_numpy(y)
        item["valid"] = torch.from_numpy(valid)
        item["scored"] = torch.from_numpy(scored)
        item["tr_index"] = torch.from_numpy(rows.astype(np.int64))
        item["subject"] = self.subject
        return item


def collate_windows(items: Sequence[dict]) -> dict:
    """Stack items into a batch; ``responses`` of subjects with different voxel counts stay a list.

    Returns a dict of ``(B, W, ...)`` tensors, ``subject`` as a list of B names, and
    ``responses`` as ``(B, W, V)`` or a list of B ``(W, V_b)`` tensors.
    """
    batch: dict = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key == "subject":
            batch[key] = list(values)
        elif key == "responses" and len({tuple(v.shape) for v in values}) > 1:
            batch[key] = values
        else:
            batch[key] = _stacked_view(values)
            if batch[key] is None:
                batch[key] = torch.stack(values)
    return batch


def _stacked_view(values: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The tensor whose rows 0..B-1 are exactly ``values`` (items from
    :meth:`WindowDataset.__getitems__`), or None when they are not such views."""
    base = getattr(values[0], "_base", None)
    if base is None or base.ndim == 0 or base.shape[0] != len(values) or not base.is_contiguous():
        return None
    step = base.stride(0)
    for i, v in enumerate(values):
        if (v._base is not base or v.shape != base.shape[1:]
                or v.storage_offset() != base.storage_offset() + i * step):
            return None
    return base
