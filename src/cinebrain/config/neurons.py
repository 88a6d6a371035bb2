"""The neuron pipeline's config (``cinebrain neurons train CONFIG``): sessions, windows,
the model, the training engine's settings, the scores and the frame-ridge baseline.

A neuron run needs no study file: its input is a list of recording sessions, each a
Sensorium 2023 folder, an ``.nwb`` file or an ``.npz`` / ``.h5`` file
(:mod:`cinebrain.io.neurons`, :mod:`cinebrain.io.nwb`), recognised by its suffix (a folder
is read as Sensorium). Unknown keys are refused with the allowed names; an option that
the other options leave unused is refused (:func:`~cinebrain.config.base.unused_option`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cinebrain._files import write_text
from cinebrain.config.base import Section, read_config_file, set_dotted, unused_option
from cinebrain.errors import ConfigError
from cinebrain.train import TrainConfig

#: Scores of :mod:`cinebrain.evaluate.neurons` a run can report (per neuron).
NEURON_METRICS = ("single_trial_r", "correlation_to_average", "oracle_r", "feve", "ccnorm",
                  "bits_per_spike", "behavior_shuffle_drop")

#: The neuron family's training defaults (the engine's other settings keep theirs): early
#: stopping on the validation trials' mean single-trial r; under DDP a rank whose batch
#: holds no trial of some session leaves that session's readout without a gradient, hence
#: ``find_unused_parameters``.
NEURON_TRAINING: dict[str, Any] = {
    "epochs": 40,
    "batch_size": 16,
    "lr": 5e-3,
    "weight_decay": 0.0,
    "warmup_fraction": 0.05,
    "grad_clip": 1.0,
    "patience": 8,
    "eval_every_epochs": 1,
    "early_stopping_metric": "val_r",
    "early_stopping_mode": "max",
    "drop_last": False,
    "find_unused_parameters": True,
    "log_every": 10,
}

#: The engine's schema with the neuron family's defaults.
NeuronTrainConfig = TrainConfig.with_defaults("NeuronTrainConfig", **NEURON_TRAINING)


class NeuronDataConfig(Section):
    """How sessions become training windows."""

    frames: int = Field(30, ge=2, description="frames per training window (inside one trial)")
    stride: int | None = Field(None, ge=1, description="frames between window starts "
                               "(null: frames, non-overlapping tiles)")
    random_offset: bool = Field(True, description="shift every training window by a random "
                                "offset in [0, stride) each epoch (deterministic per epoch)")
    downsample: int = Field(1, ge=1, description="block-average every frame by this factor "
                            "in height and width before anything else (1: as recorded)")
    validation: float | None = Field(
        None, ge=0, lt=1, description="null: the sessions' validation tier; a fraction: "
        "that fraction of the train and validation clips drawn as validation (test untouched)")
    seed: int = Field(0, description="seed of the validation draw and of the window offsets")

    @model_validator(mode="after")
    def _applied(self):
        unused_option(self, "seed", self.validation is None and not self.random_offset,
                      "validation is null and random_offset is false; nothing is drawn")
        return self


class NeuronModelConfig(Section):
    """The neuron model (:func:`cinebrain.models.neurons.make_neuron_model`)."""

    core: Literal["conv", "vivit", "vivit-small", "vivit-baseline"] = Field(
        "conv", description="video core: conv (factorised causal 3-D convolutions), vivit "
        "(a ViViT of core_options), or a ViViT preset (vivit-small, vivit-baseline)")
    core_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the core: Conv3dCore's (channels, "
        "spatial_kernel, temporal_kernel, ...) or ViViTConfig fields (a preset's overrides)")
    modulator: Literal["gru", "convgru", "mlp"] | None = Field(
        "gru", description="behaviour modulator per session (null: none)")
    shifter: bool = Field(True, description="eye-position shifter of the readout positions")
    nonlinearity: Literal["softplus", "elu1"] = Field("softplus", description="output nonlinearity")
    l1: float = Field(0.01, ge=0, description="weight of the readouts' feature-weight L1")
    burn_in: int = Field(10, ge=0, description="leading frames of every window left out of the "
                         "loss and the validation r (the causal core's warm-up)")
    readout: dict[str, Any] = Field(default_factory=dict, description="GaussianReadout options "
                                    "(init_mu_range, init_sigma)")
    init_positions: Literal["energy", "random"] = Field(
        "energy", description="where the readout positions start: energy (each neuron at "
        "the pixel whose contrast energy two frames earlier best correlates with its response "
        "on the training trials, cinebrain.data.neurons.energy_positions) or random (uniform "
        "in readout.init_mu_range around the centre)")
    modulator_hidden: int = Field(16, ge=1, description="hidden units of the modulators")
    shifter_hidden: int = Field(5, ge=1, description="hidden units of the shifters")

    @model_validator(mode="after")
    def _applied(self):
        unused_option(self, "modulator_hidden", self.modulator is None, "modulator is null")
        unused_option(self, "shifter_hidden", not self.shifter, "shifter is false")
        return self


class NeuronEvaluateConfig(Section):
    """Scores of the test trials."""

    metrics: list[Literal[NEURON_METRICS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(NEURON_METRICS),
        description="per-neuron scores: " + ", ".join(NEURON_METRICS))
    skip_frames: int | None = Field(
        None, ge=0, description="leading frames of every test trial left out of every score "
        "(null: model.burn_in)")
    predict_frames: int | None = Field(
        None, ge=2, description="null: predict every test trial whole in one pass (exact for "
        "the causal model); N: windows of N frames, each after the first starting "
        "model.burn_in frames before the frames it contributes")
    shuffle_seed: int = Field(0, description="seed of the behaviour shuffle among test trials")

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one metric (" + ", ".join(NEURON_METRICS) + ")")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _applied(self):
        unused_option(self, "shuffle_seed", "behavior_shuffle_drop" not in self.metrics,
                      "behavior_shuffle_drop is not among the metrics")
        return self


class NeuronBaselineConfig(Section):
    """Ridge on block-averaged pixels with causal frame delays
    (:func:`cinebrain.linear.frames.fit_frame_ridge`), fit per session on its training
    trials and scored on the same test trials as the model."""

    enabled: bool = Field(True, description="fit and score the frame-ridge baseline")
    factor: int | None = Field(
        None, ge=1, description="block-average factor of the pixels (null: the factor that "
        "brings the frame's width to about 16 pixels, e.g. 2 for 18 x 32 frames, 4 for 36 x 64; "
        "finer grids give the ridge more weights than the training frames support)")
    delays: list[int] = Field(default_factory=lambda: list(range(8)),
                              description="frame delays (>= 0: causal)")
    behavior: bool = Field(False, description="append the behaviour columns (undelayed)")
    alphas: list[float] | None = Field(None, description="ridge penalties searched per neuron "
                                       "(null: 1e-1 ... 1e7, 15 values)")
    n_folds: int = Field(5, ge=2, description="CV folds of whole training trials")

    @field_validator("delays")
    @classmethod
    def _delays(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 0 or len(set(v)) != len(v):
            raise ValueError(f"delays {v} must be distinct frame counts >= 0, e.g. [0, 1, 2]")
        return v

    @model_validator(mode="after")
    def _applied(self):
        for name in ("factor", "delays", "behavior", "alphas", "n_folds"):
            unused_option(self, name, not self.enabled, "enabled is false")
        return self


class NeuronRunConfig(Section):
    """A neuron run: sessions -> windows -> model -> training -> test scores (+ baseline)."""

    sessions: list[str] = Field(..., description="recording sessions: Sensorium 2023 "
                                "folders, .nwb files, or .npz / .h5 files (one per session)")
    out: str = Field("cinebrain-runs/neurons", description="run folder")
    data: NeuronDataConfig = Field(default_factory=NeuronDataConfig)
    model: NeuronModelConfig = Field(default_factory=NeuronModelConfig)
    train: NeuronTrainConfig = Field(  # type: ignore[valid-type]
        default_factory=NeuronTrainConfig,
        description="the training engine's settings (cinebrain.train.TrainConfig)")
    evaluate: NeuronEvaluateConfig = Field(default_factory=NeuronEvaluateConfig)
    baseline: NeuronBaselineConfig = Field(default_factory=NeuronBaselineConfig)
    progress: bool = Field(True, description="progress bars")
    threads: int | None = Field(None, ge=1, description="BLAS and torch CPU threads (null: "
                                "the cores available to the process)")

    @field_validator("sessions")
    @classmethod
    def _sessions(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one session (a Sensorium folder, .nwb, .npz or .h5)")
        if len(set(v)) != len(v):
            raise ValueError("a session is listed twice; give each once")
        return v

    @model_validator(mode="after")
    def _windows(self):
        if self.model.burn_in >= self.data.frames:
            raise ValueError(f"model.burn_in {self.model.burn_in} leaves no frame of a "
                             f"{self.data.frames}-frame window in the loss; make data.frames "
                             "larger than model.burn_in")
        p = self.evaluate.predict_frames
        if p is not None and p <= self.model.burn_in:
            raise ValueError(f"evaluate.predict_frames {p} is not more than model.burn_in "
                             f"{self.model.burn_in}; give more frames, or null (whole trials)")
        return self

    @property
    def skip_frames(self) -> int:
        """Leading frames of every test trial left out of the scores."""
        s = self.evaluate.skip_frames
        return self.model.burn_in if s is None else s


def _absolute(data: dict[str, Any], base: Path) -> None:
    sessions = data.get("sessions")
    if isinstance(sessions, list):
        data["sessions"] = [str((base / s).resolve()) if isinstance(s, str)
                            and not os.path.isabs(s) else s for s in sessions]
    out = data.get("out")
    if isinstance(out, str) and not os.path.isabs(out):
        data["out"] = str((base / out).resolve())


def load_neuron_config(path: str | os.PathLike | None = None,
                       overrides: dict[str, Any] | None = None) -> NeuronRunConfig:
    """Read a YAML neuron run config, apply dotted-key ``overrides`` (None values are not
    given), validate. Paths in the file are relative to it; ``out`` and ``sessions`` given
    as overrides are relative to the working folder."""
    data: dict[str, Any] = {}
    where = str(path) if path else "command line"
    if path:
        p = Path(path)
        data = read_config_file(p, "cinebrain neurons train")
        _absolute(data, p.parent)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted == "out" and isinstance(value, str):
            value = os.path.abspath(value)
        elif dotted == "sessions" and isinstance(value, list):
            value = [os.path.abspath(v) for v in value]
        set_dotted(data, dotted, value, where)
    return validate_neuron_config(data, where)


def validate_neuron_config(data: dict[str, Any], where: str) -> NeuronRunConfig:
    """``data`` validated as a :class:`NeuronRunConfig`; a one-line :class:`ConfigError`
    naming ``where`` and the key otherwise."""
    from cinebrain.config import config_error

    try:
        return NeuronRunConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"] and err["type"] == "value_error":  # a check across sections
            raise ConfigError(where, str(err.get("ctx", {}).get("error", err["msg"]))) from None
        raise config_error(where, e, NeuronRunConfig) from None


def save_neuron_config(config: NeuronRunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
