"""A factorised ViViT core: causal tubelet tokens, spatial then causal temporal attention.

``ViViTCore(config)`` maps video (B, 1, T, H, W) to features (B, C, T, h, w), causal in time:
output frame t depends on input frames <= t only. Temporal tubelets are padded at the front
(kt - 1 frames) so token j covers frames ending at j * st; frame t takes the last token that
ended at or before it (frames before the first token end get the first token, which then sees
only padding and frames <= its own end, ie. the frames <= t when st == kt == 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cinebrain.errors import InputError
from cinebrain.nn.rope import apply_rope, axial_angles, rope_angles


@dataclass
class ViViTConfig:
    embedding_dim: int = 192
    num_spatial_blocks: int = 4
    num_temporal_blocks: int = 4
    num_heads: int = 4
    head_dim: int = 48
    ff_dim: int = 768
    patch_size: tuple[int, int, int] = (1, 4, 4)
    stride: tuple[int, int, int] | None = None
    in_channels: int = 1
    num_registers: int = 0
    token_dropout: float = 0.0
    drop_path: float = 0.0
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    #: attention and feed-forward side by side on one LayerNorm, ``x + attn(n(x)) +
    #: ffn(n(x))`` (PaLM, ViT-22B), instead of one after the other
    parallel_block: bool = False


class _Block(nn.Module):
    def __init__(self, c: ViViTConfig, causal: bool):
        super().__init__()
        self.heads, self.hd, self.causal = c.num_heads, c.head_dim, causal
        inner = c.num_heads * c.head_dim
        self.norm1 = nn.LayerNorm(c.embedding_dim)
        self.qkv = nn.Linear(c.embedding_dim, 3 * inner)
        self.q_norm = nn.RMSNorm(c.head_dim)
        self.k_norm = nn.RMSNorm(c.head_dim)
        self.proj = nn.Linear(inner, c.embedding_dim)
        self.parallel = c.parallel_block
        self.norm2 = None if c.parallel_block else nn.LayerNorm(c.embedding_dim)
        self.w12 = nn.Linear(c.embedding_dim, 2 * c.ff_dim)
        self.w3 = nn.Linear(c.ff_dim, c.embedding_dim)
        self.attn_p, self.ff_drop, self.dp = c.attn_dropout, nn.Dropout(c.ff_dropout), c.drop_path

    def _path(self, y: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dp == 0.0:
            return y
        keep = (torch.rand(y.shape[0], *([1] * (y.ndim - 1)), device=y.device) >= self.dp).to(y.dtype)
        return y * keep / (1 - self.dp)

    def forward(self, x: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.norm1(x)
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if angles is not None:
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_p if self.training else 0.0,
                                           is_causal=self.causal)
        attended = self._path(self.proj(a.transpose(1, 2).reshape(b, n, -1)))
        if self.parallel:
            g, u = self.w12(h).chunk(2, dim=-1)
            return x + attended + self._path(self.w3(self.ff_drop(F.silu(g) * u)))
        x = x + attended
        g, u = self.w12(self.norm2(x)).chunk(2, dim=-1)
        return x + self._path(self.w3(self.ff_drop(F.silu(g) * u)))


class ViViTCore(nn.Module):
    def __init__(self, config: ViViTConfig):
        super().__init__()
        self.config = c = config
        self.kernel = tuple(c.patch_size)
        self.stride = tuple(c.stride or c.patch_size)
        self.tokenizer = nn.Conv3d(c.in_channels, c.embedding_dim, self.kernel, self.stride)
        self.registers = nn.Parameter(torch.zeros(1, c.num_registers, c.embedding_dim)) if c.num_registers else None
        self.spatial = nn.ModuleList(_Block(c, causal=False) for _ in range(c.num_spatial_blocks))
        self.temporal = nn.ModuleList(_Block(c, causal=True) for _ in range(c.num_temporal_blocks))
        self.norm = nn.LayerNorm(c.embedding_dim)
        self.out_channels = c.embedding_dim
        self.grad_checkpointing = False
        self.last_spatial_length: int | None = None

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = bool(enabled)

    def out_shape(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        (_, kh, kw), (_, sh, sw) = self.kernel, self.stride
        if h < kh or w < kw:
            raise InputError("vivit", f"frame {h}x{w} is smaller than the patch {kh}x{kw}", "use a smaller patch")
        return t, (h - kh) // sh + 1, (w - kw) // sw + 1

    def _run(self, block: _Block, x: torch.Tensor, ang: torch.Tensor | None) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(block, x, ang, use_reentrant=False)
        return block(x, ang)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = video.shape
        kt, st = self.kernel[0], self.stride[0]
        _, gh, gw = self.out_shape(t, h, w)
        x = self.tokenizer(F.pad(video, (0, 0, 0, 0, kt - 1, 0)))  # (B, D, Tp, gh, gw), causal
        tp, d = x.shape[2], x.shape[1]
        x = x.permute(0, 2, 3, 4, 1).reshape(b * tp, gh * gw, d)
        dev = x.device
        rows = torch.arange(gh, device=dev).repeat_interleave(gw)
        cols = torch.arange(gw, device=dev).repeat(gh)
        ang = axial_angles(rows, cols, self.config.head_dim)  # (S, hd/2)
        keep = None
        if self.training and self.config.token_dropout > 0:
            n_keep = max(1, round(gh * gw * (1 - self.config.token_dropout)))
            keep = torch.rand(b * tp, gh * gw, device=dev).argsort(dim=1)[:, :n_keep].sort(dim=1).values
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, d))
            ang_s = ang[keep][:, None]  # (BT, 1, n_keep, hd/2)
        else:
            ang_s = ang
        r = self.config.num_registers
        if r:
            x = torch.cat([self.registers.expand(x.shape[0], -1, -1), x], dim=1)
            zeros = torch.zeros(*ang_s.shape[:-2], r, ang_s.shape[-1], device=dev)
            ang_s = torch.cat([zeros, ang_s], dim=-2)
        self.last_spatial_length = x.shape[1]
        for blk in self.spatial:
            x = self._run(blk, x, ang_s)
        x = x[:, r:]
        if keep is not None:  # scatter kept tokens back; dropped positions are zero
            full = x.new_zeros(b * tp, gh * gw, d)
            x = full.scatter(1, keep[..., None].expand(-1, -1, d), x)
        x = x.view(b, tp, gh * gw, d).transpose(1, 2).reshape(b * gh * gw, tp, d)
        ang_t = rope_angles(torch.arange(tp, device=dev), self.config.head_dim)
        for blk in self.temporal:
            x = self._run(blk, x, ang_t)
        x = self.norm(x).view(b, gh, gw, tp, d).permute(0, 4, 3, 1, 2)  # (B, D, Tp, gh, gw)
        # token j ends at padded frame j*st + kt - 1, i.e. input frame j*st; frame f takes token f // st
        idx = (torch.arange(t, device=dev) // st).clamp(max=tp - 1)
        return x.index_select(2, idx)


PRESETS = {
    "vivit-small": dict(embedding_dim=192, num_spatial_blocks=4, num_temporal_blocks=4, num_heads=4,
                        head_dim=48, ff_dim=768, patch_size=(8, 8, 8)),
    "vivit-baseline": dict(embedding_dim=384, num_spatial_blocks=6, num_temporal_blocks=6, num_heads=6,
                           head_dim=64, ff_dim=1536, patch_size=(4, 4, 4)),
}


def get_preset(name: str, **overrides) -> ViViTConfig:
    if name not in PRESETS:
        raise InputError("vivit preset", f"unknown preset {name!r}", f"use one of {', '.join(PRESETS)}")
    return ViViTConfig(**{**PRESETS[name], **overrides})


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level module (and the register tokens)."""
    return {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()} | (
        {"registers": model.registers.numel()} if getattr(model, "registers", None) is not None else {})


