"""The study file: which stimulus, which subjects and runs, and how they line up in time.

A study is a YAML file validated by pydantic models (unknown keys are errors). Paths in it
are relative to the file's folder (``study.root``); :meth:`Study.resolve` turns them into
absolute paths. Validation errors become one-line :class:`~cinebrain.errors.InputError`
messages through :func:`format_validation_error`, which any other pydantic config can
reuse::

    name: simulated
    tr: 1.5                        # seconds
    length_policy: error           # or truncate
    stimulus:
      video: stimulus/movie.mp4
      annotations: {path: stimulus/annotations.tsv, onset: onset, offset: offset}
    mask: null
    subjects:
      sub-01:
        runs:
          - {name: run-1, bold: sub-01/run-1_bold.nii.gz, segment: [0.0, 240.0], offset: 0.0}
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cinebrain._files import write_text
from cinebrain.errors import InputError

_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_assignment=True)


class Annotations(BaseModel):
    """An annotation table: one row per event, with a start and an end (or duration).

    Either one table for the whole stimulus (``path``, stimulus seconds), or, with
    ``path`` left out, one table per run (each run's ``events``, on that run's scan clock);
    the column keys apply to every table. Column names are matched without surrounding
    spaces (``"Start Time (s) "`` and ``"Start Time (s)"`` name the same header).
    """

    model_config = _CONFIG

    path: str | None = Field(
        None,
        description="the annotation table (TSV, CSV or XLSX) for the whole stimulus; leave it "
        "out when every run has its own events table",
    )
    onset: str = Field("onset", description="the name of the column holding event starts")
    offset: str | None = Field(None, description="the name of the column holding event ends")
    duration: str | None = Field(None, description="the name of the column holding event durations")
    unit: Literal["s", "tr"] = Field("s", description="the unit of the time columns")
    tr_base: Literal[0, 1] | None = Field(
        None,
        description="with unit: tr, the number of the first TR, 0 or 1 (default 0); TR k covers "
        "[(k - tr_base) * tr, (k - tr_base + 1) * tr) seconds",
    )
    inclusive: bool | None = Field(
        None,
        description="with unit: tr and an offset column, true if the end TR is the event's last "
        "TR (offset = (end - tr_base + 1) * tr), false if it is the first TR after it "
        "(default false)",
    )
    part: str | None = Field(
        None,
        description="the column naming each row's part, when the sheet's times restart at 0 for "
        "each part (needs part_start)",
    )
    part_start: dict[str, float] | None = Field(
        None,
        description="a mapping part -> the stimulus second at which that part's time 0 falls "
        "(with part)",
    )
    order: Literal["time", "any"] = Field(
        "time",
        description="'time' (default): rows are in time order and an onset earlier than the row "
        "above is an error; 'any': rows in any order",
    )
    separator: str | None = Field(
        None,
        description="a separator of several values in one categorical cell (e.g. ','): one "
        "indicator column per value (default: a cell is one value)",
    )
    numeric_blank: Literal["error", "zero", "previous"] = Field(
        "error",
        description="what a blank cell in a numeric column means: error (default), zero, or "
        "previous (the value above it in the sheet)",
    )
    sheet: str | int | None = Field(None, description="the Excel sheet (name or index; default: the first)")
    text: list[str] = Field(
        default_factory=list, description="columns embedded with the text model"
    )
    categorical: list[str] = Field(default_factory=list, description="columns one-hot encoded")
    numeric: list[str] = Field(default_factory=list, description="numeric columns used as they are")

    @field_validator("onset", "offset", "duration", "part")
    @classmethod
    def _strip_name(cls, v: str | None) -> str | None:
        return None if v is None else v.strip()

    @field_validator("text", "categorical", "numeric")
    @classmethod
    def _strip_names(cls, v: list[str]) -> list[str]:
        return [c.strip() for c in v]

    @model_validator(mode="after")
    def _one_end(self) -> Annotations:
        if (self.offset is None) == (self.duration is None):
            got = "both" if self.offset is not None else "neither"
            raise ValueError(
                f"give exactly one of offset and duration (got {got}); "
                "set offset: <end column> or duration: <duration column>"
            )
        if self.unit != "tr" and (self.tr_base is not None or self.inclusive is not None):
            raise ValueError(
                "tr_base and inclusive only apply to times in TRs (unit is 's'); "
                "set unit: tr, or remove tr_base and inclusive"
            )
        if self.inclusive and self.duration is not None:
            raise ValueError(
                "inclusive applies to an end column, not to durations; "
                "remove inclusive, or give offset: instead of duration:"
            )
        if (self.part is None) != (self.part_start is None):
            raise ValueError(
                "part and part_start go together; set part: <column naming each row's part> and "
                "part_start: {<part>: <stimulus second at which its times start>}"
            )
        if self.part_start is not None:
            bad = {k: v for k, v in self.part_start.items() if not 0 <= v < float("inf")}
            if bad:
                raise ValueError(
                    f"part_start must be stimulus seconds >= 0 (got {bad}); "
                    "give the second at which each part starts"
                )
        if self.separator is not None and (not self.separator or self.separator.isspace()):
            raise ValueError("separator must be a visible character (e.g. ','); set separator: ','")
        return self

    def reading(self, tr: float) -> dict[str, Any]:
        """How a table is read: keyword arguments of
        :func:`cinebrain.io.annotations.read_annotations` (its path and columns aside)."""
        return {
            "onset": self.onset, "offset": self.offset, "duration": self.duration,
            "unit": self.unit,
            # The TR only turns TRs into seconds.
            "tr": float(tr) if self.unit == "tr" else None,
            "sheet": self.sheet, "tr_base": self.tr_base, "inclusive": self.inclusive,
            "part": self.part, "part_start": self.part_start, "order": self.order,
            "numeric_blank": self.numeric_blank,
        }


class Stimulus(BaseModel):
    """What was shown: a movie, its soundtrack, annotations, a transcript (all optional)."""

    model_config = _CONFIG

    video: str | None = Field(None, description="a movie file (mp4, mkv, avi, mov)")
    audio: str | None = Field(
        None, description="a sound file (wav, flac); default: the video's soundtrack"
    )
    annotations: Annotations | None = Field(None, description="an annotation table")
    transcript: str | None = Field(
        None, description="a word table with columns word, onset, offset (seconds)"
    )


class Run(BaseModel):
    """One scanning run: its responses and the stimulus segment it showed.

    Volume ``k`` covers scan time ``[k * tr, (k + 1) * tr)``; stimulus second ``s`` was
    shown at scan time ``offset + (s - segment[0])``. A run with its own ``events`` in a
    study without a movie is on its own clock: ``segment`` defaults to the whole run and
    is read in scan seconds; its TRs after the last event (rest) get zero features. The
    study's ``slice_time_ref`` says where in its TR a volume was sampled, and
    ``response_shift`` that it was acquired that many seconds later than its place in the
    file says (responses already shifted for the haemodynamic lag).
    """

    model_config = _CONFIG

    name: str = Field(..., description="the run's name, unique within the subject")
    bold: str | None = Field(None, description="a 4D NIfTI file (x, y, z, time)")
    responses: str | None = Field(
        None, description="an array file (n_trs, n_targets): npy, npz, csv, tsv, mat, h5"
    )
    key: str | None = Field(
        None, description="the variable name inside an npz/mat/h5 responses file"
    )
    segment: tuple[float, float] | None = Field(
        None,
        description="[start, end) in stimulus seconds, the part of the stimulus shown in this run "
        "(with events and no movie: optional, default the whole run, on the run's clock)",
    )
    offset: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="the scan time in seconds at which the segment started",
    )
    response_shift: float = Field(
        0.0,
        allow_inf_nan=False,
        description="seconds by which these responses were already shifted earlier (e.g. by "
        "their authors, for the haemodynamic lag): volume k was acquired shift seconds after "
        "the time the study's grid gives it; either sign, default 0 (not shifted). The HRF "
        "is applied from the acquisition time, so no stimulus is lost; FIR delays count TRs "
        "on the responses' own clock and may be negative down to -shift / tr",
    )
    events: str | None = Field(
        None,
        description="this run's own events table (TSV, CSV or XLSX, as BIDS events.tsv), read "
        "with the column keys of stimulus.annotations, times on the run's scan clock (0 = the "
        "start of its first volume)",
    )

    @field_validator("segment")
    @classmethod
    def _segment_order(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is None:
            return v
        start, end = v
        if not (0 <= start < end < float("inf")):
            raise ValueError(
                f"must be [start, end] with 0 <= start < end (got [{start:g}, {end:g}]); "
                "give the stimulus seconds shown in this run"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Run:
        if (self.bold is None) == (self.responses is None):
            got = "both" if self.bold is not None else "neither"
            raise ValueError(
                f"a run needs exactly one of bold and responses (got {got}); "
                "give bold: <4D NIfTI> or responses: <array file>"
            )
        if self.key is not None and self.responses is None:
            raise ValueError("key is only used with responses; remove key or use responses:")
        if self.segment is None and self.events is None:
            raise ValueError(
                "a run needs a segment (got none); give segment: [start, end] in stimulus "
                "seconds, or events: <this run's events table>"
            )
        return self


class Subject(BaseModel):
    """A subject's runs, in the order they were scanned."""

    model_config = _CONFIG

    runs: list[Run] = Field(
        ..., min_length=1, description="a list of runs (name, bold or responses, segment, offset)"
    )

    @field_validator("runs")
    @classmethod
    def _unique_names(cls, runs: list[Run]) -> list[Run]:
        names = [r.name for r in runs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"run names must be unique (repeated: {', '.join(dupes)}); rename the runs"
            )
        return runs


