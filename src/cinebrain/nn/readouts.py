"""Readouts: from a shared representation to each target (voxel, ROI or neuron).

In the neuralpredictors composition (core + readout + modulator) these are the
readouts. A voxel readout maps ``(B, in_dim)`` to ``(B, n_targets)``. The neuron readout
(:class:`GaussianReadout`, each neuron sampling a feature map ``(B, C, T, h, w)`` at a
learned position) and the eye-position :class:`Shifter` come after the voxel heads.
"""

from __future__ import annotations

import torch
from torch import nn

from cinebrain.errors import ConfigError


class LinearVoxelHead(nn.Module):
    """Linear map to voxels, full or low-rank: (B, in_dim) -> (B, n_voxels).

    rank=None: one Linear(in_dim, n_voxels). rank=r: Linear(in_dim, r, no bias) then
    Linear(r, n_voxels), i.e. a rank-r weight matrix with r * (in_dim + n_voxels)
    parameters instead of in_dim * n_voxels (seed 000's 16384 -> 85,810 layer alone has
    1.4 billion). ``basis`` may be given to share the in_dim -> rank map across heads.
    """

    def __init__(
        self, in_dim: int, n_voxels: int, rank: int | None = None, basis: nn.Module | None = None
    ):
        super().__init__()
        if rank is not None and rank < 1:
            raise ConfigError("rank", f"must be >= 1 or None, got {rank}")
        self.in_dim, self.n_voxels, self.rank = in_dim, n_voxels, rank
        if rank is None:
            self.basis = None
            self.out = nn.Linear(in_dim, n_voxels)
        else:
            self.basis = basis if basis is not None else nn.Linear(in_dim, rank, bias=False)
            self.out = nn.Linear(rank, n_voxels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.basis is not None:
            x = self.basis(x)  # (B, rank)
        return self.out(x)  # (B, n_voxels)


class MultiSubjectHead(nn.Module):
    """One voxel head per subject over a shared representation.

    n_voxels: ``{subject: number of voxels}`` (subjects' masks may differ).
    forward(x (B, in_dim), subject) -> (B, n_voxels[subject]). With ``rank`` and
    ``shared_basis=True`` the in_dim -> rank map is shared by all subjects (a common
    low-dimensional response space, per-subject loadings).
    """

    def __init__(
        self,
        n_voxels: dict[str, int],
        in_dim: int,
        rank: int | None = None,
        shared_basis: bool = False,
    ):
        super().__init__()
        if not n_voxels:
            raise ConfigError("n_voxels", "no subject given")
        bad = [s for s in n_voxels if "." in s or not s]
        if bad:
            raise ConfigError("n_voxels", f"subject names {bad} cannot contain '.'")
        if shared_basis and rank is None:
            raise ConfigError("shared_basis", "needs a rank")
        self.basis = nn.Linear(in_dim, rank, bias=False) if shared_basis else None
        self.heads = nn.ModuleDict(
            {s: LinearVoxelHead(in_dim, n, rank, basis=self.basis) for s, n in n_voxels.items()}
        )

    @property
    def subjects(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: torch.Tensor, subject: str) -> torch.Tensor:
        if subject not in self.heads:
            raise KeyError(f"unknown subject {subject!r}; heads exist for {self.subjects}")
        return self.heads[subject](x)  # (B, n_voxels[subject])


# ---------------------------------------------------------------------- neuron readouts
#: Output nonlinearities of a neuron model: name -> (rate from drive, drive from rate).
#: ``softplus``: log(1 + e^x), inverse log(e^y - 1); ``elu1``: elu(x) + 1, inverse y - 1
#: for y >= 1 and log(y) below.
NONLINEARITIES = ("softplus", "elu1")

#: Smallest rate the inverse nonlinearity is asked for (a neuron that never fired).
_MIN_RATE = 1e-4


def _check_nonlinearity(name: str) -> None:
    if name not in NONLINEARITIES:
        raise ConfigError("nonlinearity", f"unknown output nonlinearity {name!r}",
                          f"use one of {', '.join(NONLINEARITIES)}")


def output_nonlinearity(drive: torch.Tensor, name: str = "softplus") -> torch.Tensor:
    """A positive rate from a real-valued drive (any shape): softplus or elu(x) + 1."""
    _check_nonlinearity(name)
    if name == "softplus":
        return torch.nn.functional.softplus(drive)
    return torch.nn.functional.elu(drive) + 1.0


def inverse_output_nonlinearity(rate: torch.Tensor, name: str = "softplus") -> torch.Tensor:
    """The drive whose :func:`output_nonlinearity` is ``rate`` (rates below 1e-4 count as 1e-4)."""
    _check_nonlinearity(name)
    y = torch.as_tensor(rate, dtype=torch.float64).clamp(min=_MIN_RATE)
    if name == "softplus":
        x = y + torch.log(-torch.expm1(-y))  # log(e^y - 1), stable for large y
    else:
        x = torch.where(y >= 1.0, y - 1.0, torch.log(y))
    return x.float()


class GaussianReadout(nn.Module):
    """Each neuron reads the core's feature map at one learned position (Lurz et al. 2021).

    forward(features (B, C, T, h, w), shift (B, T, 2) or None) -> drive (B, T, N), the
    value before the output nonlinearity: ``sum_c w[n, c] * F[b, c, t](p[b, t, n]) + bias[n]``.

    Positions are in :func:`torch.nn.functional.grid_sample`'s normalised coordinates,
    ``(x, y)`` with x along the width and y along the height, in [-1, 1], sampled with
    ``align_corners=False`` (-1 and 1 are the map's outer edges, cell ``j`` of ``w``
    centred at ``(j + .5) / w * 2 - 1``: the screen coordinates of the movie itself when
    the core's map covers the screen, as the neuron simulator places receptive fields;
    beyond the edge cells' centres the edge value is read) and bilinear interpolation. Neuron n has a mean position
    ``mu[n]`` (initialised uniformly in [-init_mu_range, init_mu_range]^2) and a spread
    ``sigma[n]`` (per axis, initialised to ``init_sigma``, by default 0.1 grid units, a twentieth of
    the map's width: from 0.3 the sampling noise drowns the gradient of ``mu`` and positions
    barely move). In training the position is
    ``mu + sigma * eps`` with ``eps ~ N(0, 1)`` drawn afresh per sample and forward pass
    (reparameterised, so mu and sigma both learn; one draw serves all frames of a sample);
    in evaluation it is ``mu``. The shifter's ``shift`` (per sample and frame) is added to
    every neuron's position. Positions are clamped to [-1, 1].

    Feature weights ``w`` (N, C) start at 1 / C (as in neuralpredictors) plus N(0, 1 / C^2)
    noise (a layer-normed core's channel mean is constant); :meth:`l1` is
    their L1 norm per neuron, averaged over neurons. ``bias_init`` (N,), the neurons' mean
    responses, sets the bias to the drive whose output nonlinearity is that mean, so a
    readout of a zero feature map predicts each neuron's mean rate.

    Memory: the sampled features are ``B * T * C * N`` values (kept for the backward pass),
    e.g. 1 GB in float32 for 8 clips of 60 frames, 64 channels and 8000 neurons.
    """

    def __init__(
        self,
        in_channels: int,
        n_neurons: int,
        *,
        init_mu_range: float = 0.2,
        init_sigma: float = 0.1,
        bias_init=None,
        shift: bool = True,
        nonlinearity: str = "softplus",
    ):
        super().__init__()
        if in_channels < 1 or n_neurons < 1:
            raise ConfigError("readout", f"needs channels and neurons >= 1, got {in_channels}, {n_neurons}")
        if not 0.0 <= init_mu_range <= 1.0:
            raise ConfigError("readout.init_mu_range", f"must be in [0, 1], got {init_mu_range}")
        if init_sigma < 0:
            raise ConfigError("readout.init_sigma", f"must be >= 0, got {init_sigma}")
        _check_nonlinearity(nonlinearity)
        self.in_channels, self.n_neurons = in_channels, n_neurons
        self.shift, self.nonlinearity = shift, nonlinearity
        self.mu = nn.Parameter(torch.empty(n_neurons, 2).uniform_(-init_mu_range, init_mu_range))
        self.sigma = nn.Parameter(torch.full((n_neurons, 2), float(init_sigma)))
        # mean 1 / C as in neuralpredictors, plus spread: a core whose output is layer-normed
        # over channels has a constant channel mean, so equal weights would read a constant
        self.weight = nn.Parameter(torch.randn(n_neurons, in_channels) / in_channels + 1.0 / in_channels)
        self.bias = nn.Parameter(torch.zeros(n_neurons))
        if bias_init is not None:
            mean = torch.as_tensor(bias_init, dtype=torch.float32).reshape(-1)
            if mean.shape != (n_neurons,):
                raise ConfigError("readout.bias_init", f"{mean.numel()} mean responses for {n_neurons} neurons",
                                  "give one mean response per neuron")
            if not torch.isfinite(mean).all() or (mean < 0).any():
                raise ConfigError("readout.bias_init", "mean responses must be finite and >= 0")
            with torch.no_grad():
                self.bias.copy_(inverse_output_nonlinearity(mean, nonlinearity))

    def l1(self) -> torch.Tensor:
        """L1 norm of each neuron's feature weights, averaged over neurons (a scalar)."""
        return self.weight.abs().sum(dim=1).mean()

    def positions(self, batch_size: int, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Reading positions (B, T or 1, N, 2) in [-1, 1]: sampled in training, mu in evaluation."""
        pos = self.mu[None, None]  # (1, 1, N, 2)
        if self.training:
            eps = torch.randn(batch_size, 1, self.n_neurons, 2, device=self.mu.device, dtype=self.mu.dtype)
            pos = pos + self.sigma * eps  # (B, 1, N, 2)
        if shift is not None:
            if not self.shift:
                raise ConfigError("readout.shift", "a shift was given to a readout built with shift=False")
            pos = pos + shift[:, :, None, :]  # (B, T, N, 2)
        return pos.clamp(-1.0, 1.0)

    def forward(self, features: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t, h, w = features.shape
        if c != self.in_channels:
            raise ValueError(f"readout expects {self.in_channels} channels, got {c}")
        if shift is not None and shift.shape != (b, t, 2):
            raise ValueError(f"shift must be (B, T, 2) = ({b}, {t}, 2), got {tuple(shift.shape)}")
        grid = self.positions(b, shift).expand(b, t, self.n_neurons, 2)
        grid = grid.reshape(b * t, self.n_neurons, 1, 2).to(features.dtype)
        frames = features.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, h, w)
        sampled = torch.nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                                                  align_corners=False)  # (B*T, C, N, 1)
        sampled = sampled[..., 0]  # (B*T, C, N)
        drive = torch.einsum("bcn,nc->bn", sampled, self.weight.to(sampled.dtype)) + self.bias.to(sampled.dtype)
        return drive.view(b, t, self.n_neurons)  # (B, T, N)


class Shifter(nn.Module):
    """Eye position to a shift of the readout positions: pupil_center (B, T, 2) -> (B, T, 2).

    A small MLP applied frame by frame (so it is causal): ``(pupil - center) / scale`` through
    ``layers`` Linear + tanh layers of ``hidden`` units, then Linear(hidden, 2) and tanh (a
    shift in grid units, within (-1, 1)). The last Linear is zero-initialised, so training
    starts from no shift. ``center`` and ``scale`` (2,) standardise the eye position (for
    example its mean and standard deviation over the training frames; default 0 and 1).
    """

    def __init__(self, hidden: int = 5, layers: int = 1, center=None, scale=None):
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ConfigError("shifter", f"hidden and layers must be >= 1, got {hidden}, {layers}")
        blocks: list[nn.Module] = []
        width = 2
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        self.mlp = nn.Sequential(*blocks)
        self.out = nn.Linear(width, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        center = torch.zeros(2) if center is None else torch.as_tensor(center, dtype=torch.float32).reshape(2)
        scale = torch.ones(2) if scale is None else torch.as_tensor(scale, dtype=torch.float32).reshape(2)
        if not (scale > 0).all():
            raise ConfigError("shifter.scale", f"must be > 0, got {scale.tolist()}")
        self.register_buffer("center", center)
        self.register_buffer("scale", scale)

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        x = (pupil_center - self.center) / self.scale  # (B, T, 2)
        return torch.tanh(self.out(self.mlp(x)))  # (B, T, 2)
