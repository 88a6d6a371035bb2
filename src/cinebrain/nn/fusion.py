"""Fusing modality vectors into one representation: :class:`MultimodalCombiner`.

The combiner takes ``{modality: (B, d_m)}`` for *any* subset of the configured
modalities, plus optionally a per-sample presence mask ``{modality: (B,) bool}`` (for
modality dropout). Internally every method sees all M configured modalities and a
presence mask ``(B, M)``; absent inputs are zeros. So the output size never depends on
which modalities came:

- ``concat``: absent modalities contribute zeros; optionally followed by
  Linear -> norm -> ReLU -> Dropout (``project=True``; seed 000's "layer 4").
- ``weighted_sum``: each modality is projected to ``out_dim`` (Linear -> norm) and
  summed with weights, given or learned (softmax over logits), renormalised over the
  modalities present in each sample.
- ``mlp``: the (zero-filled) concatenation through an MLP.
- ``attention``: one token per modality (projection + learned modality embedding),
  transformer blocks over the present tokens, then pooled by a learned query
  (``pool="query"``) or a mean over present tokens (``pool="mean"``).
- ``cross_attention``: the same tokens, but each modality attends only to the *other*
  present modalities (masked attention; a modality alone attends to itself), then pooled.
  This is per-modality cross-attention with shared projections, done in one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cinebrain.errors import ConfigError
from cinebrain.nn.attention import AttentionPool, Transformer, TransformerConfig, key_mask
from cinebrain.nn.common import check_choice, make_norm, masked_mean

FUSION_METHODS = ("concat", "weighted_sum", "mlp", "attention", "cross_attention")


@dataclass
class FusionConfig:
    """How modality vectors are combined.

    modalities: ordered ``{name: input dim}``. out_dim: output size (concat without
    projection: the sum of input dims, so leave None; otherwise defaults to ``dim``, or
    to the sum of input dims for projected concat). dim: common width of projected
    modalities / tokens. hidden_dims: MLP widths (``mlp``). weights: fixed modality
    weights for ``weighted_sum`` (None learns them). n_heads, n_layers: attention
    methods. pool: "query" | "mean" for attention methods. norm: "layer" | "batch" |
    "group" | "none" on projected features ("batch" reproduces seed 000).
    """

    modalities: dict[str, int] = field(
        default_factory=lambda: {"video": 512, "audio": 256, "text": 256}
    )
    method: str = "concat"
    out_dim: int | None = None
    project: bool = False
    dim: int = 256
    hidden_dims: tuple[int, ...] = (512,)
    weights: dict[str, float] | None = None
    n_heads: int = 4
    n_layers: int = 1
    pool: str = "query"
    norm: str = "layer"
    dropout: float = 0.0

    def __post_init__(self):
        check_choice("method", self.method, FUSION_METHODS)
        check_choice("pool", self.pool, ("query", "mean"))
        check_choice("norm", self.norm, ("batch", "group", "layer", "none"))
        if not self.modalities:
            raise ConfigError("modalities", "no modality configured")
        for name in self.modalities:
            if "." in name or not name:
                raise ConfigError("modalities", f"bad modality name {name!r}", "drop the '.'")
        if self.weights is not None:
            extra = set(self.weights) - set(self.modalities)
            if extra or any(w < 0 for w in self.weights.values()):
                raise ConfigError(
                    "weights", f"must be >= 0 and name configured modalities, got {self.weights}"
                )
        total = sum(self.modalities.values())
        if self.method == "concat" and not self.project and self.out_dim not in (None, total):
            raise ConfigError(
                "out_dim", f"concat without projection gives {total}", "set project=True"
            )
        if self.method in ("attention", "cross_attention") and self.dim % self.n_heads:
            raise ConfigError("n_heads", f"dim {self.dim} is not divisible by {self.n_heads}")

    @property
    def output_dim(self) -> int:
        if self.method == "concat":
            return self.out_dim or sum(self.modalities.values())
        return self.out_dim or self.dim


class MultimodalCombiner(nn.Module):
    """``{modality: (B, d_m)}`` for any subset of modalities -> (B, out_dim)."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.names = list(cfg.modalities)
        self.out_dim = cfg.output_dim
        dims, M, D = cfg.modalities, len(cfg.modalities), cfg.dim
        total = sum(dims.values())
        method = cfg.method

        if method == "concat":
            self.fuse = (
                nn.Sequential(
                    nn.Linear(total, self.out_dim),
                    make_norm(cfg.norm, self.out_dim, 0),
                    nn.ReLU(inplace=True),
                    nn.Dropout(cfg.dropout),
                )
                if cfg.project
                else nn.Identity()
            )
        elif method == "mlp":
            widths = (total, *cfg.hidden_dims)
            layers: list[nn.Module] = []
            for a, b in zip(widths[:-1], widths[1:], strict=True):
                layers += [
                    nn.Linear(a, b),
                    make_norm(cfg.norm, b, 0),
                    nn.GELU(),
                    nn.Dropout(cfg.dropout),
                ]
            self.fuse = nn.Sequential(*layers, nn.Linear(widths[-1], self.out_dim))
        elif method == "weighted_sum":
            self.proj = nn.ModuleDict(
                {
                    n: nn.Sequential(
                        nn.Linear(d, self.out_dim), make_norm(cfg.norm, self.out_dim, 0)
                    )
                    for n, d in dims.items()
                }
            )
            if cfg.weights is None:
                self.logits = nn.Parameter(torch.zeros(M))
            else:
                w = [float(cfg.weights.get(n, 0.0)) for n in self.names]
                self.register_buffer("fixed_weights", torch.tensor(w), persistent=False)
        else:  # attention, cross_attention
            self.proj = nn.ModuleDict({n: nn.Linear(d, D) for n, d in dims.items()})
            self.modality_embed = nn.Parameter(torch.zeros(1, M, D))
            nn.init.trunc_normal_(self.modality_embed, std=0.02)
            self.transformer = Transformer(
                TransformerConfig(D, cfg.n_layers, cfg.n_heads, dropout=cfg.dropout)
            )
            self.pool = AttentionPool(D, cfg.n_heads) if cfg.pool == "query" else None
            self.head = nn.Linear(D, self.out_dim) if self.out_dim != D else nn.Identity()

    # -- inputs ------------------------------------------------------------------------

    def _gather(
        self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Zero-filled inputs, one per configured modality, and presence (B, M) bool."""
        unknown = set(inputs) - set(self.names)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; configured: {self.names}")
        if not inputs:
            raise ValueError(f"no modality given; configured: {self.names}")
        first = next(iter(inputs.values()))
        B, device, dtype = first.shape[0], first.device, first.dtype
        xs, cols = [], []
        for name in self.names:
            d = self.cfg.modalities[name]
            x = inputs.get(name)
            if x is None:
                xs.append(torch.zeros(B, d, device=device, dtype=dtype))
                cols.append(torch.zeros(B, dtype=torch.bool, device=device))
                continue
            if x.shape != (B, d):
                raise ValueError(f"modality {name!r}: expected ({B}, {d}), got {tuple(x.shape)}")
            here = torch.ones(B, dtype=torch.bool, device=device)
            if present is not None and name in present:
                here = present[name].to(device=device, dtype=torch.bool)
                x = x * here.unsqueeze(1).to(x.dtype)
            xs.append(x)
            cols.append(here)
        return xs, torch.stack(cols, dim=1)  # list of (B, d_m), (B, M)

    # -- forward -----------------------------------------------------------------------

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        xs, mask = self._gather(inputs, present)
        method = self.cfg.method
        if method in ("concat", "mlp"):
            return self.fuse(torch.cat(xs, dim=1))  # (B, out_dim)
        if method == "weighted_sum":
            h = torch.stack(
                [self.proj[n](x) for n, x in zip(self.names, xs, strict=True)], dim=1
            )  # (B,M,D)
            w = self._sample_weights(mask).to(h.dtype)  # (B, M)
            return (w.unsqueeze(-1) * h).sum(dim=1)  # (B, out_dim)
        tokens = torch.stack([self.proj[n](x) for n, x in zip(self.names, xs, strict=True)], dim=1)
        tokens = tokens + self.modality_embed.to(tokens.dtype)  # (B, M, D)
        if method == "attention":
            attn_mask = key_mask(mask)  # (B, 1, 1, M)
        else:
            M = mask.shape[1]
            others = mask[:, None, :] & ~torch.eye(M, dtype=torch.bool, device=mask.device)
            alone = ~others.any(dim=-1, keepdim=True)  # (B, M, 1) no other modality present
            eye = torch.eye(M, dtype=torch.bool, device=mask.device)
            attn_mask = (others | (alone & eye)).unsqueeze(1)  # (B, 1, M, M)
        tokens = self.transformer(tokens, mask=attn_mask)  # (B, M, D)
        if self.pool is not None:
            pooled = self.pool(tokens, mask)[:, 0]  # (B, D)
        else:
            pooled = masked_mean(tokens, mask)
        return self.head(pooled)  # (B, out_dim)

    def _sample_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """Weighted-sum weights per sample (B, M), renormalised over present modalities."""
        if self.cfg.weights is None:
            logits = self.logits.expand(mask.shape[0], -1).masked_fill(~mask, float("-inf"))
            return logits.softmax(dim=-1).nan_to_num(0.0)
        w = self.fixed_weights * mask
        return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)

    # -- interpretation ----------------------------------------------------------------

    @torch.no_grad()
    def modality_weights(self) -> dict[str, float]:
        """How much each modality counts, summing to 1 over configured modalities.

        weighted_sum: the (learned or given) weights with all modalities present.
        attention / cross_attention with ``pool="query"``: the pooling attention over
        modality tokens in the last forward call, averaged over samples and heads.
        concat with projection / mlp: each modality's share of the squared norm of the
        first Linear's weights (its input columns). Otherwise (plain concat, mean
        pooling, or before any forward call): equal weights.
        """
        M = len(self.names)
        w = torch.full((M,), 1.0 / M)
        method = self.cfg.method
        if method == "weighted_sum":
            if self.cfg.weights is None:
                w = self.logits.float().softmax(0)
            else:
                w = self.fixed_weights / self.fixed_weights.sum().clamp_min(1e-12)
        elif method in ("attention", "cross_attention"):
            if self.pool is not None and self.pool.last_weights is not None:
                w = self.pool.last_weights.float().mean(dim=(0, 1, 2))  # (M,)
        elif method == "mlp" or self.cfg.project:
            weight = self.fuse[0].weight.float()  # (out, sum d_m)
            sizes = [self.cfg.modalities[n] for n in self.names]
            shares = torch.stack([c.pow(2).sum() for c in weight.split(sizes, dim=1)])
            w = shares / shares.sum().clamp_min(1e-12)
        return {n: float(v) for n, v in zip(self.names, w.cpu(), strict=True)}