class Study(BaseModel):
    """A study: stimulus, TR, subjects and runs. Paths are relative to :attr:`root`."""

    model_config = _CONFIG

    name: str = Field(..., description="a name for the study")
    tr: float = Field(..., gt=0, allow_inf_nan=False, description="the repetition time in seconds")
    length_policy: Literal["error", "truncate"] = Field(
        "error", description="what to do when responses and stimulus differ in length"
    )
    slice_time_ref: float = Field(
        1.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="where within its TR a volume is sampled, as a fraction of the TR (as "
        "nilearn states it): the HRF-convolved feature of volume k is taken at scan time "
        "(k + slice_time_ref) * tr. Default 1 (the end of the TR) is cinebrain's behaviour "
        "before this key existed; nilearn's default is 0 (the start); fMRIPrep's slice-timing "
        "correction references the middle (0.5). Lowering it by f shortens the modelled "
        "stimulus-to-volume lag by f * tr",
    )
    stimulus: Stimulus = Field(default_factory=Stimulus, description="the stimulus files")
    mask: str | None = Field(
        None, description="a 3D NIfTI mask, or null to compute one from the data"
    )
    subjects: dict[str, Subject] = Field(
        ..., min_length=1, description="one entry per subject, each with its runs"
    )

    _root: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _events_or_sheet(self) -> Study:
        ann = self.stimulus.annotations
        with_events = [
            f"subjects.{sub}.runs[{i}]"
            for sub, subject in self.subjects.items()
            for i, run in enumerate(subject.runs)
            if run.events is not None
        ]
        without = [
            f"subjects.{sub}.runs[{i}]"
            for sub, subject in self.subjects.items()
            for i, run in enumerate(subject.runs)
            if run.events is None
        ]
        if with_events and ann is None:
            raise ValueError(
                f"{with_events[0]} has events but stimulus.annotations is missing; add "
                "stimulus.annotations with the events' columns (onset, duration or offset, and "
                "the categorical / numeric / text columns to use), without path"
            )
        if ann is None:
            return self
        if with_events and ann.path is not None:
            raise ValueError(
                f"the study has both an annotation sheet (stimulus.annotations.path) and per-run "
                f"events ({with_events[0]}.events); remove stimulus.annotations.path to use the "
                "runs' events, or remove the runs' events to use the sheet"
            )
        if not with_events and ann.path is None:
            raise ValueError(
                "stimulus.annotations has no path and no run has events; give "
                "stimulus.annotations.path (one table for the whole stimulus) or events: "
                "<table> in every run"
            )
        if with_events and without:
            raise ValueError(
                f"{with_events[0]} has events but {without[0]} has none; give every run its "
                "events table (or use one sheet for the whole stimulus)"
            )
        if with_events and ann.part is not None:
            raise ValueError(
                "stimulus.annotations.part is for one sheet whose times restart per part; "
                "per-run events are each on their own run's clock already: remove part and part_start"
            )
        if with_events:
            stim = self.stimulus
            movie = [k for k in ("video", "audio", "transcript") if getattr(stim, k) is not None]
            all_runs = [r for s in self.subjects.values() for r in s.runs]
            for loc, run in zip(with_events, all_runs, strict=True):
                if movie and run.segment is None:
                    raise ValueError(
                        f"{loc} has no segment but the study has a stimulus.{movie[0]}; give "
                        "segment: [start, end] in stimulus seconds"
                    )
                if not movie and run.offset != 0:
                    raise ValueError(
                        f"{loc} has events and offset {run.offset:g}, but its events are on its "
                        "own scan clock already (onset 0 = the start of its first volume); "
                        "remove offset (a segment, if given, is on the same clock)"
                    )
        return self

    @property
    def root(self) -> Path:
        """Folder the study's relative paths start from (the study file's folder)."""
        return self._root if self._root is not None else Path.cwd()

    @root.setter
    def root(self, folder: str | os.PathLike) -> None:
        self._root = Path(folder).absolute()

    def resolve(self, relpath: str | os.PathLike) -> Path:
        """Absolute path of a path written in the study file."""
        return self.root / Path(relpath)

    def paths(self) -> list[tuple[str, str]]:
        """Every file the study refers to, as ``(key path, path as written)``."""
        out: list[tuple[str, str]] = []
        stim = self.stimulus
        for key in ("video", "audio", "transcript"):
            if getattr(stim, key) is not None:
                out.append((f"stimulus.{key}", getattr(stim, key)))
        if stim.annotations is not None and stim.annotations.path is not None:
            out.append(("stimulus.annotations.path", stim.annotations.path))
        if self.mask is not None:
            out.append(("mask", self.mask))
        for sub, subject in self.subjects.items():
            for i, run in enumerate(subject.runs):
                for key in ("bold", "responses", "events"):
                    value = getattr(run, key)
                    if value is not None:
                        out.append((f"subjects.{sub}.runs[{i}].{key}", value))
        return out


