"""The ridge pipeline: features -> fit -> evaluate -> report, one stage at a time.

Each stage reads the outputs of the stages before it from the run folder
(:class:`~cinebrain.pipelines.runfolder.RunFolder`) and commits its own in one step, or
leaves the folder as it was. The science is in the library: feature extraction
(:func:`cinebrain.features.extract_stimulus_features`), a subject's design
(:func:`cinebrain.data.subject_design`), the outer cross-validation
(:func:`cinebrain.linear.fit_encoding_model`), scores, ceilings and significance
(:mod:`cinebrain.evaluate`), and the report (:mod:`cinebrain.report`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cinebrain import __version__
from cinebrain._files import atomic_path, save_npy, write_json, write_text
from cinebrain.config import RunConfig, save_config, section_hash
from cinebrain.errors import InputError
from cinebrain.pipelines.runfolder import RunFolder, StagedFolder

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- shared
def load(config: RunConfig):
    """The study of a run config."""
    from cinebrain.data.study import load_study

    return load_study(config.study)


def run_subjects(config: RunConfig, study) -> list[str]:
    from cinebrain.data.study import select_subjects

    return select_subjects(study, config.subjects, where=f"{config.study}: subjects")


def feature_kwargs(config: RunConfig) -> dict:
    """The features section as arguments of :func:`extract_stimulus_features`."""
    f = config.features
    return {"video": tuple(f.video), "audio": tuple(f.audio),
            "annotation_text": f.annotation_text, "annotation_columns": f.annotation_columns,
            "transcript": tuple(f.transcript), "video_size": tuple(f.video_size),
            "pixel_size": tuple(f.pixel_size), "n_mels": f.n_mels, "audio_sr": f.audio_sr}


def read_features(run: RunFolder):
    """The feature spaces and mask of the current ``features`` stage."""
    import nibabel as nib

    from cinebrain.features.stimulus import load_feature_spaces

    m = run.require("features")
    spaces = load_feature_spaces(run.features_dir)
    mask = nib.load(run.mask) if run.mask.relative_to(run.root).as_posix() in m.files else None
    return m, spaces, mask


def check_subjects(config: RunConfig, study, manifest) -> list[str]:
    """The run's subjects, which the ``features`` stage must have prepared (its mask)."""
    subjects = run_subjects(config, study)
    missing = [s for s in subjects if s not in manifest.info.get("subjects", [])]
    if missing:
        raise InputError(config.out, f"the features stage did not prepare {', '.join(missing)}",
                         "run `cinebrain features` again with these subjects")
    return subjects


def test_run_indices(config: RunConfig, run_names: list[str], where: str) -> list[int]:
    """Indices of the held-out runs of ``split.test_runs`` (default: the last run)."""
    if config.split.test_runs is None:
        if len(run_names) < 2:
            raise InputError(where, "only one run; nothing to hold out",
                             "add runs, or split one run into two in the study file")
        return [len(run_names) - 1]
    missing = [r for r in config.split.test_runs if r not in run_names]
    if missing:
        raise InputError("split.test_runs", f"run(s) {', '.join(missing)} not found",
                         f"runs are: {', '.join(run_names)}")
    return [run_names.index(r) for r in config.split.test_runs]


def _save_nifti(img, path) -> None:
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, tmp)


# --------------------------------------------------------------------------- features
def features(config: RunConfig, log: Log = _print) -> dict:
    """Extract the study's feature spaces, check every run against them, fix the mask."""
    from cinebrain.data.study import response_names, run_timings, run_volumes, study_mask
    from cinebrain.features.stimulus import extract_stimulus_features, save_feature_spaces

    run = RunFolder(config.out)
    run.check_writable()
    study = load(config)
    subjects = run_subjects(config, study)
    for s in subjects:  # every run's responses (headers, TR) before the stimulus is read
        for r in study.subjects[s].runs:
            run_volumes(study, r)
    response_names(study, subjects)  # ROI names agree across runs and subjects
    t0 = time.perf_counter()
    new_cache = not run.cache_dir.exists()
    try:
        with run.stage("features", owns=("features",),
                       config_hash=section_hash(config, "study", "features", "subjects")) as st:
            spaces = extract_stimulus_features(study, **feature_kwargs(config),
                                               cache_dir=run.cache_dir, progress=config.progress,
                                               log=log, allow_empty=bool(config.features.networks))
            if config.features.networks:
                from cinebrain.pipelines.videogpt import network_spaces

                spaces |= network_spaces(config, study, run.cache_dir, log)
            # Every run against every stream, before anything is committed.
            for s in subjects:
                run_timings(study, s, spaces)
            mask = study_mask(study, subjects, log)
            save_feature_spaces(spaces, st.features_dir)
            if mask is not None:
                _save_nifti(mask, st.mask)
            save_config(config, st.config)
            st.info = {"subjects": subjects, "spaces": sorted(spaces)}
    except BaseException:
        if new_cache:  # a failed first stage leaves no cache behind either
            shutil.rmtree(run.cache_dir, ignore_errors=True)
        raise
    log(f"  {len(spaces)} feature spaces ({time.perf_counter() - t0:.1f} s)")
    return {"spaces": sorted(spaces), "subjects": subjects}


