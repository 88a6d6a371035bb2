"""A BIDS dataset with fMRIPrep derivatives: which runs exist, and the files of each.

:func:`scan_bids` walks the raw tree (``sub-*/[ses-*/]func/*_bold.nii.gz`` with their
``_bold.json`` sidecars and ``_events.tsv`` tables) and finds, for every raw run, the
fMRIPrep outputs in ``derivatives/fmriprep`` (or ``derivatives=``): the preprocessed BOLD
in the chosen space (``*_space-<space>[_res-*]_desc-preproc_bold.nii.gz``), its brain mask
(``*_desc-brain_mask.nii.gz``) and the confounds table (``*_desc-confounds_timeseries.tsv``
with its ``.json``). Every problem found is reported at once, one line each naming the
file and the fix, in one :class:`~cinebrain.errors.InputError`.

The repetition time comes from the ``RepetitionTime`` of the run's sidecar, with BIDS
inheritance (``task-<task>_bold.json`` at the top, then the subject's, then the run's own),
else from the preprocessed BOLD's sidecar; every run must have the same TR.

A run whose preprocessed sidecar says ``SliceTimingCorrected: true`` has its volumes
sampled at ``StartTime / RepetitionTime`` of the TR (fMRIPrep: the middle, 0.5).

The stimulus (:func:`find_stimulus`) is the file the events' ``stim_file`` column names in
``stimuli/`` (the same file in every run), else the single movie or sound file there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cinebrain.errors import InputError
from cinebrain.io.nifti import check_tr, load_bold_header, load_mask

DEFAULT_SPACE = "MNI152NLin2009cAsym"
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
AUDIO_EXTS = (".wav", ".flac")

_BOLD = re.compile(r"^(?P<prefix>sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*)_bold\.nii(?:\.gz)?$")


@dataclass
class BidsRun:
    """One functional run: its raw files, its fMRIPrep files and its timing."""

    subject: str  # "sub-01"
    entities: dict[str, str]  # every key-value of the raw file name (sub, ses, task, run, ...)
    raw_bold: Path
    preproc: Path
    mask: Path
    confounds: Path
    events: Path | None
    tr: float
    n_volumes: int
    slice_timing: list[float] | None = None
    #: where in its TR a volume is sampled (fraction of the TR) after fMRIPrep's slice-timing
    #: correction (the preprocessed sidecar's StartTime / TR, 0.5 when it gives none); None
    #: when the sidecar does not say the correction was applied
    slice_time_ref: float | None = None
    name: str = ""  # the run's name in the study (set by scan_bids)


@dataclass
class BidsDataset:
    """The runs :func:`scan_bids` found, in subject and scan order."""

    root: Path
    derivatives: Path
    space: str
    task: str
    tr: float
    runs: list[BidsRun] = field(default_factory=list)

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(r.subject for r in self.runs))

    def subject_runs(self, subject: str) -> list[BidsRun]:
        return [r for r in self.runs if r.subject == subject]


def _entities(prefix: str) -> dict[str, str]:
    return dict(part.split("-", 1) for part in prefix.split("_"))


def _read_json(path: Path, problems: list[str]) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path}: not a readable JSON sidecar ({type(e).__name__}); fix the JSON")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: a sidecar must be a JSON object; fix the JSON")
        return {}
    return data


def _sidecar(root: Path, raw_bold: Path, ent: dict[str, str], problems: list[str]) -> dict:
    """The run's sidecar metadata with BIDS inheritance (top level, subject, run)."""
    task = ent.get("task", "")
    candidates = [root / f"task-{task}_bold.json", root / f"sub-{ent['sub']}" /
                  f"sub-{ent['sub']}_task-{task}_bold.json"]
    if "ses" in ent:
        candidates.append(root / f"sub-{ent['sub']}" / f"ses-{ent['ses']}" /
                          f"sub-{ent['sub']}_ses-{ent['ses']}_task-{task}_bold.json")
    candidates.append(raw_bold.with_name(raw_bold.name.split(".nii")[0] + ".json"))
    meta: dict = {}
    for path in dict.fromkeys(candidates):
        if path.is_file():
            meta.update(_read_json(path, problems))
    return meta


