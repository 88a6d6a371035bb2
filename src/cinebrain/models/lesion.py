"""In-silico lesions of the multimodal autoencoder.

A :class:`~cinebrain.models.autoencoder.model.Lesion` ablates bottleneck units (set to zero or
to their mean) and/or removes whole modalities from the combiner input. :func:`run_lesion`
predicts a dataset with and without it and reports, per voxel, how much the predicted
response changed (and how much prediction accuracy was lost, when responses are given),
and per modality how much reconstruction quality was lost. Arrays only: the caller writes
NIfTI maps (``cinebrain.io.nifti.unmask``).

Which units to lesion can be chosen by what they drive: :func:`top_units` ranks units by
their contribution to a chosen set of voxels, by ``|gradient x activation|`` averaged
over the data (any head) or by the voxel head's weights times the units' spread (linear
heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cinebrain.data.windows import WindowDataset, collate_windows
from cinebrain.errors import ConfigError
from cinebrain.metrics import pearson_r
from cinebrain.models.autoencoder.model import (
    Lesion,
    MultimodalAutoencoder,
    predict_dataset,
)

__all__ = ["Lesion", "LesionResult", "bottleneck_stats", "run_lesion", "top_units"]


@dataclass
class LesionResult:
    """Effect of one lesion on one subject's dataset.

    Attributes
    ----------
    intact, lesioned : ndarray (n_trs, n_voxels)
        Predicted responses without and with the lesion.
    change : ndarray (n_voxels,)
        How much the predicted time course changed: the standard deviation over TRs of
        ``lesioned - intact``, in the responses' units (z-scores). A constant shift (a
        new baseline) is not a change of the time course; it is reported as ``offset``.
    relative_change : ndarray (n_voxels,)
        ``change`` over the standard deviation of the intact prediction (0: unaffected,
        1: a change as large as the predicted response itself).
    offset : ndarray (n_voxels,)
        Mean of ``lesioned - intact`` over TRs.
    r_intact, r_lesioned, delta_r : ndarray (n_voxels,) or None
        Per-voxel Pearson r with the measured responses over time, when given.
    recon : dict modality -> {"intact": float, "lesioned": float, "delta": float}
        Reconstruction loss (MSE, or 1 - cosine for embeddings) over the dataset's TRs.
    """

    intact: np.ndarray
    lesioned: np.ndarray
    change: np.ndarray
    relative_change: np.ndarray
    offset: np.ndarray
    r_intact: np.ndarray | None = None
    r_lesioned: np.ndarray | None = None
    delta_r: np.ndarray | None = None
    recon: dict[str, dict[str, float]] = field(default_factory=dict)


def _batches(dataset: WindowDataset, batch_size: int, device: torch.device):
    for start in range(0, len(dataset), batch_size):
        items = dataset.__getitems__(range(start, min(start + batch_size, len(dataset))))
        batch = collate_windows(items)
        yield {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def bottleneck_stats(
    model: MultimodalAutoencoder, dataset: WindowDataset, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation ``(D,)`` of every bottleneck unit over the dataset's valid TRs.

    The means are what a "mean" lesion sets units to.
    """
    was = model.training
    model.eval()
    s = s2 = None
    n = 0
    for batch in _batches(dataset, batch_size, _device(model)):
        inputs = {m: batch[m] for m in model.modalities if m in batch}
        z = model.encode(inputs, batch["valid"])[batch["valid"]].double()  # (N, D)
        s = z.sum(0) if s is None else s + z.sum(0)
        s2 = (z**2).sum(0) if s2 is None else s2 + (z**2).sum(0)
        n += len(z)
    model.train(was)
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean**2).clamp_min(0).sqrt()
    return mean.float().cpu(), std.float().cpu()


