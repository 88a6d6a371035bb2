"""The stages of a run, wired together: features -> fit -> evaluate -> report.

Each stage reads what the previous one wrote into the run folder, so stages can be run
one by one from the CLI (``cinebrain features``, ``fit``, ``evaluate``, ``report``) or all
at once (``cinebrain run``, ``cinebrain demo``). The science lives in the layers this
module calls; here are only file names and loops.

Run folder::

    config.yaml                  resolved configuration
    features/<space>.npz         feature spaces in stimulus time (FeatureSpace.save)
    cache/                       extractor cache keyed by a hash of inputs and parameters
    mask.nii.gz                  the voxel mask every per-voxel array refers to
    models/<subject>/            coef.npy, intercept.npy, alpha.npy, deltas.npy, bands.json,
                                 feature_mean.npy, feature_std.npy
    predictions/<subject>/       test_true.npy, test_pred.npy, test_split.npy, test_run_index.npy
                                 (cleaned held-out responses, predictions, per-band predictions,
                                 run of each row; every run with split.scheme leave_one_run_out),
                                 subset_r2__<bands>.npy (held-out R2 of band subsets)
    metrics/<subject>/           r.npy, r2.npy, p.npy, q_fdr.npy, ceiling.npy, r_normalised.npy,
                                 alpha.npy, split_r2_<band>.npy, unique_<band>.npy, best_band.npy
    metrics/roi_summary.csv      per ROI and subject
    metrics/ground_truth.json    recovery of a simulated study's ground truth (if present)
    summary.json                 the run's headline numbers
    maps/, figures/, report.html written by the report stage
"""

from __future__ import annotations

import csv
import functools
import io as _io
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cinebrain import __version__
from cinebrain._files import atomic_path, save_npy, write_json, write_text
from cinebrain.config import EvaluateConfig, RunConfig, save_config
from cinebrain.data.dataset import (
    RunTiming,
    align_features,
    check_run_timing,
    clean_responses,
    standardize_features,
)
from cinebrain.data.splits import (
    HRF_LENGTH_S,
    contiguous_folds,
    gap_trs,
    lengths_from_run_index,
    run_index_from_lengths,
)
from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.linear.reduce import fit_band_rotation

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- study helpers
def _load_study(config: RunConfig):
    from cinebrain.io.study import load_study

    return load_study(config.study)


def _subjects(config: RunConfig, study) -> list[str]:
    names = list(study.subjects)
    if config.subjects:
        unknown = [s for s in config.subjects if s not in study.subjects]
        if unknown:
            raise InputError(
                config.study, f"subject(s) {', '.join(unknown)} not in the study",
                f"choose from {', '.join(names)}",
            )
        names = list(config.subjects)
    return names


def _run_volumes(study, run) -> int:
    """Number of volumes (TRs) in a run, read from the header / array shape only."""
    if run.bold:
        from cinebrain.io.nifti import load_bold

        return int(load_bold(study.resolve(run.bold)).shape[3])
    from cinebrain.io.arrays import read_timeseries

    return int(read_timeseries(study.resolve(run.responses), key=run.key).shape[0])


def _stimulus_duration(spaces: dict[str, FeatureSpace]) -> float:
    return max(fs.end for fs in spaces.values())


def run_timings(study, subject: str, stimulus_duration: float) -> list[RunTiming]:
    """Validated timing of every run of ``subject``."""
    out = []
    for run in study.subjects[subject].runs:
        where = str(study.resolve(run.bold or run.responses))
        out.append(
            check_run_timing(
                where, subject, run.name, _run_volumes(study, run), study.tr,
                tuple(run.segment), run.offset, stimulus_duration, study.length_policy,
            )
        )
    return out


# --------------------------------------------------------------------------- features
def _space_names_by_band(spaces: dict[str, FeatureSpace], config: RunConfig) -> dict[str, list[str]]:
    if config.model.bands:
        missing = [s for names in config.model.bands.values() for s in names if s not in spaces]
        if missing:
            raise InputError(
                "model.bands", f"feature space(s) {', '.join(missing)} were not extracted",
                f"available: {', '.join(sorted(spaces))}",
            )
        return {b: list(v) for b, v in config.model.bands.items()}
    bands: dict[str, list[str]] = {}
    for name, fs in spaces.items():
        band = fs.meta.get("band") or name.split(".")[0]
        bands.setdefault(band, []).append(name)
    return bands


