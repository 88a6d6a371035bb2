"""The base of every config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
