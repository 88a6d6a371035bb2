"""Run configuration: every CLI option, also as a YAML file, validated with pydantic.

One module per pipeline's section (:mod:`features`, :mod:`ridge`, :mod:`autoencoder`);
the training engine's settings are a section of each deep family, in the engine's own
schema (:class:`cinebrain.train.TrainConfig`). Unknown keys are rejected with the allowed
names; bad values name the key and what is allowed. Precedence: defaults < YAML config <
command-line options. Paths are made absolute on loading (relative to the config file,
or to the working folder for command-line options), so a saved config reads the same
files from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from cinebrain._files import hash_inputs, write_text
from cinebrain.config.autoencoder import AUTOENCODER_TRAINING, AutoencoderRunConfig
from cinebrain.config.base import Section, read_config_file, set_dotted
from cinebrain.config.features import FeaturesConfig
from cinebrain.config.neurons import NEURON_TRAINING, NeuronRunConfig, load_neuron_config
from cinebrain.config.ridge import AlignmentConfig, EvaluateConfig, ModelConfig, SplitConfig
from cinebrain.config.videogpt import SweepConfig, VideoGPTRunConfig
from cinebrain.errors import ConfigError

__all__ = [
    "AUTOENCODER_TRAINING",
    "AlignmentConfig",
    "AutoencoderRunConfig",
    "EvaluateConfig",
    "NULL",
    "STAGE_OPTIONS",
    "FeaturesConfig",
    "ModelConfig",
    "NEURON_TRAINING",
    "NeuronRunConfig",
    "RunConfig",
    "Section",
    "SplitConfig",
    "config_error",
    "config_leaves",
    "load_config",
    "load_neuron_config",
    "save_config",
    "section_hash",
]

#: Keys holding file paths, made absolute on loading.
PATH_KEYS = (("study",), ("out",), ("evaluate", "rois"), ("sweep", "out"))


class _Null:
    """An override that sets a key to null (``None`` as an override means "not given")."""

    def __repr__(self) -> str:
        return "none"

    __str__ = __repr__


#: ``load_config(path, {"alignment.high_pass": NULL})`` sets the key to null.
NULL = _Null()

#: The options each stage applies (dotted keys or section prefixes). The other options of
#: a config are carried in the run folder's ``config.yaml`` for the stages that use them.
#: ``study``, ``out``, ``progress`` and ``threads`` concern every stage.
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "features": ("subjects", "features"),
    "fit": ("subjects", "alignment", "model", "split", "evaluate.variance_partitioning"),
    "evaluate": ("subjects", "evaluate"),
    "report": ("evaluate.fdr", "evaluate.rois", "evaluate.roi_labels"),
    "train": ("subjects", "alignment", "split", "autoencoder"),
    "videogpt-train": ("split", "videogpt.video", "videogpt.vqvae", "videogpt.gpt"),
    "videogpt-evaluate": ("subjects", "alignment", "model", "split", "videogpt"),
    "sweep": ("subjects", "alignment", "model", "split", "videogpt", "sweep"),
}


class RunConfig(Section):
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
    videogpt: VideoGPTRunConfig = Field(default_factory=VideoGPTRunConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    report: bool = Field(True, description="build report.html")
    progress: bool = Field(True, description="progress bars")
    threads: int | None = Field(
        None, ge=1, description="BLAS and torch CPU threads (null: the cores available to "
        "the process); results do not depend on it",
    )


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
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):
        # a section's own check (an option its other options leave unused): its message
        # names the keys and the fix; the section's values would only make the line long
        message = str(err.get("ctx", {}).get("error", err["msg"]))
        return ConfigError(where, f"{key}.{message}")
    return ConfigError(
        where, f"bad value for '{key}': {err['msg']} (got {err.get('input')!r})", "fix the value"
    )


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (optional), apply dotted-key ``overrides``, validate."""
    data: dict[str, Any] = {}
    where = str(path) if path else "command line"
    if path:
        p = Path(path)
        data = read_config_file(p, "cinebrain fit")
        _absolute_paths(data, p.parent)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if value is NULL:
            value = None
        if tuple(dotted.split(".")) in PATH_KEYS and isinstance(value, str):  # (not a null)
            value = os.path.abspath(value)  # a command-line path: relative to the working folder
        set_dotted(data, dotted, value, where)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise config_error(where, e, RunConfig) from None


def _absolute_paths(data: dict[str, Any], base: Path) -> None:
    """Make the path keys of a loaded config file absolute, relative to ``base``."""
    for key in PATH_KEYS:
        node: Any = data
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key[-1]), str):
            value = node[key[-1]]
            if not os.path.isabs(value):
                node[key[-1]] = str((base / value).resolve())
    networks = data.get("features", {}).get("networks") if isinstance(data.get("features"), dict) else None
    for entry in networks if isinstance(networks, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("model"), str) \
                and not os.path.isabs(entry["model"]):
            entry["model"] = str((base / entry["model"]).resolve())


def config_leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf option of a config dump (a dict-valued option such
    as ``model.bands`` is one leaf when the model declares it so; here every nested mapping
    is walked, which is what comparing two dumps needs)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted in _SECTIONS:
            out.update(config_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _sections(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.add(prefix + name)
            found |= _sections(ann, f"{prefix}{name}.")
    return found


#: Dotted names of the config's sections (``features``, ``autoencoder.train``, ...).
_SECTIONS = _sections(RunConfig)


def section_hash(config: RunConfig, *sections: str) -> str:
    """A hash of the named sections of ``config`` (a stage's manifest records the hash of
    what it depends on)."""
    dump = config.model_dump(mode="json")
    return hash_inputs(*[[name, dump.get(name)] for name in sections])


def save_config(config: RunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return write_text(path, text)