def extract_features(config: RunConfig, log: Log = _print) -> dict[str, FeatureSpace]:
    """Extract every configured feature space from the study's stimulus (cached)."""
    from cinebrain.features.cache import cached, cached_many

    study = _load_study(config)
    out = Path(config.out)
    cache = out / "cache"
    cfg = config.features
    stim = study.stimulus
    spaces: dict[str, FeatureSpace] = {}

    def tag(fs: FeatureSpace, name: str, band: str) -> None:
        fs.name = name
        fs.meta["band"] = band
        spaces[name] = fs

    if stim.video and cfg.video:
        from cinebrain.features.video import extract_video

        path = study.resolve(stim.video)
        t0 = time.perf_counter()
        res = cached_many(
            cache, "video", [path, sorted(cfg.video), list(cfg.video_size), list(cfg.pixel_size)],
            lambda: extract_video(
                path, spaces=tuple(cfg.video), size=tuple(cfg.video_size),
                pixel_size=tuple(cfg.pixel_size), progress=config.progress,
            ),
        )
        for k, fs in res.items():
            tag(fs, f"video.{k}", "visual")
        log(f"  video features: {', '.join(res)} ({time.perf_counter() - t0:.1f} s)")
    audio_src = stim.audio or stim.video
    if audio_src and cfg.audio:
        from cinebrain.features.audio import extract_audio

        path = study.resolve(audio_src)
        t0 = time.perf_counter()
        res = cached_many(
            cache, "audio", [path, sorted(cfg.audio), cfg.n_mels, cfg.audio_sr],
            lambda: extract_audio(path, spaces=tuple(cfg.audio), n_mels=cfg.n_mels, sr=cfg.audio_sr),
        )
        for k, fs in res.items():
            tag(fs, f"audio.{k}", "auditory")
        log(f"  audio features: {', '.join(res)} ({time.perf_counter() - t0:.1f} s)")
    ann = stim.annotations
    if ann and (cfg.annotation_text or cfg.annotation_columns):
        from cinebrain.features.annotations import annotation_features
        from cinebrain.features.text import text_embeddings
        from cinebrain.io.annotations import read_annotations

        path = study.resolve(ann.path)
        columns = list(ann.text) + list(ann.categorical) + list(ann.numeric)
        df = read_annotations(
            path, onset=ann.onset, offset=ann.offset, duration=ann.duration, unit=ann.unit,
            tr=study.tr, columns=columns,
        )
        if cfg.annotation_text:
            for col in ann.text:
                fs = cached(cache, f"text-{col}", [path, col], lambda col=col: text_embeddings(df, col))
                tag(fs, f"annotations.{col}", "text")
        if cfg.annotation_columns and (ann.categorical or ann.numeric):
            res = cached_many(
                cache, "annotation-columns", [path, list(ann.categorical), list(ann.numeric)],
                lambda: annotation_features(df, categorical=list(ann.categorical), numeric=list(ann.numeric)),
            )
            for k, fs in res.items():
                tag(fs, f"annotations.{k}", "annotations")
        log(f"  annotation features from {path.name}")
    if stim.transcript and cfg.transcript:
        from cinebrain.features.text import transcript_features
        from cinebrain.io.annotations import read_transcript

        path = study.resolve(stim.transcript)
        df = read_transcript(path)
        res = cached_many(cache, "transcript", [path], lambda: transcript_features(df))
        for k, fs in res.items():
            if k in cfg.transcript:
                tag(fs, f"transcript.{k}", "text")
        log(f"  transcript features: {', '.join(k for k in res if k in cfg.transcript)}")
    if not spaces:
        raise InputError(
            config.study, "no feature space could be extracted",
            "give the study a stimulus (video, audio, annotations or transcript) and enable its features",
        )
    feat_dir = out / "features"
    for name, fs in spaces.items():
        fs.save(feat_dir / f"{name}.npz")
    index = {n: {"n_features": fs.n_features, "n_samples": fs.n_samples, "band": fs.meta["band"]}
             for n, fs in spaces.items()}
    write_json(feat_dir / "index.json", index)
    return spaces