def _one(folder: Path, pattern: str, what: str, fix: str, problems: list[str]) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        problems.append(f"{folder / pattern}: no {what} found; {fix}")
    else:
        names = ", ".join(p.name for p in found)
        problems.append(f"{folder}: {len(found)} {what} files match {pattern} ({names}); "
                        "remove the extra ones or name the space with its resolution, "
                        "e.g. --space MNI152NLin2009cAsym_res-2")
    return None


def _norm_subject(label: str) -> str:
    return label if label.startswith("sub-") else f"sub-{label}"


def scan_bids(
    root: str | os.PathLike,
    task: str | None = None,
    space: str = DEFAULT_SPACE,
    derivatives: str | os.PathLike | None = None,
    subjects: list[str] | None = None,
) -> BidsDataset:
    """Find the runs of a BIDS dataset and their fMRIPrep outputs.

    Parameters
    ----------
    root : path
        The BIDS dataset (with ``dataset_description.json`` and ``sub-*`` folders).
    task : str, optional
        The task to read; default: the only task there is.
    space : str
        fMRIPrep output space (``space-<space>`` in the file names).
    derivatives : path, optional
        The fMRIPrep folder; default ``<root>/derivatives/fmriprep``.
    subjects : list of str, optional
        Subject labels (``01`` or ``sub-01``); default: every subject with runs.

    Returns
    -------
    BidsDataset

    Raises
    ------
    InputError
        Every problem found, one per line: no BOLD, no sidecar TR, TRs that differ, a
        missing preprocessed BOLD, brain mask or confounds file, a confounds table whose
        length differs from its BOLD's, a mask on another grid.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "BIDS folder not found", "give the dataset's root folder")
    deriv = Path(derivatives) if derivatives is not None else root / "derivatives" / "fmriprep"
    if not deriv.is_dir():
        raise InputError(deriv, "fMRIPrep derivatives folder not found",
                         "run fMRIPrep, or pass its output folder with --derivatives PATH")
    wanted = None if not subjects else [_norm_subject(s) for s in subjects]
    raws = []
    for path in sorted(root.glob("sub-*/func/*_bold.nii*")) + sorted(
        root.glob("sub-*/ses-*/func/*_bold.nii*")
    ):
        m = _BOLD.match(path.name)
        if m is None:
            continue
        ent = _entities(m["prefix"])
        if wanted is not None and f"sub-{ent['sub']}" not in wanted:
            continue
        raws.append((path, m["prefix"], ent))
    if wanted is not None:
        have = {f"sub-{e['sub']}" for _, _, e in raws}
        missing = [s for s in wanted if s not in have]
        if missing:
            raise InputError(root, f"no BOLD runs for {', '.join(missing)} "
                             "(looked for sub-*/[ses-*/]func/*_bold.nii.gz)",
                             "check the subject labels given to --subjects")
    if not raws:
        raise InputError(root, "no BOLD runs found (looked for sub-*/[ses-*/]func/*_bold.nii.gz)",
                         "give the root of a BIDS dataset")
    tasks = sorted({e.get("task", "") for _, _, e in raws})
    if task is None:
        if len(tasks) > 1:
            raise InputError(root, f"the dataset has several tasks ({', '.join(tasks)})",
                             "choose one with --task NAME")
        task = tasks[0]
    elif task not in tasks:
        raise InputError(root, f"no runs of task '{task}' (tasks: {', '.join(tasks)})",
                         "choose one of them with --task")
    raws = [r for r in raws if r[2].get("task") == task]

    problems: list[str] = []
    runs: list[BidsRun] = []
    for raw, prefix, ent in raws:
        func = deriv / raw.parent.relative_to(root)
        preproc = _one(func, f"{prefix}_space-{space}*_desc-preproc_bold.nii.gz",
                       f"preprocessed BOLD in space {space}",
                       "run fMRIPrep with --output-spaces " + space +
                       ", or choose an existing space with --space", problems)
        mask = None
        if preproc is not None:
            mask = preproc.with_name(preproc.name.replace("desc-preproc_bold", "desc-brain_mask"))
            if not mask.is_file():
                problems.append(f"{mask}: brain mask not found; fMRIPrep writes one beside "
                                "each preprocessed BOLD: restore it")
                mask = None
        confounds = func / f"{prefix}_desc-confounds_timeseries.tsv"
        if not confounds.is_file():
            old = func / f"{prefix}_desc-confounds_regressors.tsv"
            if old.is_file():
                confounds = old
            else:
                problems.append(f"{confounds}: confounds table not found for {raw.name}; "
                                "restore fMRIPrep's confounds file (and its .json)")
                confounds = None
        if confounds is not None and not confounds.with_suffix(".json").is_file():
            problems.append(f"{confounds.with_suffix('.json')}: confounds sidecar not found; "
                            "restore fMRIPrep's .json beside the confounds table")
        events = raw.with_name(prefix + "_events.tsv")
        events = events if events.is_file() else None

        meta = _sidecar(root, raw, ent, problems)
        if "RepetitionTime" not in meta and preproc is not None:
            side = preproc.with_name(preproc.name.split(".nii")[0] + ".json")
            if side.is_file():
                meta = {**_read_json(side, problems), **meta}
        tr = meta.get("RepetitionTime")
        if not isinstance(tr, (int, float)) or isinstance(tr, bool) or not tr > 0:
            problems.append(f"{raw.with_name(prefix + '_bold.json')}: no RepetitionTime "
                            f"(got {tr!r}); add \"RepetitionTime\": <seconds> to the sidecar")
            tr = None
        timing = meta.get("SliceTiming")
        ref = None
        if preproc is not None:
            side = preproc.with_name(preproc.name.split(".nii")[0] + ".json")
            pmeta = _read_json(side, problems) if side.is_file() else {}
            if pmeta.get("SliceTimingCorrected") is True and isinstance(tr, (int, float)):
                start = pmeta.get("StartTime")
                ref = float(start) / float(tr) if isinstance(start, (int, float)) else 0.5
                if not 0 <= ref <= 1:
                    problems.append(f"{side}: StartTime {start} s is outside the TR "
                                    f"({tr} s); correct the sidecar")
                    ref = None
        if preproc is None or mask is None or confounds is None or tr is None:
            continue
        try:
            img = load_bold_header(preproc)
            check_tr(img, float(tr), preproc)
            load_mask(mask, like=img)
        except InputError as e:
            problems.append(str(e))
            continue
        n_vols = int(img.shape[3])
        try:
            n_rows = len(pd.read_csv(confounds, sep="\t", usecols=[0]))
        except (OSError, ValueError, pd.errors.ParserError) as e:
            problems.append(f"{confounds}: not a readable TSV ({' '.join(str(e).split())}); "
                            "restore fMRIPrep's confounds file")
            continue
        if n_rows != n_vols:
            problems.append(f"{confounds}: {n_rows} rows but {preproc.name} has {n_vols} "
                            "volumes; use the confounds table of this BOLD run")
            continue
        runs.append(BidsRun(
            subject=f"sub-{ent['sub']}", entities=ent, raw_bold=raw, preproc=preproc,
            mask=mask, confounds=confounds, events=events, tr=float(tr), n_volumes=n_vols,
            slice_timing=list(timing) if isinstance(timing, list) else None,
            slice_time_ref=ref,
        ))
    trs = sorted({r.tr for r in runs})
    if len(trs) > 1:
        first = runs[0]
        for r in runs:
            if abs(r.tr - first.tr) > 1e-6:
                problems.append(
                    f"{r.raw_bold.with_name(r.raw_bold.name.split('.nii')[0] + '.json')}: "
                    f"RepetitionTime {r.tr:g} s differs from {first.tr:g} s "
                    f"({first.raw_bold.name}); a study has one TR: convert only runs with the "
                    "same TR (--subjects), or correct the sidecar")
    if problems:
        raise problems_error(problems)
    # run names: the entities other than sub and task (e.g. ses-1_run-2), in file order
    for r in runs:
        keep = [f"{k}-{v}" for k, v in r.entities.items() if k not in ("sub", "task")]
        r.name = "_".join(keep) or f"task-{task}"
    return BidsDataset(root=root, derivatives=deriv, space=space, task=task, tr=trs[0],
                       runs=runs)


def problems_error(problems: list[str], shown: int = 5) -> InputError:
    """One InputError (one line) for several problems: each problem names its file and its
    fix; they are joined with `` | ``, the first ``shown`` in full, then a count."""
    problems = list(dict.fromkeys(problems))
    text = " | ".join(problems[:shown])
    if len(problems) > shown:
        text += f" | and {len(problems) - shown} more problems of these kinds"
    if len(problems) > 1:
        text = f"{len(problems)} problems: {text}"
    return InputError(None, text)


def read_events(path: str | os.PathLike, run_length: float | None = None) -> pd.DataFrame:
    """Read and check a BIDS ``events.tsv``: numeric ``onset`` and ``duration`` (``n/a``:
    missing), rows inside the run (``0 <= onset``; ``onset < run_length`` when given).

    Raises
    ------
    InputError
        Missing columns, non-numeric or negative times, events after the end of the run.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(path, f"not a readable events table ({' '.join(str(e).split())})",
                         "write it as BIDS says: tab-separated, with onset and duration") from None
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("onset", "duration"):
        if col not in df.columns:
            raise InputError(path, f"no '{col}' column (columns: {', '.join(df.columns)})",
                             "BIDS events need onset and duration columns (seconds)")
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(path, f"row {row + 2}: {col} {df[col].iloc[row]!r} is not a number",
                             f"write {col} in seconds (n/a when unknown)")
        df[col] = values
    if df["onset"].isna().any():
        row = int(np.flatnonzero(df["onset"].isna().to_numpy())[0])
        raise InputError(path, f"row {row + 2}: onset is n/a", "every event needs an onset")
    neg = (df["onset"] < 0) | (df["duration"] < 0)
    if neg.any():
        row = int(np.flatnonzero(neg.to_numpy())[0])
        raise InputError(path, f"row {row + 2}: negative onset or duration",
                         "onsets are seconds from the first volume; durations >= 0")
    if run_length is not None:
        late = df["onset"] >= run_length
        if late.any():
            row = int(np.flatnonzero(late.to_numpy())[0])
            raise InputError(path, f"row {row + 2}: onset {df['onset'].iloc[row]:g} s is after "
                             f"the end of the run ({run_length:g} s)",
                             "onsets are seconds from the run's first volume: correct the row")
    return df


