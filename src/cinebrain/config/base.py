"""The base of every config section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from cinebrain.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def unused_option(section: BaseModel, name: str, unused: bool, why: str) -> None:
    """Refuse ``section.name`` set to other than its default where the section's other
    options leave it unused (a value that is not applied would look as if it were)."""
    if not unused:
        return
    default = type(section).model_fields[name].get_default(call_default_factory=True)
    value = getattr(section, name)
    if value != default:
        raise ValueError(f"{name} {value!r} would not be applied: {why}; remove it (its "
                         f"default is {default!r}) or change that option")


def read_config_file(path: str | os.PathLike, command: str) -> dict[str, Any]:
    """The mapping a YAML config file holds; one-line errors for a missing file, bad YAML
    (with its line) and a file that is not a mapping (pointing at ``command --help``)."""
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
        raise ConfigError(p, "a config must be a mapping of keys to values",
                          f"see `{command} --help`")
    return loaded


def set_dotted(data: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Set ``data``'s key ``a.b.c`` (sections made as needed) to ``value``; a key that
    passes through a value that is not a section is a one-line error at ``where``."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(where, f"'{part}' is not a section", "fix the config")
    node[parts[-1]] = value