def load_features(config: RunConfig) -> dict[str, FeatureSpace]:
    """Feature spaces written by :func:`extract_features`."""
    feat_dir = Path(config.out) / "features"
    index_path = feat_dir / "index.json"
    if not index_path.is_file():
        raise InputError(feat_dir, "no extracted features", "run `cinebrain features` first")
    index = json.loads(index_path.read_text())
    spaces = {}
    for name, info in index.items():
        fs = FeatureSpace.load(feat_dir / f"{name}.npz")
        fs.meta["band"] = info["band"]
        spaces[name] = fs
    return spaces


# --------------------------------------------------------------------------- responses
def study_mask(config: RunConfig, study, log: Log = _print):
    """The mask all subjects share: the study's, or computed from every BOLD run."""
    import nibabel as nib

    from cinebrain.io.nifti import compute_mask, load_mask

    out = Path(config.out) / "mask.nii.gz"
    bolds = [study.resolve(r.bold) for s in _subjects(config, study) for r in study.subjects[s].runs if r.bold]
    if not bolds:
        return None
    if out.is_file():
        return nib.load(out)
    if study.mask:
        mask = load_mask(study.resolve(study.mask), like=nib.load(bolds[0]))
    else:
        mask = compute_mask(bolds)
        log(f"  computed mask: {int(np.asarray(mask.dataobj).sum())} voxels from {len(bolds)} runs")
    with atomic_path(out) as tmp:
        nib.save(mask, tmp)
    return mask


def load_responses(study, subject: str, timings: list[RunTiming], mask) -> np.ndarray:
    """Raw responses of ``subject``, runs stacked: ``(sum n_trs, n_targets)`` float32."""
    parts = []
    for run, timing in zip(study.subjects[subject].runs, timings, strict=True):
        if run.bold:
            from cinebrain.io.nifti import apply_mask, load_bold

            path = study.resolve(run.bold)
            Y = apply_mask(load_bold(path), mask, path_for_errors=path)
        else:
            from cinebrain.io.arrays import read_timeseries

            Y = read_timeseries(study.resolve(run.responses), key=run.key)
        parts.append(Y[: timing.n_trs])
    n_targets = {p.shape[1] for p in parts}
    if len(n_targets) > 1:
        raise InputError(
            study.resolve(study.subjects[subject].runs[0].bold or study.subjects[subject].runs[0].responses),
            f"subject {subject}'s runs have different numbers of targets {sorted(n_targets)}",
            "give every run the same voxels / ROIs",
        )
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- fit
def _test_runs(config: RunConfig, run_names: list[str], where: str) -> list[int]:
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


def _alphas(config: RunConfig) -> np.ndarray:
    m = config.model
    return np.logspace(np.log10(m.alpha_min), np.log10(m.alpha_max), m.n_alphas)


def _design(spaces, bands, timings, study, config) -> tuple[np.ndarray, list[int]]:
    """Stacked design matrix on the runs' TR grid (HRF or FIR applied), and band sizes.

    Not standardised: each fit standardises with its own training rows.
    """
    hrf = config.alignment.hrf
    aligned, _ = align_features(
        {n: spaces[n] for names in bands.values() for n in names}, timings, study.tr,
        hrf_model=None if hrf == "fir" else hrf,
        delays=tuple(config.alignment.delays) if hrf == "fir" else None,
    )
    blocks = [np.concatenate([aligned[n] for n in names], axis=1) for names in bands.values()]
    return np.concatenate(blocks, axis=1), [b.shape[1] for b in blocks]


def _make_model(config: RunConfig, sizes: list[int], folds, n_iter: int | None = None):
    from cinebrain.linear import BandedRidgeCV, RidgeCV

    m = config.model
    if m.kind == "banded" and len(sizes) > 1:
        return BandedRidgeCV(groups=sizes, alphas=_alphas(config), n_iter=n_iter or m.n_iter,
                             cv=folds, backend=m.backend, device=m.device)
    return RidgeCV(alphas=_alphas(config), cv=folds, backend=m.backend, device=m.device)


def _split_predict(model, X, sizes) -> np.ndarray:
    """Per-band predictions ``(n_bands, n_samples, n_targets)``."""
    if hasattr(model, "predict_split"):
        return np.asarray(model.predict_split(X), dtype=np.float32)
    pred = np.asarray(model.predict(X), dtype=np.float32) - np.asarray(model.intercept_, dtype=np.float32)
    return pred[None]


