"""The multimodal autoencoder: a brain-like bottleneck that predicts voxels and reconstructs the stimulus.

Read top to bottom::

    inputs {video (B, W, ...), audio (B, W, ...), text (B, W, 384)}    W consecutive TRs
      -> one encoder per modality, applied per TR            {mod: (B*W_valid, F_mod)}
      -> combiner (any subset of modalities)                 (B*W_valid, F)
      -> bottleneck MLP                                      (B, W, D)   "bottleneck"
         |-> decoder: one head per modality                  recon {mod: (B, W, ...)}
         '-> causal HRF layer over TRs                       (B, W, D)
             -> voxel hidden layers (optional, shared)       (B, W, H)
             -> voxel head of the subject                    (B, W, V) or (B, V)

The HRF layer is a causal FIR filter over the TR axis: the prediction at TR ``t`` uses
bottleneck states at TRs ``t, t-1, ..., t-taps+1`` of the same window only, so a stimulus
can never influence a response before it (the original implementation's convolution was
anti-causal). It is :class:`cinebrain.nn.CausalHRF`, initialised with the canonical HRF
of :func:`cinebrain.timing.hrf`.

Losses are continuous because the targets are: brain loss is MSE on z-scored responses
(or 1 - Pearson r over the batch), reconstruction is MSE for frames and mel spectra and
1 - cosine for sentence embeddings. Nothing discrete is regressed.

The model follows the training-engine protocol of :mod:`cinebrain.train`:
``training_step(batch) -> {"loss": ...}``, ``validation_step(batch) -> dict`` and
``validation_epoch_end(outputs) -> {"val_r": ..., ...}``; batches are the dicts of
:class:`cinebrain.data.windows.WindowDataset` (see :func:`windows_for`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cinebrain.data.windows import WindowDataset, collate_windows
from cinebrain.errors import ConfigError, InputError
from cinebrain.nn.common import check_choice, make_norm
from cinebrain.nn.encoders import (
    AudioEncoder,
    AudioEncoderConfig,
    ConvImageConfig,
    ConvImageEncoder,
    TextEncoder,
    TextEncoderConfig,
    VideoEncoder,
    VideoEncoderConfig,
    ViTConfig,
    ViTImageEncoder,
)
from cinebrain.nn.fusion import FusionConfig, MultimodalCombiner
from cinebrain.nn.hrf import HRF_MODES, CausalHRF
from cinebrain.nn.readouts import MultiSubjectHead

__all__ = [
    "AutoencoderConfig",
    "DecoderConfig",
    "EncoderConfig",
    "Lesion",
    "ModalityDecoder",
    "MultimodalAutoencoder",
    "build_encoder",
    "input_shape",
    "pearson_from_stats",
    "predict_dataset",
    "windows_for",
]

EncoderConfig = (
    ConvImageConfig | ViTConfig | VideoEncoderConfig | AudioEncoderConfig | TextEncoderConfig
)

BRAIN_LOSSES = ("mse", "corr")
RECON_LOSSES = ("mse", "cosine")
PREDICT = ("all", "last")


# --------------------------------------------------------------------------- encoders


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The :mod:`cinebrain.nn` encoder for an encoder config (dispatch on its type)."""
    builders = {
        ConvImageConfig: ConvImageEncoder,
        ViTConfig: ViTImageEncoder,
        VideoEncoderConfig: VideoEncoder,
        AudioEncoderConfig: AudioEncoder,
        TextEncoderConfig: TextEncoder,
    }
    for kind, builder in builders.items():
        if isinstance(cfg, kind):
            return builder(cfg)
    raise ConfigError(
        "encoder",
        f"unknown encoder config {type(cfg).__name__}",
        f"use one of {[k.__name__ for k in builders]}",
    )


def input_shape(cfg: EncoderConfig) -> tuple[int, ...]:
    """Shape of one TR's input for an encoder config (without batch or window axes).

    ConvImage / ViT: ``(C, H, W)``; Video: ``(T, C, H, W)``; Audio: ``(n_mels,)`` or
    ``(n_frames, n_mels)``; Text: ``(in_dim,)``.
    """
    if isinstance(cfg, (ConvImageConfig, ViTConfig)):
        return (cfg.in_channels, *_pair(cfg.image_size))
    if isinstance(cfg, VideoEncoderConfig):
        frame = cfg.conv if cfg.frame_encoder == "conv" else cfg.vit
        return (cfg.n_frames, *input_shape(frame))
    if isinstance(cfg, AudioEncoderConfig):
        return (cfg.n_mels,) if cfg.n_frames == 1 else (cfg.n_frames, cfg.n_mels)
    if isinstance(cfg, TextEncoderConfig):
        return (cfg.in_dim,)
    raise ConfigError("encoder", f"unknown encoder config {type(cfg).__name__}")


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    return (int(x), int(x)) if isinstance(x, int) else (int(x[0]), int(x[1]))


