"""VideoGPT: a GPT over VQ-VAE codes that predicts the next clip from the previous one.

The second stage of seed 004 (Yan et al. 2021): a frozen :class:`~cinebrain.models.vqvae.VQVAE`
turns the previous clip and the next clip into code grids ``(t', h', w')``; the GPT models
the next clip's codes autoregressively (raster order over t', h', w') given the previous
clip's codes.

Architecture (module names as in the seed's parameter table)
------------------------------------------------------------
vqvae
    The frozen VQ-VAE: no parameter requires grad, and it stays in eval mode whatever
    ``train()`` is called with, so its codebook never updates while the GPT trains.
resnet, cond_pos_embd
    The previous clip's codes are embedded by the VQ-VAE's codebook (embedding_dim
    channels) and passed through one residual block (two 3x3x3 convolutions, no bias, to
    ``cond_hiddens`` channels, a 1x1x1 projection shortcut, a norm after each; ReLU), plus a
    broadcast position embedding: the memory ``(B, t' h' w', cond_hiddens)`` that every
    block attends to.
fc_in
    ``Linear(embedding_dim, hidden_dim, bias=False)`` on the next clip's code vectors.
attn_stack
    A learned start token and a right shift (position i sees codes < i), a broadcast
    position embedding over (t', h', w') (``hidden_dim / 3`` per axis), then ``layers``
    pre-LN blocks: causal self-attention (SDPA ``is_causal``; q, k, v without bias, output
    with bias; ``attn_dropout`` on the attention weights), cross-attention to the memory
    (queries ``hidden_dim``, keys projected ``cond_hiddens -> hidden_dim``, values kept at
    ``cond_hiddens`` as upstream does), and an MLP ``hidden -> 4 hidden -> hidden`` (GELU),
    each followed by ``dropout`` and added to the residual stream. Blocks are
    ``attn_stack.blocks.0`` ... for forward hooks; :meth:`VideoGPT.hidden_states` returns
    their outputs.
norm, fc_out
    A final LayerNorm and ``Linear(hidden_dim, n_codes, bias=False)``, zero-initialised so
    the cross-entropy starts at exactly ``log(n_codes)``.

Seed 004's parameter table
--------------------------
The seed reports resnet 2.4 M, fc_in 73.7 K, attn_stack 37.2 M, fc_out 589 K, trainable
40.3 M, VQ-VAE 35.8 M, total 76.2 M (304.606 MB at 4 bytes). With hidden 576, 8 layers and
a 240-channel memory each block has exactly 4,654,656 parameters (norms 3 x 1,152,
self-attention 1,327,680, cross-attention 666,432, MLP 2,657,088), so the stack is
37,237,248 + 576 (start token) + 192 (t' + h' + w'). The seed's figures fix the rest:

* ``resnet`` = 2,416,800 exactly only for a residual block from 128 channels (the code
  vectors: embedding_dim 128) to 240: 128*240*27 + 240*240*27 + 128*240 + 3 * 480.
* fc_in = 128 * 576 = 73,728 and fc_out = 576 * 1024 = 589,824: embedding_dim 128 and
  n_codes 1024 (the seed's hyperparameter table says 256 and 2048, upstream's defaults).
* The code grid of the ``seed-004`` VQ-VAE (4 x 8 x 8, see :mod:`cinebrain.models.vqvae`)
  gives attn_stack 37,241,664 (37.2 M), trainable 40,324,768 (40.3 M). Without the VQ-VAE's
  shared position embedding the total is 76,151,379 parameters = 304.606 MB, the seed's
  figure; with it 76,152,979 (76.2 M either way).
* A 4 x 32 x 32 grid (128 x 128 clips downsampled (4, 4, 4)) gives 37,250,880, which
  Lightning prints as 37.3 M, not the seed's 37.2 M; and (4, 4, 4) leaves the VQ-VAE's
  encoder at 11.3 M instead of 18.7 M.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from cinebrain.errors import ConfigError, InputError
from cinebrain.models import vqvae as vq
from cinebrain.models.vqvae import (
    VQVAE,
    BroadcastPositionEmbedding,
    ChannelLayerNorm,
    SamePadConv3d,
    VQVAEConfig,
    count_parameters,
)

__all__ = [
    "PRESETS",
    "AttentionStack",
    "ConditioningBlock",
    "VideoGPT",
    "VideoGPTConfig",
    "build",
    "count_parameters",
    "get_preset",
    "parameter_table",
    "preset_parameters",
    "vqvae_preset",
]


@dataclass
class VideoGPTConfig:
    """Hyperparameters of :class:`VideoGPT`.

    Parameters
    ----------
    hidden_dim, layers, heads : int
        Width, depth and attention heads of the transformer (``hidden_dim`` divisible by
        ``heads``).
    dropout : float
        Dropout after each attention / MLP branch.
    attn_dropout : float
        Dropout on the self-attention weights.
    code_shape : (t', h', w')
        The VQ-VAE's code grid (one clip).
    n_codes, embedding_dim : int
        The VQ-VAE's codebook size and code dimension.
    conditioning : bool
        Condition on the previous clip (``resnet``, ``cond_pos_embd`` and cross-attention);
        False makes an unconditional prior over clips.
    cond_hiddens : int
        Channels of the conditioning memory (divisible by ``heads``).
    mlp_ratio : int
        MLP width as a multiple of ``hidden_dim``.
    """

    hidden_dim: int = 96
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    attn_dropout: float = 0.1
    code_shape: tuple[int, int, int] = (4, 8, 8)
    n_codes: int = 128
    embedding_dim: int = 32
    conditioning: bool = True
    cond_hiddens: int = 48
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        self.code_shape = tuple(int(s) for s in self.code_shape)  # type: ignore[assignment]
        if len(self.code_shape) != 3 or min(self.code_shape) < 1:
            raise ConfigError("videogpt.code_shape", f"needs three sizes >= 1, got {self.code_shape}")
        for name in ("hidden_dim", "layers", "heads", "n_codes", "embedding_dim", "cond_hiddens", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"videogpt.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.hidden_dim % self.heads or self.hidden_dim < 3:
            raise ConfigError("videogpt.heads", f"hidden_dim {self.hidden_dim} is not divisible by heads "
                              f"{self.heads} (or below 3)")
        if self.conditioning and self.cond_hiddens % self.heads:
            raise ConfigError("videogpt.cond_hiddens", f"{self.cond_hiddens} is not divisible by heads {self.heads}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"videogpt.{name}", f"must be in [0, 1), got {getattr(self, name)}")

    @property
    def sequence_length(self) -> int:
        """Codes per clip, ``t' h' w'``."""
        return math.prod(self.code_shape)

    @classmethod
    def for_vqvae(cls, vqvae: VQVAEConfig, **values: Any) -> VideoGPTConfig:
        """A config whose code grid, ``n_codes`` and ``embedding_dim`` are ``vqvae``'s."""
        return cls(**{**values, "code_shape": vqvae.latent_shape, "n_codes": vqvae.n_codes,
                      "embedding_dim": vqvae.embedding_dim})


# ---------------------------------------------------------------------- layers
class ConditioningBlock(nn.Module):
    """Residual block ``(B, in, t, h, w) -> (B, out, t, h, w)``: two 3x3x3 convolutions (no
    bias) with a norm and ReLU after each, a 1x1x1 projection shortcut with a norm, and a
    ReLU on the sum."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = SamePadConv3d(in_channels, out_channels, 3, bias=False)
        self.norm1 = ChannelLayerNorm(out_channels)
        self.conv2 = SamePadConv3d(out_channels, out_channels, 3, bias=False)
        self.norm2 = ChannelLayerNorm(out_channels)
        self.proj = SamePadConv3d(in_channels, out_channels, 1, bias=False)
        self.proj_norm = ChannelLayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h)))
        return F.relu(h + self.proj_norm(self.proj(x)))


class _SelfAttention(nn.Module):
    """Causal multi-head self-attention ``(B, L, H) -> (B, L, H)``, with a key/value cache for
    decoding one position at a time."""

    def __init__(self, dim: int, heads: int, attn_dropout: float):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        return self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(x)  # (B, heads, L, hd)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.proj(y.transpose(1, 2).flatten(2))

    def step(self, x: torch.Tensor, cache: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        """Position ``i`` alone (x (B, 1, H)), attending to the cached positions <= i."""
        q, k, v = self._split(x)
        cache["k"][:, :, i:i + 1], cache["v"][:, :, i:i + 1] = k, v
        k, v = cache["k"][:, :, :i + 1].to(q.dtype), cache["v"][:, :, :i + 1].to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).flatten(2))


class _CrossAttention(nn.Module):
    """Attention of the sequence over the conditioning memory: queries and keys of
    ``dim`` channels, values of the memory's ``context_dim`` (as upstream)."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(context_dim, dim, bias=False)
        self.v = nn.Linear(context_dim, context_dim, bias=False)
        self.proj = nn.Linear(context_dim, dim)

    def memory(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, heads, M, hd)`` of the memory ``(B, M, context_dim)``."""
        b, m, _ = context.shape
        k = self.k(context).view(b, m, self.heads, -1).transpose(1, 2)
        v = self.v(context).view(b, m, self.heads, -1).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, *kv)  # (B, heads, L, hd_v)
        return self.proj(y.transpose(1, 2).flatten(2))


class _Block(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention to the memory, MLP."""

    def __init__(self, c: VideoGPTConfig):
        super().__init__()
        h = c.hidden_dim
        self.attn_norm = nn.LayerNorm(h)
        self.attn = _SelfAttention(h, c.heads, c.attn_dropout)
        self.cross_norm = nn.LayerNorm(h) if c.conditioning else None
        self.cross = _CrossAttention(h, c.cond_hiddens, c.heads) if c.conditioning else None
        self.mlp_norm = nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(h, c.mlp_ratio * h), nn.GELU(), nn.Linear(c.mlp_ratio * h, h))
        self.drop = nn.Dropout(c.dropout)

    def _kv(self, memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.cross is None:
            return None
        if memory is None:
            raise InputError("videogpt", "the model is conditional but no previous clip was given",
                             "pass the previous clip (or its codes)")
        return self.cross.memory(memory)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x)))
        kv = self._kv(memory)
        if kv is not None:
            x = x + self.drop(self.cross(self.cross_norm(x), kv))
        return x + self.drop(self.mlp(self.mlp_norm(x)))

    def step(self, x: torch.Tensor, cache: dict[str, Any], i: int) -> torch.Tensor:
        x = x + self.attn.step(self.attn_norm(x), cache, i)
        if self.cross is not None:
            x = x + self.cross(self.cross_norm(x), cache["memory"])
        return x + self.mlp(self.mlp_norm(x))


