"""The autoencoder pipeline: train the multimodal autoencoder, compare it with ridge,
lesion it, and reconstruct the stimulus.

The autoencoder takes the ridge pipeline's data path: the same extracted feature spaces,
the same mask, the same response cleaning and the same held-out runs, so its held-out r is
scored on exactly the responses ridge was scored on, against the same noise ceiling. Its
inputs (:mod:`cinebrain.data.inputs`) are the feature spaces on the TR grid, not
HRF-convolved: the model's causal HRF layer supplies the lag. Early stopping watches
``val_r`` on the last block of the training runs; the test runs are never seen before
the final prediction. Paths: :class:`~cinebrain.pipelines.runfolder.AutoencoderFolder`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cinebrain._files import atomic_path, save_npy, write_json
from cinebrain.config import AutoencoderRunConfig, RunConfig, save_config, section_hash
from cinebrain.data.inputs import ModelData, SubjectInputs
from cinebrain.errors import ConfigError, InputError
from cinebrain.pipelines import ridge
from cinebrain.pipelines.runfolder import AutoencoderFolder, RunFolder, link_or_copy

Log = Callable[[str], None]
_print = ridge._print


# --------------------------------------------------------------------------- model config
def _merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in (nested dicts merge key by key)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def model_config(settings: AutoencoderRunConfig, n_voxels: dict[str, int] | None = None,
                 tr: float | None = None):
    """The :class:`~cinebrain.models.AutoencoderConfig` of a run: preset + overrides, with
    the run's modalities, voxel counts and TR. Raises :class:`ConfigError` naming the bad
    preset, key or value."""
    from cinebrain.models import AutoencoderConfig, get_preset

    base = get_preset(settings.preset).to_dict()
    for key in ("n_voxels", "tr"):
        if key in settings.overrides:
            raise ConfigError(f"autoencoder.overrides.{key}", "is set from the data",
                              "remove it from the overrides")
    merged = _merge(base, settings.overrides)
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


def _space_of(settings: AutoencoderRunConfig) -> dict[str, str]:
    spaces = {"video": settings.video_space, "audio": settings.audio_space,
              "text": settings.text_space}
    return {m: spaces[m] for m in settings.modalities}


def check(config: RunConfig) -> dict[str, tuple[int, ...]]:
    """Validate the autoencoder settings against the run's extracted features before any
    work: preset, overrides, modalities present, shapes. Returns the per-TR input shapes."""
    from cinebrain.data.inputs import input_space

    settings = config.autoencoder
    shapes = model_config(settings).input_shapes()
    _, spaces, _ = ridge.read_features(RunFolder(config.out))
    for m, space in _space_of(settings).items():
        input_space(spaces, m, space, shapes[m], video_channels=settings.video_channels,
                    pixel_size=tuple(config.features.pixel_size))
    return shapes


# --------------------------------------------------------------------------- data
def prepare(config: RunConfig, log: Log = _print) -> ModelData:
    """Inputs, cleaned responses and the split of every subject, as the ridge fit has them."""
    from cinebrain.data.design import clean_responses
    from cinebrain.data.inputs import split_ranges, standardize_inputs, stimulus_inputs
    from cinebrain.data.splits import HRF_LENGTH_S, gap_trs, run_index_from_lengths
    from cinebrain.data.study import load_responses, run_timings

    settings = config.autoencoder
    shapes = check(config)
    run = RunFolder(config.out)
    fm, spaces, mask = ridge.read_features(run)
    study = ridge.load(config)
    gap = gap_trs(study.tr, HRF_LENGTH_S)
    subjects: dict[str, SubjectInputs] = {}
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cache: dict[tuple, dict[str, np.ndarray]] = {}
    split: dict[str, Any] = {}
    for subject in ridge.check_subjects(config, study, fm):
        timings = run_timings(study, subject, spaces)
        names = [t.name for t in timings]
        test_runs = ridge.test_run_indices(config, names, config.study)
        lengths = [t.n_trs for t in timings]
        Y = clean_responses(load_responses(study, subject, timings, mask),
                            run_index_from_lengths(lengths), study.tr, config.alignment.high_pass)
        train, val, test = split_ranges(lengths, test_runs, settings.val_fraction, gap,
                                        f"{config.study} ({subject})")
        key = tuple((t.n_trs, tuple(t.segment), t.offset, t.response_shift) for t in timings)
        if key not in cache:
            cache[key] = stimulus_inputs(spaces, timings, study.tr, _space_of(settings), shapes,
                                         video_channels=settings.video_channels,
                                         pixel_size=tuple(config.features.pixel_size),
                                         slice_time_ref=study.slice_time_ref)
        train_rows = np.concatenate([np.arange(a, b) for a, b in train + val])
        inputs = {}
        for m, x in cache[key].items():
            # Statistics of the first subject's training runs, shared by all subjects, so
            # one stimulus always gets the same input.
            z, mean, std = standardize_inputs(x, train_rows, stats.get(m))
            stats.setdefault(m, (mean, std))
            inputs[m] = z
        subjects[subject] = SubjectInputs(subject, inputs, Y, names, lengths, train, val, test)
        split[subject] = {"train": train, "val": val, "test": test,
                          "test_runs": [names[i] for i in test_runs]}
    return ModelData(subjects, float(study.tr), stats, shapes, split)


def dataset(mcfg, sd: SubjectInputs, part: str):
    """The window dataset of a subject's ``part`` ("train", "val", "test") for a model."""
    from cinebrain.models import windows_for

    inputs, responses, lengths = sd.part(part)
    return windows_for(mcfg, inputs, responses, lengths, sd.subject)