def _mlp(
    dims: Sequence[int], norm: str, dropout: float, final_activation: bool = True
) -> nn.Sequential:
    """Linear -> norm -> ReLU -> Dropout per layer (the last layer bare unless ``final_activation``)."""
    layers: list[nn.Module] = []
    n = len(dims) - 1
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < n - 1 or final_activation:
            layers += [make_norm(norm, b, 0), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def _apply_rows(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a module over the last axis of ``x (..., D)`` (flattening leading axes for BatchNorm)."""
    lead = x.shape[:-1]
    return module(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


# --------------------------------------------------------------------------- decoders


@dataclass
class DecoderConfig:
    """Decoder heads, one per modality, from the bottleneck back to that modality's input.

    hidden_dims: MLP widths before the output layer (vectors) or before the first feature
    map (images / video). deconv_channels: channels of the stride-2 transposed-conv blocks
    for images and video; the first map's size is derived from the target image size.
    image_decoder: "deconv" or "mlp" (MLP straight to the pixels).
    """

    hidden_dims: tuple[int, ...] = (256,)
    deconv_channels: tuple[int, ...] = (64, 32, 16)
    image_decoder: str = "deconv"
    norm: str = "layer"
    dropout: float = 0.0

    def __post_init__(self):
        check_choice("image_decoder", self.image_decoder, ("deconv", "mlp"))
        check_choice("decoder norm", self.norm, ("batch", "group", "layer", "none"))


class ModalityDecoder(nn.Module):
    """Bottleneck ``(N, D)`` -> one modality's input features ``(N, *shape)``.

    Images ``(C, H, W)`` and video ``(T, C, H, W)`` with ``image_decoder="deconv"``: MLP ->
    Linear to ``c0 x ceil(H/2^n) x ceil(W/2^n)`` -> n ConvTranspose2d(4, stride 2) blocks ->
    3x3 conv to ``T*C`` channels -> crop to ``(H, W)``. Everything else: MLP to
    ``prod(shape)``. All widths follow the config and the target shape.
    """

    def __init__(self, dim: int, shape: Sequence[int], cfg: DecoderConfig):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        dims = (dim, *cfg.hidden_dims)
        self.trunk = _mlp(dims, cfg.norm, cfg.dropout) if cfg.hidden_dims else nn.Identity()
        width = dims[-1]
        self.deconv = (
            len(self.shape) >= 3 and cfg.image_decoder == "deconv" and len(cfg.deconv_channels) > 0
        )
        if self.deconv:
            *lead, H, W = self.shape
            n = len(cfg.deconv_channels)
            self.map0 = (cfg.deconv_channels[0], math.ceil(H / 2**n), math.ceil(W / 2**n))
            self.to_map = nn.Linear(width, int(np.prod(self.map0)))
            chans = (*cfg.deconv_channels, cfg.deconv_channels[-1])
            blocks: list[nn.Module] = []
            for a, b in zip(chans[:-1], chans[1:], strict=True):
                blocks += [
                    nn.ConvTranspose2d(a, b, 4, stride=2, padding=1),
                    make_norm(cfg.norm, b, 2),
                    nn.ReLU(inplace=True),
                ]
            self.up = nn.Sequential(*blocks)
            self.out = nn.Conv2d(chans[-1], int(np.prod(lead)), 3, padding=1)
        else:
            self.out = nn.Linear(width, int(np.prod(self.shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z (N, D)`` -> ``(N, *shape)``."""
        h = self.trunk(z)
        if not self.deconv:
            return self.out(h).view(-1, *self.shape)
        x = self.to_map(h).view(-1, *self.map0)  # (N, c0, h0, w0)
        x = self.out(self.up(x))  # (N, T*C, h0*2^n, w0*2^n)
        H, W = self.shape[-2:]
        return x[..., :H, :W].reshape(-1, *self.shape)


# --------------------------------------------------------------------------- config


@dataclass
class AutoencoderConfig:
    """Everything that defines a :class:`MultimodalAutoencoder`.

    Attributes
    ----------
    encoders : dict modality -> encoder config
        One :mod:`cinebrain.nn` encoder config per modality (``ConvImageConfig`` /
        ``ViTConfig`` for one frame per TR, ``VideoEncoderConfig`` for several,
        ``AudioEncoderConfig``, ``TextEncoderConfig``); input shapes follow from them.
    fusion : FusionConfig
        How the modality features meet (:class:`cinebrain.nn.fusion.MultimodalCombiner`).
    bottleneck_dims : tuple of int
        MLP widths from the fused features to the bottleneck; the last is the bottleneck
        size D (seed 000: 4096, 8000).
    n_voxels : dict subject -> int
        One voxel head per subject.
    voxel_hidden : tuple of int
        Shared hidden layers between the (HRF-filtered) bottleneck and the heads (seed 000:
        (16384,)).
    voxel_rank : int or None
        Low-rank voxel heads (None: full).
    decoder : DecoderConfig or None
        None: no reconstruction (brain loss only, as seed 000's encoder).
    tr : float
        Repetition time, seconds. hrf : HRF mode (see :class:`CausalHRF`). hrf_taps : lags
        in TRs (default: ``ceil(32 s / tr)``). hrf_model: "spm" or "glover".
    window : int
        TRs per training window (``>= hrf_taps``; default ``hrf_taps``); the first
        ``hrf_taps - 1`` are history, the rest are scored. Longer windows share the
        encoders' work between overlapping TRs.
    predict : {"all", "last"}
        Voxels for every TR of the window, or only for its last TR (then ``window ==
        hrf_taps``: one scored TR per window; cheaper with very many voxels).
    norm, bottleneck_dropout : normalisation and dropout of the bottleneck and voxel
        hidden layers ("batch" only to reproduce seed 000; encoders, fusion and decoder
        carry their own in their configs).
    brain_loss : {"mse", "corr"}; brain_weight, recon_weight : loss weights.
    recon_loss : dict modality -> {"mse", "cosine"}; default cosine for text, MSE otherwise.
    recon_weights : dict modality -> float (default 1).
    modality_dropout : float
        Probability of dropping each modality from each training window (never all).
    """

    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    bottleneck_dims: tuple[int, ...] = (256, 128)
    n_voxels: dict[str, int] = field(default_factory=lambda: {"sub-01": 1000})
    voxel_hidden: tuple[int, ...] = ()
    voxel_rank: int | None = None
    decoder: DecoderConfig | None = field(default_factory=DecoderConfig)
    tr: float = 1.5
    hrf: str = "learned"
    hrf_taps: int | None = None
    hrf_model: str = "spm"
    window: int | None = None
    predict: str = "all"
    norm: str = "layer"
    bottleneck_dropout: float = 0.1
    brain_loss: str = "mse"
    brain_weight: float = 1.0
    recon_weight: float = 1.0
    recon_loss: dict[str, str] = field(default_factory=dict)
    recon_weights: dict[str, float] = field(default_factory=dict)
    modality_dropout: float = 0.0

    def __post_init__(self):
        if not self.encoders:
            raise ConfigError(
                "encoders", "no modality configured", "give at least one of video, audio, text"
            )
        check_choice("hrf", self.hrf, HRF_MODES)
        check_choice("predict", self.predict, PREDICT)
        check_choice("norm", self.norm, ("batch", "group", "layer", "none"))
        check_choice("brain_loss", self.brain_loss, BRAIN_LOSSES)
        for mod, loss in self.recon_loss.items():
            check_choice(f"recon_loss.{mod}", loss, RECON_LOSSES)
        for key in (*self.recon_loss, *self.recon_weights):
            if key not in self.encoders:
                raise ConfigError(
                    f"recon_loss.{key}",
                    "names a modality with no encoder",
                    f"use one of {sorted(self.encoders)}",
                )
        if not self.bottleneck_dims:
            raise ConfigError(
                "bottleneck_dims", "is empty", "give at least the bottleneck size, e.g. [128]"
            )
        if not self.n_voxels:
            raise ConfigError("n_voxels", "no subject", "give {subject: n_voxels}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(
                "modality_dropout", f"got {self.modality_dropout}", "use a probability in [0, 1)"
            )
        if self.tr <= 0:
            raise ConfigError("tr", f"got {self.tr}", "give the repetition time in seconds")
        if self.hrf_taps is None:
            self.hrf_taps = 1 if self.hrf == "none" else max(1, math.ceil(32.0 / self.tr - 1e-9))
        if self.hrf == "none":
            self.hrf_taps = 1
        if self.window is None:
            self.window = self.hrf_taps
        if self.predict == "last" and self.window != self.hrf_taps:
            raise ConfigError(
                "window",
                f"predict 'last' scores one TR per window, so window must be hrf_taps={self.hrf_taps}, got {self.window}",
                "leave window unset, or use predict: all",
            )
        if self.window < self.hrf_taps:
            raise ConfigError(
                "window",
                f"{self.window} TRs is shorter than hrf_taps={self.hrf_taps}",
                "use window >= hrf_taps",
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders)

    @property
    def history(self) -> int:
        """TRs of causal context before a scored TR (``hrf_taps - 1``)."""
        return int(self.hrf_taps) - 1

    @property
    def bottleneck_dim(self) -> int:
        return int(self.bottleneck_dims[-1])

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-TR input shape of each modality (without batch and window axes)."""
        return {m: input_shape(c) for m, c in self.encoders.items()}

    def recon_loss_of(self, modality: str) -> str:
        default = "cosine" if isinstance(self.encoders[modality], TextEncoderConfig) else "mse"
        return self.recon_loss.get(modality, default)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict (encoder configs tagged with their type) for checkpoints."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AutoencoderConfig:
        """Inverse of :meth:`to_dict`; also reads ``dataclasses.asdict`` output (the
        training engine's checkpoints), inferring encoder types from their fields."""
        return _from_plain(d)


_ENCODER_TYPES = (
    ConvImageConfig,
    ViTConfig,
    VideoEncoderConfig,
    AudioEncoderConfig,
    TextEncoderConfig,
)
_CONFIG_TYPES: dict[str, type] = {
    t.__name__: t for t in (*_ENCODER_TYPES, FusionConfig, DecoderConfig)
}
#: Nested config fields, for rebuilding from plain dicts.
_NESTED: dict[tuple[type, str], type] = {
    (AutoencoderConfig, "fusion"): FusionConfig,
    (AutoencoderConfig, "decoder"): DecoderConfig,
    (VideoEncoderConfig, "conv"): ConvImageConfig,
    (VideoEncoderConfig, "vit"): ViTConfig,
}


def _to_plain(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        out = {f.name: _to_plain(getattr(x, f.name)) for f in fields(x)}
        if type(x).__name__ in _CONFIG_TYPES:
            out["__type__"] = type(x).__name__
        return out
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_to_plain(v) for v in x]
    return x


def _encoder_type(d: Mapping[str, Any]) -> type:
    """The encoder config class of a plain dict: its ``__type__`` tag, else its field names."""
    if "__type__" in d:
        return _CONFIG_TYPES[d["__type__"]]
    keys = set(d)
    for kind in _ENCODER_TYPES:
        if keys == {f.name for f in fields(kind)}:
            return kind
    raise ConfigError(
        "encoders", f"cannot tell the encoder type of fields {sorted(keys)}", "add a __type__ key"
    )


def _from_plain(d: Mapping[str, Any], kind: type = AutoencoderConfig) -> Any:
    """Rebuild a config dataclass from :func:`_to_plain` output or ``dataclasses.asdict``."""
    kwargs = {}
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(d) - names - {"__type__"})
    if unknown:
        raise ConfigError(
            f"{kind.__name__}.{unknown[0]}", "unknown key", f"use one of {', '.join(sorted(names))}"
        )
    for name, v in d.items():
        if name == "__type__":
            continue
        if kind is AutoencoderConfig and name == "encoders":
            v = {m: _from_plain(c, _encoder_type(c)) for m, c in v.items()}
        elif (kind, name) in _NESTED and isinstance(v, Mapping):
            v = _from_plain(v, _NESTED[(kind, name)])
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[name] = v
    return kind(**kwargs)


# --------------------------------------------------------------------------- lesions


@dataclass
class Lesion:
    """An in-silico lesion applied inside :meth:`MultimodalAutoencoder.forward`.

    units : bottleneck unit indices to ablate (None: none). mode : "zero" sets them to 0;
    "mean" sets them to ``unit_means`` (``(D,)``, e.g. their mean over the training data).
    modalities : modalities removed from the combiner input (as if never presented).
    """

    units: Sequence[int] | torch.Tensor | None = None
    mode: str = "zero"
    unit_means: torch.Tensor | None = None
    modalities: Sequence[str] = ()

    def __post_init__(self):
        check_choice("lesion mode", self.mode, ("zero", "mean"))
        if self.mode == "mean" and self.units is not None and self.unit_means is None:
            raise ConfigError(
                "lesion", "mode 'mean' needs unit_means", "pass the bottleneck means (D,)"
            )

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Ablate ``units`` of ``z (..., D)``; returns a new tensor."""
        if self.units is None or len(self.units) == 0:
            return z
        idx = torch.as_tensor(self.units, dtype=torch.long, device=z.device)
        z = z.clone()
        if self.mode == "zero":
            z[..., idx] = 0.0
        else:
            z[..., idx] = self.unit_means.to(z.device, z.dtype)[idx]
        return z


# --------------------------------------------------------------------------- model


class MultimodalAutoencoder(nn.Module):
    """Encoders -> combiner -> bottleneck -> (causal HRF -> voxel heads, decoder heads).

    Parameters
    ----------
    config : AutoencoderConfig

    Attributes
    ----------
    encoders : ModuleDict modality -> encoder;  combiner : MultimodalCombiner;
    bottleneck : MLP to the bottleneck;  hrf : CausalHRF;  voxel_hidden : shared MLP;
    heads : MultiSubjectHead;  decoders : ModuleDict modality -> ModalityDecoder (or absent).
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = cfg = config
        self.modalities = cfg.modalities
        self.shapes = cfg.input_shapes()
        self.encoders = nn.ModuleDict({m: build_encoder(c) for m, c in cfg.encoders.items()})
        fusion = replace(
            cfg.fusion, modalities={m: int(e.out_dim) for m, e in self.encoders.items()}
        )
        self.combiner = MultimodalCombiner(fusion)
        fused = int(self.combiner.out_dim)
        self.bottleneck = _mlp((fused, *cfg.bottleneck_dims), cfg.norm, cfg.bottleneck_dropout)
        D = cfg.bottleneck_dim
        self.hrf = CausalHRF(cfg.hrf_taps, cfg.tr, cfg.hrf, dim=D, hrf_model=cfg.hrf_model)
        dims = (D, *cfg.voxel_hidden)
        self.voxel_hidden = (
            _mlp(dims, cfg.norm, cfg.bottleneck_dropout) if cfg.voxel_hidden else nn.Identity()
        )
        self.heads = MultiSubjectHead(dict(cfg.n_voxels), dims[-1], rank=cfg.voxel_rank)
        self._grad_checkpointing = False
        if cfg.decoder is not None:
            self.decoders = nn.ModuleDict(
                {m: ModalityDecoder(D, s, cfg.decoder) for m, s in self.shapes.items()}
            )
        else:
            self.decoders = None

    # ------------------------------------------------------------------ forward pieces

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self.config.n_voxels)

    def _check_inputs(self, inputs: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        present = [m for m in self.modalities if m in inputs]
        unknown = [m for m in inputs if m not in self.modalities]
        if unknown:
            raise ConfigError(
                "inputs",
                f"modalities {unknown} have no encoder",
                f"use a subset of {list(self.modalities)}",
            )
        if not present:
            raise ConfigError(
                "inputs", "no modality given", f"pass at least one of {list(self.modalities)}"
            )
        B, W = None, None
        for m in present:
            x = inputs[m]
            if tuple(x.shape[2:]) != self.shapes[m]:
                raise ValueError(
                    f"{m}: expected (B, W, {', '.join(map(str, self.shapes[m]))}), got {tuple(x.shape)}"
                )
            if B is None:
                B, W = x.shape[:2]
            elif tuple(x.shape[:2]) != (B, W):
                raise ValueError(f"{m}: batch/window {tuple(x.shape[:2])} disagrees with {(B, W)}")
        return int(B), int(W)

    def encode(
        self,
        inputs: Mapping[str, torch.Tensor],
        valid: torch.Tensor | None = None,
        lesion: Lesion | None = None,
        drop: Sequence[str] = (),
        present: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-TR bottleneck.

        Parameters
        ----------
        inputs : {modality: (B, W, *shape)}, any non-empty subset of the modalities.
        valid : (B, W) bool or None; False marks padding (not encoded, bottleneck 0).
        lesion : Lesion or None; its modalities are left out of the combiner and its units
            ablated.
        drop : modalities left out of the combiner for the whole batch.
        present : {modality: (B,) bool} or None; per-window presence (modality dropout).

        Returns
        -------
        (B, W, D)
        """
        B, W = self._check_inputs(inputs)
        drop = set(drop) | set(lesion.modalities if lesion is not None else ())
        keep = [m for m in self.modalities if m in inputs and m not in drop]
        if not keep:
            raise ConfigError(
                "lesion", "every modality given was removed", "keep at least one modality"
            )
        if valid is None:  # every TR real: no gather / scatter (and meta-device friendly)
            flat = None
            feats = {
                m: self._run(self.encoders[m], inputs[m].reshape(B * W, *self.shapes[m]))
                for m in keep
            }
        else:
            flat = valid.bool().reshape(-1)  # (B*W,)
            feats = {
                m: self._run(self.encoders[m], inputs[m].reshape(B * W, *self.shapes[m])[flat])
                for m in keep
            }
        here = None
        if present is not None:
            here = {
                m: present[m].bool().unsqueeze(1).expand(B, W).reshape(-1)
                for m in keep
                if m in present
            }
            if flat is not None:
                here = {m: h[flat] for m, h in here.items()}
        z_rows = self._run(lambda f: self.bottleneck(self.combiner(f, here)), feats)  # (N, D)
        if flat is None:
            z = z_rows.view(B, W, -1)
        else:
            z = z_rows.new_zeros(B * W, z_rows.shape[-1])
            z[flat] = z_rows
            z = z.view(B, W, -1)  # (B, W, D)
        if lesion is not None:
            z = lesion.apply(z)
            if valid is not None:
                z = z * valid.unsqueeze(-1).to(z.dtype)
        return z

    def _run(self, fn: Callable, x: Any) -> torch.Tensor:
        """Call ``fn(x)``, recomputing it in backward when gradient checkpointing is on."""
        if self._grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute encoder and bottleneck activations in backward (training engine hook)."""
        self._grad_checkpointing = bool(enabled)

    def readout(
        self, z: torch.Tensor, subject: str | None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bottleneck ``(B, W, D)`` -> voxels ``(B, W, V)`` (predict "all") or ``(B, V)`` ("last")."""
        subject = self._subject(subject)
        h = self.hrf(z, valid)  # (B, W, D), causal over W
        if self.config.predict == "last":
            h = h[:, -1]  # (B, D)
        h = _apply_rows(self.voxel_hidden, h)
        return _apply_rows(lambda x: self.heads(x, subject), h)

    def reconstruct(
        self, z: torch.Tensor, modalities: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Bottleneck ``(B, W, D)`` -> ``{modality: (B, W, *shape)}`` (empty without a decoder)."""
        if self.decoders is None:
            return {}
        B, W, D = z.shape
        mods = self.modalities if modalities is None else modalities
        return {m: self.decoders[m](z.reshape(B * W, D)).view(B, W, *self.shapes[m]) for m in mods}

    def _subject(self, subject: str | None) -> str:
        if subject is None:
            if len(self.subjects) == 1:
                return self.subjects[0]
            raise ConfigError(
                "subject", "the model has several voxel heads", f"name one of {list(self.subjects)}"
            )
        if subject not in self.config.n_voxels:
            raise ConfigError(
                "subject", f"unknown subject {subject!r}", f"use one of {list(self.subjects)}"
            )
        return subject

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        subject: str | None = None,
        lesion: Lesion | None = None,
        valid: torch.Tensor | None = None,
        drop: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Predict voxels and reconstruct the stimulus from windows of TRs.

        Parameters
        ----------
        inputs : {modality: (B, W, *shape)}
            Any non-empty subset of the configured modalities; shapes per
            :meth:`AutoencoderConfig.input_shapes`.
        subject : str or None
            Whose voxel head to use (None when the model has one subject).
        lesion : Lesion or None
        valid : (B, W) bool or None
            Real TRs (False: padding before a run start).
        drop : modalities to leave out of the combiner (modality dropout).

        Returns
        -------
        dict with ``bottleneck (B, W, D)``, ``voxels (B, W, V)`` (or ``(B, V)`` when
        ``predict="last"``) and ``recon {modality: (B, W, *shape)}``.
        """
        z = self.encode(inputs, valid, lesion, drop)
        return {
            "bottleneck": z,
            "voxels": self.readout(z, subject, valid),
            "recon": self.reconstruct(z),
        }

    def flops_per_sample(self) -> float:
        """Training FLOPs (forward + backward) per window, counted on a meta-device copy.

        Used by the training engine to report achieved FLOP/s; costs no memory.
        """
        from torch.utils.flop_counter import FlopCounterMode

        B, W = 2, int(self.config.window)
        with torch.device("meta"):
            model = MultimodalAutoencoder(self.config)
            inputs = {m: torch.zeros(B, W, *s) for m, s in self.shapes.items()}
        model.eval()  # same FLOPs; no data-dependent dropout sampling on meta tensors
        with FlopCounterMode(display=False) as counter:
            out = model(inputs, self.subjects[0])
            total = out["voxels"].sum() + sum(r.sum() for r in out["recon"].values())
            total.backward()
        return counter.get_total_flops() / B

    # ------------------------------------------------------------------ losses

    def brain_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred, target (N, V)`` z-scored responses -> scalar (MSE or 1 - mean Pearson r over the N samples)."""
        if self.config.brain_loss == "mse":
            return F.mse_loss(pred, target)
        pc = pred - pred.mean(0)
        tc = target - target.mean(0)
        r = (pc * tc).sum(0) / (pc.norm(dim=0) * tc.norm(dim=0)).clamp_min(1e-8)
        return 1.0 - r.mean()

    def recon_losses(
        self, recon: Mapping[str, torch.Tensor], batch: Mapping[str, Any], valid: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-modality reconstruction loss over valid TRs: MSE, or 1 - cosine for embeddings."""
        out = {}
        flat = valid.reshape(-1)
        for m, r in recon.items():
            if m not in batch:
                continue
            B, W = r.shape[:2]
            pred = r.reshape(B * W, -1)[flat]
            target = batch[m].reshape(B * W, -1)[flat].to(pred.dtype)
            if self.config.recon_loss_of(m) == "cosine":
                out[m] = (1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)).mean()
            else:
                out[m] = F.mse_loss(pred, target)
        return out

    # ------------------------------------------------------------------ engine protocol

    def _sample_present(self, B: int, device: torch.device) -> dict[str, torch.Tensor] | None:
        """Per-window modality presence for modality dropout: each modality kept with
        probability ``1 - modality_dropout``, and a window that lost all gets one back."""
        p, M = self.config.modality_dropout, len(self.modalities)
        if p <= 0 or M < 2:
            return None
        keep = torch.rand(B, M, device=device) >= p  # (B, M)
        none = ~keep.any(dim=1)
        pick = torch.randint(M, (B,), device=device)
        keep[none, pick[none]] = True
        return {m: keep[:, i] for i, m in enumerate(self.modalities)}

    def _step(self, batch: Mapping[str, Any], dropout: bool = False) -> dict[str, Any]:
        """Shared by training and validation: forward on a batch, grouped by subject."""
        inputs = {m: batch[m] for m in self.modalities if m in batch}
        B, W = self._check_inputs(inputs)
        device = next(iter(inputs.values())).device
        valid = batch.get("valid")
        valid = torch.ones(B, W, dtype=torch.bool, device=device) if valid is None else valid.bool()
        scored = batch.get("scored")
        scored = valid if scored is None else scored.bool()
        present = self._sample_present(B, device) if dropout else None
        z = self.encode(inputs, valid, present=present)
        subjects = batch.get("subject") or [self._subject(None)] * B
        if isinstance(subjects, str):
            subjects = [subjects] * B
        responses = batch.get("responses")
        per_subject = {}
        for s in dict.fromkeys(subjects):
            rows = [i for i, si in enumerate(subjects) if si == s]
            idx = torch.as_tensor(rows, device=device)
            pred = self.readout(z[idx], s, valid[idx])
            if responses is None:
                per_subject[s] = (pred, None, scored[idx])
                continue
            if isinstance(responses, (list, tuple)):
                target = torch.stack([responses[i] for i in rows])
            else:
                target = responses[idx]
            sc = scored[idx]
            if self.config.predict == "last":
                target, sc = target[:, -1], sc[:, -1]
            per_subject[s] = (pred[sc], target[sc].to(pred.dtype), sc)
        recon = self.reconstruct(z) if self.decoders is not None else {}
        return {"z": z, "valid": valid, "per_subject": per_subject, "recon": recon}

    def _loss(self, out: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config
        parts = [(p, t) for p, t, _ in out["per_subject"].values() if t is not None and len(t)]
        n = sum(len(t) for _, t in parts)
        brain = (
            sum(self.brain_loss(p, t) * len(t) for p, t in parts) / max(n, 1)
            if parts
            else out["z"].sum() * 0.0
        )
        recon = self.recon_losses(out["recon"], batch, out["valid"])
        recon_total = (
            sum(cfg.recon_weights.get(m, 1.0) * v for m, v in recon.items())
            if recon
            else brain * 0.0
        )
        loss = cfg.brain_weight * brain + cfg.recon_weight * recon_total
        logs = {
            "loss": loss,
            "brain_loss": brain.detach(),
            "recon_loss": torch.as_tensor(recon_total).detach(),
        }
        logs.update({f"recon_{m}": v.detach() for m, v in recon.items()})
        return logs

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One training batch -> ``{"loss": scalar with grad, "brain_loss", "recon_loss", "recon_<mod>"}``.

        Applies modality dropout (whole modalities, never all; reconstruction targets stay
        all modalities, so the decoder learns to fill in what was dropped).
        """
        out = self._step(batch, dropout=self.training)
        return self._loss(out, batch)

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Losses plus sufficient statistics for per-voxel Pearson r (summable over batches and ranks).

        Returns ``{"loss", "brain_loss", "recon_loss", "recon_<mod>", "n": samples,
        "stats": {subject: (6, V) float64 [n, sum y, sum p, sum y^2, sum p^2, sum y*p]},
        "recon_stats": {mod: (3,) float64 [n, sum squared error, sum squared target]}}``,
        plus ``"recon_sum": {mod: (F,) sum of targets}`` for the variance of the targets.
        """
        out = self._step(batch)
        logs = {k: float(v) for k, v in self._loss(out, batch).items()}
        stats = {}
        n = 0
        for s, (p, t, _) in out["per_subject"].items():
            if t is None or not len(t):
                continue
            p64, t64 = p.double().reshape(-1, p.shape[-1]), t.double().reshape(-1, t.shape[-1])
            k = torch.full_like(t64[0], float(len(t64)))
            stats[s] = torch.stack(
                [k, t64.sum(0), p64.sum(0), (t64**2).sum(0), (p64**2).sum(0), (t64 * p64).sum(0)]
            ).cpu()
            n += len(t64)
        recon_stats, recon_sum = {}, {}
        flat = out["valid"].reshape(-1)
        for m, r in out["recon"].items():
            B, W = r.shape[:2]
            pred = r.reshape(B * W, -1)[flat].double()
            target = batch[m].reshape(B * W, -1)[flat].double()
            recon_stats[m] = torch.stack(
                [
                    torch.tensor(float(len(target)), dtype=torch.float64),
                    ((pred - target) ** 2).sum().cpu(),
                    (target**2).sum().cpu(),
                ]
            )
            recon_sum[m] = target.sum(0).cpu()
        logs.update(n=n, stats=stats, recon_stats=recon_stats, recon_sum=recon_sum)
        return logs

    def validation_epoch_end(self, outputs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Aggregate validation batches -> ``{"val_r": mean per-voxel r, "val_r_median", "val_loss", ...}``.

        r is per voxel over time (all scored TRs of the validation set), never across
        voxels; subjects' voxels are pooled. ``val_recon_fvu_<mod>`` is the reconstruction
        MSE over the MSE of predicting the validation mean (below 1: better than the mean).
        """
        metrics: dict[str, float] = {}
        if not outputs:
            return metrics
        weights = np.array([max(o.get("n", 0), 1) for o in outputs], dtype=float)
        for key in outputs[0]:
            if key in ("stats", "recon_stats", "recon_sum", "n"):
                continue
            metrics[f"val_{key}"] = float(np.average([o[key] for o in outputs], weights=weights))
        totals: dict[str, torch.Tensor] = {}
        for o in outputs:
            for s, st in o["stats"].items():
                totals[s] = totals[s] + st if s in totals else st.clone()
        rs = [pearson_from_stats(st) for st in totals.values()]
        if rs:
            r = torch.cat(rs).numpy()
            metrics["val_r"] = float(np.nanmean(r))
            metrics["val_r_median"] = float(np.nanmedian(r))
        for m in outputs[0]["recon_stats"]:
            st = sum(o["recon_stats"][m] for o in outputs)
            total = sum(o["recon_sum"][m] for o in outputs)
            n, sse, sst = (float(v) for v in st)
            n_feat = total.numel()
            # MSE of predicting the validation mean = mean of squares - squared mean, per feature.
            base = (sst - float((total**2).sum()) / max(n, 1)) / max(n * n_feat, 1)
            mse = sse / max(n * n_feat, 1)
            metrics[f"val_recon_mse_{m}"] = mse
            metrics[f"val_recon_fvu_{m}"] = mse / base if base > 0 else float("nan")
        return metrics


@torch.no_grad()
def predict_dataset(
    model: MultimodalAutoencoder,
    dataset: WindowDataset,
    lesion: Lesion | None = None,
    batch_size: int = 16,
    keep: Sequence[str] = ("voxels",),
) -> dict[str, Any]:
    """Predict every TR of a :class:`~cinebrain.data.windows.WindowDataset`, in TR order.

    Each TR is taken from the window that scores it (full causal history).

    Parameters
    ----------
    keep : outputs to return as arrays: "voxels" ``(n_trs, V)``, "bottleneck"
        ``(n_trs, D)``, "recon" (``recon_<mod> (n_trs, *shape)`` per modality).

    Returns
    -------
    dict with the kept arrays (float32) and ``recon_loss {mod: float}``: the mean
    reconstruction loss (MSE or 1 - cosine) over the TRs.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    last = model.config.predict == "last"
    out: dict[str, Any] = {}
    recon_sum: dict[str, float] = {}
    n_total = 0
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate_windows(
                dataset.__getitems__(range(start, min(start + batch_size, len(dataset))))
            )
            batch = {
                k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
            }
            inputs = {m: batch[m] for m in model.modalities if m in batch}
            res = model(inputs, dataset.subject, lesion=lesion, valid=batch["valid"])
            scored = batch["scored"]
            rows = batch["tr_index"][scored].cpu().numpy()
            pieces: dict[str, torch.Tensor] = {}
            if "voxels" in keep:
                if last:
                    pieces["voxels"] = res["voxels"][scored[:, -1]]
                else:
                    pieces["voxels"] = res["voxels"][scored]
            if "bottleneck" in keep:
                pieces["bottleneck"] = res["bottleneck"][scored]
            if "recon" in keep:
                pieces.update({f"recon_{m}": r[scored] for m, r in res["recon"].items()})
            for k, v in pieces.items():
                v = v.float().cpu().numpy()
                if k not in out:
                    out[k] = np.zeros((dataset.n_trs, *v.shape[1:]), dtype=np.float32)
                if k == "voxels" and last:
                    out[k][batch["tr_index"][:, -1][scored[:, -1]].cpu().numpy()] = v
                else:
                    out[k][rows] = v
            n = int(scored.sum())
            for m, v in model.recon_losses(res["recon"], batch, scored).items():
                recon_sum[m] = recon_sum.get(m, 0.0) + float(v) * n
            n_total += n
    finally:
        model.train(was_training)
    out["recon_loss"] = {m: v / max(n_total, 1) for m, v in recon_sum.items()}
    return out


def windows_for(
    config: AutoencoderConfig,
    inputs: Mapping[str, np.ndarray],
    responses: np.ndarray | None,
    run_lengths: Sequence[int],
    subject: str,
) -> WindowDataset:
    """A :class:`WindowDataset` with the window and history a model config needs.

    Checks that the inputs are the config's modalities with its per-TR shapes.
    """
    shapes = config.input_shapes()
    unknown = sorted(set(inputs) - set(shapes))
    if unknown:
        raise InputError(
            "inputs",
            f"modalities {unknown} have no encoder in the model",
            f"use a subset of {sorted(shapes)}",
        )
    for name, x in inputs.items():
        if tuple(x.shape[1:]) != shapes[name]:
            raise InputError(
                f"inputs[{name!r}]",
                f"per-TR shape {tuple(x.shape[1:])} disagrees with the model's {shapes[name]}",
                "reshape the features, or change the encoder config",
            )
    if subject not in config.n_voxels:
        raise InputError(
            "subject", f"{subject!r} has no voxel head", f"use one of {sorted(config.n_voxels)}"
        )
    if responses is not None and responses.shape[1] != config.n_voxels[subject]:
        raise InputError(
            "responses",
            f"{subject} has {responses.shape[1]} voxels but the model's head has {config.n_voxels[subject]}",
            "set n_voxels from the data",
        )
    return WindowDataset(inputs, responses, run_lengths, int(config.window), config.history, subject)


def pearson_from_stats(st: torch.Tensor) -> torch.Tensor:
    """Per-voxel Pearson r from summed statistics ``(6, V)`` [n, Σy, Σp, Σy², Σp², Σyp] -> ``(V,)``."""
    n, sy, sp, syy, spp, syp = st
    cov = syp - sy * sp / n
    vy = (syy - sy**2 / n).clamp_min(0)
    vp = (spp - sp**2 / n).clamp_min(0)
    return (cov / (vy * vp).sqrt().clamp_min(1e-12)).float()
