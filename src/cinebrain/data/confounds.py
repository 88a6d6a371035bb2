"""fMRIPrep confounds regressed out of BOLD runs, and a study file from a BIDS dataset.

A *strategy* is what nilearn calls one: either a preset of
:func:`nilearn.interfaces.fmriprep.load_confounds_strategy` (``simple``, ``scrubbing``,
``compcor``, ``ica_aroma``) or a comma-separated list of the noise components of
:func:`nilearn.interfaces.fmriprep.load_confounds` (``motion,wm_csf,high_pass``; each with
nilearn's default parameters). nilearn picks the columns from fMRIPrep's confounds table;
the volumes it would censor (non-steady-state volumes, and scrubbed ones) become one spike
regressor each, so every run keeps all its volumes and its timing (a spike regressor
removes that volume from the fit exactly as censoring does; its cleaned value is the
voxel's mean). The regression is :func:`nilearn.signal.clean` (confounds standardised, no
detrending, no filtering beyond the confounds' own cosine drifts); each voxel keeps its
mean.
"""

from __future__ import annotations

import os
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from cinebrain._files import atomic_path, write_json, write_text
from cinebrain.errors import InputError
from cinebrain.io.bids import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    BidsDataset,
    BidsRun,
    find_stimulus,
    problems_error,
    read_events,
)
from cinebrain.io.nifti import apply_mask, load_bold, load_mask, unmask
from cinebrain.io.study import Annotations, Run, Stimulus, Study, Subject, write_study

PRESETS = ("simple", "scrubbing", "compcor", "ica_aroma")


@dataclass(frozen=True)
class Strategy:
    """A confound strategy: a nilearn preset, or a list of load_confounds components."""

    text: str
    preset: str | None
    components: tuple[str, ...]

    def describe(self) -> str:
        if self.preset is not None:
            return (f"nilearn.interfaces.fmriprep.load_confounds_strategy(img, "
                    f"denoise_strategy={self.preset!r})")
        return (f"nilearn.interfaces.fmriprep.load_confounds(img, "
                f"strategy={self.components!r})")


def _components() -> list[str]:
    try:
        from nilearn.interfaces.fmriprep.load_confounds import ALL_CONFOUNDS

        return list(ALL_CONFOUNDS)
    except ImportError:  # pragma: no cover - an older or newer nilearn
        return ["motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma",
                "scrub", "non_steady_state"]


def parse_strategy(text: str) -> Strategy:
    """Read ``--strategy``: a nilearn preset name or comma-separated component names.

    Raises
    ------
    InputError
        A name nilearn does not know (the message lists the names it does).
    """
    text = str(text).strip()
    if text in PRESETS:
        return Strategy(text, text, ())
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    allowed = _components()
    bad = [p for p in parts if p not in allowed]
    if not parts or bad:
        raise InputError(
            "--strategy", f"unknown confound strategy {', '.join(bad) or repr(text)}",
            f"give a nilearn preset ({', '.join(PRESETS)}) or components of "
            f"load_confounds separated by commas ({', '.join(allowed)}), e.g. "
            "motion,wm_csf,high_pass",
        )
    if "compcor" in parts and "high_pass" not in parts:
        raise InputError("--strategy", "compcor needs high_pass (nilearn refuses it alone)",
                         "add high_pass, e.g. --strategy motion,compcor,high_pass")
    return Strategy(text, None, parts)