# --------------------------------------------------------------------------- train
def train(config: RunConfig, log: Log = _print, resume: bool = False,
          data: ModelData | None = None) -> dict:
    """Train the autoencoder on the run's training runs; evaluate it on the test runs.

    The whole stage commits at once: a failure leaves the previous model in place.
    Returns the comparison written to ``autoencoder/comparison.json``.
    """
    import torch
    from torch.utils.data import ConcatDataset

    from cinebrain.data.windows import collate_windows
    from cinebrain.models import MultimodalAutoencoder
    from cinebrain.models.autoencoder.presets import module_parameters
    from cinebrain.train import Trainer, load_checkpoint

    settings = config.autoencoder
    if settings.threads:
        torch.set_num_threads(settings.threads)
    run = RunFolder(config.out)
    t0 = time.perf_counter()
    data = prepare(config, log) if data is None else data
    names = list(data.subjects)
    groups = [names] if settings.multi_subject else [[s] for s in names]
    if len(groups) > 1 and resume:
        raise ConfigError("--resume", "resuming needs autoencoder.multi_subject: true",
                          "train afresh")
    if resume and run.manifest("train") is None:
        raise InputError(run.root, "no trained autoencoder to resume", "train without --resume")
    log("  data: " + f"{len(names)} subject(s), inputs "
        + ", ".join(f"{m} {tuple(s)}" for m, s in data.shapes.items())
        + f" per TR ({time.perf_counter() - t0:.1f} s)")
    depends = ["features"] + (["fit"] if run.manifest("fit") else [])
    hash_ = section_hash(config, "study", "features", "subjects", "alignment", "split",
                         "autoencoder")
    with run.stage("train", depends=depends, config_hash=hash_, owns=("autoencoder",)) as st:
        ae = st.autoencoder
        if resume:
            # The committed checkpoints continue in the staging folder: hard links (the
            # engine replaces files, never writes into them), copies across file systems.
            shutil.copytree(run.autoencoder.base, ae.base, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("lesions"), copy_function=link_or_copy)
        info: dict[str, Any] = {"preset": settings.preset,
                                "settings": settings.model_dump(mode="json"),
                                "split": data.split, "groups": {}}
        for group in groups:
            mcfg = model_config(settings, {s: data.subjects[s].responses.shape[1] for s in group},
                                data.tr)
            model = MultimodalAutoencoder(mcfg)
            tag = "" if len(groups) == 1 else group[0]
            gdir = ae.group_dir(tag)
            train_ds = ConcatDataset([dataset(mcfg, data.subjects[s], "train") for s in group])
            val_ds = ConcatDataset([dataset(mcfg, data.subjects[s], "val") for s in group])
            counts = module_parameters(model)
            log(f"  model {settings.preset}: {counts['total'] / 1e6:.2f} M parameters; "
                f"{len(train_ds)} training / {len(val_ds)} validation windows of "
                f"{mcfg.window} TRs")
            tcfg = settings.train.model_copy(update={"out_dir": str(gdir),
                                                     "progress": config.progress})
            trainer = Trainer(model, tcfg, train_ds, val_ds, collate_fn=collate_windows)
            t1 = time.perf_counter()
            history = trainer.fit(resume=resume)
            seconds = time.perf_counter() - t1
            best = history.best_checkpoint or history.last_checkpoint
            if best is not None:
                model.load_state_dict(load_checkpoint(best, map_location="cpu")["model"])
            last_val = history.val[-1] if history.val else {}
            best_metric = history.best_metric if history.best_metric is not None else float("nan")
            log(f"  trained {trainer.step} steps ({trainer.epoch} epochs) in {seconds:.1f} s; "
                f"best val_r {best_metric:.3f} at step {history.best_step}"
                + (" (stopped early)" if history.stopped_early else ""))
            info["groups"][tag or "all"] = {
                "subjects": group, "model": mcfg.to_dict(), "parameters": counts,
                "steps": trainer.step, "epochs": trainer.epoch,
                "train_seconds": round(seconds, 1), "best_val_r": history.best_metric,
                "best_step": history.best_step, "stopped_early": history.stopped_early,
                "checkpoint": best.relative_to(ae.base).as_posix() if best is not None else None,
                "last_val": {k: v for k, v in last_val.items() if isinstance(v, (int, float))},
            }
            for s in group:
                pred = _predict_test(model, data.subjects[s], mcfg)
                save_npy(ae.prediction(s), pred["voxels"])
        with atomic_path(ae.input_stats) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"{m}_mean": v[0] for m, v in data.input_stats.items()},
                     **{f"{m}_std": v[1] for m, v in data.input_stats.items()})
        write_json(ae.model_json, info)
        result = evaluate(config, data, log, folder=ae)
        if settings.reconstruct:
            model, mcfg = load_model(config, names[0], folder=ae)
            reconstruct(config, model, mcfg, data, ae, log)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(ae.comparison, result)
        save_config(config, st.config)
        st.info = {"subjects": names}
    for stage in run.stages("lesion-"):  # lesions of the previous model
        run.forget(stage)
    return result