# --------------------------------------------------------------------------- fit
#: At most this many targets (voxels, ROIs) of subjects sharing a design are stacked in one
#: fit (memory: the stacked responses and the solvers' work on them); a larger shared
#: design is fitted in chunks of targets, each chunk's decompositions computed once.
MAX_SHARED_TARGETS = 100_000


def _quiet(msg: str) -> None:
    pass


@dataclass
class _Subject:
    """What the fit plan knows of a subject before its responses are loaded."""

    name: str
    timings: list
    run_names: list[str]
    test_runs: list[int] | None
    n_targets: int
    key: str  # hash of its design: X, run index, bands, held-out runs


@dataclass
class _Unit:
    """Targets ``[start, stop)`` of a design group's stacked targets, fitted together."""

    id: int
    group: int
    start: int
    stop: int


class _FitPlan:
    """The fit stage's work: subjects grouped by identical designs, the groups' stacked
    targets cut into units, and the units assigned to ranks."""

    def __init__(self, config: RunConfig, study, spaces, mask, subjects: list[str]):
        from cinebrain.data.design import bands_from_spaces

        self.config, self.study, self.spaces, self.mask = config, study, spaces, mask
        self.bands = bands_from_spaces(spaces, config.model.bands)
        self.loro = config.split.scheme == "leave_one_run_out"
        self.subjects = {s: self._describe(s) for s in subjects}
        by_key: dict[str, list[str]] = {}
        for s, info in self.subjects.items():
            by_key.setdefault(info.key, []).append(s)
        self.groups = list(by_key.values())

    def design(self, subject: str, timings=None, responses: np.ndarray | None = None):
        """A subject's :func:`~cinebrain.data.subject_design` (its responses read unless
        given)."""
        from cinebrain.data.design import subject_design

        a = self.config.alignment
        if timings is None:
            timings = self.subjects[subject].timings
        return subject_design(self.study, subject, self.spaces, self.bands, mask=self.mask,
                              hrf=a.hrf, delays=a.delays, high_pass=a.high_pass,
                              timings=timings, responses=responses)

    def _describe(self, subject: str) -> _Subject:
        import hashlib

        from cinebrain.data.study import load_responses, run_timings

        timings = run_timings(self.study, subject, self.spaces)
        names = [t.name for t in timings]
        if self.loro and len(names) < 2:
            raise InputError(self.config.study,
                             f"{subject} has one run; leave-one-run-out needs two or more",
                             "add runs, or set split.scheme: held_out")
        test_runs = None if self.loro else test_run_indices(self.config, names, self.config.study)
        # The design alone (X does not depend on the responses): no responses read here.
        n_trs = sum(t.n_trs for t in timings)
        d = self.design(subject, timings, np.zeros((n_trs, 1), np.float32))
        if any(r.bold for r in self.study.subjects[subject].runs):
            n_targets = int(np.asarray(self.mask.dataobj).astype(bool).sum())
        else:  # ROI / array responses: small, read for their number of columns
            n_targets = int(load_responses(self.study, subject, timings, self.mask).shape[1])
        h = hashlib.sha256()
        X = np.ascontiguousarray(d.X)
        h.update(repr((X.shape, X.dtype.str, d.band_names, d.band_sizes, test_runs)).encode())
        h.update(X.tobytes())
        h.update(np.ascontiguousarray(d.run_index, np.int64).tobytes())
        return _Subject(subject, list(timings), names, test_runs, n_targets, h.hexdigest())

    def sizes(self, group: int) -> list[int]:
        return [self.subjects[s].n_targets for s in self.groups[group]]

    def units(self, world: int) -> list[_Unit]:
        """The work of ``world`` ranks (:func:`fit_units`)."""
        return fit_units([sum(self.sizes(g)) for g in range(len(self.groups))], world)


