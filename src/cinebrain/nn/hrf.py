"""A causal haemodynamic response layer: an FIR filter over TRs, canonical at initialisation.

The kernel is :func:`cinebrain.timing.hrf` (the same canonical HRF the linear models
convolve their features with), cut to the layer's taps; learned modes start from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cinebrain.nn.common import check_choice
from cinebrain.timing import hrf

__all__ = ["HRF_MODES", "CausalHRF"]

HRF_MODES = ("fixed", "learned", "learned_per_unit", "none")


class CausalHRF(nn.Module):
    """Causal FIR filter over TRs, initialised with the canonical HRF.

    ``out[:, t] = sum_{k=0}^{taps-1} h[k] * z[:, t-k]`` with ``z`` zero before the window
    (and at positions masked invalid). Only lags ``k >= 0`` carry weights, so the output at
    TR ``t`` never depends on TRs after ``t``.

    Parameters
    ----------
    n_taps : int
        Kernel length in TRs (lags 0 .. n_taps-1).
    tr : float
        Repetition time, seconds (samples the canonical HRF).
    mode : {"fixed", "learned", "learned_per_unit", "none"}
        "fixed": the canonical kernel as a buffer (0 parameters); "learned": one kernel of
        ``n_taps`` parameters shared by all units; "learned_per_unit": one kernel per
        unit (``dim * n_taps``); "none": identity (lag 0 only).
    dim : int
        Units filtered (needed for "learned_per_unit").
    hrf_model : {"spm", "glover"}
        Canonical kernel of :func:`cinebrain.timing.hrf` (sums to 1 over the taps).
    """

    def __init__(
        self, n_taps: int, tr: float, mode: str = "fixed", dim: int = 1, hrf_model: str = "spm"
    ):
        super().__init__()
        check_choice("hrf", mode, HRF_MODES)
        self.mode = mode
        self.n_taps = 1 if mode == "none" else int(n_taps)
        if mode == "none":
            kernel = torch.ones(1)
        else:
            # n_taps whole TRs of the canonical kernel, lag 0 first.
            taps = hrf(tr, model=hrf_model, time_length=self.n_taps * float(tr))[: self.n_taps]
            kernel = torch.as_tensor(taps, dtype=torch.float32)
        if mode == "learned":
            self.kernel = nn.Parameter(kernel.clone())
        elif mode == "learned_per_unit":
            self.kernel = nn.Parameter(kernel.repeat(dim, 1))  # (D, taps)
        else:
            self.register_buffer("kernel", kernel)

    def forward(self, z: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``z (B, W, D)``, ``valid (B, W)`` bool or None -> ``(B, W, D)``, causal in W."""
        if valid is not None:
            z = z * valid.unsqueeze(-1).to(z.dtype)
        if self.mode == "none":
            return z
        B, W, D = z.shape
        h = self.kernel.to(z.dtype)
        h = h.expand(D, -1) if h.ndim == 1 else h  # (D, taps)
        x = F.pad(z.transpose(1, 2), (self.n_taps - 1, 0))  # (B, D, taps-1+W): zeros before
        # conv1d is cross-correlation: weight[j] multiplies x[t + j - (taps-1)], i.e. lag taps-1-j.
        y = F.conv1d(x, h.flip(-1).unsqueeze(1), groups=D)  # (B, D, W)
        return y.transpose(1, 2)