def _predict_test(model, sd: SubjectInputs, mcfg, lesion=None) -> dict:
    from cinebrain.models import predict_dataset

    return predict_dataset(model, dataset(mcfg, sd, "test"), lesion, keep=("voxels", "recon"))


def load_model(config: RunConfig, subject: str, folder: AutoencoderFolder | None = None):
    """The trained model whose head predicts ``subject`` (best checkpoint), in eval mode, on
    the run's training device. ``folder``: where the model is (default: the committed one)."""
    from cinebrain.models import AutoencoderConfig, MultimodalAutoencoder
    from cinebrain.train import load_checkpoint, resolve_device

    if folder is None:
        run = RunFolder(config.out)
        run.require("train")
        folder = run.autoencoder
    info = json.loads(folder.model_json.read_text())
    for group in info["groups"].values():
        if subject in group["subjects"]:
            mcfg = AutoencoderConfig.from_dict(group["model"])
            model = MultimodalAutoencoder(mcfg)
            state = load_checkpoint(folder.base / group["checkpoint"], map_location="cpu")
            model.load_state_dict(state["model"])
            # the training device, so predictions after training and on reloading come
            # from the same kernels
            device = resolve_device(config.autoencoder.train.device, key="autoencoder.train.device")
            return model.to(device).eval(), mcfg
    raise InputError(folder.model_json, f"no model predicts subject {subject}",
                     "retrain with that subject")


# --------------------------------------------------------------------------- evaluate
def _regions(config: RunConfig, run: RunFolder) -> dict[str, np.ndarray]:
    from cinebrain.evaluate import comparison_regions

    _, _, mask = ridge.read_features(run)
    modality, rois = ridge.regions_of(config, ridge.load(config), mask)
    return comparison_regions(modality, rois)


