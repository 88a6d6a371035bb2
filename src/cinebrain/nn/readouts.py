"""Readouts: from a shared representation to each target (voxel, ROI or neuron).

In the neuralpredictors composition (core + readout + modulator) these are the
readouts. A readout maps ``(B, in_dim)`` to ``(B, n_targets)``. Spatial readouts for
neurons (a Gaussian readout sampling a feature map at a learned location) will sit here
too and take ``(B, C, H, W)``.
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
