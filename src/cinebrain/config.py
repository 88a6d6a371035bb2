"""Run configuration: every CLI option, also as a YAML file, validated with pydantic.

Unknown keys are rejected with the allowed names; bad values name the key and what is
allowed. Precedence: defaults < YAML config < command-line options.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cinebrain._files import write_text
from cinebrain.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeaturesConfig(_Section):
    """Which feature spaces to extract from the study's stimulus."""

    video: list[Literal["pixels", "luminance", "motion", "motion_energy"]] = Field(
        default_factory=lambda: ["pixels", "motion_energy"],
        description="video feature spaces (empty list: none)",
    )
    audio: list[Literal["envelope", "mel"]] = Field(
        default_factory=lambda: ["envelope", "mel"], description="audio feature spaces"
    )
    annotation_text: bool = Field(True, description="embed the annotation sheet's text columns")
    annotation_columns: bool = Field(
        True, description="one-hot categorical and raw numeric annotation columns"
    )
    transcript: list[Literal["words", "word_rate"]] = Field(
        default_factory=lambda: ["words", "word_rate"], description="transcript spaces"
    )
    video_size: tuple[int, int] = Field((160, 90), description="frame size (width, height) read")
    pixel_size: tuple[int, int] = Field((32, 18), description="grayscale pixel-space size (w, h)")
    n_mels: int = Field(64, ge=8, le=512, description="mel bins")
    audio_sr: int = Field(16000, ge=4000, le=96000, description="audio sample rate (Hz)")