# --------------------------------------------------------------------------- errors
_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m for m in (Study, Stimulus, Annotations, Subject, Run)
}
_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_CTX_KEYS = {
    "greater_than": "gt",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "less_than_equal": "le",
}


def _walk(model: type[BaseModel] | None, loc: tuple) -> tuple[str, Any, Any]:
    """Follow a pydantic error location through the model's fields.

    Returns the key path as a user writes it (``subjects.sub-01.runs[0].bold``), the
    model class holding the last key (or None) and the FieldInfo of the last key (or None).
    """
    key = ""
    current: Any = model
    owner: Any = None
    field: Any = None
    for part in loc:
        # Unwrap Optional / unions down to the one model (or container) they hold.
        while typing.get_origin(current) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = (
                args[0]
                if len(args) == 1
                else next(
                    (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None
                )
            )
        if isinstance(part, int):
            key += f"[{part}]"
        elif part == "[key]":
            continue
        else:
            key += f".{part}" if key else str(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            owner, field = current, current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) in (list, tuple, dict):
            args = typing.get_args(current)
            current = args[-1] if args else None
            field = None
        else:
            current, field = None, None
    while typing.get_origin(current) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(current) if a is not type(None)]
        current = args[0] if len(args) == 1 else None
    return (
        key,
        (current if isinstance(current, type) and issubclass(current, BaseModel) else owner),
        field,
    )