class AttentionStack(nn.Module):
    """Start token + right shift, position embedding, and the blocks:
    ``(B, L, hidden) -> (B, L, hidden)`` where output i depends on inputs < i only."""

    def __init__(self, config: VideoGPTConfig):
        super().__init__()
        c = config
        self.config = c
        self.start = nn.Parameter(torch.randn(c.hidden_dim) * 0.02)
        self.pos_embd = BroadcastPositionEmbedding(c.code_shape, c.hidden_dim)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.layers))
        self.grad_checkpointing = False

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """Right shift with the start token, plus the position embedding."""
        start = self.start.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([start, x[:, :-1]], dim=1)
        return x + self.pos_embd().reshape(x.shape[1], -1).to(x.dtype)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                return_hidden: bool = False) -> torch.Tensor | list[torch.Tensor]:
        h = self.shift(x)
        hidden = []
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, memory, use_reentrant=False)
            else:
                h = block(h, memory)
            hidden.append(h)
        return hidden if return_hidden else h


# ---------------------------------------------------------------------- the model
class VideoGPT(nn.Module):
    """The conditional GPT of the module doc around a frozen VQ-VAE.

    Parameters
    ----------
    config : VideoGPTConfig
        Its code grid, ``n_codes`` and ``embedding_dim`` must be the VQ-VAE's.
    vqvae : VQVAE
        A trained VQ-VAE; frozen here (``requires_grad`` False, always in eval mode).

    Batches are dicts with ``"previous"`` and ``"next"`` clips ``(B, C, T, H, W)`` in
    [-0.5, 0.5] (the VQ-VAE's shape), or their codes as ``"previous_codes"`` /
    ``"next_codes"`` ``(B, t', h', w')`` int64 (precomputed codes save the encoding).
    ``training_step`` gives ``loss``, the cross-entropy of the next clip's codes in nats per
    code; ``validation_step`` the per-clip ``cross_entropy``, and ``validation_epoch_end``
    its mean over clips (``val_cross_entropy``; lower is better).
    """

    def __init__(self, config: VideoGPTConfig, vqvae: VQVAE):
        super().__init__()
        c = config
        if (tuple(c.code_shape), c.n_codes, c.embedding_dim) != (vqvae.latent_shape, vqvae.n_codes,
                                                                 vqvae.embedding_dim):
            raise ConfigError("videogpt", f"code grid {c.code_shape}, n_codes {c.n_codes}, embedding_dim "
                              f"{c.embedding_dim} differ from the VQ-VAE's {vqvae.latent_shape}, "
                              f"{vqvae.n_codes}, {vqvae.embedding_dim}", "use VideoGPTConfig.for_vqvae")
        self.gpt_config = c
        self.vqvae = vqvae
        for p in self.vqvae.parameters():
            p.requires_grad_(False)
        self.resnet = ConditioningBlock(c.embedding_dim, c.cond_hiddens) if c.conditioning else None
        self.cond_pos_embd = BroadcastPositionEmbedding(c.code_shape, c.cond_hiddens) if c.conditioning else None
        self.fc_in = nn.Linear(c.embedding_dim, c.hidden_dim, bias=False)
        self.attn_stack = AttentionStack(c)
        self.norm = nn.LayerNorm(c.hidden_dim)
        self.fc_out = nn.Linear(c.hidden_dim, c.n_codes, bias=False)
        self._init_weights()
        self._flops: float | None = None
        self.train()

    def _init_weights(self) -> None:
        std = 0.02
        for block in self.attn_stack.blocks:
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            # residual branches' output layers scaled down with depth (GPT-2)
            out_layers = [block.attn.proj, block.mlp[2]] + ([block.cross.proj] if block.cross is not None else [])
            for layer in out_layers:
                nn.init.normal_(layer.weight, std=std / math.sqrt(2 * len(self.attn_stack.blocks)))
        nn.init.normal_(self.fc_in.weight, std=std)
        nn.init.zeros_(self.fc_out.weight)

    @property
    def config(self) -> dict[str, Any]:
        """Both configs, as a checkpoint stores them: ``{"videogpt": ..., "vqvae": ...}``."""
        return {"videogpt": asdict(self.gpt_config), "vqvae": asdict(self.vqvae.config)}

    def train(self, mode: bool = True) -> VideoGPT:
        """Set the GPT's mode; the VQ-VAE stays in eval mode."""
        super().train(mode)
        self.vqvae.eval()
        return self

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the transformer blocks in the backward pass."""
        self.attn_stack.grad_checkpointing = bool(enabled)

    # ------------------------------------------------------------------ codes
    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """The frozen VQ-VAE's codes ``(B, t', h', w')`` of clips ``(B, C, T, H, W)``."""
        return self.vqvae.encode(video)

    def _codes(self, batch: dict[str, torch.Tensor], key: str) -> torch.Tensor | None:
        if f"{key}_codes" in batch:
            codes = batch[f"{key}_codes"].long()
            self.vqvae.check_codes(codes, f"batch.{key}_codes")
            return codes
        if key in batch:
            return self.encode(batch[key])
        if key == "previous" and not self.gpt_config.conditioning:
            return None
        raise InputError("batch", f"no {key!r} clip (or {key}_codes)", "give both 'previous' and 'next' clips")

    def memory(self, previous_codes: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning memory ``(B, t' h' w', cond_hiddens)`` of the previous clip's codes
        (None for an unconditional model)."""
        if self.resnet is None:
            return None
        if previous_codes is None:
            raise InputError("videogpt", "the model is conditional but no previous clip was given",
                             "pass the previous clip (or its codes)")
        with torch.no_grad():
            e = self.vqvae.codebook.lookup(previous_codes).movedim(-1, 1)  # (B, D, t, h, w)
        h = self.resnet(e).movedim(1, -1)  # (B, t, h, w, C)
        h = h + self.cond_pos_embd().to(h.dtype)
        return h.flatten(1, 3)

    def _inputs(self, next_codes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            e = self.vqvae.codebook.lookup(next_codes)  # (B, ..., D)
        return self.fc_in(e.reshape(e.shape[0], -1, e.shape[-1]))  # (B, L, hidden)

    def logits(self, next_codes: torch.Tensor, previous_codes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, t', h', w', n_codes)`` of every code of the next clip; position i
        depends on the next clip's codes before i (raster order) and on the previous clip."""
        self.vqvae.check_codes(next_codes, "next_codes")
        if previous_codes is not None:
            self.vqvae.check_codes(previous_codes, "previous_codes")
        return self._logits(next_codes, previous_codes)

    def _logits(self, next_codes: torch.Tensor, previous_codes: torch.Tensor | None) -> torch.Tensor:
        h = self.attn_stack(self._inputs(next_codes), self.memory(previous_codes))
        return self.fc_out(self.norm(h)).view(*next_codes.shape, -1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``logits`` (B, t', h', w', n_codes), the target ``codes`` and the per-clip
        ``cross_entropy`` (B,) in nats per code."""
        previous, target = self._codes(batch, "previous"), self._codes(batch, "next")
        logits = self._logits(target, previous)  # codes checked by _codes or made by the VQ-VAE
        ce = F.cross_entropy(logits.float().flatten(0, 3), target.flatten(), reduction="none")
        return {"logits": logits, "codes": target, "cross_entropy": ce.view(target.shape[0], -1).mean(1)}

    # ------------------------------------------------------------------ engine protocol
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self(batch)["cross_entropy"].mean()}

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"cross_entropy": self(batch)["cross_entropy"]}

    def validation_epoch_end(self, outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        return {"cross_entropy": float(torch.cat([o["cross_entropy"] for o in outputs]).double().mean())}

    def flops_per_sample(self) -> float:
        """FLOPs of one training pair: the frozen VQ-VAE encoding both clips (forward only)
        plus 3x the GPT's forward pass (forward + backward), counted by
        ``torch.utils.flop_counter`` on the meta device."""
        if self._flops is None:
            vc = self.vqvae.config
            with torch.device("meta"):
                model = VideoGPT(self.gpt_config, VQVAE(vc)).eval()
                video = torch.zeros(1, vc.in_channels, *vc.input_shape)
                codes = torch.zeros(1, *vc.latent_shape, dtype=torch.long)
            with FlopCounterMode(display=False) as counter:
                model.vqvae.encode(video)
            encode = float(counter.get_total_flops())
            with FlopCounterMode(display=False) as counter:
                model.logits(codes, codes if self.gpt_config.conditioning else None)
            self._flops = 2 * encode + 3.0 * float(counter.get_total_flops())
        return self._flops

    # ------------------------------------------------------------------ features
    def hidden_states(self, previous: torch.Tensor | None, next: torch.Tensor) -> list[torch.Tensor]:  # noqa: A002
        """The output of every block, ``layers`` tensors ``(B, t', h', w', hidden_dim)``, for
        clips ``previous`` and ``next`` ``(B, C, T, H, W)`` (``previous`` None for an
        unconditional model). Position i has seen the next clip's codes before i only."""
        nxt = self.encode(next)
        prev = None if previous is None else self.encode(previous)
        hidden = self.attn_stack(self._inputs(nxt), self.memory(prev), return_hidden=True)
        return [h.view(*nxt.shape, -1) for h in hidden]

    # ------------------------------------------------------------------ sampling
    def _new_cache(self, batch: int, memory: torch.Tensor | None, like: torch.Tensor) -> list[dict[str, Any]]:
        c = self.gpt_config
        shape = (batch, c.heads, c.sequence_length, c.hidden_dim // c.heads)
        caches = []
        for block in self.attn_stack.blocks:
            cache: dict[str, Any] = {"k": like.new_zeros(shape), "v": like.new_zeros(shape)}
            if block.cross is not None:
                cache["memory"] = block.cross.memory(memory)
            caches.append(cache)
        return caches

    def _step(self, x: torch.Tensor, i: int, caches: list[dict[str, Any]]) -> torch.Tensor:
        """Logits ``(B, n_codes)`` of position ``i`` from its input ``x`` (B, 1, hidden) (the
        start token at 0, else the embedded code i - 1), using and filling ``caches``."""
        h = x + self.attn_stack.pos_embd().reshape(-1, x.shape[-1])[i].to(x.dtype)
        for block, cache in zip(self.attn_stack.blocks, caches, strict=True):
            h = block.step(h, cache, i)
        return self.fc_out(self.norm(h))[:, 0]

    def _incremental_logits(self, next_codes: torch.Tensor, previous_codes: torch.Tensor | None) -> torch.Tensor:
        """Logits of every position by one-position-at-a-time decoding with the cache,
        teacher-forced with ``next_codes``: equal to :meth:`logits` (a test checks it)."""
        b, n = next_codes.shape[0], self.gpt_config.sequence_length
        memory = self.memory(previous_codes)
        start = self.attn_stack.start.expand(b, 1, -1)
        caches = self._new_cache(b, memory, start)
        flat, out, x = next_codes.flatten(1), [], start
        for i in range(n):
            out.append(self._step(x, i, caches))
            x = self._inputs(flat[:, i:i + 1])
        return torch.stack(out, 1).view(*next_codes.shape, -1)

    @torch.no_grad()
    def sample_codes(self, previous: torch.Tensor | None = None, temperature: float = 1.0,
                     generator: torch.Generator | None = None, *, n: int | None = None,
                     previous_codes: torch.Tensor | None = None) -> torch.Tensor:
        """Sample the next clip's codes ``(B, t', h', w')`` given the previous clip.

        ``previous`` (B, C, T, H, W) or ``previous_codes`` (B, t', h', w') condition the
        sample; an unconditional model takes neither and samples ``n`` clips. Codes are drawn
        position by position (raster order) from ``softmax(logits / temperature)``;
        ``temperature`` 0 takes the most likely code. ``generator`` makes draws repeatable.
        """
        if temperature < 0 or not math.isfinite(temperature):
            raise InputError("temperature", f"must be a finite number >= 0, got {temperature}")
        was_training = self.training
        self.eval()
        try:
            if previous_codes is None and previous is not None:
                previous_codes = self.encode(previous)
            if previous_codes is not None:
                self.vqvae.check_codes(previous_codes, "previous_codes")
                b = previous_codes.shape[0]
            elif self.gpt_config.conditioning:
                raise InputError("videogpt.sample", "the model is conditional but no previous clip was given",
                                 "pass the previous clip (or its codes)")
            else:
                if n is None or n < 1:
                    raise InputError("videogpt.sample", "an unconditional model needs n >= 1 clips to sample")
                b = n
            memory = self.memory(previous_codes)
            start = self.attn_stack.start.expand(b, 1, -1)
            caches = self._new_cache(b, memory, start)
            codes = torch.zeros(b, self.gpt_config.sequence_length, dtype=torch.long, device=start.device)
            x = start
            for i in range(self.gpt_config.sequence_length):
                logits = self._step(x, i, caches).float()
                if temperature == 0:
                    codes[:, i] = logits.argmax(-1)
                else:
                    probs = F.softmax(logits / temperature, dim=-1)
                    codes[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
                x = self._inputs(codes[:, i:i + 1])
            return codes.view(b, *self.gpt_config.code_shape)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample(self, previous: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, *, n: int | None = None) -> torch.Tensor:
        """A sampled next clip ``(B, C, T, H, W)`` decoded by the VQ-VAE, clamped to [-0.5, 0.5]
        (see :meth:`sample_codes`)."""
        codes = self.sample_codes(previous, temperature, generator, n=n)
        return self.vqvae.decode_codes(codes).clamp(-0.5, 0.5)


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # around vqvae-tiny (4 x 8 x 8 codes of 16 x 32 x 32 grey clips); CPU-sized
    "videogpt-tiny": dict(vqvae="vqvae-tiny", hidden_dim=96, layers=2, heads=4, dropout=0.1, attn_dropout=0.1,
                          cond_hiddens=48),
    # seed 004's table (see the module doc)
    "seed-004": dict(vqvae="seed-004", hidden_dim=576, layers=8, heads=4, dropout=0.2, attn_dropout=0.3,
                     cond_hiddens=240),
}


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise InputError("videogpt preset", f"unknown preset {name!r}", f"use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def vqvae_preset(name: str, **overrides: Any) -> VQVAEConfig:
    """The VQ-VAE config that GPT preset ``name`` pairs with (``overrides`` applied)."""
    return vq.get_preset(_preset(name)["vqvae"], **overrides)


def get_preset(name: str, vqvae: VQVAEConfig | None = None, **overrides: Any) -> VideoGPTConfig:
    """The :class:`VideoGPTConfig` of preset ``name`` with ``overrides``; its code grid,
    ``n_codes`` and ``embedding_dim`` come from ``vqvae`` (default: the preset's VQ-VAE)."""
    values = _preset(name)
    vqvae = vqvae if vqvae is not None else vq.get_preset(values.pop("vqvae"))
    values.pop("vqvae", None)
    allowed = {f.name for f in fields(VideoGPTConfig)} - {"code_shape", "n_codes", "embedding_dim"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ConfigError("videogpt", f"unknown option(s) {', '.join(sorted(unknown))}",
                          f"use {', '.join(sorted(allowed))} (the code grid comes from the VQ-VAE)")
    return replace(VideoGPTConfig.for_vqvae(vqvae, **values), **overrides)


def build(name: str, vqvae: VQVAE | None = None, **overrides: Any) -> VideoGPT:
    """The :class:`VideoGPT` of preset ``name`` around ``vqvae`` (default: a new, untrained
    VQ-VAE of the preset's VQ-VAE config)."""
    vqvae = vqvae if vqvae is not None else VQVAE(vqvae_preset(name))
    return VideoGPT(get_preset(name, vqvae.config, **overrides), vqvae)


def preset_parameters(name: str, vqvae_overrides: dict[str, Any] | None = None,
                      **overrides: Any) -> dict[str, int]:
    """Parameters per top-level module of a preset (``vqvae`` is the frozen VQ-VAE's total),
    counted on the meta device; ``vqvae_overrides`` change its VQ-VAE config."""
    with torch.device("meta"):
        model = build(name, VQVAE(vqvae_preset(name, **(vqvae_overrides or {}))), **overrides)
        return count_parameters(model)


def parameter_table(name: str, vqvae_overrides: dict[str, Any] | None = None, **overrides: Any) -> str:
    """The per-module parameter counts of a preset as the ``cinebrain params`` command prints
    them: the config, one module a line, then trainable (all but the frozen VQ-VAE),
    non-trainable and total."""
    counts = preset_parameters(name, vqvae_overrides, **overrides)
    config = get_preset(name, vqvae_preset(name, **(vqvae_overrides or {})), **overrides)
    from cinebrain.models.counts import format_parameter_table

    frozen, total = counts["vqvae"], sum(counts.values())
    return format_parameter_table(f"{name}: {asdict(config)}", counts, {
        "trainable": total - frozen, "non-trainable": frozen, "total": total})
