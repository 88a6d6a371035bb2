"""Named autoencoder configurations, and parameter counts without allocating memory.

=================  ==========================================================================
``sherlock2017``   Seed 000 exactly: one 3x90x160 frame, 128 mel bins and a 1024-d sentence
                   embedding per TR; conv encoders with BatchNorm; concat + Linear 1536->1536;
                   bottleneck 1536->4096->8000; voxels 8000->16384->85,810. No decoder; the
                   canonical HRF is a fixed buffer (0 parameters), so the count is the seed's.
``sherlock2017-ae`` The same encoder with seed 001's decoder heads (reconstruct frame, mel, text).
``demo``           CPU-sized, for the demo's features: 2x18x32 frames per TR (luminance and
                   motion from the grayscale pixels), 64 mel bins,
                   384-d MiniLM sentence embeddings; GroupNorm / LayerNorm; bottleneck 128.
``large``          Matmul-bound (wide MLPs, no convs worth counting) for the throughput
                   benchmark.
=================  ==========================================================================

``preset_parameters(config_or_name)`` builds the model on ``torch.device("meta")``: shapes and
parameter counts without storage, so the 1.6-billion-parameter seed model is counted in
milliseconds and no memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from cinebrain.errors import ConfigError
from cinebrain.models.autoencoder.model import (
    AutoencoderConfig,
    DecoderConfig,
    MultimodalAutoencoder,
)
from cinebrain.nn.common import count_parameters
from cinebrain.nn.encoders import AudioEncoderConfig, ConvImageConfig, TextEncoderConfig
from cinebrain.nn.fusion import FusionConfig

__all__ = [
    "PRESETS",
    "SHERLOCK2017_TABLE",
    "get_preset",
    "module_parameters",
    "preset_names",
    "preset_parameters",
]

#: Seed 000's per-module parameter table (keys as returned by :func:`preset_parameters`).
SHERLOCK2017_TABLE: dict[str, int] = {
    "video": 16_119_040,
    "audio": 556_032,
    "text": 657_664,
    "fusion": 2_363_904,  # "feature conv" (layer 4)
    "bottleneck": 39_095_744,  # "to bottleneck"
    "voxel_head": 1_537_118_002,  # "bottleneck to voxels"
    "total": 1_595_910_386,
}


def _sherlock2017() -> AutoencoderConfig:
    return AutoencoderConfig(
        encoders={
            "video": ConvImageConfig(
                in_channels=3,
                image_size=(90, 160),
                channels=(32, 64, 128, 256),
                kernel_size=3,
                stride=2,
                norm="batch",
                dropout=0.2,
                out_dim=1024,
            ),
            "audio": AudioEncoderConfig(
                n_mels=128,
                channels=(32, 64, 128),
                kernel_size=3,
                stride=2,
                norm="batch",
                dropout=0.2,
                out_dim=256,
            ),
            "text": TextEncoderConfig(
                in_dim=1024, hidden_dims=(512,), out_dim=256, norm="batch", dropout=0.2
            ),
        },
        fusion=FusionConfig(method="concat", project=True, norm="batch", dropout=0.2),
        bottleneck_dims=(4096, 8000),
        bottleneck_dropout=0.3,
        norm="batch",
        n_voxels={"sub-01": 85_810},
        voxel_hidden=(16384,),
        decoder=None,
        tr=1.5,
        hrf="fixed",
        predict="last",
        recon_weight=0.0,
    )


def _sherlock2017_ae() -> AutoencoderConfig:
    return replace(
        _sherlock2017(),
        decoder=DecoderConfig(
            hidden_dims=(2048,), deconv_channels=(256, 128, 64, 32), norm="layer"
        ),
        recon_weight=1.0,
    )


def _demo() -> AutoencoderConfig:
    tr = 1.5
    taps = math.ceil(32.0 / tr)
    return AutoencoderConfig(
        encoders={
            "video": ConvImageConfig(
                in_channels=2,  # luminance and motion (cinebrain.deep)
                image_size=(18, 32),
                channels=(16, 32),
                norm="group",
                n_groups=4,
                dropout=0.1,
                out_dim=128,  # room for where things are in the frame (retinotopy)
            ),
            "audio": AudioEncoderConfig(
                n_mels=64, channels=(16, 32), norm="group", n_groups=4, dropout=0.1, out_dim=64
            ),
            "text": TextEncoderConfig(
                in_dim=384, hidden_dims=(128,), out_dim=64, norm="layer", dropout=0.1
            ),
        },
        fusion=FusionConfig(method="concat", project=False),
        bottleneck_dims=(256, 128),
        bottleneck_dropout=0.2,
        norm="layer",
        n_voxels={"sub-01": 1000},
        decoder=DecoderConfig(hidden_dims=(128,), deconv_channels=(32, 16), norm="layer"),
        tr=tr,
        hrf="learned",
        hrf_taps=taps,
        window=2 * taps,
        predict="all",
        modality_dropout=0.2,
    )


def _large() -> AutoencoderConfig:
    return AutoencoderConfig(
        encoders={
            "audio": AudioEncoderConfig(
                n_mels=128, channels=(32, 64), norm="layer", dropout=0.0, out_dim=1024
            ),
            "text": TextEncoderConfig(
                in_dim=1024, hidden_dims=(4096,), out_dim=2048, norm="layer", dropout=0.0
            ),
        },
        fusion=FusionConfig(method="concat", project=True, norm="layer"),
        bottleneck_dims=(4096, 4096),
        bottleneck_dropout=0.0,
        norm="layer",
        n_voxels={"sub-01": 16384},
        voxel_hidden=(4096,),
        decoder=DecoderConfig(hidden_dims=(4096,), norm="layer"),
        tr=1.5,
        hrf="none",
        predict="last",
    )


#: name -> factory of a fresh config.
PRESETS: dict[str, Callable[[], AutoencoderConfig]] = {
    "sherlock2017": _sherlock2017,
    "sherlock2017-ae": _sherlock2017_ae,
    "demo": _demo,
    "large": _large,
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> AutoencoderConfig:
    """A fresh config of preset ``name``, with fields replaced by ``overrides``.

    Example: ``get_preset("demo", n_voxels={"sub-01": 5000, "sub-02": 4800})``.
    Raises :class:`ConfigError` listing the presets for an unknown name or the fields for
    an unknown override.
    """
    if name not in PRESETS:
        raise ConfigError(
            "preset",
            f"unknown autoencoder preset {name!r}",
            f"use one of {', '.join(preset_names())}",
        )
    config = PRESETS[name]()
    if overrides:
        known = set(AutoencoderConfig.__dataclass_fields__)
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(
                f"preset {name}: {bad[0]}",
                "unknown field",
                f"use one of {', '.join(sorted(known))}",
            )
        config = replace(config, **overrides)
    return config


def preset_parameters(config: AutoencoderConfig | str) -> dict[str, int]:
    """Parameters per module of a preset (by name) or config, counted on the meta device
    (no memory allocated).

    Returns ``{modality: encoder, "fusion", "bottleneck", "hrf" (if learned), "voxel_head"
    (shared hidden layers + every subject's head), "decoder" (if any), "total"}``.
    """
    if isinstance(config, str):
        config = get_preset(config)
    with torch.device("meta"):
        model = MultimodalAutoencoder(config)
    return module_parameters(model)


def module_parameters(model: MultimodalAutoencoder) -> dict[str, int]:
    """Per-module parameter counts of a built model (keys as :func:`preset_parameters`)."""
    counts = {m: count_parameters(e) for m, e in model.encoders.items()}
    counts["fusion"] = count_parameters(model.combiner)
    counts["bottleneck"] = count_parameters(model.bottleneck)
    if count_parameters(model.hrf):
        counts["hrf"] = count_parameters(model.hrf)
    counts["voxel_head"] = count_parameters(model.voxel_hidden) + count_parameters(model.heads)
    if model.decoders is not None:
        counts["decoder"] = count_parameters(model.decoders)
    counts["total"] = count_parameters(model)
    return counts