def load_run_confounds(
    preproc: str | os.PathLike, strategy: Strategy, n_volumes: int
) -> tuple[np.ndarray, list[str], list[int]]:
    """The confound regressors nilearn selects for one fMRIPrep run.

    Parameters
    ----------
    preproc : path
        The run's ``*_desc-preproc_bold.nii.gz`` (its confounds table is found beside it).
    strategy : Strategy
    n_volumes : int
        The run's number of volumes.

    Returns
    -------
    confounds : ndarray, shape (n_volumes, n_regressors), float64
        nilearn's columns, then one spike regressor per censored volume.
    names : list of str
    censored : list of int
        Volumes nilearn would drop (non-steady-state, scrubbed).

    Raises
    ------
    InputError
        nilearn refuses the table (a column the strategy needs is missing, ...).
    """
    from nilearn.interfaces.fmriprep import load_confounds, load_confounds_strategy

    preproc = Path(preproc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if strategy.preset is not None:
                df, sample_mask = load_confounds_strategy(
                    str(preproc), denoise_strategy=strategy.preset)
            else:
                df, sample_mask = load_confounds(str(preproc), strategy=strategy.components)
    except (ValueError, KeyError, OSError) as e:
        table = preproc.name.split("_space-")[0] + "_desc-confounds_timeseries.tsv"
        raise InputError(
            preproc.with_name(table),
            f"nilearn cannot load confounds with strategy {strategy.text!r} "
            f"({' '.join(str(e).split())})",
            "choose a strategy whose columns the table has (--strategy), or rerun fMRIPrep",
        ) from None
    if df is None:
        values, names = np.zeros((n_volumes, 0)), []
    else:
        values, names = df.to_numpy(dtype=np.float64), [str(c) for c in df.columns]
    if values.shape[0] != n_volumes:
        raise InputError(preproc, f"nilearn returned {values.shape[0]} confound rows for "
                         f"{n_volumes} volumes", "use the confounds table of this run")
    censored: list[int] = []
    if sample_mask is not None:
        keep = np.zeros(n_volumes, bool)
        keep[np.asarray(sample_mask, int)] = True
        censored = [int(i) for i in np.flatnonzero(~keep)]
    spikes = np.zeros((n_volumes, len(censored)))
    spikes[censored, np.arange(len(censored))] = 1.0
    values = np.hstack([values, spikes])
    names = names + [f"spike_{i:04d}" for i in censored]
    bad = ~np.isfinite(values).all(axis=0)
    if bad.any():
        values[:, bad] = np.nan_to_num(values[:, bad])
    return values, names, censored


def regress_confounds(responses: np.ndarray, confounds: np.ndarray, tr: float) -> np.ndarray:
    """``responses`` (n_volumes, n_voxels) with ``confounds`` regressed out, means kept.

    :func:`nilearn.signal.clean` with standardised confounds, no detrending, no
    standardisation, no filter. Returns float32.
    """
    from nilearn.signal import clean

    y = np.asarray(responses, dtype=np.float64)
    mean = y.mean(axis=0)
    if confounds.shape[1] == 0:
        return y.astype(np.float32)
    cleaned = clean(y, confounds=confounds, detrend=False, standardize=None,
                    standardize_confounds=True, filter=False, t_r=tr)
    cleaned = cleaned - cleaned.mean(axis=0) + mean
    return cleaned.astype(np.float32)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).absolute(), start.absolute())).as_posix()


def _segments(runs: list[BidsRun], events: dict[str, pd.DataFrame | None], tr: float,
              stim_name: str | None) -> list[tuple[tuple[float, float], float]]:
    """(segment, offset) of each of a subject's runs; see :func:`study_from_bids`."""
    out, start = [], 0.0
    for r in runs:
        length = r.n_volumes * tr
        offset, shown = 0.0, length
        df = events.get(r.name)
        if stim_name is not None and df is not None and "stim_file" in df.columns:
            rows = df[df["stim_file"].astype(str).str.strip() == stim_name]
            if len(rows):
                offset = float(rows["onset"].min())
                ends = rows["onset"] + rows["duration"].fillna(length - rows["onset"])
                shown = min(float(ends.max()), length) - offset
        out.append(((start, start + shown), offset))
        start += shown
    return out


