"""A VQ-VAE for video clips: 3-D convolutions, axial-attention residual blocks, an EMA codebook.

The first stage of VideoGPT (Yan et al. 2021; seed 004): a clip of ``T`` frames is encoded
into a grid of discrete codes ``(t', h', w') = (T, H, W) / downsample`` and decoded back.

Video tensors are ``(B, C, T, H, W)`` float, with pixel values in ``[-0.5, 0.5]`` (0..255
mapped by ``x / 255 - 0.5``); PSNR is computed for that range (peak-to-peak 1).

Architecture
------------
Encoder
    ``log2(max(downsample))`` stride-2 convolutions (kernel 4, "same" padding, ReLU after
    each); an axis whose factor is already reached gets stride 1, so any power-of-two
    factor per axis works, e.g. ``(1, 2, 2)`` or ``(4, 16, 16)``. Then a kernel-3
    convolution, ``n_res_layers`` attention residual blocks, a norm and a ReLU.
Attention residual block
    ``x + attn(relu(norm(conv1(relu(norm(conv3(relu(norm(x)))))))) + pos)``: a kernel-3
    convolution to ``n_hiddens // 2`` channels, a 1x1x1 back to ``n_hiddens``, then axial
    attention: multi-head attention along time, along height and along width, each with
    its own projections, computed separately and summed. Norms are LayerNorms over the
    channels of each position (no batch statistics: train and eval behave alike, and
    nothing needs synchronising under DDP); they have the 2C parameters of upstream's
    BatchNorm. The position embedding ``pos`` (one learned vector per t', per h' and per
    w', broadcast and concatenated over channels) is one module shared by every block of
    the encoder and the decoder, as the seed describes.
pre_vq_conv, codebook, post_vq_conv
    1x1x1 convolutions ``n_hiddens -> embedding_dim`` and back around :class:`Codebook`:
    nearest-code quantisation with a straight-through gradient, a commitment loss
    ``commitment * ||sg[e] - E(x)||^2``, and EMA code updates (no trainable parameters;
    see the class for the formulas, the Laplace smoothing and dead-code restarts).
Decoder
    Attention residual blocks, a norm and a ReLU, then transposed convolutions (kernel 4)
    mirroring the encoder's strides in reverse, to ``in_channels`` at the input shape.

Loss: ``mse(x, D(e)) / data_variance + commitment_loss`` (upstream divides by 0.06, roughly
the variance of natural video in this range, so the two terms start comparable).

Seed 004's parameter table
--------------------------
The seed reports (PyTorch Lightning's summary) encoder 18.7 M, decoder 17.1 M, pre_vq_conv
30.8 K, post_vq_conv 31.0 K, codebook 0, total 35.8 M (143.306 MB at 4 bytes). Its
hyperparameter table (embedding_dim 256, n_codes 2048, downsample (4, 4, 4)) repeats
upstream's command-line defaults and contradicts those counts:

* pre_vq_conv = 240 * 128 + 128 = 30,848 and post_vq_conv = 128 * 240 + 240 = 30,960 only
  with ``embedding_dim`` 128 (256 would give 61,696 and 61,680), and the GPT's fc_in
  (128 * 576 = 73,728) and fc_out (576 * 1024 = 589,824) fix ``embedding_dim`` 128 and
  ``n_codes`` 1024.
* With downsample (4, 4, 4) the encoder has two strided convolutions and 11.3 M
  parameters (decoder 9.7 M). The reported 18.7 M / 17.1 M are exactly two more
  240 -> 240 kernel-4 convolutions on each side (3,686,640 each): four strided layers, i.e.
  a factor 16 on some axis. The ``seed-004`` preset therefore downsamples (4, 16, 16):
  16 x 128 x 128 RGB clips (upstream's resolution) -> 4 x 8 x 8 codes. Encoder 18,660,240,
  decoder 17,104,563, pre/post 30,848 / 30,960: 35,826,611 parameters = 143.306 MB, the
  seed's figure to the last digit.
* The shared position embedding adds 80 * (4 + 8 + 8) = 1,600 parameters (total
  35,828,211, still 35.8 M); the seed's exact MB figure suggests its code had none
  (``position_embedding=False`` reproduces 143.306 MB).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from cinebrain.errors import ConfigError, InputError

__all__ = [
    "PRESETS",
    "AttentionResidualBlock",
    "AxialAttention",
    "BroadcastPositionEmbedding",
    "ChannelLayerNorm",
    "Codebook",
    "Decoder",
    "Encoder",
    "SamePadConv3d",
    "SamePadConvTranspose3d",
    "VQVAE",
    "VQVAEConfig",
    "count_parameters",
    "get_preset",
    "parameter_table",
    "preset_parameters",
    "psnr",
]

Triple = tuple[int, int, int]


def _triple(value: Any, where: str) -> Triple:
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        out = (int(value),) * 3
    if len(out) != 3:
        raise ConfigError(where, f"needs three values (t, h, w), got {value!r}")
    return out  # type: ignore[return-value]


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass
class VQVAEConfig:
    """Hyperparameters of :class:`VQVAE`.

    Parameters
    ----------
    in_channels : int
        Colour channels of the video (1 grey, 3 RGB).
    input_shape : (T, H, W)
        Clip shape; each axis divisible by its ``downsample`` factor. Fixed because the
        position embedding has one vector per latent position.
    embedding_dim : int
        Dimension of each code vector.
    n_codes : int
        Codebook size.
    n_hiddens : int
        Channels of the encoder and decoder.
    n_res_layers : int
        Attention residual blocks in the encoder and again in the decoder.
    downsample : (t, h, w)
        Powers of two; the latent grid is ``input_shape // downsample``.
    heads : int
        Heads of the axial attention (``n_hiddens`` divisible by it).
    decay : float
        EMA decay of the codebook statistics.
    epsilon : float
        Laplace smoothing of the codebook's EMA counts.
    commitment : float
        Weight of the commitment loss.
    restart_threshold : float
        A code whose EMA count falls below this is restarted from a random encoder output
        (0 disables restarts).
    position_embedding : bool
        The shared position embedding of the attention blocks.
    data_variance : float
        The reconstruction MSE is divided by it in the loss.
    """

    in_channels: int = 1
    input_shape: Triple = (16, 32, 32)
    embedding_dim: int = 32
    n_codes: int = 128
    n_hiddens: int = 48
    n_res_layers: int = 2
    downsample: Triple = (4, 4, 4)
    heads: int = 2
    decay: float = 0.99
    epsilon: float = 1e-5
    commitment: float = 0.25
    restart_threshold: float = 1.0
    position_embedding: bool = True
    data_variance: float = 0.06

    def __post_init__(self) -> None:
        self.input_shape = _triple(self.input_shape, "vqvae.input_shape")
        self.downsample = _triple(self.downsample, "vqvae.downsample")
        for name in ("in_channels", "embedding_dim", "n_codes", "n_hiddens", "heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"vqvae.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.n_res_layers < 0:
            raise ConfigError("vqvae.n_res_layers", f"must be >= 0, got {self.n_res_layers}")
        if not all(_is_power_of_two(d) for d in self.downsample):
            raise ConfigError("vqvae.downsample", f"factors must be powers of two, got {self.downsample}",
                              "use e.g. (4, 4, 4) or (1, 2, 2)")
        if max(self.downsample) == 1:
            raise ConfigError("vqvae.downsample", "at least one factor must be > 1", "use e.g. (4, 4, 4)")
        if any(s % d for s, d in zip(self.input_shape, self.downsample, strict=True)):
            raise ConfigError("vqvae.input_shape", f"{self.input_shape} is not divisible by downsample "
                              f"{self.downsample}", "crop or resize the clips, or change downsample")
        if self.n_hiddens % self.heads or self.n_hiddens < 2:
            raise ConfigError("vqvae.heads", f"n_hiddens {self.n_hiddens} is not divisible by heads "
                              f"{self.heads} (or below 2)")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError("vqvae.decay", f"must be in [0, 1), got {self.decay}")
        if self.epsilon <= 0 or self.data_variance <= 0:
            raise ConfigError("vqvae", "epsilon and data_variance must be > 0")
        if self.commitment < 0 or self.restart_threshold < 0:
            raise ConfigError("vqvae", "commitment and restart_threshold must be >= 0")

    @property
    def latent_shape(self) -> Triple:
        """``(t', h', w')``: the code grid of one clip."""
        return tuple(s // d for s, d in zip(self.input_shape, self.downsample, strict=True))  # type: ignore[return-value]

    def strides(self) -> list[Triple]:
        """The encoder's strides, one triple per strided convolution."""
        left = [int(math.log2(d)) for d in self.downsample]
        out = []
        while any(n > 0 for n in left):
            out.append(tuple(2 if n > 0 else 1 for n in left))
            left = [max(n - 1, 0) for n in left]
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------- layers
def _same_pad(kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """F.pad widths (last axis first) giving ``ceil(n / s)`` outputs; the extra pixel of an
    odd total goes in front."""
    widths: list[int] = []
    for k, s in reversed(list(zip(kernel, stride, strict=True))):
        total = k - s
        widths += [total - total // 2, total // 2]
    return tuple(widths)


class SamePadConv3d(nn.Module):
    """``nn.Conv3d`` with "same" padding: ``n`` inputs give ``n / stride`` outputs along each
    axis (``n`` divisible by the stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Triple,
                 stride: int | Triple = 1, bias: bool = True):
        super().__init__()
        kernel, stride = _triple(kernel_size, "kernel_size"), _triple(stride, "stride")
        self.pad = _same_pad(kernel, stride)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class SamePadConvTranspose3d(nn.Module):
    """The transpose of :class:`SamePadConv3d`: ``n`` inputs give ``n * stride`` outputs (the
    full transposed convolution cropped where the forward convolution padded)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Triple,
                 stride: int | Triple = 1, bias: bool = True):
        super().__init__()
        kernel, stride = _triple(kernel_size, "kernel_size"), _triple(stride, "stride")
        self.crop = [(k - s) - (k - s) // 2 for k, s in zip(kernel, stride, strict=True)]  # front, per axis
        self.stride = stride
        self.convt = nn.ConvTranspose3d(in_channels, out_channels, kernel, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convt(x)
        t, h, w = (n * s for n, s in zip(x.shape[2:], self.stride, strict=True))
        (ct, ch, cw) = self.crop
        return y[:, :, ct:ct + t, ch:ch + h, cw:cw + w]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position of a ``(B, C, ...)`` tensor (2C
    parameters)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class BroadcastPositionEmbedding(nn.Module):
    """Learned position embedding of a grid: one table per axis, broadcast and concatenated.

    For ``shape`` (t, h, w) and ``dim`` D, axis i holds ``(shape[i], d_i)`` with the d_i
    splitting D as evenly as possible (D // 3 each when divisible), so position (a, b, c)
    gets ``[E_t[a], E_h[b], E_w[c]]``: ``sum_i shape[i] * d_i`` parameters.
    ``forward()`` returns the ``(*shape, D)`` table (channels last).
    """

    def __init__(self, shape: tuple[int, ...], dim: int, std: float = 0.01):
        super().__init__()
        n = len(shape)
        if dim < n:
            raise ConfigError("position embedding", f"dim {dim} is smaller than the grid's {n} axes")
        self.shape, self.dim = tuple(int(s) for s in shape), int(dim)
        dims = [dim // n + (1 if i < dim % n else 0) for i in range(n)]
        self.axes = nn.ParameterList(nn.Parameter(torch.randn(s, d) * std) for s, d in zip(self.shape, dims,
                                                                                            strict=True))

    def forward(self) -> torch.Tensor:
        n = len(self.shape)
        parts = []
        for i, table in enumerate(self.axes):
            view = [1] * n + [table.shape[1]]
            view[i] = self.shape[i]
            parts.append(table.view(view).expand(*self.shape, table.shape[1]))
        return torch.cat(parts, dim=-1)  # (*shape, D)


class _AxisAttention(nn.Module):
    """Multi-head self-attention along one axis of a channels-last grid (no mask)."""

    def __init__(self, dim: int, heads: int, axis: int):
        super().__init__()
        self.heads, self.axis = heads, axis
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, t, h, w, C); attend along grid axis self.axis (0 = t, 1 = h, 2 = w)
        moved = x.movedim(1 + self.axis, -2)  # (B, a, b, L, C)
        lead, (length, c) = moved.shape[:-2], moved.shape[-2:]
        q, k, v = self.qkv(moved.reshape(-1, length, c)).view(-1, length, 3, self.heads, c // self.heads
                                                               ).permute(2, 0, 3, 1, 4)  # (N, heads, L, hd)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(*lead, length, c)
        return self.proj(y).movedim(-2, 1 + self.axis)


class AxialAttention(nn.Module):
    """Attention along time, height and width computed separately and summed:
    ``(B, t, h, w, C) -> (B, t, h, w, C)``; three times ``4 C^2 + C`` parameters."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.t = _AxisAttention(dim, heads, 0)
        self.h = _AxisAttention(dim, heads, 1)
        self.w = _AxisAttention(dim, heads, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.t(x) + self.h(x) + self.w(x)


class AttentionResidualBlock(nn.Module):
    """``x + attention(conv path(x) + pos)`` on ``(B, C, t, h, w)`` (see the module doc)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        mid = channels // 2
        self.norm1 = ChannelLayerNorm(channels)
        self.conv1 = SamePadConv3d(channels, mid, 3, bias=False)
        self.norm2 = ChannelLayerNorm(mid)
        self.conv2 = SamePadConv3d(mid, channels, 1, bias=False)
        self.norm3 = ChannelLayerNorm(channels)
        self.attn = AxialAttention(channels, heads)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        h = F.relu(self.norm3(h)).movedim(1, -1)  # (B, t, h, w, C)
        if pos is not None:
            h = h + pos.to(h.dtype)
        return x + self.attn(h).movedim(-1, 1)


def _run_blocks(blocks: nn.ModuleList, h: torch.Tensor, pos: torch.Tensor | None, grad_ckpt: bool) -> torch.Tensor:
    for block in blocks:
        if grad_ckpt and torch.is_grad_enabled():
            h = checkpoint(block, h, pos, use_reentrant=False)
        else:
            h = block(h, pos)
    return h


class Encoder(nn.Module):
    """Video ``(B, in_channels, T, H, W)`` -> features ``(B, n_hiddens, t', h', w')``."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        c = config
        self.convs = nn.ModuleList()
        channels = c.in_channels
        for stride in c.strides():
            self.convs.append(SamePadConv3d(channels, c.n_hiddens, 4, stride=stride))
            channels = c.n_hiddens
        self.conv_last = SamePadConv3d(channels, c.n_hiddens, 3)
        self.res_stack = nn.ModuleList(AttentionResidualBlock(c.n_hiddens, c.heads) for _ in range(c.n_res_layers))
        self.norm = ChannelLayerNorm(c.n_hiddens)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        h = _run_blocks(self.res_stack, self.conv_last(x), pos, self.grad_checkpointing)
        return F.relu(self.norm(h))


class Decoder(nn.Module):
    """Features ``(B, n_hiddens, t', h', w')`` -> video ``(B, in_channels, T, H, W)``."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        c = config
        self.res_stack = nn.ModuleList(AttentionResidualBlock(c.n_hiddens, c.heads) for _ in range(c.n_res_layers))
        self.norm = ChannelLayerNorm(c.n_hiddens)
        strides = list(reversed(c.strides()))
        self.convts = nn.ModuleList(
            SamePadConvTranspose3d(c.n_hiddens, c.in_channels if i == len(strides) - 1 else c.n_hiddens, 4,
                                   stride=s)
            for i, s in enumerate(strides))
        self.grad_checkpointing = False

    def forward(self, h: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.norm(_run_blocks(self.res_stack, h, pos, self.grad_checkpointing)))
        for i, convt in enumerate(self.convts):
            h = convt(h)
            if i < len(self.convts) - 1:
                h = F.relu(h)
        return h


# ---------------------------------------------------------------------- codebook
def fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``device`` (nothing to switch off on the meta device)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class Codebook(nn.Module):
    """Nearest-code vector quantisation with EMA updates and dead-code restarts.

    Buffers only (no trainable parameters): ``embeddings`` (K, D), ``cluster_size`` N (K,),
    the EMA count of vectors assigned to each code, ``embedding_sum`` (K, D), the EMA sum of
    those vectors, and ``initialized``. In training mode each forward, with n_k the number
    and s_k the sum of this batch's vectors assigned to code k (summed over all ranks under
    ``torch.distributed``, so every rank makes the same update):

    * ``N_k <- decay N_k + (1 - decay) n_k`` and ``S_k <- decay S_k + (1 - decay) s_k``;
    * ``e_k <- S_k / Ñ_k`` with the Laplace-smoothed count
      ``Ñ_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j``;
    * codes with ``N_k < restart_threshold`` are restarted: ``e_k`` and ``S_k`` become a
      random encoder output of the batch (rank 0's draw), ``N_k`` becomes
      ``max(restart_threshold, 1)``.

    The first training forward initialises every code that way (data-dependent init).
    Evaluation mode never changes the buffers.
    """

    def __init__(self, n_codes: int, embedding_dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 restart_threshold: float = 1.0):
        super().__init__()
        self.n_codes, self.embedding_dim = int(n_codes), int(embedding_dim)
        self.decay, self.epsilon, self.restart_threshold = float(decay), float(epsilon), float(restart_threshold)
        self.register_buffer("embeddings", torch.randn(n_codes, embedding_dim))
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("embedding_sum", self.embeddings.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.long))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``flat`` (N, D), float32 distances."""
        e = self.embeddings
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None])
        return distances.argmin(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``codes`` (any shape) -> ``(*codes.shape, D)``."""
        return F.embedding(codes, self.embeddings)

    def _random_rows(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` random rows of ``flat`` (distinct when there are enough), identical on every
        rank (rank 0's draw)."""
        if flat.shape[0] >= n:
            rows = flat[torch.randperm(flat.shape[0], device=flat.device)[:n]]
        else:  # repeated rows get a little noise so they do not stay tied
            rows = flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)]
            rows = rows + torch.randn_like(rows) * (0.01 / math.sqrt(flat.shape[1]))
        rows = rows.contiguous()
        if _distributed():
            dist.broadcast(rows, src=0)
        return rows

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor, which: torch.Tensor) -> None:
        idx = which.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return
        rows = self._random_rows(flat, idx.numel())
        count = max(self.restart_threshold, 1.0)
        self.embeddings[idx] = rows
        self.embedding_sum[idx] = rows * count
        self.cluster_size[idx] = count

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, codes, flat)
        if _distributed():
            dist.all_reduce(sums)
        d = self.decay
        self.cluster_size.mul_(d).add_(counts, alpha=1 - d)
        self.embedding_sum.mul_(d).add_(sums, alpha=1 - d)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.n_codes * self.epsilon) * n
        self.embeddings.copy_(self.embedding_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            self._restart(flat, self.cluster_size < self.restart_threshold)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Quantise ``z`` (B, D, t, h, w); in training mode also update the codebook.

        Returns ``quantized`` (B, D, t, h, w) float32 with the straight-through gradient of
        ``z``, ``codes`` (B, t, h, w) int64, ``commitment_loss`` (``||sg[e] - z||^2``
        averaged, not yet weighted), ``counts`` (K,) of this batch (all ranks when training),
        ``usage`` (fraction of codes used in the batch) and ``perplexity``
        (``exp`` of the entropy of the batch's code frequencies).
        """
        with fp32(z.device):
            z = z.float()
            flat = z.movedim(1, -1).reshape(-1, self.embedding_dim)
            if self.training and not bool(self.initialized):
                with torch.no_grad():
                    self._restart(flat.detach(), torch.ones(self.n_codes, dtype=torch.bool, device=z.device))
                    self.initialized.fill_(1)
            codes = self.nearest(flat.detach())
            counts = torch.zeros(self.n_codes, device=z.device).index_add_(0, codes, torch.ones_like(codes,
                                                                                              dtype=torch.float32))
            # the codes as they were when chosen (before this batch's update)
            quantized = self.lookup(codes).view(*z.shape[:1], *z.shape[2:], self.embedding_dim).movedim(-1, 1)
            if self.training:
                if _distributed():
                    dist.all_reduce(counts)
                self._ema_update(flat.detach(), codes, counts)
            commitment = F.mse_loss(z, quantized.detach())
            quantized = z + (quantized - z).detach()
            probs = counts / counts.sum().clamp(min=1.0)
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
            usage = (counts > 0).float().mean()
        return {"quantized": quantized, "codes": codes.view(z.shape[0], *z.shape[2:]),
                "commitment_loss": commitment, "counts": counts, "usage": usage, "perplexity": perplexity}


# ---------------------------------------------------------------------- the model
def psnr(mse: torch.Tensor, peak_to_peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB from mean squared errors, ``10 log10(range^2 / mse)`` (mse floored at 1e-10)."""
    return 10.0 * torch.log10(peak_to_peak ** 2 / mse.clamp(min=1e-10))


class VQVAE(nn.Module):
    """The video VQ-VAE of the module doc; follows the training engine's protocol.

    Batches are dicts with ``"video"`` (B, C, T, H, W) in [-0.5, 0.5], of the config's
    ``in_channels`` and ``input_shape``.

    ``training_step`` returns ``loss``, ``recon_loss``, ``commitment_loss`` (weighted),
    ``perplexity`` and ``usage``; ``validation_step`` per-sample ``mse`` and
    ``commitment_loss`` and the batch's code ``counts``; ``validation_epoch_end`` gives
    ``psnr`` (mean over clips of the per-clip PSNR), ``mse``, ``recon_loss``,
    ``commitment_loss``, ``loss``, and ``usage`` / ``perplexity`` of the codes over the whole
    validation set.
    """

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__()
        self.config = c = config or VQVAEConfig()
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.pre_vq_conv = SamePadConv3d(c.n_hiddens, c.embedding_dim, 1)
        self.post_vq_conv = SamePadConv3d(c.embedding_dim, c.n_hiddens, 1)
        self.codebook = Codebook(c.n_codes, c.embedding_dim, c.decay, c.epsilon, c.restart_threshold)
        self.pos_embd = BroadcastPositionEmbedding(c.latent_shape, c.n_hiddens) if c.position_embedding else None
        self._flops: float | None = None

    # ------------------------------------------------------------------ shapes
    @property
    def latent_shape(self) -> Triple:
        return self.config.latent_shape

    @property
    def n_codes(self) -> int:
        return self.config.n_codes

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def check_video(self, video: torch.Tensor, where: str = "video") -> None:
        """Raise :class:`InputError` unless ``video`` is (B, in_channels, *input_shape)."""
        c = self.config
        if video.ndim != 5 or video.shape[1] != c.in_channels or tuple(video.shape[2:]) != c.input_shape:
            raise InputError(where, f"video of shape {tuple(video.shape)}, the VQ-VAE takes (B, {c.in_channels}, "
                             f"{', '.join(map(str, c.input_shape))})",
                             "cut clips of the configured frames, size and channels")

    def check_codes(self, codes: torch.Tensor, where: str = "codes") -> None:
        """Raise :class:`InputError` unless ``codes`` is (B, *latent_shape) of integers in
        ``0..n_codes - 1``."""
        if codes.ndim != 4 or tuple(codes.shape[1:]) != self.latent_shape or codes.dtype.is_floating_point:
            raise InputError(where, f"codes of shape {tuple(codes.shape)} ({codes.dtype}), the VQ-VAE's grid is "
                             f"(B, {', '.join(map(str, self.latent_shape))}) int64")
        if codes.device.type != "meta" and codes.numel() and not (
                0 <= int(codes.min()) and int(codes.max()) < self.n_codes):
            raise InputError(where, f"codes outside 0..{self.n_codes - 1}", "give indices of this VQ-VAE's codebook")

    def _pos(self) -> torch.Tensor | None:
        return None if self.pos_embd is None else self.pos_embd()

    # ------------------------------------------------------------------ encode / decode
    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation encoder output ``(B, embedding_dim, t', h', w')``."""
        self.check_video(video)
        return self.pre_vq_conv(self.encoder(video, self._pos()))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, t', h', w')`` int64 of ``video``; never updates the codebook."""
        z = self.encode_latents(video)
        with fp32(z.device):
            flat = z.float().movedim(1, -1).reshape(-1, self.embedding_dim)
            return self.codebook.nearest(flat).view(z.shape[0], *z.shape[2:])

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(B, embedding_dim, t', h', w')`` of ``codes`` (B, t', h', w')."""
        self.check_codes(codes)
        return self.codebook.lookup(codes).movedim(-1, 1)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Video ``(B, C, T, H, W)`` from code vectors ``(B, embedding_dim, t', h', w')``."""
        return self.decoder(self.post_vq_conv(embeddings), self._pos())

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Video ``(B, C, T, H, W)`` (unclamped) from codes ``(B, t', h', w')``."""
        return self.decode(self.embed_codes(codes))

    def forward(self, batch: dict[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct a batch (or a video tensor); in training mode the codebook updates.

        Returns ``recon`` (B, C, T, H, W), ``codes``, ``mse`` per clip (B,), ``recon_loss``,
        ``commitment_loss`` (weighted), ``loss``, ``perplexity``, ``usage``, ``counts``.
        """
        video = batch["video"] if isinstance(batch, dict) else batch
        vq = self.codebook(self.encode_latents(video))
        recon = self.decode(vq["quantized"])
        mse = (recon.float() - video.float()).pow(2).flatten(1).mean(1)  # (B,)
        recon_loss = mse.mean() / self.config.data_variance
        commitment = self.config.commitment * vq["commitment_loss"]
        return {"recon": recon, "codes": vq["codes"], "mse": mse, "recon_loss": recon_loss,
                "commitment_loss": commitment, "loss": recon_loss + commitment,
                "perplexity": vq["perplexity"], "usage": vq["usage"], "counts": vq["counts"]}

    # ------------------------------------------------------------------ engine protocol
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(batch)
        return {"loss": out["loss"], "recon_loss": out["recon_loss"].detach(),
                "commitment_loss": out["commitment_loss"].detach(), "perplexity": out["perplexity"],
                "usage": out["usage"]}

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        video = batch["video"]
        z = self.encode_latents(video)
        vq = self.codebook(z)
        recon = self.decode(vq["quantized"])
        mse = (recon.float() - video.float()).pow(2).flatten(1).mean(1)
        commitment = self.config.commitment * (z.float() - vq["quantized"].detach()).pow(2).flatten(1).mean(1)
        return {"mse": mse, "commitment_loss": commitment, "counts": vq["counts"]}

    def validation_epoch_end(self, outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        mse = torch.cat([o["mse"] for o in outputs]).double()
        commitment = torch.cat([o["commitment_loss"] for o in outputs]).double()
        counts = torch.stack([o["counts"] for o in outputs]).double().sum(0)
        probs = counts / counts.sum().clamp(min=1.0)
        recon_loss = mse.mean() / self.config.data_variance
        return {"psnr": float(psnr(mse).mean()), "mse": float(mse.mean()), "recon_loss": float(recon_loss),
                "commitment_loss": float(commitment.mean()), "loss": float(recon_loss + commitment.mean()),
                "usage": float((counts > 0).double().mean()),
                "perplexity": float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum()))}

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the attention residual blocks in the backward pass."""
        self.encoder.grad_checkpointing = self.decoder.grad_checkpointing = bool(enabled)

    def flops_per_sample(self) -> float:
        """Matmul, convolution and attention FLOPs of one training clip: 3x one forward pass
        (forward + backward), counted by ``torch.utils.flop_counter`` on the meta device."""
        if self._flops is None:
            with torch.device("meta"):
                model = VQVAE(self.config).eval()
                video = torch.zeros(1, self.config.in_channels, *self.config.input_shape)
            with FlopCounterMode(display=False) as counter:
                model(video)
            self._flops = 3.0 * float(counter.get_total_flops())
        return self._flops


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # 16 x 32 x 32 grey clips -> 4 x 8 x 8 codes; trains on two CPU cores in minutes
    "vqvae-tiny": dict(in_channels=1, input_shape=(16, 32, 32), embedding_dim=32, n_codes=128, n_hiddens=48,
                       n_res_layers=2, downsample=(4, 4, 4), heads=2),
    # seed 004's table (see the module doc): 16 x 128 x 128 RGB -> 4 x 8 x 8 codes
    "seed-004": dict(in_channels=3, input_shape=(16, 128, 128), embedding_dim=128, n_codes=1024, n_hiddens=240,
                     n_res_layers=4, downsample=(4, 16, 16), heads=2),
}


def get_preset(name: str, **overrides: Any) -> VQVAEConfig:
    """The :class:`VQVAEConfig` of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise InputError("vqvae preset", f"unknown preset {name!r}", f"use one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(VQVAEConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError("vqvae", f"unknown option(s) {', '.join(sorted(unknown))}",
                          f"use {', '.join(VQVAEConfig.__dataclass_fields__)}")
    return replace(VQVAEConfig(**PRESETS[name]), **overrides)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level module, in registration order (a module without
    parameters, like the codebook, counts 0)."""
    return {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}


def preset_parameters(name: str, **overrides: Any) -> dict[str, int]:
    """Parameters per module of a preset's VQ-VAE, counted on the meta device (nothing is
    allocated)."""
    with torch.device("meta"):
        return count_parameters(VQVAE(get_preset(name, **overrides)))


def parameter_table(name: str, **overrides: Any) -> str:
    """The per-module parameter counts of a preset as the ``cinebrain params`` command
    prints them: the config, one module a line, then the total."""
    from cinebrain.models.counts import format_parameter_table

    return format_parameter_table(f"{name}: {asdict(get_preset(name, **overrides))}",
                                  preset_parameters(name, **overrides))
