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

    test_runs: list[str] | None = Field(None, description="run names held out (null: last run)")


class EvaluateConfig(_Section):
    """Scores, ceilings, significance, partitioning."""

    ceiling: Literal["auto", "subjects", "repeats", "none"] = Field(
        "auto", description="noise ceiling from repeats or across subjects"
    )
    n_permutations: int = Field(1000, ge=0, le=100000, description="block permutations (0: skip)")
    block_s: float = Field(32.0, gt=0, description="permutation block length (s)")
    fdr: float = Field(0.05, gt=0, lt=1, description="false discovery rate")
    variance_partitioning: bool = Field(
        True, description="refit on subsets of bands for unique/shared variance"
    )
    rois: str | None = Field(None, description="label NIfTI in the mask's space")
    roi_labels: dict[int, str] | None = Field(None, description="label value -> ROI name")


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
