"""Rotary position embeddings (RoFormer): 1-D for time, 2-D axial for space.

``rope_angles(positions, dim)`` gives the rotation angle of each channel pair; ``apply_rope``
rotates pairs (x[2i], x[2i+1]) of the last axis by those angles, so q_m . k_n depends on m - n
only. For 2-D axial RoPE the first half of the head channels rotate with the row, the second
half with the column.
"""

from __future__ import annotations

import torch


def rope_angles(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(L,) positions -> (L, dim // 2) angles; ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even channel count, got {dim}")
    freqs = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    return positions.to(torch.float32)[:, None] * freqs[None, :]


def axial_angles(rows: torch.Tensor, cols: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(L,) row and column positions -> (L, dim // 2): half the pairs by row, half by column."""
    if dim % 4:
        raise ValueError(f"2-D RoPE needs a channel count divisible by 4, got {dim}")
    return torch.cat([rope_angles(rows, dim // 2, base), rope_angles(cols, dim // 2, base)], dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (..., L, dim) by angles broadcastable to (..., L, dim // 2)."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)