def study_from_bids(
    dataset: BidsDataset,
    out: str | os.PathLike,
    strategy: Strategy,
    command: str | None = None,
    progress: bool = False,
) -> Path:
    """Regress confounds out of every run of ``dataset`` and write a study file.

    Writes, beside ``out`` (the study YAML): ``cleaned/sub-*/<run>_desc-cleaned_bold.nii.gz``
    (the cleaned BOLD, within the mask, with a ``.json`` naming its source, the strategy,
    the regressors and the censored volumes), ``mask_space-<space>_desc-brain_mask.nii.gz``
    (the intersection of every run's fMRIPrep brain mask), and the study.

    Timing rule: each run keeps all its volumes. A study with a stimulus file: each
    subject's runs show consecutive parts of it, in scan order; a run whose events have a
    row naming the file in ``stim_file`` shows it from that row's onset (the run's
    ``offset``) for its duration (n/a: to the end of the scan), any other run for its whole
    scan from its first volume. Without a stimulus file, runs with events have no segment
    (the whole run, on its own clock); runs without events get one study timeline
    (``segment: [start, start + n_volumes * tr]``, ``offset: 0``).

    Events: each run points at its own ``events.tsv`` (``Run.events``, its scan clock);
    ``stimulus.annotations`` has no path, ``onset``/``duration`` and ``trial_type`` as a
    categorical column (when every table has it). If any run has events every run must.

    ``slice_time_ref`` is set from the preprocessed sidecars when fMRIPrep says it
    corrected slice timing (see :func:`cinebrain.io.bids.scan_bids`).

    Returns
    -------
    Path
        The study file.
    """
    out = Path(out)
    out_dir = out.parent
    tr = dataset.tr
    problems: list[str] = []
    events: dict[tuple[str, str], pd.DataFrame | None] = {}
    for r in dataset.runs:
        if r.events is None:
            events[(r.subject, r.name)] = None
            continue
        try:
            events[(r.subject, r.name)] = read_events(r.events, r.n_volumes * tr)
        except InputError as e:
            problems.append(str(e))
    with_events = [r for r in dataset.runs if r.events is not None]
    if with_events:
        for r in dataset.runs:
            if r.events is None:
                problems.append(
                    f"{r.raw_bold.with_name(r.raw_bold.name.split('_bold.nii')[0] + '_events.tsv')}"
                    f": not found, but {with_events[0].events.name} exists; give every run its "
                    "events.tsv (onset, duration, trial_type)")
    if problems:
        raise problems_error(problems)
    stim = find_stimulus(dataset)  # after the events are known to be readable
    # the first run's nilearn call checks the strategy against a real table before any work
    first = dataset.runs[0]
    load_run_confounds(first.preproc, strategy, first.n_volumes)

    # one mask: the intersection of every run's brain mask
    ref = load_bold(first.preproc)
    inter = None
    for r in dataset.runs:
        m = np.asarray(load_mask(r.mask, like=ref).dataobj) > 0
        inter = m if inter is None else inter & m
    if not inter.any():
        raise InputError(dataset.derivatives, "the runs' brain masks have no voxel in common",
                         "check that every run is in the same space (--space)")
    mask_img = nib.Nifti1Image(inter.astype(np.uint8), ref.affine)
    mask_img.header.set_zooms(ref.header.get_zooms()[:3])
    mask_path = out_dir / f"mask_space-{dataset.space}_desc-brain_mask.nii.gz"
    with atomic_path(mask_path) as tmp:
        nib.save(mask_img, tmp)

    stim_name = stim.name if stim is not None else None
    subjects: dict[str, Subject] = {}
    for sub in dataset.subjects:
        runs = dataset.subject_runs(sub)
        sub_events = {r.name: events[(sub, r.name)] for r in runs}
        placed = _segments(runs, sub_events, tr, stim_name)
        study_runs = []
        for r, (segment, offset) in zip(runs, placed, strict=True):
            if progress:
                print(f"[from-bids] {sub} {r.name}: regressing confounds ({strategy.text})")
            img = load_bold(r.preproc, tr)
            y = apply_mask(img, mask_img, r.preproc)
            conf, names, censored = load_run_confounds(r.preproc, strategy, r.n_volumes)
            cleaned = regress_confounds(y, conf, tr)
            clean_img = unmask(cleaned, mask_img)
            clean_img.header.set_zooms(ref.header.get_zooms()[:3] + (tr,))
            clean_img.header.set_xyzt_units("mm", "sec")
            stem = r.preproc.name.replace("_desc-preproc_bold.nii.gz", "")
            dest = out_dir / "cleaned" / sub / f"{stem}_desc-cleaned_bold.nii.gz"
            with atomic_path(dest) as tmp:
                nib.save(clean_img, tmp)
            write_json(dest.with_name(dest.name.replace(".nii.gz", ".json")), {
                "Sources": [str(r.preproc), str(r.confounds)],
                "RepetitionTime": tr,
                "ConfoundStrategy": strategy.text,
                "ConfoundCall": strategy.describe(),
                "Confounds": names,
                "CensoredVolumes": censored,
                "SliceTiming": r.slice_timing,
            })
            fields: dict = dict(name=r.name, bold=_rel(dest, out_dir))
            if stim is not None or r.events is None:
                fields.update(segment=segment, offset=offset)
            if r.events is not None:
                fields["events"] = _rel(r.events, out_dir)
            study_runs.append(Run(**fields))
        subjects[sub] = Subject(runs=study_runs)

    all_events = [df for df in events.values() if df is not None]
    annotations = None
    if all_events:
        categorical = ["trial_type"] if all("trial_type" in d.columns for d in all_events) else []
        annotations = Annotations(onset="onset", duration="duration", categorical=categorical)
    stimulus = Stimulus(
        video=_rel(stim, out_dir) if stim is not None and stim.suffix.lower() in VIDEO_EXTS
        else None,
        audio=_rel(stim, out_dir) if stim is not None and stim.suffix.lower() in AUDIO_EXTS
        else None,
        annotations=annotations,
    )
    refs = {r.slice_time_ref for r in dataset.runs}
    extra = {}
    if refs != {None}:
        if len(refs) > 1:
            raise InputError(dataset.derivatives, "runs differ in slice-timing correction "
                             f"(volume times {sorted(refs, key=str)} of the TR)",
                             "convert runs preprocessed alike (--subjects)")
        extra["slice_time_ref"] = refs.pop()
    study = Study(name=f"{dataset.root.absolute().name}_task-{dataset.task}", tr=tr,
                  stimulus=stimulus, mask=_rel(mask_path, out_dir), subjects=subjects, **extra)
    study.root = out_dir
    write_study(study, out)
    import nilearn

    header = [
        f"# written by: {command or 'cinebrain study from-bids'}",
        f"# BIDS dataset: {dataset.root.absolute()}; fMRIPrep: {dataset.derivatives.absolute()}",
        f"# space {dataset.space}; task {dataset.task}; TR {tr:g} s (RepetitionTime)",
        f"# confounds: strategy {strategy.text!r} = {strategy.describe()}",
        "#   regressed with nilearn.signal.clean (standardised confounds, no detrend, no "
        "filter; censored volumes as spike regressors; voxel means kept)",
        f"#   nilearn {nilearn.__version__}; per-run regressors in cleaned/sub-*/*.json",
        "# mask: intersection of every run's fMRIPrep brain mask",
        "# segments: " + ("each subject's runs show consecutive parts of the stimulus in scan "
                          "order" if stim is not None else "none where a run has events (the "
                          "whole run, each run's events on its own clock)"),
        "# slice_time_ref: " + ("from the preprocessed sidecars (StartTime / TR)" if extra
                                else "default (no sidecar says SliceTimingCorrected: true)"),
    ]
    write_text(out, "\n".join(header) + "\n" + out.read_text())
    return out


def strategy_of(study_path: str | os.PathLike) -> str | None:
    """The confound strategy a ``from-bids`` study file records (its header comment)."""
    for line in Path(study_path).read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# confounds: strategy "):
            return shlex.split(line[len("# confounds: strategy "):].split(" = ")[0])[0]
    return None


__all__ = ["PRESETS", "Strategy", "load_run_confounds", "parse_strategy", "regress_confounds",
           "strategy_of", "study_from_bids"]
