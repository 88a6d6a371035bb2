"""The deep-model stages of a run: train the multimodal autoencoder, compare it with ridge,
lesion it, and reconstruct the stimulus.

The autoencoder takes the linear fit's data path: the same extracted feature spaces, the
same mask, the same response cleaning and the same held-out runs (:mod:`cinebrain.workflow`),
so its held-out r is scored on exactly the responses ridge was scored on, against the same
noise ceiling. Inputs are the feature spaces on the TR grid, *not* HRF-convolved: the
model's causal HRF layer supplies the lag.

- video: frames of ``autoencoder.video_space`` (``video.pixels``) per TR, channels
  ``luminance`` (the TR's mean frame) and ``motion`` (its mean absolute frame difference);
- audio: ``audio.mel`` per TR; text: ``annotations.description`` per TR.

Inputs are z-scored per feature with statistics of the training runs only. Early stopping
watches ``val_r`` on the last block of the training runs (``autoencoder.val_fraction`` of
their TRs), separated from the TRs trained on by a gap of the HRF length; the test runs are
never seen before the final prediction.

Run folder additions::

    autoencoder/model.json                   model config, data settings, split, timing
    autoencoder/input_stats.npz              training mean / std of every modality's inputs
    autoencoder/checkpoints/                 best.pt, last.pt, step-*.pt (cinebrain.train)
    autoencoder/metrics.jsonl, tensorboard/  training log
    autoencoder/predictions/<subject>/test_pred.npy
    autoencoder/metrics/<subject>/           r.npy, r2.npy, r_normalised.npy (held out),
                                             ridge_r.npy (banded ridge on the same rows)
    autoencoder/comparison.json              autoencoder vs ridge per region, reconstruction
    autoencoder/lesions/<name>/              <subject>_<change|relative_change|delta_r>.nii.gz,
                                             mean_*.nii.gz, lesion.json
    autoencoder/reconstruction/              video.mp4, audio.wav, text.tsv (test run)
    summary.json                             gains an "autoencoder" key
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cinebrain._files import save_npy, write_json
from cinebrain.config import AutoencoderRunConfig, RunConfig
from cinebrain.data.dataset import RunTiming, clean_responses
from cinebrain.data.splits import HRF_LENGTH_S, gap_trs, run_index_from_lengths
from cinebrain.errors import ConfigError, InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.workflow import (
    TRUTH_MODALITIES,
    _load_study,
    _roi_table,
    _stimulus_duration,
    _subjects,
    _test_runs,
    load_features,
    load_responses,
    run_timings,
    study_mask,
)

Log = Callable[[str], None]

AE_DIR = "autoencoder"


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- model config
def _merge(base: dict, over: dict, where: str) -> dict:
    """``base`` with ``over`` merged in (nested dicts merge key by key)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def model_config(
    settings: AutoencoderRunConfig, n_voxels: dict[str, int] | None = None, tr: float | None = None
):
    """The :class:`~cinebrain.models.AutoencoderConfig` of a run: preset + overrides, with
    the run's modalities, voxel counts and TR. Raises :class:`ConfigError` naming the bad
    preset, key or value."""
    from cinebrain.models import AutoencoderConfig, get_preset

    base = get_preset(settings.preset).to_dict()
    for key in ("n_voxels", "tr"):
        if key in settings.overrides:
            raise ConfigError(
                f"autoencoder.overrides.{key}",
                "is set from the data",
                "remove it from the overrides",
            )
    merged = _merge(base, settings.overrides, "autoencoder.overrides")
    missing = [m for m in settings.modalities if m not in merged.get("encoders", {})]
    if missing:
        raise ConfigError(
            "autoencoder.modalities",
            f"preset {settings.preset!r} has no encoder for {', '.join(missing)}",
            f"its modalities are {', '.join(merged.get('encoders', {}))}; drop the others",
        )
    merged["encoders"] = {m: c for m, c in merged["encoders"].items() if m in settings.modalities}
    for key in ("recon_loss", "recon_weights"):
        merged[key] = {m: v for m, v in merged.get(key, {}).items() if m in settings.modalities}
    if n_voxels is not None:
        merged["n_voxels"] = dict(n_voxels)
    if tr is not None:
        merged["tr"] = float(tr)
    try:
        return AutoencoderConfig.from_dict(merged)
    except ConfigError as e:
        raise ConfigError("autoencoder.overrides", str(e), None) from None
    except (TypeError, ValueError) as e:
        raise ConfigError("autoencoder.overrides", f"bad value: {e}", "fix the override") from None


# --------------------------------------------------------------------------- inputs
def _video_frames(fs: FeatureSpace, channels: Sequence[str], size: tuple[int, int]) -> FeatureSpace:
    """Per-frame channels of a pixel space, flattened: ``(n_frames, C * H * W)``."""
    w, h = size
    if fs.n_features != w * h:
        raise InputError(
            fs.name,
            f"has {fs.n_features} features, not {w}x{h} pixels",
            "set features.pixel_size to the size the pixels were extracted at",
        )
    parts = []
    for ch in channels:
        if ch == "luminance":
            parts.append(fs.values)
        else:  # motion: |frame - previous frame|, 0 for the first frame
            diff = np.abs(np.diff(fs.values, axis=0, prepend=fs.values[:1]))
            parts.append(diff)
    return FeatureSpace(
        fs.name, np.concatenate(parts, axis=1), fs.onsets, fs.durations, method=fs.method
    )