def _fit_on(config, study, bands, design, sizes, Y, run_index, train_runs: list[int],
            test_idx: np.ndarray | None):
    """Fit one model on the runs ``train_runs``; predict rows ``test_idx`` (None: nothing).

    Features are standardised on the training rows only and the inner CV folds stay inside
    the training runs, with a gap of one HRF, so nothing of the test rows reaches the fit.
    Returns the fitted pieces and the held-out predictions (total, per band, per band subset).
    """
    train_idx = np.flatnonzero(np.isin(run_index, train_runs))
    X, mean, std = standardize_features(design, train_idx)
    # Bands wider than the training set are rotated into its row space: exact, and
    # far cheaper for the solvers. Coefficients are mapped back before saving.
    rotation = fit_band_rotation(X[train_idx], sizes)
    X = rotation.transform(X)
    sizes = rotation.reduced_sizes
    folds = contiguous_folds(
        train_idx.size, config.model.cv_folds, gap=gap_trs(study.tr, HRF_LENGTH_S),
        run_index=run_index[train_idx],
    )
    model = _make_model(config, sizes, folds)
    model.fit(X[train_idx], Y[train_idx])
    held = {}
    if test_idx is not None:
        held["pred"] = np.asarray(model.predict(X[test_idx]), dtype=np.float32)
        held["split"] = _split_predict(model, X[test_idx], sizes)
        if config.evaluate.variance_partitioning and 1 < len(bands) <= 4:
            held["subsets"] = _fit_subsets(config, bands, sizes, X, Y, train_idx, test_idx, folds)
    return model, rotation, mean, std, train_idx, held


def _save_model(mdir: Path, model, rotation, mean, std, bands: dict, info: dict) -> None:
    coef = np.asarray(model.coef_, dtype=np.float32)
    save_npy(mdir / "coef.npy", rotation.coef_back(coef.reshape(coef.shape[0], -1)))
    save_npy(mdir / "intercept.npy", np.asarray(model.intercept_, dtype=np.float32))
    alpha = getattr(model, "best_alphas_", None)
    if alpha is None:
        alpha = model.alpha_
    save_npy(mdir / "alpha.npy", np.asarray(alpha, dtype=np.float32))
    if hasattr(model, "deltas_"):
        save_npy(mdir / "deltas.npy", np.asarray(model.deltas_, dtype=np.float32))
    save_npy(mdir / "feature_mean.npy", mean)
    save_npy(mdir / "feature_std.npy", std)
    write_json(mdir / "bands.json", {"bands": bands, "sizes": rotation.sizes, **info})


