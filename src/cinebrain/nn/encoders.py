"""Modality encoders: images, video, audio (mel spectra) and text (sentence embeddings).

Each encoder maps one modality's stimulus features for a batch of samples (usually one
sample per TR) to a vector ``(B, out_dim)``, and is configured by a dataclass. Sizes
that depend on the input (flattened conv features, token grids) are computed from the
config analytically, so every module can be built under ``torch.device("meta")`` and
its parameters counted without allocating memory.

Seed 000 (Sherlock autoencoder) is reproduced to the parameter with ``norm="batch"``:

===================================================================  ==========
``ConvImageConfig(image_size=(90, 160), channels=(32, 64, 128, 256),``  16,119,040
``out_dim=1024, norm="batch")``
``AudioEncoderConfig(n_mels=128, channels=(32, 64, 128), out_dim=256,``     556,032
``norm="batch")``
``TextEncoderConfig(in_dim=1024, hidden_dims=(512,), out_dim=256,``         657,664
``norm="batch")``
===================================================================  ==========
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cinebrain.errors import ConfigError
from cinebrain.nn.attention import AttentionPool, Transformer, TransformerConfig
from cinebrain.nn.common import as_pair, check_choice, conv_out_size, make_norm

# --------------------------------------------------------------------------- images


def sincos_2d(gh: int, gw: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding for a ``gh x gw`` grid: (gh*gw, dim).

    A quarter of the channels each for sin/cos of the column and of the row index, so
    any grid, square or not, gets an embedding without interpolation.
    """
    if dim % 4:
        raise ConfigError("dim", f"sinusoidal position embedding needs dim % 4 == 0, got {dim}")
    d = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(d, device=device, dtype=torch.float32) / d)  # (d,)
    ys, xs = torch.meshgrid(
        torch.arange(gh, device=device, dtype=torch.float32),
        torch.arange(gw, device=device, dtype=torch.float32),
        indexing="ij",
    )
    x = xs.reshape(-1, 1) * omega  # (N, d)
    y = ys.reshape(-1, 1) * omega  # (N, d)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)  # (N, dim)