def _input_space(
    spaces: dict[str, FeatureSpace],
    modality: str,
    settings: AutoencoderRunConfig,
    pixel_size: tuple[int, int],
    shapes: dict[str, tuple[int, ...]],
) -> FeatureSpace:
    """The feature space feeding ``modality`` (video: per-frame channels), checked against
    the model's per-TR input shape; :class:`InputError` when missing or mismatched."""
    name = {
        "video": settings.video_space,
        "audio": settings.audio_space,
        "text": settings.text_space,
    }[modality]
    if name not in spaces:
        raise InputError(
            f"autoencoder.modalities: {modality}",
            f"needs feature space {name}, which was not extracted",
            f"available: {', '.join(sorted(spaces))}; enable it under features, "
            f"or drop {modality} from autoencoder.modalities",
        )
    fs = spaces[name]
    if modality == "video":
        fs = _video_frames(fs, settings.video_channels, pixel_size)
        w, h = pixel_size
        have: tuple[int, ...] = (len(settings.video_channels), h, w)
    else:
        have = (fs.n_features,)
    want = shapes[modality]
    if int(np.prod(want)) != int(np.prod(have)) or (
        modality == "video" and tuple(want[-3:]) != have
    ):
        raise InputError(
            f"autoencoder: {modality}",
            f"{name} gives per-TR inputs of shape {have} but the model's {modality} encoder expects {want}",
            "match features (pixel_size, n_mels, video_channels) and the preset, or set "
            "autoencoder.overrides for the encoder",
        )
    return fs


def check(config: RunConfig) -> dict[str, tuple[int, ...]]:
    """Validate the autoencoder settings against the run's extracted features before any
    work: preset, overrides, modalities present, shapes. Returns the per-TR input shapes."""
    settings = config.autoencoder
    shapes = model_config(settings).input_shapes()
    spaces = load_features(config)
    for m in settings.modalities:
        _input_space(spaces, m, settings, tuple(config.features.pixel_size), shapes)
    return shapes