def preset_parameters(name: str, **overrides) -> dict[str, int]:
    """Parameters per module of a preset's core, counted on the meta device (nothing is
    allocated)."""
    with torch.device("meta"):
        return count_parameters(ViViTCore(get_preset(name, **overrides)))


def parameter_table(name: str, **overrides) -> str:
    """The per-module parameter counts of a preset as the ``cinebrain params`` command
    prints them: one module a line, then the total."""
    from cinebrain.models.counts import format_parameter_table

    return format_parameter_table(f"{name}: {get_preset(name, **overrides)}",
                                  preset_parameters(name, **overrides))


def flops_per_sample(config: ViViTConfig, t: int, h: int, w: int) -> float:
    """Matmul FLOPs of one training sample (forward + backward = 3x forward; 2 per multiply-add)."""
    c = config
    kt, kh, kw = c.patch_size
    st, sh, sw = c.stride or c.patch_size
    tp, gh, gw = (t - 1) // st + 1, (h - kh) // sh + 1, (w - kw) // sw + 1
    d, inner, f = c.embedding_dim, c.num_heads * c.head_dim, c.ff_dim
    per_token = 2 * (d * 3 * inner + inner * d + d * 2 * f + f * d)
    ns = gh * gw + c.num_registers
    spatial = c.num_spatial_blocks * tp * ns * (per_token + 4 * ns * inner)
    temporal = c.num_temporal_blocks * gh * gw * tp * (per_token + 2 * tp * inner)  # causal: half the scores
    tokens = 2 * tp * gh * gw * kt * kh * kw * c.in_channels * d
    return 3.0 * float(spatial + temporal + tokens)