def _ridge_on_test_rows(run: RunFolder, data: ModelData) -> dict:
    """Banded ridge's r on exactly the autoencoder's test rows, per subject (with the
    ceiling to use there); subjects whose ridge fit did not predict those rows are left out."""
    from cinebrain.evaluate import scores_on_rows, select_rows

    if run.manifest("fit") is None:
        return {}
    run.require("fit")
    picked = {}
    for s, sd in data.subjects.items():
        if not run.prediction(s, "test_true").is_file():
            continue
        runs = [sd.run_names.index(n) for n in data.split[s]["test_runs"]]
        got = select_rows(np.load(run.prediction(s, "test_true"), mmap_mode="r"),
                          np.load(run.prediction(s, "test_pred"), mmap_mode="r"),
                          np.load(run.prediction(s, "test_run_index")), runs,
                          sd.responses[sd.rows("test")])
        if got is not None:
            picked[s] = got
    method = None
    ceilings = {}
    if run.manifest("evaluate") is not None:
        run.require("evaluate")
        method = json.loads(run.summary.read_text()).get("ceiling_method")
        ceilings = {s: np.load(run.metric(s, "ceiling")) if run.metric(s, "ceiling").is_file()
                    else None for s in picked}
    return scores_on_rows(picked, method, ceilings)


def evaluate(config: RunConfig, data: ModelData, log: Log = _print,
             folder: AutoencoderFolder | None = None) -> dict:
    """Held-out scores of the autoencoder per voxel and region, next to ridge's on the same
    rows, and its reconstruction against the training-mean baseline."""
    from cinebrain.evaluate import (
        average_comparison,
        compare_regions,
        normalised_score,
        pearson_r,
        r2_score,
        reconstruction_comparison,
    )

    run = RunFolder(config.out)
    folder = folder or run.autoencoder
    regions = _regions(config, run)
    ridge_rows = _ridge_on_test_rows(run, data)
    rows, per_subject, recon = [], {}, {}
    for s, sd in data.subjects.items():
        model, mcfg = load_model(config, s, folder)
        test_rows = sd.rows("test")
        Y = sd.responses[test_rows]
        pred = _predict_test(model, sd, mcfg)
        r = pearson_r(Y, pred["voxels"]).astype(np.float32)
        save_npy(folder.metric(s, "r"), r)
        save_npy(folder.metric(s, "r2"), r2_score(Y, pred["voxels"]).astype(np.float32))
        ridge_r, ceiling = ridge_rows.get(s, (None, None))
        if ridge_r is not None:
            save_npy(folder.metric(s, "ridge_r"), ridge_r)
        if ceiling is not None:
            save_npy(folder.metric(s, "r_normalised"),
                     normalised_score(r, ceiling).astype(np.float32))
        rows += compare_regions(r, ridge_r, regions, ceiling=ceiling, subject=s)
        per_subject[s] = {"median_r": float(np.median(r)), "max_r": float(np.max(r)),
                          "same_test_responses_as_ridge": (s in ridge_rows) if ridge_rows else None}
        for m, loss in pred["recon_loss"].items():
            recon.setdefault(m, reconstruction_comparison(
                loss, sd.inputs[m][test_rows], mcfg.recon_loss_of(m),
                sd.inputs[m][sd.rows("train")]))
    table = average_comparison(rows)
    result = {"preset": config.autoencoder.preset, "rows": rows, "regions": table,
              "subjects": per_subject, "reconstruction": recon}
    if folder.model_json.is_file():
        info = json.loads(folder.model_json.read_text())
        result["training"] = {k: {kk: g[kk] for kk in ("steps", "epochs", "train_seconds",
                                                        "best_val_r", "stopped_early")}
                              for k, g in info["groups"].items()}
    _log_comparison(table, recon, log)
    return result


def _log_comparison(table: list[dict], recon: dict, log: Log) -> None:
    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    log("  autoencoder vs ridge, held-out median r (mean over subjects):")
    log(f"    {'region':<10} {'voxels':>7} {'autoenc.':>9} {'ridge':>7} {'ratio':>6} {'ceiling':>8}")
    for row in table:
        log(f"    {row['region']:<10} {row['n_voxels']:>7} {f(row.get('autoencoder_median_r')):>9} "
            f"{f(row.get('ridge_median_r')):>7} {f(row.get('ratio'), '.2f'):>6} "
            f"{f(row.get('median_ceiling')):>8}")
    if recon:
        log("  held-out reconstruction loss vs predicting the training mean:")
        for m, v in recon.items():
            log(f"    {m:<6} {v['loss']:<7} {v['autoencoder']:.3f} vs {v['mean_baseline']:.3f} "
                f"({f(v['ratio'], '.2f')} of the baseline)")