def fit(config: RunConfig, log: Log = _print) -> dict:
    """Fit one encoding model per subject; predict held-out runs.

    ``split.scheme`` "held_out": fit on the training runs, predict ``split.test_runs``.
    "leave_one_run_out": every run is predicted by a model fit on the other runs (each TR is
    scored once, by a model that never saw its run); the saved model is then refit on all runs.
    """
    study = _load_study(config)
    spaces = load_features(config)
    bands = _space_names_by_band(spaces, config)
    mask = study_mask(config, study, log)
    out = Path(config.out)
    loro = config.split.scheme == "leave_one_run_out"
    results = {}
    for subject in _subjects(config, study):
        t0 = time.perf_counter()
        timings = run_timings(study, subject, _stimulus_duration(spaces))
        names = [t.name for t in timings]
        if loro and len(names) < 2:
            raise InputError(config.study, f"{subject} has one run; leave-one-run-out needs two or more",
                             "add runs, or set split.scheme: held_out")
        test_runs = list(range(len(names))) if loro else _test_runs(config, names, config.study)
        Y_raw = load_responses(study, subject, timings, mask)
        run_index = run_index_from_lengths([t.n_trs for t in timings])
        Y = clean_responses(Y_raw, run_index, study.tr, config.alignment.high_pass)
        del Y_raw
        pdir = out / "predictions" / subject
        _save_repeats(timings, run_index, Y, pdir)
        design, sizes = _design(spaces, bands, timings, study, config)
        # Outer splits: (runs to fit on, runs to predict).
        outer = ([([j for j in range(len(names)) if j != i], [i]) for i in range(len(names))] if loro
                 else [([j for j in range(len(names)) if j not in test_runs], test_runs)])
        test_idx = np.flatnonzero(np.isin(run_index, test_runs))
        pred = np.zeros((test_idx.size, Y.shape[1]), np.float32)
        pred_split = None
        subsets: dict[str, np.ndarray] = {}
        for fit_runs, pred_runs in outer:
            rows = np.flatnonzero(np.isin(run_index, pred_runs))
            at = np.searchsorted(test_idx, rows)
            model, rotation, mean, std, train_idx, held = _fit_on(
                config, study, bands, design, sizes, Y, run_index, fit_runs, rows)
            pred[at] = held["pred"]
            if pred_split is None:
                pred_split = np.zeros((held["split"].shape[0], *pred.shape), np.float32)
            pred_split[:, at] = held["split"]
            for key, v in held.get("subsets", {}).items():
                subsets.setdefault(key, np.zeros(pred.shape, np.float32))[at] = v
            if loro:
                log(f"    {subject} {names[pred_runs[0]]}: fit on {train_idx.size} TRs of "
                    f"{len(fit_runs)} runs, predicted {rows.size} TRs")
        info = {"scheme": config.split.scheme,
                "train_runs": [names[i] for i in outer[0][0]], "test_runs": [names[i] for i in test_runs]}
        if loro:
            # The model to keep (for new stimuli): all runs; its scores are the ones above.
            model, rotation, mean, std, train_idx, _ = _fit_on(
                config, study, bands, design, sizes, Y, run_index, list(range(len(names))), None)
            info["train_runs"] = list(names)
        _save_model(out / "models" / subject, model, rotation, mean, std, bands, info)
        save_npy(pdir / "test_true.npy", Y[test_idx])
        save_npy(pdir / "test_pred.npy", pred)
        save_npy(pdir / "test_split.npy", pred_split)
        save_npy(pdir / "test_run_index.npy", run_index[test_idx])
        for old in pdir.glob("subset_r2__*.npy"):
            old.unlink()
        if subsets:
            from cinebrain.evaluate import r2_score

            for key, v in subsets.items():
                save_npy(pdir / f"subset_r2__{key}.npy", r2_score(Y[test_idx], v).astype(np.float32))
        n_features = int(mean.size)
        results[subject] = {"n_train": int(train_idx.size), "n_test": int(test_idx.size),
                            "n_targets": int(Y.shape[1]), "n_features": n_features,
                            "scheme": config.split.scheme,
                            "seconds": round(time.perf_counter() - t0, 2)}
        how = (f"each of {len(names)} runs predicted by a model fit on the others"
               if loro else f"fit on {train_idx.size} TRs")
        log(f"  {subject}: {n_features} features x {Y.shape[1]} targets, {how}; "
            f"{test_idx.size} held-out TRs scored ({time.perf_counter() - t0:.1f} s)")
    return results


