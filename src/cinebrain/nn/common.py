"""Small pieces shared by the encoders, fusion and readouts: norms, parameter counts.

Normalisation is a choice, not a default baked into layers: BatchNorm on batches of two
(one of the original implementation's bugs) estimates statistics from two samples, so new
presets use GroupNorm / LayerNorm, and ``"batch"`` exists to reproduce seed 000 exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cinebrain.errors import ConfigError

NORMS = ("batch", "group", "layer", "none")


def check_choice(where: str, value: object, allowed: tuple) -> None:
    """Raise :class:`ConfigError` naming ``where`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigError(where, f"got {value!r}", f"use one of {choices}")


def make_norm(kind: str, n_channels: int, spatial_dims: int, n_groups: int = 8) -> nn.Module:
    """A normalisation layer for features with ``spatial_dims`` trailing axes.

    spatial_dims : 0 for vectors ``(B, C)``, 1 for ``(B, C, L)``, 2 for ``(B, C, H, W)``.
    ``"layer"`` on feature maps is GroupNorm with one group (normalises over C and space,
    per sample); on vectors it is LayerNorm. ``"group"`` uses ``gcd(n_groups, C)`` groups
    so any channel count works. Every choice but ``"none"`` has 2*C parameters.
    """
    check_choice("norm", kind, NORMS)
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm2d)[spatial_dims](n_channels)
    if kind == "layer":
        return nn.LayerNorm(n_channels) if spatial_dims == 0 else nn.GroupNorm(1, n_channels)
    return nn.GroupNorm(math.gcd(n_groups, n_channels), n_channels)


def conv_out_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis (PyTorch's formula, dilation 1)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; works on modules built under ``torch.device("meta")``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def as_pair(x: int | tuple[int, int]) -> tuple[int, int]:
    """``7 -> (7, 7)``; a pair is returned as a tuple."""
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over axis 1 of ``x (B, N, D)`` using only tokens where ``mask (B, N)`` is True."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