# --------------------------------------------------------------------------- lesions
def lesion(config: RunConfig, modalities: Sequence[str] = (), units: Sequence[int] = (),
           top_k_for_roi: tuple[str, int] | None = None, mode: str = "zero",
           name: str | None = None, data: ModelData | None = None, log: Log = _print) -> dict:
    """In-silico lesion of the trained autoencoder on the test runs.

    Removes ``modalities`` from the combiner and ablates bottleneck ``units`` (``mode``:
    "zero" or "mean" over the training data); ``top_k_for_roi=(region, k)`` adds the k
    units that most drive the region's voxels (gradient x activation on the training
    data, summed over subjects). Writes per-voxel maps of the change in predicted response,
    its relative change and the loss of r, per subject and averaged, and ``lesion.json``.
    """
    import torch

    from cinebrain.evaluate import lesion_maps, lesion_summary, mean_maps
    from cinebrain.io.nifti import unmask
    from cinebrain.models import Lesion
    from cinebrain.models.lesion import bottleneck_stats, run_lesion, top_units

    if not modalities and not units and top_k_for_roi is None:
        raise ConfigError("lesion", "nothing to lesion",
                          "give --modalities, --units or --top-k-for-roi")
    run = RunFolder(config.out)
    run.require("train")
    data = prepare(config, log) if data is None else data
    _, _, mask_img = ridge.read_features(run)
    units = [int(u) for u in units]
    model0, mcfg0 = load_model(config, next(iter(data.subjects)))
    bad = [m for m in modalities if m not in mcfg0.modalities]
    if bad:
        raise ConfigError("--modalities", f"the model has no {', '.join(bad)} input",
                          f"use {', '.join(mcfg0.modalities)}")
    if len(set(modalities)) >= len(mcfg0.modalities):
        raise ConfigError("--modalities", "lesioning every modality leaves no input", "keep one")
    D = mcfg0.bottleneck_dim
    if any(not 0 <= u < D for u in units):
        raise ConfigError("--units", f"unit indices must be in [0, {D})",
                          f"the bottleneck has {D} units")
    regions = _regions(config, run)
    if top_k_for_roi is not None:
        region, k = top_k_for_roi
        if region not in regions:
            raise ConfigError("--top-k-for-roi", f"unknown region {region!r}",
                              f"use one of {', '.join(regions) or '(none: set evaluate.rois)'}")
        importance = np.zeros(D)
        for s, sd in data.subjects.items():
            model, mcfg = load_model(config, s)
            _, imp = top_units(model, np.flatnonzero(regions[region]), min(int(k), D),
                               dataset=dataset(mcfg, sd, "train"), subject=s)
            importance += imp / max(imp.sum(), 1e-12)
        chosen = np.argsort(-importance, kind="stable")[: int(k)].tolist()
        units = sorted(set(units) | set(chosen))
        log(f"  top {k} units for {region}: {chosen}")
    parts = [f"modality-{'+'.join(modalities)}"] if modalities else []
    if units:
        which = (f"top{top_k_for_roi[1]}-{top_k_for_roi[0]}" if top_k_for_roi
                 else "-".join(map(str, units[:8])) + ("-etc" if len(units) > 8 else ""))
        parts.append(f"{mode}-units-{which}")
    name = name or "_".join(parts)
    result: dict[str, Any] = {"name": name, "modalities": list(modalities), "units": units,
                              "mode": mode, "subjects": {}}
    with run.stage(f"lesion-{name}", depends=["train"]) as st:
        ae = st.autoencoder
        per_subject_maps = []
        for s, sd in data.subjects.items():
            model, mcfg = load_model(config, s)
            unit_means = None
            if units and mode == "mean":
                unit_means = bottleneck_stats(model, dataset(mcfg, sd, "train"))[0]
            les = Lesion(units=units or None, mode=mode, unit_means=unit_means,
                         modalities=tuple(modalities))
            with torch.no_grad():
                res = run_lesion(model, dataset(mcfg, sd, "test"), les)
            maps = lesion_maps(res)
            per_subject_maps.append(maps)
            for key, values in maps.items():
                if mask_img is not None:
                    ridge._save_nifti(unmask(values, mask_img), ae.lesion_map(name, s, key))
                else:
                    save_npy(ae.lesion_map(name, s, key, nifti=False), values)
            result["subjects"][s] = lesion_summary(res, regions)
        if mask_img is not None and len(data.subjects) >= 2:
            for key, values in mean_maps(per_subject_maps).items():
                ridge._save_nifti(unmask(values, mask_img), ae.lesion_map(name, None, key))
        write_json(ae.lesion_json(name), result)
    _log_lesion(result, log)
    return result