class AlignmentConfig(_Section):
    """How features meet the TR grid."""

    hrf: Literal["spm", "glover", "fir"] = Field("spm", description="canonical HRF or FIR delays")
    delays: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4], description="FIR delays in TRs (hrf: fir)"
    )
    high_pass: float | None = Field(
        1.0 / 128, ge=0, description="cosine high-pass of responses (Hz); null: none"
    )

    @field_validator("delays")
    @classmethod
    def _delays(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 0:
            raise ValueError("delays must be a non-empty list of TRs >= 0")
        return v


class ModelConfig(_Section):
    """The linear encoding model."""

    kind: Literal["banded", "ridge"] = Field("banded", description="banded ridge or ridge")
    bands: dict[str, list[str]] | None = Field(
        None,
        description="band name -> feature spaces (null: one band per modality: visual, "
        "auditory, text, annotations)",
    )
    alpha_min: float = Field(1e-1, gt=0, description="smallest ridge alpha")
    alpha_max: float = Field(1e7, gt=0, description="largest ridge alpha")
    n_alphas: int = Field(15, ge=1, le=200, description="alphas, log-spaced")
    n_iter: int = Field(20, ge=1, le=1000, description="banded ridge: band-weight candidates")
    cv_folds: int = Field(5, ge=2, le=50, description="contiguous CV folds on training runs")
    backend: Literal["numpy", "torch"] = Field("numpy", description="solver backend")
    device: str = Field("cpu", description="torch device (cpu, cuda)")


class SplitConfig(_Section):
    """Held-out data."""

    scheme: Literal["held_out", "leave_one_run_out"] = Field(
        "held_out",
        description="held_out: fit on the other runs, score test_runs; leave_one_run_out: "
        "each run predicted by a model fit on the others (every TR scored), the saved "
        "model refit on all runs",
    )
    test_runs: list[str] | None = Field(
        None, description="run names held out (null: last run); with leave_one_run_out only "
        "the autoencoder uses them",
    )


class EvaluateConfig(_Section):
    """Scores, ceilings, significance, partitioning."""

    ceiling: Literal["auto", "subjects", "repeats", "none"] = Field(
        "auto", description="noise ceiling from repeats or across subjects"
    )
    null: Literal["phase", "block"] = Field(
        "phase", description="which null the significance test uses: phase-randomised "
        "surrogates of the prediction (keeps its spectrum) or shuffled blocks of block_s",
    )
    runs: Literal["auto", "pooled", "separate"] = Field(
        "auto", description="how held-out runs are tested: pooled (r over all held-out TRs, "
        "null drawn within each run) or separate (each run on its own, p-values combined by "
        "the Cauchy combination); auto: separate under leave-one-run-out, whose runs are "
        "predicted by models fit on each other's responses (their r are dependent and a "
        "pooled null is too narrow), pooled otherwise",
    )
    n_permutations: int = Field(
        1000, ge=0, le=100000,
        description="surrogates (null: phase) or block permutations (null: block) of the "
        "prediction (0: no significance test)",
    )
    block_s: float = Field(12.0, gt=0, description="permutation block length (s) for null: block; longer than the noise autocorrelation, short enough for many distinct permutations")
    fdr: float = Field(0.05, gt=0, lt=1, description="false discovery rate")
    variance_partitioning: bool = Field(
        True, description="refit on subsets of bands for unique/shared variance"
    )
    rois: str | None = Field(None, description="label NIfTI in the mask's space")
    roi_labels: dict[int, str] | None = Field(None, description="label value -> ROI name")


class AutoencoderRunConfig(_Section):
    """The multimodal autoencoder (``cinebrain train``, ``cinebrain lesion``).

    The model is a named preset (``cinebrain.models.presets``) with ``overrides`` of its
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
    epochs: int = Field(60, ge=1, le=100000, description="passes over the training windows")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (overrides epochs)")
    batch_size: int = Field(8, ge=1, le=4096, description="windows per optimizer step")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW, warmup + cosine)")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="warmup share of the steps")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clip (null: none)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    patience: int | None = Field(
        15, ge=1, description="evaluations without val_r improvement before stopping (null: never)"
    )
    eval_every_epochs: int = Field(1, ge=1, description="validate every n epochs")
    seed: int = Field(0, description="random seed (weights, data order, dropout)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="training device")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null: torch default)")
    tensorboard: bool = Field(True, description="TensorBoard event files next to metrics.jsonl")
    lesion_modalities: list[Literal["video", "audio", "text"]] = Field(
        default_factory=lambda: ["video", "audio", "text"],
        description="modality lesions run after training (one each; empty: none)",
    )
    lesion_mode: Literal["zero", "mean"] = Field("mean", description="unit lesions: zero or mean")
    reconstruct: bool = Field(True, description="write the test run's reconstruction files")


class RunConfig(_Section):
    """A whole run: study -> features -> fit -> evaluate -> report."""

    study: str = Field(..., description="study YAML file")
    out: str = Field("cinebrain-runs/run", description="run folder")
    subjects: list[str] | None = Field(None, description="subjects to use (null: all)")
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    autoencoder: AutoencoderRunConfig = Field(default_factory=AutoencoderRunConfig)
    report: bool = Field(True, description="build report.html")
    progress: bool = Field(True, description="progress bars")


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc`` (a pydantic error location) inside ``model``."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            break
        field = current.model_fields.get(str(part))
        if field is None:
            break
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def config_error(where: str, exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    """One-line :class:`ConfigError` from the first pydantic error."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed(model, loc)
        section = ".".join(str(p) for p in loc[:-1]) or "top level"
        return ConfigError(
            where,
            f"unknown key '{loc[-1]}' in {section}",
            f"allowed keys: {', '.join(allowed)}",
        )
    if err["type"] == "missing":
        return ConfigError(where, f"missing required key '{key}'", "add it")
    return ConfigError(
        where, f"bad value for '{key}': {err['msg']} (got {err.get('input')!r})", "fix the value"
    )


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (optional), apply dotted-key ``overrides``, validate."""
    data: dict[str, Any] = {}
    where = str(path) if path else "command line"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(p, "config file not found", "check the path")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            at = f" at line {line + 1}" if line is not None else ""
            raise ConfigError(p, f"not valid YAML{at}", "fix the syntax") from None
        if not isinstance(loaded, dict):
            raise ConfigError(p, "a config must be a mapping of keys to values", "see `cinebrain fit --help`")
        data = loaded
        # Paths in a config file are relative to the file.
        for key in ("study", "out"):
            if isinstance(data.get(key), str) and not os.path.isabs(data[key]):
                data[key] = str((p.parent / data[key]).resolve())
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise config_error(where, e, RunConfig) from None


def save_config(config: RunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return write_text(path, text)