def stimulus_inputs(
    spaces: dict[str, FeatureSpace],
    timings: Sequence[RunTiming],
    tr: float,
    settings: AutoencoderRunConfig,
    pixel_size: tuple[int, int],
    shapes: dict[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Per-TR inputs of every modality, runs stacked: ``{modality: (n_trs, *shape)}`` float32.

    Each feature space is resampled onto each run's TR grid (:func:`cinebrain.timing.resample`)
    and reshaped to the model's per-TR input shape (``shapes``); a space that is missing or
    whose size disagrees with the model raises :class:`InputError`.
    """
    from cinebrain.timing import resample

    out = {}
    for m in settings.modalities:
        fs = _input_space(spaces, m, settings, pixel_size, shapes)
        per_run = [resample(fs, tr, t.n_trs, t.offset, tuple(t.segment)) for t in timings]
        out[m] = np.concatenate(per_run, axis=0).reshape(-1, *shapes[m]).astype(np.float32)
    return out


def _standardize(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score every feature of ``x (n, *shape)`` with the statistics of ``rows``."""
    flat = x.reshape(len(x), -1)
    mean = flat[rows].mean(axis=0)
    std = flat[rows].std(axis=0)
    std[std < 1e-8] = 1.0
    z = ((flat - mean) / std).astype(np.float32).reshape(x.shape)
    return z, mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------- data
@dataclass
class SubjectData:
    """One subject's inputs, cleaned responses and split, rows of the stacked runs.

    ``train``, ``val`` and ``test`` are lists of ``(start, stop)`` row ranges, each within
    one run (windows never cross them)."""

    subject: str
    inputs: dict[str, np.ndarray]
    responses: np.ndarray
    run_names: list[str]
    run_lengths: list[int]
    train: list[tuple[int, int]]
    val: list[tuple[int, int]]
    test: list[tuple[int, int]]

    def rows(self, part: str) -> np.ndarray:
        return np.concatenate([np.arange(a, b) for a, b in getattr(self, part)])

    def dataset(self, config, part: str):
        """A :class:`~cinebrain.models.WindowDataset` of the ranges of ``part``."""
        from cinebrain.models import windows_for

        ranges = getattr(self, part)
        rows = self.rows(part)
        return windows_for(
            config,
            {m: x[rows] for m, x in self.inputs.items()},
            self.responses[rows],
            [b - a for a, b in ranges],
            self.subject,
        )


@dataclass
class DeepData:
    """Everything the autoencoder trains and is evaluated on."""

    subjects: dict[str, SubjectData]
    tr: float
    input_stats: dict[str, tuple[np.ndarray, np.ndarray]]
    shapes: dict[str, tuple[int, ...]]
    split: dict[str, Any] = field(default_factory=dict)


def _split_ranges(
    run_lengths: list[int], test_runs: list[int], val_fraction: float, gap: int, where: str
) -> tuple[list, list, list]:
    """Train / validation / test row ranges: the validation block ends the last training
    run, ``gap`` TRs after the training TRs (shorter runs are not split)."""
    starts = np.cumsum([0, *run_lengths[:-1]]).tolist()
    train_runs = [i for i in range(len(run_lengths)) if i not in test_runs]
    n_train = sum(run_lengths[i] for i in train_runs)
    n_val = max(1, int(math.ceil(val_fraction * n_train)))
    last = train_runs[-1]
    a, n = starts[last], run_lengths[last]
    if n_val + gap >= n:
        raise InputError(
            where,
            f"the last training run has {n} TRs, too few for a validation block of "
            f"{n_val} TRs after a gap of {gap}",
            "lower autoencoder.val_fraction, or add runs",
        )
    train = [(starts[i], starts[i] + run_lengths[i]) for i in train_runs[:-1]]
    train.append((a, a + n - n_val - gap))
    val = [(a + n - n_val, a + n)]
    test = [(starts[i], starts[i] + run_lengths[i]) for i in test_runs]
    return train, val, test


def prepare(config: RunConfig, log: Log = _print) -> DeepData:
    """Inputs, cleaned responses and the split of every subject, as the linear fit has them."""
    settings = config.autoencoder
    shapes = check(config)
    study = _load_study(config)
    spaces = load_features(config)
    mask = study_mask(config, study, log)
    duration = _stimulus_duration(spaces)
    subjects: dict[str, SubjectData] = {}
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cache: dict[tuple, dict[str, np.ndarray]] = {}
    gap = gap_trs(study.tr, HRF_LENGTH_S)
    split: dict[str, Any] = {}
    for subject in _subjects(config, study):
        timings = run_timings(study, subject, duration)
        names = [t.name for t in timings]
        test_runs = _test_runs(config, names, config.study)
        lengths = [t.n_trs for t in timings]
        run_index = run_index_from_lengths(lengths)
        Y = clean_responses(
            load_responses(study, subject, timings, mask),
            run_index,
            study.tr,
            config.alignment.high_pass,
        )
        train, val, test = _split_ranges(
            lengths, test_runs, settings.val_fraction, gap, f"{config.study} ({subject})"
        )
        key = tuple((t.n_trs, tuple(t.segment), t.offset) for t in timings)
        if key not in cache:
            cache[key] = stimulus_inputs(
                spaces, timings, study.tr, settings, tuple(config.features.pixel_size), shapes
            )
        raw = cache[key]
        train_rows = np.concatenate([np.arange(a, b) for a, b in train + val])
        inputs = {}
        for m, x in raw.items():
            # Statistics of the first subject's training runs, shared by all subjects, so
            # one stimulus always gets the same input.
            if m not in stats:
                _, mean, std = _standardize(x, train_rows)
                stats[m] = (mean, std)
            mean, std = stats[m]
            inputs[m] = ((x.reshape(len(x), -1) - mean) / std).astype(np.float32).reshape(x.shape)
        subjects[subject] = SubjectData(subject, inputs, Y, names, lengths, train, val, test)
        split[subject] = {
            "train": train,
            "val": val,
            "test": test,
            "test_runs": [names[i] for i in test_runs],
        }
    return DeepData(subjects, float(study.tr), stats, shapes, split)


# --------------------------------------------------------------------------- train
def _train_config(settings: AutoencoderRunConfig, out_dir: Path, progress: bool):
    from cinebrain.train import TrainConfig

    return TrainConfig(
        epochs=settings.epochs,
        max_steps=settings.max_steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_fraction=settings.warmup_fraction,
        grad_clip=settings.grad_clip,
        precision=settings.precision,
        early_stopping_metric="val_r",
        early_stopping_mode="max",
        patience=settings.patience,
        eval_every_epochs=settings.eval_every_epochs,
        seed=settings.seed,
        device=settings.device,
        tensorboard=settings.tensorboard,
        progress=progress,
        out_dir=str(out_dir),
        drop_last=False,
        log_every=10,
    )


def _set_threads(settings: AutoencoderRunConfig) -> None:
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)


def train(
    config: RunConfig, log: Log = _print, resume: bool = False, data: DeepData | None = None
) -> dict:
    """Train the autoencoder on the run's training runs; evaluate it on the test runs.

    Returns the comparison written to ``autoencoder/comparison.json`` (and summary.json).
    """
    from torch.utils.data import ConcatDataset

    from cinebrain.models import MultimodalAutoencoder, collate_windows
    from cinebrain.models.presets import module_parameters
    from cinebrain.train import Trainer, load_checkpoint

    settings = config.autoencoder
    _set_threads(settings)
    out = Path(config.out)
    ae_dir = out / AE_DIR
    t0 = time.perf_counter()
    data = prepare(config, log) if data is None else data
    names = list(data.subjects)
    groups = [names] if settings.multi_subject else [[s] for s in names]
    if len(groups) > 1 and resume:
        raise ConfigError(
            "--resume", "resuming needs autoencoder.multi_subject: true", "train afresh"
        )
    if not resume and (ae_dir / "checkpoints").exists():
        shutil.rmtree(ae_dir / "checkpoints")
    log(
        f"  data: {len(names)} subject(s), inputs "
        + ", ".join(f"{m} {tuple(s)}" for m, s in data.shapes.items())
        + f" per TR ({time.perf_counter() - t0:.1f} s)"
    )
    info: dict[str, Any] = {
        "preset": settings.preset,
        "settings": settings.model_dump(mode="json"),
        "split": data.split,
        "groups": {},
    }
    for group in groups:
        mcfg = model_config(
            settings, {s: data.subjects[s].responses.shape[1] for s in group}, data.tr
        )
        model = MultimodalAutoencoder(mcfg)
        tag = "" if len(groups) == 1 else group[0]
        gdir = ae_dir if not tag else ae_dir / "per_subject" / tag
        train_ds = ConcatDataset([data.subjects[s].dataset(mcfg, "train") for s in group])
        val_ds = ConcatDataset([data.subjects[s].dataset(mcfg, "val") for s in group])
        counts = module_parameters(model)
        log(
            f"  model {settings.preset}: {counts['total'] / 1e6:.2f} M parameters; "
            f"{len(train_ds)} training / {len(val_ds)} validation windows of {mcfg.window} TRs"
        )
        trainer = Trainer(
            model,
            _train_config(settings, gdir, config.progress),
            train_ds,
            val_ds,
            collate_fn=collate_windows,
        )
        t1 = time.perf_counter()
        history = trainer.fit(resume=resume)
        seconds = time.perf_counter() - t1
        best = history.best_checkpoint or history.last_checkpoint
        if best is not None:
            model.load_state_dict(load_checkpoint(best, map_location="cpu")["model"])
        last_val = history.val[-1] if history.val else {}
        log(
            f"  trained {trainer.step} steps ({trainer.epoch} epochs) in {seconds:.1f} s; "
            f"best val_r {history.best_metric if history.best_metric is not None else float('nan'):.3f} "
            f"at step {history.best_step}" + (" (stopped early)" if history.stopped_early else "")
        )
        info["groups"][tag or "all"] = {
            "subjects": group,
            "model": mcfg.to_dict(),
            "parameters": counts,
            "steps": trainer.step,
            "epochs": trainer.epoch,
            "train_seconds": round(seconds, 1),
            "best_val_r": history.best_metric,
            "best_step": history.best_step,
            "stopped_early": history.stopped_early,
            "checkpoint": str(best.relative_to(out)) if best is not None else None,
            "last_val": {k: v for k, v in last_val.items() if isinstance(v, (int, float))},
        }
        for s in group:
            pred = _predict_test(model, data.subjects[s], mcfg)
            save_npy(ae_dir / "predictions" / s / "test_pred.npy", pred["voxels"])
    np.savez(
        ae_dir / "input_stats.npz",
        **{f"{m}_mean": v[0] for m, v in data.input_stats.items()},
        **{f"{m}_std": v[1] for m, v in data.input_stats.items()},
    )
    write_json(ae_dir / "model.json", info)
    result = evaluate(config, data, log)
    if settings.reconstruct:
        model, mcfg = load_model(config, names[0])
        reconstruct(config, model, mcfg, data, log)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _update_summary(out, result)
    return result


def _predict_test(model, sd: SubjectData, mcfg, lesion=None) -> dict:
    from cinebrain.models import predict_dataset

    return predict_dataset(model, sd.dataset(mcfg, "test"), lesion, keep=("voxels", "recon"))


def load_model(config: RunConfig, subject: str):
    """The trained model whose head predicts ``subject`` (best checkpoint), in eval mode, on
    the run's training device."""
    from cinebrain.models import AutoencoderConfig, MultimodalAutoencoder
    from cinebrain.train import load_checkpoint, resolve_device

    out = Path(config.out)
    path = out / AE_DIR / "model.json"
    if not path.is_file():
        raise InputError(
            out, "no trained autoencoder in this run folder", "run `cinebrain train` first"
        )
    info = json.loads(path.read_text())
    for group in info["groups"].values():
        if subject in group["subjects"]:
            mcfg = AutoencoderConfig.from_dict(group["model"])
            model = MultimodalAutoencoder(mcfg)
            state = load_checkpoint(out / group["checkpoint"], map_location="cpu")
            model.load_state_dict(state["model"])
            # the training device, so predictions after training and on reloading come
            # from the same kernels
            device = resolve_device(config.autoencoder.device, key="autoencoder.device")
            return model.to(device).eval(), mcfg
    raise InputError(path, f"no model predicts subject {subject}", "retrain with that subject")


# --------------------------------------------------------------------------- evaluate
def _regions(config: RunConfig, study, mask_img) -> dict[str, np.ndarray]:
    """Named voxel selections to compare on: the ground truth of a simulated study
    (visual, auditory, language, driven, undriven), and the ROIs of ``evaluate.rois``."""
    import nibabel as nib

    regions: dict[str, np.ndarray] = {}
    gt = study.root / "ground_truth" / "modality.nii.gz"
    if gt.is_file() and mask_img is not None:
        modality = np.asarray(nib.load(gt).dataobj)[
            np.asarray(mask_img.dataobj).astype(bool)
        ].astype(int)
        for code, (name, _) in TRUTH_MODALITIES.items():
            regions[name] = modality == code
        regions["driven"] = modality > 0
        regions["undriven"] = modality == 0
    rois = _roi_table(config, study, mask_img)
    if rois is not None:
        labels, label_names = rois
        for value, name in sorted(label_names.items()):
            sel = labels == value
            if any(np.array_equal(sel, v) for v in regions.values()):
                continue  # the ROI is a ground-truth region already listed
            regions[name if name not in regions else f"roi {name}"] = sel
    return {k: v for k, v in regions.items() if v.any()}


def _recon_baseline(target: np.ndarray, kind: str, train_mean_dir: np.ndarray | None) -> float:
    """Loss of predicting the training mean: MSE against 0 (z-scored inputs), or for a
    cosine loss 1 - cosine with the mean training direction."""
    flat = target.reshape(len(target), -1).astype(np.float64)
    if kind == "mse":
        return float((flat**2).mean())
    d = train_mean_dir / max(np.linalg.norm(train_mean_dir), 1e-12)
    cos = flat @ d / np.maximum(np.linalg.norm(flat, axis=1), 1e-8)
    return float((1.0 - cos).mean())


def _ridge_on_test_rows(out: Path, data: DeepData) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Banded ridge scored on exactly the autoencoder's test rows, per subject.

    Ridge's held-out predictions may cover more runs than the autoencoder's test runs
    (``split.scheme: leave_one_run_out`` predicts every run); the rows of the autoencoder's
    test runs are picked by run, and a subject is left out unless its cleaned responses
    there equal the autoencoder's. Returns ``{subject: (ridge_r, ceiling)}``: an
    across-subject ceiling is recomputed on these rows; a repeats ceiling does not depend
    on them and is ridge's own (None when the run has no ceiling).
    """
    from cinebrain.evaluate import noise_ceiling_subjects, pearson_r

    picked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s, sd in data.subjects.items():
        pdir = out / "predictions" / s
        files = [pdir / f for f in ("test_true.npy", "test_pred.npy", "test_run_index.npy")]
        if not all(f.is_file() for f in files):
            continue
        runs = [sd.run_names.index(n) for n in data.split[s]["test_runs"]]
        rows = np.flatnonzero(np.isin(np.load(files[2]), runs))
        Y = sd.responses[sd.rows("test")]
        if rows.size != len(Y):
            continue  # ridge did not predict the autoencoder's test runs
        true = np.load(files[0], mmap_mode="r")[rows]
        if true.shape != Y.shape or not np.allclose(true, Y, atol=1e-4):
            continue
        picked[s] = (np.asarray(true), np.load(files[1], mmap_mode="r")[rows])
    summary = out / "summary.json"
    method = json.loads(summary.read_text()).get("ceiling_method") if summary.is_file() else None
    shared = None
    if method == "subjects" and len(picked) >= 2 and len({t.shape for t, _ in picked.values()}) == 1:
        shared = noise_ceiling_subjects(np.stack([t for t, _ in picked.values()]))
    result = {}
    for s, (true, pred) in picked.items():
        ceiling_file = out / "metrics" / s / "ceiling.npy"
        ceiling = shared
        if ceiling is None and method == "repeats" and ceiling_file.is_file():
            ceiling = np.load(ceiling_file)
        result[s] = (pearson_r(true, pred).astype(np.float32), ceiling)
    return result


def evaluate(config: RunConfig, data: DeepData | None = None, log: Log = _print) -> dict:
    """Held-out scores of the autoencoder per voxel and region, next to ridge's.

    Writes ``autoencoder/metrics/<subject>/{r,r2,r_normalised,ridge_r}.npy`` and
    ``autoencoder/comparison.json``; ridge's held-out predictions of the same rows and the
    noise ceiling are used when the linear stages ran.
    """
    from cinebrain.evaluate import normalised_score, pearson_r, r2_score

    data = prepare(config, log) if data is None else data
    out = Path(config.out)
    ae_dir = out / AE_DIR
    study = _load_study(config)
    mask_img = study_mask(config, study, log)
    regions = _regions(config, study, mask_img)
    rows, per_subject = [], {}
    recon: dict[str, dict[str, float]] = {}
    ridge_rows = _ridge_on_test_rows(out, data)
    for s, sd in data.subjects.items():
        model, mcfg = load_model(config, s)
        test_rows = sd.rows("test")
        Y = sd.responses[test_rows]
        pred = _predict_test(model, sd, mcfg)
        P = pred["voxels"]
        r = pearson_r(Y, P).astype(np.float32)
        mdir = ae_dir / "metrics" / s
        save_npy(mdir / "r.npy", r)
        save_npy(mdir / "r2.npy", r2_score(Y, P).astype(np.float32))
        ridge_r, ceiling = ridge_rows.get(s, (None, None))
        same = (s in ridge_rows) if (out / "predictions" / s / "test_true.npy").is_file() else None
        if ridge_r is not None:
            save_npy(mdir / "ridge_r.npy", ridge_r)
        if ceiling is not None:
            save_npy(mdir / "r_normalised.npy", normalised_score(r, ceiling).astype(np.float32))
        sel_all = {"all": np.ones(r.shape, bool), **regions}
        for name, sel in sel_all.items():
            row = {
                "subject": s,
                "region": name,
                "n_voxels": int(sel.sum()),
                "autoencoder_median_r": float(np.median(r[sel])),
            }
            if ridge_r is not None:
                row["ridge_median_r"] = float(np.median(ridge_r[sel]))
                row["ratio"] = (
                    row["autoencoder_median_r"] / row["ridge_median_r"]
                    if row["ridge_median_r"] > 0
                    else None
                )
                row["fraction_voxels_autoencoder_better"] = float((r[sel] > ridge_r[sel]).mean())
            if ceiling is not None and ceiling.shape == r.shape:
                row["median_ceiling"] = float(np.median(ceiling[sel]))
            rows.append(row)
        per_subject[s] = {
            "median_r": float(np.median(r)),
            "max_r": float(np.max(r)),
            "same_test_responses_as_ridge": same,
        }
        # Reconstruction of the held-out stimulus, per modality, against the training mean.
        for m, loss in pred["recon_loss"].items():
            target = sd.inputs[m][test_rows]
            kind = mcfg.recon_loss_of(m)
            train_dir = sd.inputs[m][sd.rows("train")].reshape(len(sd.rows("train")), -1)
            train_dir = (
                train_dir / np.maximum(np.linalg.norm(train_dir, axis=1, keepdims=True), 1e-8)
            ).mean(0)
            base = _recon_baseline(target, kind, train_dir)
            recon.setdefault(
                m,
                {
                    "loss": kind,
                    "autoencoder": float(loss),
                    "mean_baseline": base,
                    "ratio": float(loss) / base if base > 0 else None,
                },
            )
    table = _region_table(rows)
    result = {
        "preset": config.autoencoder.preset,
        "rows": rows,
        "regions": table,
        "subjects": per_subject,
        "reconstruction": recon,
    }
    info_path = ae_dir / "model.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        result["training"] = {
            k: {
                kk: g[kk]
                for kk in ("steps", "epochs", "train_seconds", "best_val_r", "stopped_early")
            }
            for k, g in info["groups"].items()
        }
    write_json(ae_dir / "comparison.json", result)
    _log_comparison(table, recon, log)
    return result


def _region_table(rows: list[dict]) -> list[dict]:
    """Subject-averaged rows per region."""
    out = []
    for region in dict.fromkeys(r["region"] for r in rows):
        rs = [r for r in rows if r["region"] == region]
        row: dict[str, Any] = {"region": region, "n_voxels": rs[0]["n_voxels"]}
        for key in (
            "autoencoder_median_r",
            "ridge_median_r",
            "median_ceiling",
            "fraction_voxels_autoencoder_better",
        ):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                row[key] = float(np.mean(vals))
        if row.get("ridge_median_r"):
            row["ratio"] = row["autoencoder_median_r"] / row["ridge_median_r"]
        out.append(row)
    return out


def _log_comparison(table: list[dict], recon: dict, log: Log) -> None:
    log("  autoencoder vs ridge, held-out median r (mean over subjects):")
    log(
        f"    {'region':<10} {'voxels':>7} {'autoenc.':>9} {'ridge':>7} {'ratio':>6} {'ceiling':>8}"
    )

    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    for row in table:
        log(
            f"    {row['region']:<10} {row['n_voxels']:>7} {f(row.get('autoencoder_median_r')):>9} "
            f"{f(row.get('ridge_median_r')):>7} {f(row.get('ratio'), '.2f'):>6} "
            f"{f(row.get('median_ceiling')):>8}"
        )
    if recon:
        log("  held-out reconstruction loss vs predicting the training mean:")
        for m, v in recon.items():
            log(
                f"    {m:<6} {v['loss']:<7} {v['autoencoder']:.3f} vs {v['mean_baseline']:.3f} "
                f"({v['ratio']:.2f} of the baseline)"
            )


def _update_summary(out: Path, result: dict) -> None:
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary["autoencoder"] = {
        k: result[k] for k in ("preset", "regions", "reconstruction", "training") if k in result
    }
    write_json(path, summary)


# --------------------------------------------------------------------------- lesions
def lesion(
    config: RunConfig,
    modalities: Sequence[str] = (),
    units: Sequence[int] = (),
    top_k_for_roi: tuple[str, int] | None = None,
    mode: str = "zero",
    name: str | None = None,
    data: DeepData | None = None,
    log: Log = _print,
) -> dict:
    """In-silico lesion of the trained autoencoder on the test runs.

    Removes ``modalities`` from the combiner and ablates bottleneck ``units`` (``mode``:
    "zero" or "mean" over the training data); ``top_k_for_roi=(region, k)`` adds the k
    units that most drive the region's voxels (gradient x activation on the training
    data, summed over subjects). Writes per-voxel NIfTI maps of the change in predicted
    response (``change``: std over TRs of lesioned - intact), relative change and loss of
    r, per subject and averaged, and ``lesion.json`` with reconstruction loss per modality
    with and without the lesion.
    """
    import torch

    from cinebrain.models import Lesion
    from cinebrain.models.lesion import bottleneck_stats, run_lesion, top_units
    from cinebrain.report.maps import save_map

    if not modalities and not units and top_k_for_roi is None:
        raise ConfigError(
            "lesion", "nothing to lesion", "give --modalities, --units or --top-k-for-roi"
        )
    data = prepare(config, log) if data is None else data
    out = Path(config.out)
    study = _load_study(config)
    mask_img = study_mask(config, study, log)
    units = [int(u) for u in units]
    first = next(iter(data.subjects))
    model0, mcfg0 = load_model(config, first)
    bad = [m for m in modalities if m not in mcfg0.modalities]
    if bad:
        raise ConfigError(
            "--modalities",
            f"the model has no {', '.join(bad)} input",
            f"use {', '.join(mcfg0.modalities)}",
        )
    if len(set(modalities)) >= len(mcfg0.modalities):
        raise ConfigError("--modalities", "lesioning every modality leaves no input", "keep one")
    D = mcfg0.bottleneck_dim
    if any(not 0 <= u < D for u in units):
        raise ConfigError(
            "--units", f"unit indices must be in [0, {D})", f"the bottleneck has {D} units"
        )
    if top_k_for_roi is not None:
        region, k = top_k_for_roi
        regions = _regions(config, study, mask_img)
        if region not in regions:
            raise ConfigError(
                "--top-k-for-roi",
                f"unknown region {region!r}",
                f"use one of {', '.join(regions) or '(none: set evaluate.rois)'}",
            )
        importance = np.zeros(D)
        for s, sd in data.subjects.items():
            model, mcfg = load_model(config, s)
            _, imp = top_units(
                model,
                np.flatnonzero(regions[region]),
                min(int(k), D),
                dataset=sd.dataset(mcfg, "train"),
                subject=s,
            )
            importance += imp / max(imp.sum(), 1e-12)
        chosen = np.argsort(-importance, kind="stable")[: int(k)].tolist()
        units = sorted(set(units) | set(chosen))
        log(f"  top {k} units for {region}: {chosen}")
    parts = [f"modality-{'+'.join(modalities)}"] if modalities else []
    if units:
        parts.append(
            f"{mode}-units-"
            + (
                f"top{top_k_for_roi[1]}-{top_k_for_roi[0]}"
                if top_k_for_roi
                else "-".join(map(str, units[:8])) + ("-etc" if len(units) > 8 else "")
            )
        )
    name = name or "_".join(parts)
    ldir = out / AE_DIR / "lesions" / name
    result: dict[str, Any] = {
        "name": name,
        "modalities": list(modalities),
        "units": units,
        "mode": mode,
        "subjects": {},
    }
    maps: dict[str, list[np.ndarray]] = {"change": [], "relative_change": [], "delta_r": []}
    for s, sd in data.subjects.items():
        model, mcfg = load_model(config, s)
        unit_means = None
        if units and mode == "mean":
            unit_means = bottleneck_stats(model, sd.dataset(mcfg, "train"))[0]
        les = Lesion(
            units=units or None, mode=mode, unit_means=unit_means, modalities=tuple(modalities)
        )
        with torch.no_grad():
            res = run_lesion(model, sd.dataset(mcfg, "test"), les)
        per = {"change": res.change, "relative_change": res.relative_change}
        if res.delta_r is not None:
            per["delta_r"] = res.delta_r
        for key, values in per.items():
            values = np.nan_to_num(np.asarray(values, dtype=np.float32))
            maps[key].append(values)
            if mask_img is not None:
                save_map(values, mask_img, ldir / f"{s}_{key}.nii.gz")
            else:
                save_npy(ldir / f"{s}_{key}.npy", values)
        entry: dict[str, Any] = {
            "recon": res.recon,
            "median_change": float(np.median(res.change)),
            "median_relative_change": float(np.median(res.relative_change)),
        }
        if res.r_intact is not None:
            entry["median_r_intact"] = float(np.median(res.r_intact))
            entry["median_r_lesioned"] = float(np.median(res.r_lesioned))
        regions = _regions(config, study, mask_img)
        entry["regions"] = {
            k: {
                "n_voxels": int(sel.sum()),
                "mean_relative_change": float(np.mean(res.relative_change[sel])),
                **(
                    {"median_delta_r": float(np.median(res.delta_r[sel]))}
                    if res.delta_r is not None
                    else {}
                ),
            }
            for k, sel in regions.items()
        }
        result["subjects"][s] = entry
    if mask_img is not None and len(data.subjects) >= 2:
        for key, vals in maps.items():
            if vals:
                save_map(np.mean(vals, axis=0), mask_img, ldir / f"mean_{key}.nii.gz")
    write_json(ldir / "lesion.json", result)
    _log_lesion(result, log)
    return result


def _log_lesion(result: dict, log: Log) -> None:
    log(f"  lesion {result['name']}:")
    subjects = list(result["subjects"].values())
    regions = subjects[0]["regions"]
    for k in regions:
        rel = np.mean([s["regions"][k]["mean_relative_change"] for s in subjects])
        dr = [s["regions"][k].get("median_delta_r") for s in subjects]
        dr_txt = f", median delta r {np.mean(dr):+.3f}" if None not in dr else ""
        log(f"    {k:<10} relative change of the predicted response {rel:.2f}{dr_txt}")
    for m, v in subjects[0]["recon"].items():
        log(f"    reconstruction {m:<6} {v['intact']:.3f} -> {v['lesioned']:.3f}")


# --------------------------------------------------------------------------- reconstruction
def reconstruct(
    config: RunConfig, model, mcfg, data: DeepData, log: Log = _print
) -> dict[str, Path]:
    """Write the test runs' reconstructed stimulus: ``video.mp4`` (luminance channel),
    ``audio.wav`` (Griffin-Lim from the mel spectrum) and ``text.tsv`` (nearest annotation
    sentence per TR), in ``autoencoder/reconstruction/``."""
    from cinebrain.models.reconstruct import write_frames_video, write_mel_wav, write_nearest_text

    settings = config.autoencoder
    rdir = Path(config.out) / AE_DIR / "reconstruction"
    sd = next(iter(data.subjects.values()))
    pred = _predict_test(model, sd, mcfg)
    rows = sd.rows("test")
    written: dict[str, Path] = {}
    if "recon_video" in pred:
        frames = pred["recon_video"]  # (n, C, H, W), z-scored
        mean, std = data.input_stats["video"]
        shape = frames.shape[1:]
        ch = (
            list(settings.video_channels).index("luminance")
            if "luminance" in settings.video_channels
            else 0
        )
        lum = frames * std.reshape(shape) + mean.reshape(shape)
        true = sd.inputs["video"][rows] * std.reshape(shape) + mean.reshape(shape)
        # Reconstruction above, presented frames below, on one grey scale.
        both = np.concatenate([lum[:, ch : ch + 1], true[:, ch : ch + 1]], axis=2)
        lo, hi = np.percentile(true[:, ch], [1, 99])
        written["video"] = write_frames_video(
            rdir / "video.mp4", both, data.tr, fps=10, value_range=(float(lo), float(hi)), upscale=8
        )
    if "recon_audio" in pred:
        mean, std = data.input_stats["audio"]
        sr = config.features.audio_sr
        hop = int(round(0.05 * sr))
        n_fft = int(2 ** np.ceil(np.log2(max(2 * hop, 512))))
        written["audio"] = write_mel_wav(
            rdir / "audio.wav",
            pred["recon_audio"],
            data.tr,
            sr=sr,
            n_fft=n_fft,
            hop_length=n_fft // 4,
            fmin=30.0,
            mean=mean,
            std=std,
        )
    if "recon_text" in pred:
        mean, std = data.input_stats["text"]
        vocab, sentences = _annotation_vocabulary(config)
        if vocab is not None:
            emb = pred["recon_text"] * std + mean
            true = sd.inputs["text"][rows] * std + mean
            from cinebrain.models.reconstruct import nearest_sentences

            presented, _, _ = nearest_sentences(true, vocab, sentences)
            written["text"] = write_nearest_text(
                rdir / "text.tsv", emb, vocab, sentences, data.tr, target=presented
            )
    if written:
        log(f"  reconstruction: {', '.join(str(p.name) for p in written.values())} in {rdir}")
    return written


def _annotation_vocabulary(config: RunConfig) -> tuple[np.ndarray | None, list[str]]:
    """Embeddings ``(n_rows, d)`` and texts of the annotation sentences of the text space."""
    name = config.autoencoder.text_space
    path = Path(config.out) / "features" / f"{name}.npz"
    if not path.is_file() or not name.startswith("annotations."):
        return None, []
    from cinebrain.io.annotations import read_annotations

    fs = FeatureSpace.load(path)
    study = _load_study(config)
    ann = study.stimulus.annotations
    column = name.split(".", 1)[1]
    if ann is None or column not in ann.text:
        return None, []
    df = read_annotations(
        study.resolve(ann.path),
        onset=ann.onset,
        offset=ann.offset,
        duration=ann.duration,
        unit=ann.unit,
        tr=study.tr,
        columns=[column],
    )
    texts = [str(t) for t in df[column].tolist()]
    if len(texts) != fs.n_samples:
        return None, []
    return fs.values, texts