def _log_lesion(result: dict, log: Log) -> None:
    from cinebrain.evaluate import average_lesion_regions

    log(f"  lesion {result['name']}:")
    subjects = list(result["subjects"].values())
    for k, v in average_lesion_regions(subjects).items():
        dr = v.get("median_delta_r")
        dr_txt = f", median delta r {dr:+.3f}" if dr is not None else ""
        log(f"    {k:<10} relative change of the predicted response "
            f"{v['mean_relative_change']:.2f}{dr_txt}")
    for m, v in subjects[0]["recon"].items():
        log(f"    reconstruction {m:<6} {v['intact']:.3f} -> {v['lesioned']:.3f}")


# --------------------------------------------------------------------------- reconstruction
def reconstruct(config: RunConfig, model, mcfg, data: ModelData, folder: AutoencoderFolder,
                log: Log = _print) -> dict:
    """Write the test runs' reconstructed stimulus: video (luminance channel above the
    presented frames), audio (Griffin-Lim from the mel spectrum) and text (nearest
    annotation sentence per TR)."""
    from cinebrain.models.reconstruct import (
        nearest_sentences,
        write_frames_video,
        write_mel_wav,
        write_nearest_text,
    )

    settings = config.autoencoder
    sd = next(iter(data.subjects.values()))
    pred = _predict_test(model, sd, mcfg)
    rows = sd.rows("test")
    written = {}
    if "recon_video" in pred:
        mean, std = data.input_stats["video"]
        shape = pred["recon_video"].shape[1:]
        ch = (list(settings.video_channels).index("luminance")
              if "luminance" in settings.video_channels else 0)
        recon = pred["recon_video"] * std.reshape(shape) + mean.reshape(shape)
        true = sd.inputs["video"][rows] * std.reshape(shape) + mean.reshape(shape)
        both = np.concatenate([recon[:, ch: ch + 1], true[:, ch: ch + 1]], axis=2)
        lo, hi = np.percentile(true[:, ch], [1, 99])
        written["video"] = write_frames_video(folder.reconstruction("video"), both, data.tr,
                                              fps=10, value_range=(float(lo), float(hi)),
                                              upscale=8)
    if "recon_audio" in pred:
        mean, std = data.input_stats["audio"]
        sr = config.features.audio_sr
        hop = int(round(0.05 * sr))
        n_fft = int(2 ** np.ceil(np.log2(max(2 * hop, 512))))
        written["audio"] = write_mel_wav(folder.reconstruction("audio"), pred["recon_audio"],
                                         data.tr, sr=sr, n_fft=n_fft, hop_length=n_fft // 4,
                                         fmin=30.0, mean=mean, std=std)
    if "recon_text" in pred:
        mean, std = data.input_stats["text"]
        vocab, sentences = _annotation_vocabulary(config)
        if vocab is not None:
            emb = pred["recon_text"] * std + mean
            presented, _, _ = nearest_sentences(sd.inputs["text"][rows] * std + mean, vocab,
                                                sentences)
            written["text"] = write_nearest_text(folder.reconstruction("text"), emb, vocab,
                                                 sentences, data.tr, target=presented)
    if written:
        log(f"  reconstruction: {', '.join(p.name for p in written.values())}")
    return written


def _annotation_vocabulary(config: RunConfig) -> tuple[np.ndarray | None, list[str]]:
    """Embeddings ``(n_rows, d)`` and texts of the annotation sentences of the text space."""
    from cinebrain.io.annotations import read_annotations

    name = config.autoencoder.text_space
    _, spaces, _ = ridge.read_features(RunFolder(config.out))
    if name not in spaces or not name.startswith("annotations."):
        return None, []
    fs = spaces[name]
    study = ridge.load(config)
    ann = study.stimulus.annotations
    column = name.split(".", 1)[1]
    if ann is None or ann.path is None or column not in ann.text:
        return None, []
    df = read_annotations(study.resolve(ann.path), columns=[column], warn=False,
                          numeric=list(ann.numeric), **ann.reading(study.tr))
    texts = [str(t) for t in df[column].tolist()]
    if len(texts) != fs.n_samples:
        return None, []
    return fs.values, texts