def find_stimulus(dataset: BidsDataset) -> Path | None:
    """The stimulus file in ``<root>/stimuli``: the events' ``stim_file`` (one file for the
    whole study), else the single movie or sound file there, else ``None``.

    Raises
    ------
    InputError
        ``stim_file`` names a file that is not there, or runs name different files, or
        ``stimuli/`` holds several movies and no events say which.
    """
    stim_dir = dataset.root / "stimuli"
    named: dict[str, Path] = {}
    for r in dataset.runs:
        if r.events is None:
            continue
        df = pd.read_csv(r.events, sep="\t", na_values=["n/a"], keep_default_na=False)
        if "stim_file" in df.columns:
            for value in df["stim_file"].dropna().astype(str).str.strip():
                if value:
                    named.setdefault(value, r.events)
    if len(named) > 1:
        raise InputError(next(iter(named.values())),
                         f"the runs show different stimulus files ({', '.join(sorted(named))})",
                         "cinebrain needs one stimulus with a segment per run: join them into "
                         "one file in stimuli/ and name it in every run's stim_file")
    if named:
        (value, events), = named.items()
        path = stim_dir / value
        if not path.is_file():
            raise InputError(events, f"stim_file {value} not found in {stim_dir}",
                             "put the file in the dataset's stimuli/ folder")
        return path
    if not stim_dir.is_dir():
        return None
    media = sorted(p for p in stim_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in VIDEO_EXTS + AUDIO_EXTS)
    movies = [p for p in media if p.suffix.lower() in VIDEO_EXTS] or media
    if len(movies) > 1:
        raise InputError(stim_dir, f"several stimulus files ({', '.join(p.name for p in movies)}) "
                         "and no stim_file column says which one was shown",
                         "add a stim_file column to the events, or keep one movie in stimuli/")
    return movies[0] if movies else None
