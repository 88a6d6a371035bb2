"""Attention layers on PyTorch's fused ``scaled_dot_product_attention`` (SDPA).

Everything here works on token sequences ``(B, N, D)``. Masks are boolean with True
meaning "may attend", broadcastable to ``(B, n_heads, N, M)``; a ``(B, N)`` key mask
becomes ``mask[:, None, None, :]`` (see :func:`key_mask`). Positional schemes that act on
queries and keys (RoPE) plug in through ``rope``: a callable ``(q, k) -> (q, k)`` on
tensors of shape ``(B, n_heads, N, head_dim)``, applied after the projection and before
the dot product, so a ViViT can add RoPE without touching these classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cinebrain.errors import ConfigError

Rope = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, M)`` key-padding mask -> ``(B, 1, 1, M)`` attention mask (None passes through).

    Rows with no key left would make softmax produce NaN; such rows may attend to every
    key instead (their output is then a mean of padding, and callers ignore it).
    """
    if mask is None:
        return None
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask[:, None, None, :]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout_p: float,
) -> torch.Tensor:
    """SDPA on ``(B, H, N, Dh)`` queries and ``(B, H, M, Dh)`` keys/values.

    A query row left with no key (e.g. causal attention with the first key masked out)
    yields NaN, as in SDPA; pad at the end of causal sequences.
    """
    if causal and mask is not None:
        # SDPA takes either is_causal or attn_mask; combine them ourselves.
        n, m = q.shape[-2], k.shape[-2]
        causal_mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril()
        mask, causal = mask & causal_mask, False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    x (B, N, D) -> (B, N, D). ``causal`` lets token i see tokens <= i only.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        qkv_bias: bool = True,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        causal: bool = False,
    ):
        super().__init__()
        if dim % n_heads:
            raise ConfigError("n_heads", f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.causal, self.attn_dropout = n_heads, causal, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None
    ) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.n_heads, D // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        if rope is not None:
            q, k = rope(q, k)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = _attend(q, k, v, mask, self.causal, dropout_p)  # (B, H, N, Dh)
        y = y.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(y))


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``x`` over a separate ``context``.

    x (B, N, D), context (B, M, context_dim) -> (B, N, D). Keys and values share one
    fused projection of the context.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        causal: bool = False,
    ):
        super().__init__()
        if dim % n_heads:
            raise ConfigError("n_heads", f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.causal, self.attn_dropout = n_heads, causal, attn_dropout
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        B, N, D = x.shape
        M, H = context.shape[1], self.n_heads
        q = self.q(x).view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, Dh)
        k, v = self.kv(context).view(B, M, 2, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = rope(q, k)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = _attend(q, k, v, mask, self.causal, dropout_p)  # (B, H, N, Dh)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(B, N, D)))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout; (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


@dataclass
class TransformerConfig:
    """A stack of pre-norm transformer blocks.

    dropout: on the attention projection and MLP outputs; attn_dropout: on attention
    probabilities; drop_path: stochastic-depth rate of the last block (rising linearly
    from 0 over depth); causal: each token sees only earlier tokens.
    """

    dim: int = 256
    depth: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    causal: bool = False
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ConfigError(
                "n_heads", f"dim {self.dim} is not divisible by n_heads {self.n_heads}"
            )


class TransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x))).

    x (B, N, D) -> (B, N, D).
    """

    def __init__(self, cfg: TransformerConfig, drop_path: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = SelfAttention(
            cfg.dim, cfg.n_heads, cfg.qkv_bias, cfg.attn_dropout, cfg.dropout, cfg.causal
        )
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.dropout)
        self.drop_path = DropPath(cfg.drop_path if drop_path is None else drop_path)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask, rope=rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """``cfg.depth`` transformer blocks and a final LayerNorm; (B, N, D) -> (B, N, D)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(TransformerBlock(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Rope | None = None
    ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask=mask, rope=rope)
        return self.norm(x)


class AttentionPool(nn.Module):
    """Pool a token sequence with learned queries: (B, N, D) -> (B, n_queries, D).

    The attention weights of the last call are kept in ``last_weights``
    ``(B, n_heads, n_queries, N)`` (detached) so callers can report which tokens the
    pool used. The scores are computed explicitly rather than with SDPA, which does not
    return weights; with a handful of queries that costs nothing.
    """

    def __init__(self, dim: int, n_heads: int = 4, n_queries: int = 1, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads:
            raise ConfigError("n_heads", f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.query = nn.Parameter(torch.zeros(1, n_queries, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        H, Q = self.n_heads, self.query.shape[1]
        q = self.query.expand(B, -1, -1).view(B, Q, H, D // H).transpose(1, 2)  # (B,H,Q,Dh)
        k, v = self.kv(self.norm(x)).view(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, Q, N)
        if mask is not None:
            scores = scores.masked_fill(~key_mask(mask), float("-inf"))
        weights = scores.softmax(dim=-1)
        self.last_weights = weights.detach()
        y = self.drop(weights) @ v  # (B, H, Q, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, Q, D))
