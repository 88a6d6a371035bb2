"""A factorised 3-D convolutional core for neurons (the Sensorium 2023 baseline's shape).

``Conv3dCore`` maps video (B, C_in, T, H, W) to features (B, C, T, h, w). Each layer is a
spatial Conv3d with a (1, k, k) kernel (same padding: h = H for odd k), then a temporal
Conv3d with a (k_t, 1, 1) kernel padded on the left only (k_t - 1 frames of zeros), so output
frame t depends on input frames <= t: the core is causal. Then batch norm over channels and
ELU. In evaluation (running batch-norm statistics) the core is exactly causal; in training
batch norm's statistics pool the frames of the batch, as any batch-norm core does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cinebrain.errors import ConfigError


class Conv3dCore(nn.Module):
    """Factorised causal conv core; ``channels[i]``, ``spatial_kernel[i]`` and
    ``temporal_kernel[i]`` configure layer i. ``out_channels`` is ``channels[-1]``."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32),
        spatial_kernel: Sequence[int] = (9, 7),
        temporal_kernel: Sequence[int] = (11, 5),
        *,
        batch_norm: bool = True,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        channels, spatial_kernel, temporal_kernel = list(channels), list(spatial_kernel), list(temporal_kernel)
        if not channels or not (len(channels) == len(spatial_kernel) == len(temporal_kernel)):
            raise ConfigError("core", f"channels {channels}, spatial_kernel {spatial_kernel} and temporal_kernel "
                              f"{temporal_kernel} must have one entry per layer (at least one)")
        if min(channels) < 1 or min(spatial_kernel) < 1 or min(temporal_kernel) < 1 or in_channels < 1:
            raise ConfigError("core", "channels and kernel sizes must be >= 1")
        self.config = dict(in_channels=in_channels, channels=channels, spatial_kernel=spatial_kernel,
                           temporal_kernel=temporal_kernel, batch_norm=batch_norm, bn_momentum=bn_momentum)
        self.spatial, self.temporal, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        width = in_channels
        for c, k, kt in zip(channels, spatial_kernel, temporal_kernel, strict=True):
            self.spatial.append(nn.Conv3d(width, c, (1, k, k), padding=(0, k // 2, k // 2), bias=not batch_norm))
            self.temporal.append(nn.Conv3d(c, c, (kt, 1, 1), bias=not batch_norm))
            self.norms.append(nn.BatchNorm3d(c, momentum=bn_momentum) if batch_norm else nn.Identity())
            width = c
        self.out_channels = channels[-1]

    def out_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        for k in self.config["spatial_kernel"]:
            h, w = h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1
        return t, h, w

    def flops_per_sample(self, t: int, h: int, w: int) -> float:
        """Conv FLOPs of one training sample (forward + backward = 3x forward; 2 per multiply-add)."""
        total, width = 0, self.config["in_channels"]
        for c, k, kt in zip(*(self.config[key] for key in ("channels", "spatial_kernel", "temporal_kernel")), strict=True):
            _, h, w = t, h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1
            total += 2 * t * h * w * (width * c * k * k + c * c * kt)
            width = c
        return 3.0 * float(total)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = video  # (B, C_in, T, H, W)
        for spatial, temporal, norm in zip(self.spatial, self.temporal, self.norms, strict=True):
            x = spatial(x)
            x = temporal(F.pad(x, (0, 0, 0, 0, temporal.kernel_size[0] - 1, 0)))  # left padding: causal
            x = F.elu(norm(x))
        return x  # (B, C, T, h, w)