def _container(model: type[BaseModel] | None, loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """Key path and model class of the mapping that holds the last key of ``loc``."""
    key, cls, _ = _walk(model, loc[:-1]) if loc[:-1] else ("", model, None)
    return key, cls


def _fmt(value: Any) -> str:
    if isinstance(value, (dict, list)) and len(repr(value)) > 60:
        return type(value).__name__
    return repr(value)


def format_validation_error(
    where: str | os.PathLike, exc: ValidationError, model: type[BaseModel] | None = None
) -> InputError:
    """Turn the first error of a pydantic ``ValidationError`` into a one-line InputError.

    Unknown keys list the allowed keys; bad values name the key path and the allowed
    values or range, with the field's description as the fix.

    Parameters
    ----------
    where : str or PathLike
        The file (or "command line") named first in the message.
    exc : pydantic.ValidationError
    model : pydantic model class, optional
        The model validated; needed to list allowed keys. Default: found from the
        error's title among the study models.

    Returns
    -------
    InputError
        Raise it (``raise format_validation_error(path, e) from None``).
    """
    if model is None:
        model = _MODELS.get(exc.title)
    errors = exc.errors(include_url=False)
    # A misspelt key shows up twice (unknown + missing): the unknown one says more.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    etype = err["type"]
    ctx = err.get("ctx") or {}
    key, owner, field = _walk(model, loc)
    desc = getattr(field, "description", None)
    fix = f"set {key} to {desc}" if desc and key else "fix the value"
    got = _fmt(err.get("input"))

    if etype == "extra_forbidden":
        parent, cls = _container(model, loc)
        allowed = list(cls.model_fields) if cls is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return InputError(
            where,
            f"unknown key '{loc[-1]}' {('in ' + parent) if parent else 'at top level'}",
            f"allowed: {', '.join(allowed)}{hint}" if allowed else "remove it",
        )
    if etype == "missing" and isinstance(loc[-1], int):  # a tuple with too few items
        parent, _, container_field = _walk(model, loc[:-1])
        cdesc = getattr(container_field, "description", None)
        return InputError(
            where,
            f"{parent} has too few values (item {loc[-1] + 1} is missing)",
            f"set {parent} to {cdesc}" if cdesc else "add the missing values",
        )
    if etype == "missing":
        parent, _ = _container(model, loc)
        return InputError(
            where,
            f"missing key '{loc[-1]}' {('in ' + parent) if parent else 'at top level'}",
            f"add {loc[-1]}: {desc}" if desc else f"add {loc[-1]}",
        )
    if etype in _OPS:
        limit = ctx.get(_CTX_KEYS[etype])
        limit = f"{limit:g}" if isinstance(limit, (int, float)) else limit
        return InputError(where, f"{key} must be {_OPS[etype]} {limit} (got {got})", fix)
    if etype in ("too_short", "too_long"):
        bound = ctx.get("min_length" if etype == "too_short" else "max_length")
        most = "least" if etype == "too_short" else "most"
        return InputError(
            where,
            f"{key} must have at {most} {bound} item(s) (got {ctx.get('actual_length')})",
            fix,
        )
    if etype == "finite_number":
        return InputError(where, f"{key} must be a finite number (got {got})", fix)
    if etype in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        return InputError(
            where, f"{key} must be one of {expected} (got {got})", f"set {key} to one of {expected}"
        )
    if etype in ("model_type", "model_attributes_type", "dict_type"):
        cls = owner if etype != "dict_type" else None
        sub_fields = list(cls.model_fields) if cls is not None else []
        what = f"a mapping of keys ({', '.join(sub_fields)})" if sub_fields else "a mapping of keys"
        return InputError(where, f"{key or 'the file'} must be {what} (got {got})", fix)
    if etype == "value_error":
        msg = str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
        problem, _, own_fix = msg.partition("; ")
        return InputError(where, f"{key}: {problem}" if key else problem, own_fix or fix)
    msg = err["msg"]
    if msg.startswith("Input should be"):
        problem = f"{key} must be{msg[len('Input should be') :]} (got {got})"
    else:
        problem = f"{key}: {msg[0].lower() + msg[1:]} (got {got})" if key else msg
    return InputError(where, problem, fix)


# --------------------------------------------------------------------------- read / write
def load_study(path: str | os.PathLike, check_files: bool = True) -> Study:
    """Read and validate a study YAML file.

    Parameters
    ----------
    path : str or PathLike
        The study file; relative paths in it start from its folder.
    check_files : bool
        Check that every file it refers to exists.

    Returns
    -------
    Study
        With ``study.root`` set to the file's folder (absolute).

    Raises
    ------
    InputError
        Missing file, YAML syntax error, unknown key, bad value (one line naming the key
        path and the allowed values), or a referenced file that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path, "study file not found", "check the path, or create one (see docs: the study file)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise InputError(
            path,
            f"not valid YAML{at} ({problem})",
            "fix the syntax (indent with spaces, `key: value`)",
        ) from None
    except UnicodeDecodeError:
        raise InputError(path, "not a text file", "give the study YAML file") from None
    if not isinstance(data, dict):
        raise InputError(
            path,
            f"a study file must be a mapping of keys to values, got {type(data).__name__}",
            f"start from the template: {', '.join(Study.model_fields)}",
        )
    try:
        study = Study.model_validate(data)
    except ValidationError as e:
        raise format_validation_error(path, e, Study) from None
    study.root = path.parent
    if check_files:
        for key, rel in study.paths():
            full = study.resolve(rel)
            if not full.exists():
                raise InputError(
                    path,
                    f"{key}: file not found: {rel} (looked for {full})",
                    "fix the path; paths are relative to the study file's folder",
                )
    return study


def write_study(study: Study, path: str | os.PathLike) -> Path:
    """Write ``study`` as YAML to ``path``, atomically.

    Paths are rewritten relative to the new file's folder (as POSIX paths). A study built
    in code without a root (never loaded, ``root`` not set) is written with its paths as
    they are, i.e. taken as already relative to ``path``'s folder.
    """
    path = Path(path)
    data = study.model_dump(mode="json", exclude_none=True)
    data.setdefault("mask", None)  # explicit: null means "computed from the data"
    if study._root is not None:
        dest = path.parent.absolute()

        def rebase(rel: str | None) -> str | None:
            if rel is None:
                return None
            return Path(os.path.relpath(study.resolve(rel), dest)).as_posix()

        stim = data["stimulus"]
        for key in ("video", "audio", "transcript"):
            if key in stim:
                stim[key] = rebase(stim[key])
        if "annotations" in stim and "path" in stim["annotations"]:
            stim["annotations"]["path"] = rebase(stim["annotations"]["path"])
        data["mask"] = rebase(data["mask"])
        for subject in data["subjects"].values():
            for run in subject["runs"]:
                for key in ("bold", "responses", "events"):
                    if key in run:
                        run[key] = rebase(run[key])
    return write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