@dataclass
class ViTConfig:
    """Vision transformer over non-overlapping patches.

    image_size: (H, W) the position embedding is sized for; other sizes divisible by the
    patch are accepted (learned embeddings are interpolated bicubically, sinusoidal ones
    recomputed). patch_size: int or (ph, pw). pos_embed: "learned" | "sinusoidal".
    pool: "cls" (needs cls_token) | "mean" (over patch tokens).
    """

    in_channels: int = 3
    image_size: tuple[int, int] = (90, 160)
    patch_size: int | tuple[int, int] = 10
    dim: int = 192
    depth: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    pos_embed: str = "learned"
    cls_token: bool = True
    pool: str = "cls"
    out_dim: int = 512

    def __post_init__(self):
        check_choice("pos_embed", self.pos_embed, ("learned", "sinusoidal"))
        check_choice("pool", self.pool, ("cls", "mean"))
        if self.pool == "cls" and not self.cls_token:
            raise ConfigError("pool", "'cls' pooling needs cls_token=True", "or use pool='mean'")
        (H, W), (ph, pw) = as_pair(self.image_size), as_pair(self.patch_size)
        if H % ph or W % pw:
            raise ConfigError(
                "image_size", f"{H}x{W} is not divisible by patch {ph}x{pw}", "pick a divisor"
            )
        if self.pos_embed == "sinusoidal" and self.dim % 4:
            raise ConfigError(
                "dim", f"sinusoidal position embedding needs dim % 4 == 0, got {self.dim}"
            )

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, columns) at ``image_size``."""
        (H, W), (ph, pw) = as_pair(self.image_size), as_pair(self.patch_size)
        return H // ph, W // pw

    def transformer(self) -> TransformerConfig:
        return TransformerConfig(
            dim=self.dim,
            depth=self.depth,
            n_heads=self.n_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            dropout=self.dropout,
            attn_dropout=self.attn_dropout,
            drop_path=self.drop_path,
        )


class ViTImageEncoder(nn.Module):
    """Images (B, C, H, W) -> (B, out_dim); H, W any multiple of the patch size."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch = as_pair(cfg.patch_size)
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.dim, self.patch, stride=self.patch)
        gh, gw = cfg.grid
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw, cfg.dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        if cfg.cls_token:
            self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
            nn.init.trunc_normal_(self.cls, std=0.02)
        else:
            self.cls = None
        self.drop = nn.Dropout(cfg.dropout)
        self.transformer = Transformer(cfg.transformer())
        self.head = nn.Linear(cfg.dim, cfg.out_dim)
        self.out_dim = cfg.out_dim

    def position_embedding(self, gh: int, gw: int, device, dtype) -> torch.Tensor:
        """(1, gh*gw, dim) for a gh x gw patch grid."""
        if self.pos_embed is None:
            return sincos_2d(gh, gw, self.cfg.dim, device, dtype)[None]
        pos = self.pos_embed
        g0 = self.cfg.grid
        if (gh, gw) != g0:
            pos = pos.reshape(1, *g0, -1).permute(0, 3, 1, 2)  # (1, D, gh0, gw0)
            pos = F.interpolate(pos, size=(gh, gw), mode="bicubic", align_corners=False)
            pos = pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return pos.to(dtype)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> transformer output (B, [1 +] gh*gw, dim), cls token first."""
        B, C, H, W = images.shape
        ph, pw = self.patch
        if H % ph or W % pw:
            raise ValueError(f"image {H}x{W} is not divisible by the patch size {ph}x{pw}")
        x = self.patch_embed(images)  # (B, D, gh, gw)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.position_embedding(gh, gw, x.device, x.dtype)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, 1+N, D)
        return self.transformer(self.drop(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.tokens(images)  # (B, [1+]N, D)
        if self.cfg.pool == "cls":
            pooled = x[:, 0]
        else:
            pooled = x[:, int(self.cls is not None) :].mean(dim=1)  # (B, D)
        return self.head(pooled)  # (B, out_dim)


def _conv_block(
    spatial_dims: int,
    c_in: int,
    c_out: int,
    kernel_size: int,
    stride: int,
    norm: str,
    n_groups: int,
    dropout: float,
) -> nn.Sequential:
    """Conv -> norm -> ReLU -> Dropout (Conv1d or Conv2d)."""
    conv = (nn.Conv1d, nn.Conv2d)[spatial_dims - 1]
    return nn.Sequential(
        conv(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2),
        make_norm(norm, c_out, spatial_dims, n_groups),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


@dataclass
class ConvImageConfig:
    """Stride-2 conv blocks (Conv -> norm -> ReLU -> Dropout), flatten, Linear.

    image_size: (H, W) the input must have (the final Linear is sized from it).
    norm: "batch" | "group" | "layer" | "none" ("batch" reproduces seed 000; prefer
    "group" / "layer" when batches are small).
    """

    in_channels: int = 3
    image_size: tuple[int, int] = (90, 160)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    kernel_size: int = 3
    stride: int = 2
    norm: str = "group"
    n_groups: int = 8
    dropout: float = 0.2
    out_dim: int = 1024

    def __post_init__(self):
        check_choice("norm", self.norm, ("batch", "group", "layer", "none"))
        h, w = self.feature_shape[1:]
        if h < 1 or w < 1:
            raise ConfigError(
                "image_size", f"{self.image_size} shrinks to nothing", "use fewer blocks"
            )

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) after the last conv block."""
        h, w = as_pair(self.image_size)
        for _ in self.channels:
            h = conv_out_size(h, self.kernel_size, self.stride, self.kernel_size // 2)
            w = conv_out_size(w, self.kernel_size, self.stride, self.kernel_size // 2)
        return self.channels[-1], h, w

    @property
    def flat_dim(self) -> int:
        c, h, w = self.feature_shape
        return c * h * w


class ConvImageEncoder(nn.Module):
    """Images (B, C, H, W) at ``cfg.image_size`` -> (B, out_dim).

    Seed 000: 3x90x160 -> 32x45x80 -> 64x23x40 -> 128x12x20 -> 256x6x10 -> 1024.
    """

    def __init__(self, cfg: ConvImageConfig):
        super().__init__()
        self.cfg = cfg
        c_in = (cfg.in_channels,) + tuple(cfg.channels[:-1])
        self.blocks = nn.Sequential(
            *(
                _conv_block(
                    2, a, b, cfg.kernel_size, cfg.stride, cfg.norm, cfg.n_groups, cfg.dropout
                )
                for a, b in zip(c_in, cfg.channels, strict=True)
            )
        )
        self.head = nn.Linear(cfg.flat_dim, cfg.out_dim)
        self.out_dim = cfg.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != (self.cfg.in_channels, *as_pair(self.cfg.image_size)):
            raise ValueError(
                f"ConvImageEncoder expects (B, {self.cfg.in_channels}, "
                f"{self.cfg.image_size[0]}, {self.cfg.image_size[1]}), got {tuple(images.shape)}"
            )
        x = self.blocks(images)  # (B, C_last, h, w)
        return self.head(x.flatten(1))  # (B, out_dim)


# --------------------------------------------------------------------------- video

AGGREGATIONS = ("attention", "mean", "max", "lstm", "transformer")


@dataclass
class VideoEncoderConfig:
    """A per-frame image encoder, then aggregation over the frames of a sample.

    frame_encoder: "conv" | "vit" (its config in ``conv`` / ``vit``; its out_dim is the
    per-frame feature size F). aggregation: "attention" (learned-query attention pool),
    "mean", "max", "lstm" (``lstm_pool`` "last" hidden state or "mean" of outputs),
    "transformer" (temporal transformer, ``temporal_pool`` "mean" or "cls").
    n_frames: frames the learned temporal position embedding is sized for (other counts
    are interpolated); used by "attention" and "transformer" when ``temporal_pos``.
    chunk_size: frames encoded at once (bounds activation memory; None = all B*T).
    checkpoint: recompute the frame encoder in backward instead of storing activations.
    out_dim: None keeps the aggregated size (F, or lstm_hidden).
    """

    frame_encoder: str = "conv"
    conv: ConvImageConfig = field(default_factory=lambda: ConvImageConfig(out_dim=256))
    vit: ViTConfig = field(default_factory=lambda: ViTConfig(out_dim=256))
    aggregation: str = "attention"
    n_frames: int = 8
    temporal_pos: bool = True
    n_heads: int = 4
    lstm_hidden: int = 256
    lstm_layers: int = 1
    lstm_pool: str = "last"
    temporal_depth: int = 2
    temporal_pool: str = "mean"
    dropout: float = 0.0
    out_dim: int | None = 512
    chunk_size: int | None = None
    checkpoint: bool = False

    def __post_init__(self):
        check_choice("frame_encoder", self.frame_encoder, ("conv", "vit"))
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("lstm_pool", self.lstm_pool, ("last", "mean"))
        check_choice("temporal_pool", self.temporal_pool, ("mean", "cls"))
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError("chunk_size", f"must be >= 1 or None, got {self.chunk_size}")

    @property
    def frame_dim(self) -> int:
        return (self.conv if self.frame_encoder == "conv" else self.vit).out_dim


class VideoEncoder(nn.Module):
    """Frames (B, T, C, H, W) -> (B, out_dim)."""

    def __init__(self, cfg: VideoEncoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.frame_encoder == "conv":
            self.frame_encoder: nn.Module = ConvImageEncoder(cfg.conv)
        else:
            self.frame_encoder = ViTImageEncoder(cfg.vit)
        F_ = cfg.frame_dim
        agg = cfg.aggregation
        self.temporal_pos = None
        if cfg.temporal_pos and agg in ("attention", "transformer"):
            self.temporal_pos = nn.Parameter(torch.zeros(1, cfg.n_frames, F_))
            nn.init.trunc_normal_(self.temporal_pos, std=0.02)
        self.pool = self.lstm = self.temporal = self.cls = None
        agg_dim = F_
        if agg == "attention":
            self.pool = AttentionPool(F_, cfg.n_heads, dropout=cfg.dropout)
        elif agg == "lstm":
            self.lstm = nn.LSTM(
                F_,
                cfg.lstm_hidden,
                cfg.lstm_layers,
                batch_first=True,
                dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
            )
            agg_dim = cfg.lstm_hidden
        elif agg == "transformer":
            self.temporal = Transformer(
                TransformerConfig(F_, cfg.temporal_depth, cfg.n_heads, dropout=cfg.dropout)
            )
            if cfg.temporal_pool == "cls":
                self.cls = nn.Parameter(torch.zeros(1, 1, F_))
                nn.init.trunc_normal_(self.cls, std=0.02)
        self.head = nn.Linear(agg_dim, cfg.out_dim) if cfg.out_dim else nn.Identity()
        self.out_dim = cfg.out_dim or agg_dim

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> per-frame features (B, T, F), ``chunk_size`` frames at a time.

        With BatchNorm in training mode, chunking changes the batch statistics (and
        checkpointing updates running statistics twice); GroupNorm / LayerNorm do not
        have this problem.
        """
        B, T = frames.shape[:2]
        flat = frames.reshape(B * T, *frames.shape[2:])  # (B*T, C, H, W)
        step = self.cfg.chunk_size or B * T
        recompute = self.cfg.checkpoint and self.training and torch.is_grad_enabled()
        feats = []
        for chunk in flat.split(step):
            if recompute:
                feats.append(checkpoint(self.frame_encoder, chunk, use_reentrant=False))
            else:
                feats.append(self.frame_encoder(chunk))
        return torch.cat(feats).view(B, T, -1)  # (B, T, F)

    def _add_temporal_pos(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal_pos is None:
            return x
        pos = self.temporal_pos
        if x.shape[1] != pos.shape[1]:
            pos = F.interpolate(pos.transpose(1, 2), size=x.shape[1], mode="linear")
            pos = pos.transpose(1, 2)  # (1, T, F)
        return x + pos.to(x.dtype)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame features (B, T, F) -> (B, agg_dim)."""
        agg = self.cfg.aggregation
        if agg == "mean":
            return x.mean(dim=1)
        if agg == "max":
            return x.amax(dim=1)
        if agg == "lstm":
            out, (h, _) = self.lstm(x)  # out (B, T, hidden), h (layers, B, hidden)
            return h[-1] if self.cfg.lstm_pool == "last" else out.mean(dim=1)
        x = self._add_temporal_pos(x)
        if agg == "attention":
            return self.pool(x)[:, 0]  # (B, F)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            return self.temporal(x)[:, 0]
        return self.temporal(x).mean(dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 5:
            raise ValueError(f"VideoEncoder expects (B, T, C, H, W), got {tuple(frames.shape)}")
        return self.head(self.aggregate(self.encode_frames(frames)))  # (B, out_dim)


# --------------------------------------------------------------------------- audio


@dataclass
class AudioEncoderConfig:
    """Conv1d blocks over the mel-frequency axis, flatten, Linear.

    Input (B, n_mels) for one mel frame per sample (seed 000), or (B, n_frames, n_mels)
    for several frames per TR. The frames are the input *channels* of the first conv:
    each filter is a learned combination of all frames over ``kernel_size`` adjacent mel
    bins, so the layer sees the within-TR time course at no extra depth and n_frames=1
    is exactly seed 000's encoder. (A 2D time x frequency conv is not provided.)
    """

    n_mels: int = 128
    n_frames: int = 1
    channels: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    stride: int = 2
    norm: str = "group"
    n_groups: int = 8
    dropout: float = 0.2
    out_dim: int = 256

    def __post_init__(self):
        check_choice("norm", self.norm, ("batch", "group", "layer", "none"))
        if self.feature_shape[1] < 1:
            raise ConfigError("n_mels", f"{self.n_mels} bins shrink to nothing", "use fewer blocks")

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(channels, mel bins) after the last conv block."""
        n = self.n_mels
        for _ in self.channels:
            n = conv_out_size(n, self.kernel_size, self.stride, self.kernel_size // 2)
        return self.channels[-1], n

    @property
    def flat_dim(self) -> int:
        c, n = self.feature_shape
        return c * n


class AudioEncoder(nn.Module):
    """Mel spectra (B, n_mels) or (B, n_frames, n_mels) -> (B, out_dim).

    Seed 000: 1x128 -> 32x64 -> 64x32 -> 128x16 -> 256.
    """

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        c_in = (cfg.n_frames,) + tuple(cfg.channels[:-1])
        self.blocks = nn.Sequential(
            *(
                _conv_block(
                    1, a, b, cfg.kernel_size, cfg.stride, cfg.norm, cfg.n_groups, cfg.dropout
                )
                for a, b in zip(c_in, cfg.channels, strict=True)
            )
        )
        self.head = nn.Linear(cfg.flat_dim, cfg.out_dim)
        self.out_dim = cfg.out_dim

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        if mels.ndim == 2:
            mels = mels.unsqueeze(1)  # (B, 1, n_mels)
        expected = (self.cfg.n_frames, self.cfg.n_mels)
        if tuple(mels.shape[1:]) != expected:
            raise ValueError(
                f"AudioEncoder expects (B, {expected[0]}, {expected[1]}), got {tuple(mels.shape)}"
            )
        x = self.blocks(mels)  # (B, C_last, n_mels')
        return self.head(x.flatten(1))  # (B, out_dim)


# --------------------------------------------------------------------------- text


@dataclass
class TextEncoderConfig:
    """MLP over sentence embeddings: every layer is Linear -> norm -> ReLU -> Dropout.

    in_dim 384 is all-MiniLM-L6-v2 (the bundled offline model); seed 000 used 1024
    (BAAI/bge-large-en-v1.5).
    """

    in_dim: int = 384
    hidden_dims: tuple[int, ...] = (512,)
    out_dim: int = 256
    norm: str = "layer"
    dropout: float = 0.2

    def __post_init__(self):
        check_choice("norm", self.norm, ("batch", "group", "layer", "none"))


class TextEncoder(nn.Module):
    """Sentence embeddings (B, in_dim) -> (B, out_dim)."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        dims = (cfg.in_dim, *cfg.hidden_dims, cfg.out_dim)
        self.layers = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Linear(a, b),
                    make_norm(cfg.norm, b, 0),
                    nn.ReLU(inplace=True),
                    nn.Dropout(cfg.dropout),
                )
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            )
        )
        self.out_dim = cfg.out_dim

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)  # (B, out_dim)
