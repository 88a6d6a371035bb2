"""``autoencoder``: the multimodal autoencoder pipeline's section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cinebrain.config.base import Section
from cinebrain.train import TrainConfig

#: The autoencoder's training defaults (the engine's other settings keep theirs): early
#: stopping on the validation block's median r.
AUTOENCODER_TRAINING: dict[str, Any] = {
    "epochs": 60,
    "batch_size": 8,
    "lr": 2e-3,
    "weight_decay": 0.1,
    "warmup_fraction": 0.05,
    "grad_clip": 1.0,
    "patience": 15,
    "eval_every_epochs": 1,
    "early_stopping_metric": "val_r",
    "early_stopping_mode": "max",
    "drop_last": False,
    "log_every": 10,
    "tensorboard": True,
}


#: The training engine's schema with the autoencoder's defaults: a YAML ``train`` section
#: that leaves a key out keeps the autoencoder's default, not the engine's.
AutoencoderTrainConfig = TrainConfig.with_defaults("AutoencoderTrainConfig", **AUTOENCODER_TRAINING)


class AutoencoderRunConfig(Section):
    """The multimodal autoencoder (``cinebrain train``, ``cinebrain lesion``).

    The model is a named preset (``cinebrain.models.autoencoder.presets``) with ``overrides`` of its
    fields; the number of voxels per subject and the TR come from the data. Its inputs
    are the run's extracted feature spaces on the TR grid, its responses and split are
    the linear fit's, so scores compare directly.
    """

    preset: str = Field("demo", description="model preset (demo, sherlock2017, sherlock2017-ae, large)")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="AutoencoderConfig fields replacing the preset's (nested dicts merge), "
        "e.g. {\"bottleneck_dims\": [256, 64], \"decoder\": {\"dropout\": 0.1}}",
    )
    modalities: list[Literal["video", "audio", "text"]] = Field(
        default_factory=lambda: ["video", "audio", "text"],
        description="stimulus modalities fed to the model (each needs its encoder in the preset)",
    )
    video_space: str = Field("video.pixels", description="feature space of the video frames")
    video_channels: list[Literal["luminance", "motion"]] = Field(
        default_factory=lambda: ["luminance", "motion"],
        description="channels per TR frame: mean pixels, mean absolute frame difference",
    )
    audio_space: str = Field("audio.mel", description="feature space of the audio input")
    text_space: str = Field("annotations.description", description="feature space of the text input")
    multi_subject: bool = Field(True, description="one model, one voxel head per subject")
    val_fraction: float = Field(
        0.15, gt=0, lt=0.5,
        description="validation block: this fraction of the training TRs, at the end of the "
        "last training run, after a gap of the HRF length",
    )
    train: AutoencoderTrainConfig = Field(  # type: ignore[valid-type]
        default_factory=AutoencoderTrainConfig,
        description="the training engine's settings (cinebrain.train.TrainConfig)",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null: torch default)")
    lesion_modalities: list[Literal["video", "audio", "text"]] = Field(
        default_factory=lambda: ["video", "audio", "text"],
        description="modality lesions run after training (one each; empty: none)",
    )
    lesion_mode: Literal["zero", "mean"] = Field("mean", description="unit lesions: zero or mean")
    reconstruct: bool = Field(True, description="write the test run's reconstruction files")
