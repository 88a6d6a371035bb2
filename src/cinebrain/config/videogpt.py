"""``videogpt``: self-supervised video features (VQ-VAE + VideoGPT) trained on the study's
movie, scored by ridge against the study's responses (``cinebrain videogpt train`` /
``evaluate``), and the scaling sweep's grid (``cinebrain sweep``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from cinebrain.config.base import Section
from cinebrain.train import TrainConfig

#: The VQ-VAE stage's training defaults (the engine's other settings keep theirs).
VQVAE_TRAINING: dict[str, Any] = {
    "epochs": 20, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0, "warmup_fraction": 0.05,
    "grad_clip": 1.0, "eval_every_epochs": 1, "drop_last": True,
    "early_stopping_metric": "val_loss", "early_stopping_mode": "min", "log_every": 20,
}
#: The GPT stage's training defaults.
GPT_TRAINING: dict[str, Any] = {
    "epochs": 20, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "warmup_fraction": 0.05,
    "grad_clip": 1.0, "eval_every_epochs": 1, "drop_last": True,
    "early_stopping_metric": "val_cross_entropy", "early_stopping_mode": "min", "log_every": 20,
}
VQVAETrainConfig = TrainConfig.with_defaults("VQVAETrainConfig", **VQVAE_TRAINING)
GPTTrainConfig = TrainConfig.with_defaults("GPTTrainConfig", **GPT_TRAINING)


class VideoClipsConfig(Section):
    """The movie as the video models see it."""

    size: tuple[int, int] = Field((32, 16), description="frame size (width, height); each "
                                  "side divisible by the VQ-VAE's downsampling")
    fps: float = Field(8.0, gt=0, description="frames per second (block means of the movie's)")
    gray: bool = Field(True, description="luminance frames (else RGB)")
    clip_frames: int = Field(16, ge=2, le=256, description="frames per clip (the GPT predicts "
                             "the next clip from the previous one)")
    stride: int = Field(4, ge=1, description="training clips start every this many frames")
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="the last fraction of the "
                                "training clips (in time) validates both stages")
    frames_from: Literal["train_runs", "all"] = Field(
        "train_runs", description="train_runs: only the stimulus segments of the runs the "
        "encoding model trains on (split.test_runs are never seen); all: the whole movie")
    data_fraction: float = Field(1.0, gt=0, le=1, description="the first fraction (in time) "
                                 "of the training clips used (scaling with data)")


class VQVAESection(Section):
    """The VQ-VAE (stage 1)."""

    preset: str = Field("vqvae-tiny", description="preset of cinebrain.models.vqvae")
    overrides: dict[str, Any] = Field(default_factory=dict, description="VQVAEConfig fields "
                                      "replacing the preset's")
    train: VQVAETrainConfig = Field(default_factory=VQVAETrainConfig)  # type: ignore[valid-type]


class GPTSection(Section):
    """The VideoGPT (stage 2), trained with the VQ-VAE frozen."""

    preset: str = Field("videogpt-tiny", description="preset of cinebrain.models.videogpt")
    overrides: dict[str, Any] = Field(default_factory=dict, description="VideoGPTConfig fields "
                                      "replacing the preset's (hidden_dim, layers, heads, ...)")
    train: GPTTrainConfig = Field(default_factory=GPTTrainConfig)  # type: ignore[valid-type]


class VideoFeaturesConfig(Section):
    """Activations of the trained GPT as feature spaces, one per layer."""

    layers: list[str] | None = Field(None, description="module names of the GPT whose "
                                     "outputs become features (null: every attention block)")
    pool: Literal["space", "last", "mean"] = Field(
        "space", description="per window and layer: space (each code position of the next "
        "clip, averaged over its time steps: h' x w' x hidden features), last (the positions "
        "of its last time step), mean (averaged over every position: hidden features)")
    stride: int = Field(1, ge=1, description="a feature row every this many frames")
    random_baseline: bool = Field(True, description="also score the same architecture with "
                                  "random weights (paired across voxels)")
    seed: int = Field(0, description="seed of the random-weights baseline")


class VideoGPTRunConfig(Section):
    """The video-model family of a run (``cinebrain videogpt train | evaluate``)."""

    video: VideoClipsConfig = Field(default_factory=VideoClipsConfig)
    vqvae: VQVAESection = Field(default_factory=VQVAESection)
    gpt: GPTSection = Field(default_factory=GPTSection)
    features: VideoFeaturesConfig = Field(default_factory=VideoFeaturesConfig)
    samples: int = Field(2, ge=0, le=32, description="held-out clips written as mp4 with the "
                         "GPT's predicted next clip beside the real one")


class SweepConfig(Section):
    """A scaling study (``cinebrain sweep CONFIG``): a grid of cells, each a ``videogpt``
    section with some options changed, trained (or resumed), featurised, fitted and scored.

    ``grid`` maps dotted keys of the ``videogpt`` section to the values to try, e.g.
    ``{"video.data_fraction": [0.5, 1.0], "gpt.overrides.hidden_dim": [32, 64],
    "gpt.train.precision": ["fp32", "bf16"]}``; every combination is a cell.
    """

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key of the "
                                       "videogpt section -> values (every combination a cell)")
    out: str | None = Field(None, description="sweep folder (null: <out>/sweep)")
    region: str | None = Field(None, description="the region whose r the plots show first "
                               "(null: every region)")

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep axis {key!r} has no values; give a list such as "
                                 f"{key}: [a, b]")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"sweep axis {key!r} repeats a value; give each once")
        return v