def top_units(
    model: MultimodalAutoencoder,
    voxels: Sequence[int] | np.ndarray,
    k: int,
    dataset: WindowDataset | None = None,
    method: str = "gradient",
    subject: str | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` bottleneck units that most drive the predicted response of ``voxels``.

    Parameters
    ----------
    voxels : indices (or a boolean mask) of the subject's voxels.
    k : number of units returned.
    dataset : the data to average over (required for "gradient"; for "weights" it
        scales each unit's weights by its standard deviation over the data).
    method : {"gradient", "weights"}
        "gradient": mean over TRs of ``|g_u * z_u|`` with ``g = d/dz (1/2) sum_v (y_v - mean y_v)^2``
        (gradient x activation of the voxels' predicted response energy; any head). "weights": ``sum_v |W[v, u]| * std(z_u)`` of a linear head
        (no ``voxel_hidden`` layers), times the HRF kernel's gain.

    Returns
    -------
    units : ndarray (k,) int, most important first;  importance : ndarray (D,) float.
    """
    subject = model._subject(subject)
    vox = np.asarray(voxels)
    vox = np.flatnonzero(vox) if vox.dtype == bool else vox.astype(int)
    D = model.config.bottleneck_dim
    if not 1 <= k <= D:
        raise ConfigError("k", f"got {k}", f"use 1 <= k <= {D} (the bottleneck size)")
    if method == "weights":
        if not isinstance(model.voxel_hidden, torch.nn.Identity):
            raise ConfigError(
                "method",
                "'weights' needs a linear voxel head (no voxel_hidden)",
                "use method='gradient'",
            )
        head = model.heads.heads[subject]
        W = head.out.weight if head.basis is None else head.out.weight @ head.basis.weight  # (V, D)
        importance = W[torch.as_tensor(vox)].detach().abs().sum(0).cpu().double()
        if dataset is not None:
            importance = importance * bottleneck_stats(model, dataset, batch_size)[1].double()
        importance = importance * float(model.hrf.kernel.detach().abs().sum(-1).mean())
    elif method == "gradient":
        if dataset is None:
            raise ConfigError("dataset", "method 'gradient' averages over data", "pass the dataset")
        was = model.training
        model.eval()
        importance = torch.zeros(D, dtype=torch.float64)
        n = 0
        vox_t = torch.as_tensor(vox, device=_device(model))
        for batch in _batches(dataset, batch_size, _device(model)):
            inputs = {m: batch[m] for m in model.modalities if m in batch}
            with torch.no_grad():
                z = model.encode(inputs, batch["valid"])
            z = z.detach().requires_grad_(True)
            pred = model.readout(z, subject, batch["valid"])
            scored = batch["scored"][:, -1] if model.config.predict == "last" else batch["scored"]
            # Attribution of the chosen voxels' predicted response energy, 0.5 * sum_v y_v^2:
            # its gradient is sum_v y_v dy_v/dz, so voxels with opposite weights do not cancel
            # (as they would in the gradient of sum_v y_v).
            sel = pred[scored][:, vox_t]
            target = 0.5 * (sel - sel.mean(0).detach()).pow(2).sum()
            (grad,) = torch.autograd.grad(target, z)
            importance += (grad * z).detach().abs()[batch["valid"]].sum(0).double().cpu()
            n += int(scored.sum())
        model.train(was)
        importance = importance / max(n, 1)
    else:
        raise ConfigError("method", f"got {method!r}", "use 'gradient' or 'weights'")
    imp = importance.numpy()
    return np.argsort(-imp, kind="stable")[:k], imp


def run_lesion(
    model: MultimodalAutoencoder,
    dataset: WindowDataset,
    lesion: Lesion,
    batch_size: int = 16,
) -> LesionResult:
    """Predict ``dataset`` with and without ``lesion``; per-voxel and per-modality effects.

    ``dataset`` gives the subject (its voxel head) and, when it has responses, the
    measured responses for ``r_intact`` / ``r_lesioned``.
    """
    a = predict_dataset(model, dataset, None, batch_size)
    b = predict_dataset(model, dataset, lesion, batch_size)
    intact, lesioned, rec_i, rec_l = a["voxels"], b["voxels"], a["recon_loss"], b["recon_loss"]
    diff = lesioned - intact
    change = diff.std(axis=0)
    rel = change / np.maximum(intact.std(axis=0), 1e-12)
    result = LesionResult(
        intact=intact,
        lesioned=lesioned,
        change=change,
        relative_change=rel,
        offset=diff.mean(axis=0),
    )
    if dataset.responses is not None:
        y = np.asarray(dataset.responses, dtype=np.float32)
        result.r_intact = pearson_r(y, intact)
        result.r_lesioned = pearson_r(y, lesioned)
        result.delta_r = result.r_lesioned - result.r_intact
    result.recon = {
        m: {"intact": rec_i[m], "lesioned": rec_l[m], "delta": rec_l[m] - rec_i[m]} for m in rec_i
    }
    return result