def fit_units(totals: list[int], world: int, cap: int = MAX_SHARED_TARGETS) -> list[_Unit]:
    """Every design group's stacked targets (``totals``) in chunks of at most ``cap`` and,
    on several ranks, at most an even share of all targets: voxels are independent given
    their penalties, so a large subject is split across ranks, while small subjects
    (ROIs) stay whole."""
    share = max(1, -(-sum(totals) // max(1, world)))
    units: list[_Unit] = []
    for g, total in enumerate(totals):
        chunk = max(1, min(cap, share if world > 1 else total))
        k = max(1, -(-total // chunk))
        edges = np.linspace(0, total, k + 1).round().astype(int)
        units += [_Unit(len(units) + i, g, int(a), int(b))
                  for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
    return units


def assign_units(units: list[_Unit], world: int) -> list[list[_Unit]]:
    """Units per rank: largest first to the least loaded rank, each rank's in plan order."""
    load = [0] * world
    ranks: list[list[_Unit]] = [[] for _ in range(world)]
    for u in sorted(units, key=lambda u: (-(u.stop - u.start), u.id)):
        r = min(range(world), key=lambda i: (load[i], i))
        load[r] += u.stop - u.start
        ranks[r].append(u)
    return [sorted(rs, key=lambda u: u.id) for rs in ranks]


def fit(config: RunConfig, log: Log = _print) -> dict:
    """Fit one encoding model per subject and predict its held-out runs.

    ``split.scheme`` "held_out": fit on the training runs, predict ``split.test_runs``.
    "leave_one_run_out": every run is predicted by a model fit on the other runs; the
    saved model is then refit on all runs.

    Subjects whose designs are identical (the same design matrix, run index, bands and
    held-out runs: the same stimulus in the same runs) are fitted together on stacked
    targets, as :func:`cinebrain.linear.encoding.fit_shared_encoding_models` does: every
    decomposition once, the same files as fitting them one by one (the manifest's
    ``results`` name each subject's ``shared_design_with``).

    Under ``torchrun`` (a process group of several ranks) the groups' targets are split
    across the ranks (whole subjects, and chunks of the voxels of large ones); rank 0
    gathers the results over the process group, writes and commits the stage, and alone
    logs. A failure on any rank fails the stage on every rank, and the run folder is left
    as it was.
    """
    from cinebrain.train.distributed import get_rank, get_world_size

    rank, world = get_rank(), get_world_size()
    log = log if rank == 0 else _quiet
    run = RunFolder(config.out)
    fm, spaces, mask = read_features(run)
    study = load(config)
    subjects = check_subjects(config, study, fm)
    plan = _FitPlan(config, study, spaces, mask, subjects)
    units = plan.units(world)
    hash_ = section_hash(config, "study", "features", "subjects", "alignment", "model", "split",
                         "evaluate")
    for members in plan.groups:
        if len(members) > 1:
            log(f"  {', '.join(members)} share one design (same design matrix, runs and folds): "
                f"fitted together, {sum(plan.subjects[s].n_targets for s in members)} "
                "targets stacked")
    results: dict = {}
    if world == 1:
        with run.stage("fit", depends=["features"], config_hash=hash_,
                       owns=("models", "predictions")) as st:
            for g in range(len(plan.groups)):
                t0 = time.perf_counter()
                designs: dict = {}
                chunks = [_fit_unit(plan, u, designs, log) for u in units if u.group == g]
                _write_group(plan, st, g, designs, chunks, results, log, t0)
            save_config(config, st.config)
            st.info = {"subjects": subjects, "results": results}
        return results
    return _fit_distributed(plan, run, units, world, rank, hash_, subjects, log)


def _fit_unit(plan: _FitPlan, unit: _Unit, designs: dict, log: Log):
    """Fit one unit's targets (columns of the group's stacked responses); ``designs``
    caches the group's subject designs."""
    from cinebrain.data.splits import HRF_LENGTH_S, gap_trs
    from cinebrain.linear.encoding import alpha_grid, fit_encoding_model

    config, study = plan.config, plan.study
    members = plan.groups[unit.group]
    offsets = np.concatenate([[0], np.cumsum(plan.sizes(unit.group))])
    parts = []
    for i, s in enumerate(members):
        lo, hi = max(unit.start, offsets[i]), min(unit.stop, offsets[i + 1])
        if lo >= hi:
            continue
        if s not in designs:
            designs[s] = plan.design(s)
        parts.append(designs[s].Y[:, lo - offsets[i]:hi - offsets[i]])
    d = designs[next(s for s in members if s in designs)]
    Y = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    info = plan.subjects[members[0]]
    m = config.model
    whole = unit.start == 0 and unit.stop == offsets[-1]
    who = "+".join(members) if whole else f"{'+'.join(members)}[{unit.start}:{unit.stop}]"
    return fit_encoding_model(
        d.X, Y, d.run_index, d.band_sizes, d.band_names, scheme=config.split.scheme,
        test_runs=info.test_runs, kind=m.kind,
        alphas=alpha_grid(m.alpha_min, m.alpha_max, m.n_alphas), n_iter=m.n_iter,
        cv_folds=m.cv_folds, gap=gap_trs(study.tr, HRF_LENGTH_S), backend=m.backend,
        device=m.device, variance_partitioning=config.evaluate.variance_partitioning,
        log=(lambda msg: log(f"    {who} {msg}")) if plan.loro else None,
        run_names=info.run_names,
    )


def _write_group(plan: _FitPlan, st: StagedFolder, group: int, designs: dict, chunks: list,
                 results: dict, log: Log, t0: float) -> None:
    """Every subject's files of a design group, from the group's fitted chunks."""
    from cinebrain.data.study import repeated_runs
    from cinebrain.linear.encoding import concat_targets, split_targets

    config = plan.config
    members = plan.groups[group]
    per_subject = split_targets(concat_targets(chunks), plan.sizes(group))
    for s, res in zip(members, per_subject, strict=True):
        d = designs.get(s) or plan.design(s)
        info = plan.subjects[s]
        names = info.run_names
        _write_fit(st, s, d, res, names, config.split.scheme)
        _write_refit_null(config, st, s, d, res, log, plan.study.tr)
        repeats = repeated_runs(info.timings)
        if repeats:
            save_npy(st.prediction(s, "repeats"),
                     np.stack([d.Y[d.run_index == i] for i in repeats]))
        n_features = int(res.model.feature_mean.size)
        results[s] = {"n_train": int(res.model.n_train), "n_test": int(res.test_rows.size),
                      "n_targets": int(d.Y.shape[1]), "n_features": n_features,
                      "scheme": config.split.scheme,
                      "seconds": round(time.perf_counter() - t0, 2)}
        if len(members) > 1:
            results[s]["shared_design_with"] = [m for m in members if m != s]
        how = (f"each of {len(names)} runs predicted by a model fit on the others"
               if plan.loro else f"fit on {res.model.n_train} TRs")
        log(f"  {s}: {n_features} features x {d.Y.shape[1]} targets, {how}; "
            f"{res.test_rows.size} held-out TRs scored ({time.perf_counter() - t0:.1f} s)")
        designs.pop(s, None)


def _failure(e: BaseException) -> dict:
    """What a rank sends the others of its failure (exceptions need not pickle)."""
    if isinstance(e, InputError):
        return {"kind": "input", "where": e.where, "problem": e.problem, "fix": e.fix}
    return {"kind": "value" if isinstance(e, ValueError) else "other",
            "message": f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)}


def _raise_failure(failures: list, rank: int) -> None:
    """Raise the first rank's failure on every rank (the failing rank re-raises its own)."""
    for r, f in enumerate(failures):
        if f is None:
            continue
        if f["kind"] == "input":
            err: Exception = InputError(f["where"], f["problem"], f["fix"])
        elif f["kind"] == "value":
            err = ValueError(f["message"])
        else:
            err = RuntimeError(f"the fit stage failed on rank {r}: {f['message']}")
        err.from_rank = r  # type: ignore[attr-defined]
        raise err


def _fit_distributed(plan: _FitPlan, run: RunFolder, units: list[_Unit], world: int, rank: int,
                     hash_: str, subjects: list[str], log: Log) -> dict:
    from cinebrain.train.distributed import all_gather_objects, gather_objects

    t0 = time.perf_counter()  # the subjects' times: since the ranks started fitting
    mine = assign_units(units, world)[rank]
    done: dict[int, object] = {}
    failure = None
    designs: dict = {}
    group = None
    try:
        for u in mine:
            if u.group != group:
                designs, group = {}, u.group
            done[u.id] = _fit_unit(plan, u, designs, _quiet)
    except Exception as e:  # every rank learns of it before anyone writes
        failure = e
    designs = {}
    failures = all_gather_objects(None if failure is None else _failure(failure))
    if any(f is not None for f in failures):
        if failure is not None:
            raise failure
        _raise_failure(failures, rank)
    log(f"  {len(units)} fit(s) on {world} ranks: "
        + ", ".join(f"rank {r} {len(us)}" for r, us in enumerate(assign_units(units, world))))
    gathered: dict[int, object] = {}
    for u in units:  # one message per unit: no rank sends everything at once
        got = gather_objects(done.pop(u.id, None))
        if got is not None:
            gathered[u.id] = next(g for g in got if g is not None)
    results: dict = {}
    failure = None
    if rank == 0:
        try:
            with run.stage("fit", depends=["features"], config_hash=hash_,
                           owns=("models", "predictions")) as st:
                for g in range(len(plan.groups)):
                    chunks = [gathered.pop(u.id) for u in units if u.group == g]
                    _write_group(plan, st, g, {}, chunks, results, log, t0)
                save_config(plan.config, st.config)
                st.info = {"subjects": subjects, "results": results, "ranks": world}
        except Exception as e:
            failure = e
    failures = all_gather_objects(None if failure is None else _failure(failure))
    if failure is not None:
        raise failure
    if any(f is not None for f in failures):
        _raise_failure(failures, rank)
    return results


def _write_fit(st: StagedFolder, subject: str, d, res, names: list[str], scheme: str) -> None:
    """A subject's model and held-out predictions."""
    model = res.model
    save_npy(st.model(subject, "coef"), model.coef)
    save_npy(st.model(subject, "intercept"), model.intercept)
    save_npy(st.model(subject, "alpha"), model.alphas)
    if model.deltas is not None:
        save_npy(st.model(subject, "deltas"), model.deltas)
    save_npy(st.model(subject, "feature_mean"), model.feature_mean)
    save_npy(st.model(subject, "feature_std"), model.feature_std)
    write_json(st.bands(subject), {
        "bands": d.bands, "sizes": d.band_sizes, "scheme": scheme,
        "train_runs": [names[i] for i in model.train_runs],
        "test_runs": [names[i] for i in res.test_runs],
    })
    Y_test = d.Y[res.test_rows]
    save_npy(st.prediction(subject, "test_true"), Y_test)
    save_npy(st.prediction(subject, "test_pred"), res.pred)
    save_npy(st.prediction(subject, "test_split"), res.pred_split)
    save_npy(st.prediction(subject, "test_run_index"), res.run_index)
    for key, r2 in res.subset_r2(Y_test).items():
        save_npy(st.subset_r2(subject, key.split("+")), r2)


def _write_refit_null(config: RunConfig, st: StagedFolder, subject: str, d, res,
                      log: Log, config_tr: float) -> None:
    """The refit-null p-values of a subject's held-out r, when ``evaluate.runs`` asks for
    them (:func:`cinebrain.evaluate.refit.refit_null_test`: it needs the design, which
    only this stage has)."""
    from cinebrain.data.splits import HRF_LENGTH_S, gap_trs, lengths_from_run_index
    from cinebrain.evaluate import run_test
    from cinebrain.evaluate.refit import Selection, folds_from_result, refit_null_test
    from cinebrain.linear.encoding import alpha_grid

    ev = config.evaluate
    if not ev.n_permutations or run_test(ev.runs, config.split.scheme,
                                         len(res.test_runs)) != "refit":
        return
    t0 = time.perf_counter()
    m = config.model
    selection = (Selection(alpha_grid(m.alpha_min, m.alpha_max, m.n_alphas), m.cv_folds,
                           gap_trs(config_tr, HRF_LENGTH_S)) if ev.reselect else None)
    out = refit_null_test(d.X, d.Y, folds_from_result(res, d.run_index),
                          run_lengths=lengths_from_run_index(d.run_index),
                          band_sizes=d.band_sizes, n_surrogates=ev.n_permutations, seed=0,
                          selection=selection)
    save_npy(st.prediction(subject, "refit_null_p"), out.p)
    how = "penalties re-chosen per surrogate" if ev.reselect else "the folds' penalties"
    log(f"    {subject} refit null: {ev.n_permutations} surrogates through "
        f"{len(res.folds)} fit(s), {how} ({time.perf_counter() - t0:.1f} s)")


# --------------------------------------------------------------------------- evaluate
def regions_of(config: RunConfig, study, mask_img) -> tuple[np.ndarray | None, tuple | None]:
    """The ground-truth modality per voxel of a simulated study (None for real data) and
    the ROI labels of ``evaluate.rois`` (None when not set), on the run's mask."""
    import nibabel as nib

    from cinebrain.data.simulate import truth_modality_file
    from cinebrain.evaluate import roi_labels
    from cinebrain.evaluate.regions import label_names

    if mask_img is None:
        if config.evaluate.rois:
            raise InputError(config.evaluate.rois, "evaluate.rois is a label image, but the "
                             "study's responses are ROI / array time series (no voxel mask)",
                             "drop evaluate.rois: ROI time series name their regions in the "
                             "file (CSV header, <key>_names, or an HDF5 'names' attribute)")
        return None, None
    inside = np.asarray(mask_img.dataobj).astype(bool)
    truth = truth_modality_file(study.root)
    modality = None
    if truth is not None:
        img = nib.load(truth)
        if img.shape[:3] == inside.shape:
            modality = np.asarray(img.dataobj)[inside].astype(int)
    rois = None
    if config.evaluate.rois:
        from cinebrain.io.nifti import load_mask

        path = config.evaluate.rois
        try:
            label_img = nib.load(path)
        except (OSError, ValueError, nib.filebasedimages.ImageFileError):
            load_mask(path, like=mask_img)  # raises the reader's one-line error
            raise InputError(path, "not a label image", "fix evaluate.rois") from None
        names = config.evaluate.roi_labels  # the CLI has read a flag's JSON already
        if isinstance(names, str):  # a lookup table
            from cinebrain.io.arrays import read_label_names

            names = read_label_names(names)
        rois = roi_labels(label_img, mask_img, label_names(names))
    return modality, rois


def evaluate(config: RunConfig, log: Log = _print) -> dict:
    """Score the held-out predictions of the current fit per target: r, R2, noise ceiling,
    significance with FDR, split R2 and unique variance per band, regions, ground truth."""
    from cinebrain.data.splits import lengths_from_run_index
    from cinebrain.evaluate import (
        describe_significance_test,
        ground_truth_recovery,
        ground_truth_summary,
        noise_ceiling,
        normalised_score,
        pearson_r,
        r2_score,
        region_table,
        run_test,
        significance_test,
        split_r2,
        variance_partitioning,
    )
    from cinebrain.evaluate.regions import region_group_table

    run = RunFolder(config.out)
    fit_m = run.require("fit")
    _, _, mask_img = read_features(run)
    study = load(config)
    subjects = list(fit_m.info["subjects"])
    ev = config.evaluate
    true = {s: np.load(run.prediction(s, "test_true"), mmap_mode="r") for s in subjects}
    repeats = {s: (np.load(run.prediction(s, "repeats"))
                   if run.prediction(s, "repeats").is_file() else None) for s in subjects}
    try:
        ceilings, method = noise_ceiling(true, repeats, ev.ceiling)
    except ValueError:
        raise InputError(
            config.study, f"cannot compute a noise ceiling from {ev.ceiling}",
            "repeats need a segment shown twice; subjects need >= 2 subjects with the same "
            "test runs; or set evaluate.ceiling: none") from None
    modality, rois = regions_of(config, study, mask_img)
    regions = _named_regions(config, study, subjects, true, rois, mask_img)
    group = _group_references(config, run, subjects, true)
    summary: dict = {"cinebrain": __version__, "ceiling_method": method,
                     "reference": list(ev.reference), "subjects": {}}
    roi_rows: list[dict] = []
    truth_rows: list[dict] = []
    separate_any = False
    run_tests: set[str] = set()
    hash_ = section_hash(config, "study", "features", "subjects", "alignment", "model", "split",
                         "evaluate")
    with run.stage("evaluate", depends=["features", "fit"], config_hash=hash_,
                   owns=("metrics",)) as st:
        for s in subjects:
            info = json.loads(run.bands(s).read_text())
            band_names = list(info["bands"])
            Y = np.asarray(true[s])
            P = np.load(run.prediction(s, "test_pred"))
            S = np.load(run.prediction(s, "test_split"))
            run_lengths = lengths_from_run_index(np.load(run.prediction(s, "test_run_index")))
            r = pearson_r(Y, P)
            save_npy(st.metric(s, "r"), r.astype(np.float32))
            save_npy(st.metric(s, "r2"), r2_score(Y, P).astype(np.float32))
            save_npy(st.metric(s, "alpha"), np.load(run.model(s, "alpha")))
            sig = None
            separate = False
            tested = "pooled"
            if ev.n_permutations:
                scheme = info.get("scheme", "held_out")
                refit_p = None
                if run_test(ev.runs, scheme, len(run_lengths)) == "refit":
                    path = run.prediction(s, "refit_null_p")
                    if not path.is_file():
                        raise InputError(path, "the fit stage computed no refit null",
                                         "run `cinebrain fit` again with evaluate.runs: refit")
                    refit_p = np.load(path)
                res = significance_test(Y, P, run_lengths, tr=study.tr, null=ev.null,
                                        n_permutations=ev.n_permutations, block_s=ev.block_s,
                                        runs=ev.runs, scheme=scheme, fdr=ev.fdr,
                                        refit_p=refit_p)
                sig, separate = res.significant, res.separate
                separate_any = separate_any or separate
                run_tests.add(res.runs)
                tested = res.runs
                save_npy(st.metric(s, "p"), res.p.astype(np.float32))
                save_npy(st.metric(s, "q_fdr"), res.q.astype(np.float32))
            ceiling = ceilings.get(s)
            if ceiling is not None:
                save_npy(st.metric(s, "ceiling"), ceiling.astype(np.float32))
                save_npy(st.metric(s, "r_normalised"),
                         normalised_score(r, ceiling).astype(np.float32))
            best = None
            if S.shape[0] == len(band_names) and len(band_names) > 1:
                split = split_r2(Y, S)
                for b, name in enumerate(band_names):
                    save_npy(st.metric(s, f"split_r2_{name}"), split[b].astype(np.float32))
                best = np.argmax(split, axis=0)
                save_npy(st.metric(s, "best_band"), best.astype(np.int16))
            subset_files = run.subset_r2_files(s)
            if subset_files:
                r2_by = {frozenset(band_names): r2_score(Y, P)}
                r2_by.update({k: np.load(f) for k, f in subset_files.items()})
                parts = variance_partitioning(r2_by)
                for name in band_names:
                    save_npy(st.metric(s, f"unique_{name}"),
                             np.asarray(parts["unique"][name], np.float32))
            summary["subjects"][s] = {
                "n_targets": int(r.size),
                "median_r": float(np.median(r)),
                "max_r": float(np.max(r)),
                "n_significant": int(sig.sum()) if sig is not None else None,
                "median_ceiling": float(np.median(ceiling)) if ceiling is not None else None,
            }
            scores = {}
            for ref, g in group.items():
                k = subjects.index(s)
                for name in ("r", "r2"):
                    save_npy(st.metric(s, f"{name}_{ref}"), g[name][k].astype(np.float32))
                save_npy(st.metric(s, f"ceiling_{ref}"), g["ceiling"].astype(np.float32))
                scores.update({f"r_{ref}": g["r"][k], f"r2_{ref}": g["r2"][k],
                               f"ceiling_{ref}": g["ceiling"]})
                summary["subjects"][s].update({
                    f"median_r_{ref}": float(np.median(g["r"][k])),
                    f"median_ceiling_{ref}": float(np.median(g["ceiling"]))})
            if group:  # how well the other subjects' mean predicts this one (model-free)
                scores["leave_one_out_isc"] = next(iter(group.values()))["isc"][subjects.index(s)]
            if regions is not None:
                p_saved = (np.load(st.metric(s, "p")) if st.metric(s, "p").is_file()
                           else None)
                roi_rows += region_table(r, regions, ceiling=ceiling, significant=sig,
                                         subject=s, r2=r2_score(Y, P), p=p_saved,
                                         scores=scores)
            if modality is not None and modality.shape == r.shape:
                truth_rows += ground_truth_recovery(modality, r, significant=sig,
                                                    ceiling=ceiling, best_band=best,
                                                    band_names=band_names, subject=s)
            n_sig = int(sig.sum()) if sig is not None else 0
            log(f"  {s}: median r {np.median(r):.3f}, max r {np.max(r):.3f}, "
                f"{n_sig} of {r.size} targets significant ({ev.null} null"
                f"{', runs tested separately' if separate else ''}"
                f"{', leave-one-run-out null' if tested == 'loro_pooled' else ''}"
                f"{', refit null' if tested == 'refit' else ''}"
                f", FDR {ev.fdr:g})")
        if roi_rows:
            write_text(st.roi_summary, _csv(roi_rows))
            summary["rois"] = roi_rows
            summary["rois_group"] = region_group_table(roi_rows)
            _log_regions(summary["rois_group"], list(group), log)
        if group:
            summary["group"] = {ref: {
                "n_subjects": len(subjects),
                "median_r": float(np.median([np.median(r) for r in g["r"]])),
                "median_ceiling": float(np.median(g["ceiling"])),
            } for ref, g in group.items()}
            summary["group"]["leave_one_out_isc_median"] = float(np.median(
                next(iter(group.values()))["isc"]))
        summary["significance_test"] = describe_significance_test(
            ev.null, ev.n_permutations, ev.block_s, ev.fdr, separate_any,
            runs=next((t for t in ("refit", "loro_pooled", "separate") if t in run_tests),
                      None), reselect=ev.reselect)
        if truth_rows:
            write_json(st.ground_truth, truth_rows)
            table = ground_truth_summary(truth_rows)
            summary["ground_truth"] = {"rows": truth_rows, "summary": table}
            _log_truth(table, log)
        write_json(st.summary, summary)
        save_config(config, st.config)
        st.info = {"subjects": subjects}
    return summary


def _named_regions(config: RunConfig, study, subjects: list[str], true: dict, rois,
                   mask_img) -> dict | None:
    """The regions results are tabulated by: the atlas labels of ``evaluate.rois`` on a
    voxel mask, or, for ROI / array responses that name their columns, one region per
    column. None when neither."""
    from cinebrain.data.study import response_names
    from cinebrain.evaluate import label_regions
    from cinebrain.evaluate.regions import target_regions

    if rois is not None:
        return label_regions(*rois)
    if mask_img is not None:
        return None
    names = response_names(study, subjects)
    if names is None:
        return None
    for s in subjects:
        if true[s].shape[1] != len(names):
            raise InputError(config.study, f"{s}'s responses have {true[s].shape[1]} columns "
                             f"but {len(names)} names", "give one name per column")
    return target_regions(names)


def _group_references(config: RunConfig, run: RunFolder, subjects: list[str], true: dict
                      ) -> dict[str, dict]:
    """Scores against every group reference of ``evaluate.reference`` (not ``subject``):
    ``{reference: {"r", "r2": (n_subjects, n_targets), "ceiling": (n_targets,),
    "isc": (n_subjects, n_targets)}}`` (:mod:`cinebrain.evaluate.group`)."""
    from cinebrain.data.splits import lengths_from_run_index
    from cinebrain.evaluate.group import (
        check_shared_runs,
        group_ceiling,
        group_scores,
        leave_one_out_isc,
    )

    refs = [r for r in config.evaluate.reference if r != "subject"]
    if not refs:
        return {}
    where = f"evaluate.reference: {refs[0]}"
    if len(subjects) < 2:
        raise InputError(where, f"scoring against the group needs 2 or more subjects, the run "
                         f"has {len(subjects)}", "add subjects, or set evaluate.reference: subject")
    held_out = {}
    for s in subjects:
        names = json.loads(run.bands(s).read_text())["test_runs"]
        lengths = lengths_from_run_index(np.load(run.prediction(s, "test_run_index")))
        held_out[s] = list(zip(names, [int(n) for n in lengths], strict=False))
    try:
        check_shared_runs(held_out)
    except ValueError as e:
        raise InputError(where, f"the subjects did not see the same held-out stimulus ({e})",
                         "give every subject the same runs (names and lengths), or set "
                         "evaluate.reference: subject") from None
    if len({true[s].shape for s in subjects}) > 1:
        shapes = ", ".join(f"{s} {true[s].shape[1]}" for s in subjects)
        raise InputError(where, f"the subjects have different numbers of targets ({shapes})",
                         "use responses in a common space (same voxels / ROIs), or set "
                         "evaluate.reference: subject")
    Y = np.stack([np.asarray(true[s], np.float64) for s in subjects])
    P = np.stack([np.load(run.prediction(s, "test_pred")).astype(np.float64) for s in subjects])
    isc = leave_one_out_isc(Y)
    out = {}
    for ref in refs:
        r, r2 = group_scores(Y, P, ref)
        out[ref] = {"r": r, "r2": r2, "ceiling": group_ceiling(Y, ref), "isc": isc}
    return out


def _log_regions(table: list[dict], refs: list[str], log: Log) -> None:
    log("  regions (median over subjects):")
    head = "".join(f" {'r ' + ref:>24} {'ceiling':>8}" for ref in refs)
    log(f"    {'region':<16} {'r':>7} {'ceiling':>8}{head}")

    def f(row: dict, key: str, width: int) -> str:
        return f"{row[key]:>{width}.3f}" if row.get(key) is not None else f"{'-':>{width}}"

    for row in table:
        refs_ = "".join(f" {f(row, f'r_{ref}', 24)} {f(row, f'ceiling_{ref}', 8)}"
                        for ref in refs)
        log(f"    {str(row['roi'])[:16]:<16} {f(row, 'mean_r', 7)} {f(row, 'ceiling', 8)}{refs_}")


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _log_truth(table: list[dict], log: Log) -> None:
    log("  ground truth recovery (mean over subjects):")
    log(f"    {'region':<10} {'voxels':>7} {'median r':>9} {'ceiling':>8} {'signif.':>8} "
        f"{'true band':>10} {'(signif.)':>10}")

    def f(row: dict, key: str) -> str:
        return f"{row[key]:.3f}" if row.get(key) is not None else "-"

    for row in table:
        log(f"    {row['region']:<10} {row['n_voxels']:>7} {f(row, 'median_r'):>9} "
            f"{f(row, 'median_ceiling'):>8} {f(row, 'fraction_significant'):>8} "
            f"{f(row, 'fraction_assigned_true_band'):>10} "
            f"{f(row, 'fraction_assigned_true_band_significant'):>10}")


# --------------------------------------------------------------------------- report
def report(config: RunConfig, log: Log = _print) -> object:
    """Maps, figures and the self-contained ``report.html`` of the run folder."""
    from cinebrain.pipelines.report import build

    path = build(config, log)
    log(f"  report: {path}")
    return path


def run_all(config: RunConfig, log: Log = _print) -> dict:
    """Every stage in order; returns the evaluation summary."""
    seconds = {}
    result: dict = {}
    stages = [("features", features), ("fit", fit), ("evaluate", evaluate)]
    if config.report:
        stages.append(("report", report))
    for name, stage in stages:
        t0 = time.perf_counter()
        log(f"[{name}]")
        out = stage(config, log)
        if name == "evaluate":
            result = out
        seconds[name] = round(time.perf_counter() - t0, 1)
    result["stage_seconds"] = seconds
    return result