def _save_repeats(timings: list[RunTiming], run_index: np.ndarray, Y: np.ndarray, pdir: Path) -> None:
    """Save cleaned responses of runs that repeat one segment: ``(n_repeats, n_trs, n_targets)``."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(timings):
        groups.setdefault((round(t.segment[0], 3), round(t.segment[1], 3), t.offset, t.n_trs), []).append(i)
    repeated = [g for g in groups.values() if len(g) >= 2]
    path = pdir / "repeats.npy"
    if not repeated:
        path.unlink(missing_ok=True)
        return
    runs = max(repeated, key=len)
    save_npy(path, np.stack([Y[run_index == i] for i in runs]))


def _fit_subsets(config, bands, sizes, X, Y, train_idx, test_idx, folds) -> dict[str, np.ndarray]:
    """Refit on every proper subset of bands; their held-out predictions, for variance partitioning."""
    names = list(bands)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    preds = {}
    for k in range(1, len(names)):
        for subset in itertools.combinations(range(len(names)), k):
            cols = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in subset])
            # Fewer bands need fewer band-weight candidates to cover their simplex.
            n_iter = max(4, config.model.n_iter * (len(subset) - 1) // max(1, len(names) - 1))
            model = _make_model(config, [sizes[i] for i in subset], folds, n_iter=n_iter)
            model.fit(X[np.ix_(train_idx, cols)], Y[train_idx])
            key = "+".join(names[i] for i in subset)
            preds[key] = np.asarray(model.predict(X[np.ix_(test_idx, cols)]), dtype=np.float32)
    return preds


# --------------------------------------------------------------------------- evaluate
def _roi_table(config: RunConfig, study, mask_img) -> tuple[np.ndarray, dict[int, str]] | None:
    """ROI label per masked voxel and label names, from ``evaluate.rois``."""
    if not config.evaluate.rois or mask_img is None:
        return None
    import nibabel as nib
    from nilearn.image import resample_to_img

    path = Path(config.evaluate.rois)
    if not path.is_absolute() and not path.exists():
        path = Path(config.study).parent / path
    if not path.is_file():
        raise InputError(path, "ROI label image not found", "fix evaluate.rois")
    img = nib.load(path)
    if img.shape[:3] != mask_img.shape[:3] or not np.allclose(img.affine, mask_img.affine):
        img = resample_to_img(img, mask_img, interpolation="nearest", force_resample=True,
                              copy_header=True)
    labels = np.asarray(img.dataobj)[np.asarray(mask_img.dataobj).astype(bool)].astype(int)
    names = dict(config.evaluate.roi_labels or {})
    for value in np.unique(labels):
        if value != 0 and int(value) not in names:
            names[int(value)] = f"roi-{int(value)}"
    return labels, names


def _separate_runs(ev: EvaluateConfig, scheme: str, run_lengths: list[int]) -> bool:
    """Whether held-out runs are tested one by one and their p-values combined."""
    if len(run_lengths) < 2:
        return False
    return ev.runs == "separate" or (ev.runs == "auto" and scheme == "leave_one_run_out")


def _p_values(Y: np.ndarray, P: np.ndarray, run_lengths: list[int], ev: EvaluateConfig,
              tr: float, separate: bool) -> np.ndarray:
    """One-sided p-value of r per target (n_targets,) under the null ``ev.null``: over all
    held-out TRs, or per run and combined (see ``evaluate.runs``)."""
    from cinebrain.evaluate import (
        block_permutation_test,
        per_run_test,
        phase_randomization_test,
    )

    if ev.null == "phase":
        test = functools.partial(phase_randomization_test, n_surrogates=ev.n_permutations)
    else:
        # Blocks of block_s, but at least two of them per run.
        block_size = max(1, min(gap_trs(tr, ev.block_s), min(run_lengths) // 2))
        test = functools.partial(block_permutation_test, n_permutations=ev.n_permutations,
                                 block_size=block_size)
    if separate:
        return per_run_test(test, Y, P, run_lengths)
    return test(Y, P, seed=0, run_lengths=run_lengths)[1]


def _significance_test(ev: EvaluateConfig, separate: bool = False) -> str | None:
    """The significance test in words, for summary.json (None: no test)."""
    if not ev.n_permutations:
        return None
    if ev.null == "phase":
        null = f"phase-randomised predictions ({ev.n_permutations} surrogates)"
    else:
        null = f"block permutation ({ev.block_s:g} s blocks, {ev.n_permutations} permutations)"
    how = ("each held-out run tested on its own (normal fit of its null), p-values combined "
           "by the Cauchy combination; " if separate else "")
    return f"one-sided r > 0 against {null}; {how}Benjamini-Hochberg FDR {ev.fdr:g}"


def evaluate(config: RunConfig, log: Log = _print) -> dict:
    """Score held-out predictions per voxel; ceilings, significance, partitioning, ROIs."""
    from cinebrain.evaluate import (
        fdr_bh,
        noise_ceiling_repeats,
        noise_ceiling_subjects,
        normalised_score,
        pearson_r,
        r2_score,
        split_r2,
        variance_partitioning,
    )

    study = _load_study(config)
    out = Path(config.out)
    subjects = [s for s in _subjects(config, study) if (out / "predictions" / s / "test_pred.npy").is_file()]
    if not subjects:
        raise InputError(out, "no predictions to evaluate", "run `cinebrain fit` first")
    ev = config.evaluate
    true = {s: np.load(out / "predictions" / s / "test_true.npy", mmap_mode="r") for s in subjects}

    # Noise ceiling: repeats within a subject when present, else across subjects.
    ceilings: dict[str, np.ndarray] = {}
    method = ev.ceiling
    rep_files = {s: out / "predictions" / s / "repeats.npy" for s in subjects}
    if method in ("auto", "repeats") and all(p.is_file() for p in rep_files.values()):
        for s in subjects:
            ceilings[s] = noise_ceiling_repeats(np.load(rep_files[s]))
        method = "repeats"
    elif method in ("auto", "subjects") and len(subjects) >= 2 and len({true[s].shape for s in subjects}) == 1:
        c = noise_ceiling_subjects(np.stack([np.asarray(true[s]) for s in subjects]))
        ceilings = {s: c for s in subjects}
        method = "subjects"
    elif method in ("repeats", "subjects"):
        raise InputError(
            config.study, f"cannot compute a noise ceiling from {method}",
            "repeats need a segment shown twice; subjects need >= 2 subjects with the same "
            "test runs; or set evaluate.ceiling: none",
        )
    else:
        method = "none"

    rois = _roi_table(config, study, study_mask(config, study, log))
    summary: dict = {"cinebrain": __version__, "ceiling_method": method, "subjects": {}}
    roi_rows = []
    separate = run_separately = False
    for s in subjects:
        pdir, mdir = out / "predictions" / s, out / "metrics" / s
        info = json.loads((out / "models" / s / "bands.json").read_text())
        band_names = list(info["bands"])
        Y = np.asarray(true[s])
        P = np.load(pdir / "test_pred.npy")
        S = np.load(pdir / "test_split.npy")
        run_lengths = lengths_from_run_index(np.load(pdir / "test_run_index.npy"))
        r = pearson_r(Y, P)
        r2 = r2_score(Y, P)
        save_npy(mdir / "r.npy", r.astype(np.float32))
        save_npy(mdir / "r2.npy", r2.astype(np.float32))
        save_npy(mdir / "alpha.npy", np.load(out / "models" / s / "alpha.npy"))
        if ev.n_permutations:
            run_separately = _separate_runs(ev, info.get("scheme", "held_out"), run_lengths)
            separate = separate or run_separately
            p = _p_values(Y, P, run_lengths, ev, study.tr, run_separately)
            reject, q = fdr_bh(p, q=ev.fdr)
            save_npy(mdir / "p.npy", p.astype(np.float32))
            save_npy(mdir / "q_fdr.npy", q.astype(np.float32))
        else:
            reject = np.zeros(r.shape, bool)
        if s in ceilings:
            save_npy(mdir / "ceiling.npy", ceilings[s].astype(np.float32))
            save_npy(mdir / "r_normalised.npy", normalised_score(r, ceilings[s]).astype(np.float32))
        if S.shape[0] == len(band_names) and len(band_names) > 1:
            split = split_r2(Y, S)
            for b, name in enumerate(band_names):
                save_npy(mdir / f"split_r2_{name}.npy", split[b].astype(np.float32))
            best = np.argmax(split, axis=0)
            save_npy(mdir / "best_band.npy", best.astype(np.int16))
        subset_files = sorted(pdir.glob("subset_r2__*.npy"))
        if subset_files:
            r2_by = {frozenset(band_names): r2}
            for f in subset_files:
                r2_by[frozenset(f.stem.split("__", 1)[1].split("+"))] = np.load(f)
            parts = variance_partitioning(r2_by)
            for name in band_names:
                save_npy(mdir / f"unique_{name}.npy", np.asarray(parts["unique"][name], np.float32))
        sig = reject if ev.n_permutations else None
        summary["subjects"][s] = {
            "n_targets": int(r.size),
            "median_r": float(np.median(r)),
            "max_r": float(np.max(r)),
            "n_significant": int(reject.sum()) if sig is not None else None,
            "median_ceiling": float(np.median(ceilings[s])) if s in ceilings else None,
        }
        if rois is not None:
            labels, names = rois
            for value, name in sorted(names.items()):
                sel = labels == value
                if not sel.any():
                    continue
                row = {"roi": name, "subject": s, "n_voxels": int(sel.sum()),
                       "mean_r": float(r[sel].mean()), "median_r": float(np.median(r[sel]))}
                if s in ceilings:
                    row["ceiling"] = float(np.median(ceilings[s][sel]))
                if sig is not None:
                    row["fraction_significant"] = float(reject[sel].mean())
                roi_rows.append(row)
        log(f"  {s}: median r {np.median(r):.3f}, max r {np.max(r):.3f}, "
            f"{int(reject.sum())} of {r.size} targets significant ({ev.null} null"
            f"{', runs tested separately' if ev.n_permutations and run_separately else ''}, "
            f"FDR {ev.fdr:g})")
    if roi_rows:
        buf = _io.StringIO()
        keys = list(dict.fromkeys(k for row in roi_rows for k in row))
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(roi_rows)
        write_text(out / "metrics" / "roi_summary.csv", buf.getvalue())
        summary["rois"] = roi_rows
    summary["significance_test"] = _significance_test(ev, separate)
    truth = _ground_truth(config, study, subjects, log)
    if truth:
        summary["ground_truth"] = truth
    write_json(out / "summary.json", summary)
    return summary


#: Ground-truth modality codes written by the simulator, and the band that should win.
TRUTH_MODALITIES = {1: ("visual", "visual"), 2: ("auditory", "auditory"), 3: ("language", "text")}


def _ground_truth(config: RunConfig, study, subjects: list[str], log: Log) -> dict | None:
    """How well a simulated study's known truth was recovered (None for real data)."""
    import nibabel as nib

    gt_img = study.root / "ground_truth" / "modality.nii.gz"
    mask_path = Path(config.out) / "mask.nii.gz"
    if not gt_img.is_file() or not mask_path.is_file():
        return None
    mask = np.asarray(nib.load(mask_path).dataobj).astype(bool)
    modality = np.asarray(nib.load(gt_img).dataobj)[mask].astype(int)
    out = Path(config.out) / "metrics"
    rows = []
    for s in subjects:
        m = out / s
        r = np.load(m / "r.npy")
        sig = np.load(m / "q_fdr.npy") < config.evaluate.fdr if (m / "q_fdr.npy").is_file() else None
        ceiling = np.load(m / "ceiling.npy") if (m / "ceiling.npy").is_file() else None
        best = np.load(m / "best_band.npy") if (m / "best_band.npy").is_file() else None
        bands = list(json.loads((Path(config.out) / "models" / s / "bands.json").read_text())["bands"])
        for code, (region, band) in [(0, ("undriven", None)), *TRUTH_MODALITIES.items()]:
            sel = modality == code
            if not sel.any():
                continue
            row = {"subject": s, "region": region, "n_voxels": int(sel.sum()),
                   "median_r": float(np.median(r[sel]))}
            if ceiling is not None:
                row["median_ceiling"] = float(np.median(ceiling[sel]))
            if sig is not None:
                row["fraction_significant"] = float(sig[sel].mean())
            if best is not None and band in bands:
                right = best == bands.index(band)
                row["fraction_assigned_true_band"] = float(right[sel].mean())
                if sig is not None and (sel & sig).any():
                    # Voxels the model predicts detectably: the ones an assignment can be read from.
                    row["fraction_assigned_true_band_significant"] = float(right[sel & sig].mean())
            rows.append(row)
    write_json(out / "ground_truth.json", rows)
    # Subject-average table for the console.
    log("  ground truth recovery (mean over subjects):")
    log(f"    {'region':<10} {'voxels':>7} {'median r':>9} {'ceiling':>8} {'signif.':>8} {'true band':>10} {'(signif.)':>10}")
    for region in ["visual", "auditory", "language", "undriven"]:
        rs = [row for row in rows if row["region"] == region]
        if not rs:
            continue

        def avg(key: str, rs=rs) -> str:
            vals = [row[key] for row in rs if key in row]
            return f"{np.mean(vals):.3f}" if vals else "-"

        log(f"    {region:<10} {rs[0]['n_voxels']:>7} {avg('median_r'):>9} {avg('median_ceiling'):>8} "
            f"{avg('fraction_significant'):>8} {avg('fraction_assigned_true_band'):>10} "
            f"{avg('fraction_assigned_true_band_significant'):>10}")
    return {"rows": rows}


# --------------------------------------------------------------------------- report
def report(config: RunConfig, log: Log = _print) -> Path:
    """Maps, figures and the self-contained ``report.html``."""
    from cinebrain.report import build_report

    path = build_report(Path(config.out))
    log(f"  report: {path}")
    return path


def run_all(config: RunConfig, log: Log = _print) -> dict:
    """Every stage in order; returns the evaluation summary."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    timings = {}
    for name, stage in [("features", extract_features), ("fit", fit), ("evaluate", evaluate)]:
        t0 = time.perf_counter()
        log(f"[{name}]")
        result = stage(config, log)
        timings[name] = round(time.perf_counter() - t0, 1)
    if config.report:
        t0 = time.perf_counter()
        log("[report]")
        report(config, log)
        timings["report"] = round(time.perf_counter() - t0, 1)
    result["stage_seconds"] = timings
    write_json(out / "summary.json", result)
    return result
