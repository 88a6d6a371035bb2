"""The neuron pipeline: train a core + readout model on recording sessions, score it on
the test trials per neuron, beside a frame-ridge baseline on the same trials.

``train(config)`` reads every session (validated), splits its trials by tier (all repeats
of a clip in one part), computes the normalisation statistics on the training trials only,
trains :func:`~cinebrain.models.neurons.make_neuron_model` with the engine
(:class:`cinebrain.train.Trainer`: checkpoints, exact resume, early stopping on ``val_r``)
and then runs ``evaluate(config)``: every test trial is predicted *whole* in one pass by
default (the model is causal, so frame t sees frames <= t of its trial and nothing else;
``evaluate.predict_frames`` predicts in windows instead, each window after the first
starting ``model.burn_in`` frames before the frames it contributes). Scores per neuron
(:mod:`cinebrain.evaluate.neurons`), with ``skip_frames`` leading frames of every test
trial left out of all of them:

- ``single_trial_r``: Sensorium 2023's single-trial correlation, every test trial's
  frames concatenated;
- ``correlation_to_average``, ``oracle_r``, ``feve``, ``ccnorm``: on the test clips shown
  at least twice, each clip's first ``k`` repeats (``k`` the fewest repeats of any clip),
  the clips' frames concatenated in time (the pooled form of each formula); the
  predictions averaged over those repeats;
- ``bits_per_spike``: Poisson log-likelihood gain over each neuron's mean training rate,
  the predicted rates floored at :data:`cinebrain.evaluate.neurons.RATE_FLOOR`;
- ``behavior_shuffle_drop``: ``single_trial_r`` minus the same r with the behaviour
  (running, pupil size) of each test trial given to another test trial of the same length;
  the eye position, which moves the image on the retina, stays the trial's own.

The baseline is ridge on block-averaged pixels with causal frame delays, fit per session on
its training trials (CV over whole trials), scored the same way on the same frames.

Run folder (a neuron run has no study; the stages are ``neurons-train`` and
``neurons-evaluate``, each committed at once through :class:`RunFolder` staging, so a
failure leaves the previous outputs as they were)::

    config.yaml                            the resolved NeuronRunConfig
    neurons/model.json                     model config, sessions, split, training summary
    neurons/stats.json                     per-session normalisation stats (training trials)
    neurons/checkpoints/, metrics.jsonl    the training engine's
    neurons/predictions/<session>/         test_true, test_pred, test_pred_shuffled,
                                           baseline_pred (frames of every test trial in
                                           order, (F, N)), test_trials, test_lengths,
                                           test_clip_ids, null_rate
    neurons/metrics/<session>/<metric>.npy           the model's per-neuron scores
    neurons/metrics/<session>/baseline_<metric>.npy  the baseline's
    neurons/metrics/<session>/{reading_centre, true_centre, learned_running_gain, ...}.npy
                                           against a simulated study's ground truth
    summary.json                           median and mean of every score, per session and
                                           over all neurons
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cinebrain._files import hash_inputs, save_npy, write_json
from cinebrain.config.neurons import NeuronRunConfig, save_neuron_config
from cinebrain.errors import ConfigError, InputError
from cinebrain.evaluate.neurons import repeat_arrays, score_trials, shuffle_order
from cinebrain.io.neurons import NeuronSession, read_neuron_session
from cinebrain.models.neurons import predict_trials
from cinebrain.pipelines.runfolder import NeuronFolder, RunFolder, link_or_copy

Log = Callable[[str], None]

TRAIN_STAGE = "neurons-train"
EVALUATE_STAGE = "neurons-evaluate"


def _print(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- sessions
def load_sessions(config: NeuronRunConfig, log: Log = _print) -> list[NeuronSession]:
    """Every session of the config, read and validated, frames downsampled as configured;
    names unique, frame sizes and behaviour columns equal across sessions."""
    from cinebrain.data.neurons import downsample_session

    try:
        sessions = [downsample_session(read_neuron_session(p), config.data.downsample)
                    for p in config.sessions]
    except InputError:
        raise
    except ValueError as e:  # the factor, not the file
        raise ConfigError("data.downsample", str(e), "use a smaller factor") from None
    names: dict[str, str] = {}
    for s in sessions:
        if s.name in names:
            raise InputError(s.source, f"session name {s.name!r} is also the name of "
                             f"{names[s.name]}", "give each session its own name")
        names[s.name] = str(s.source)
        low = min(float(r.min()) for r in s.responses if r.size)
        if low < 0:
            raise InputError(s.source, f"responses go down to {low:g}: the Poisson loss needs "
                             "spike counts or non-negative activity",
                             "give counts, or deconvolved calcium activity clipped at 0")
        for tier in ("train", "test"):
            if len(s.trials(tier)) == 0:
                raise InputError(s.source, f"has no {tier} trials",
                                 f"give the session {tier} trials (tiers)")
    first = sessions[0]
    for s in sessions[1:]:
        if s.frame_shape != first.frame_shape:
            raise InputError(s.source, f"frames of {s.frame_shape}, {first.source} has "
                             f"{first.frame_shape}", "give every session frames of one size")
        if s.behavior[0].shape[1] != first.behavior[0].shape[1]:
            raise InputError(s.source, f"{s.behavior[0].shape[1]} behaviour columns, "
                             f"{first.source} has {first.behavior[0].shape[1]}",
                             "give every session the same behaviour columns")
    return sessions


def fingerprint(session: NeuronSession) -> str:
    """A hash of what a trained model relies on: tiers, clip ids, neuron ids, frame counts
    and frame size (evaluation refuses sessions that changed since training)."""
    h = hashlib.sha1()
    for part in (session.tiers, session.clip_ids, session.neuron_ids):
        h.update("\x1f".join(map(str, part)).encode())
    h.update(str([int(v.shape[0]) for v in session.videos]).encode())
    h.update(str(session.frame_shape).encode())
    return h.hexdigest()[:16]


@dataclass
class NeuronData:
    """The sessions of a run, their split and their training statistics."""

    sessions: list[NeuronSession]
    split: dict[str, dict[str, np.ndarray]]  # session -> part -> trial indices
    stats: dict[str, Any]  # session -> SessionStats

    def part(self, name: str) -> dict[str, np.ndarray]:
        return {s: parts[name] for s, parts in self.split.items()}


def prepare(config: NeuronRunConfig, log: Log = _print) -> NeuronData:
    """Read the sessions, split their trials, compute training-only statistics."""
    from cinebrain.data.neurons import normalization_stats, split_trials

    sessions = load_sessions(config, log)
    split = {s.name: split_trials(s, validation=config.data.validation, by="tier",
                                  seed=config.data.seed) for s in sessions}
    for s in sessions:
        if len(split[s.name]["validation"]) == 0:
            raise InputError(s.source, "has no validation trials (early stopping needs them)",
                             "give the session validation (oracle) trials, or set "
                             "data.validation to a fraction of its training clips")
    stats = normalization_stats(sessions, {n: p["train"] for n, p in split.items()})
    return NeuronData(sessions, split, stats)


# --------------------------------------------------------------------------- model
def _specs(data: NeuronData) -> dict[str, dict]:
    """The model's sessions; mean responses over the training trials of the split."""
    specs = {}
    for s in data.sessions:
        st = data.stats[s.name]
        specs[s.name] = {"n_neurons": s.n_neurons,
                         "mean_response": np.asarray(st.response_mean, np.float32).tolist(),
                         "n_behavior": int(s.behavior[0].shape[1])}
    return specs


def check(config: NeuronRunConfig) -> None:
    """Build the configured core once, so that a bad core option fails before any reading."""
    from cinebrain.models.neurons import make_core

    try:
        make_core(config.model.core, **dict(config.model.core_options))
    except InputError as e:
        raise ConfigError("model.core_options", str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError("model.core_options", f"bad option for the {config.model.core} core: "
                          f"{e}", "fix model.core_options") from None


def build_model(config: NeuronRunConfig, data: NeuronData):
    """The configured :class:`~cinebrain.models.neurons.NeuronModel` for the run's sessions
    (pupil position standardised by the dataset, so the shifters take it as given)."""
    from cinebrain.models.neurons import make_neuron_model

    m = config.model
    options = dict(modulator=m.modulator, shifter=m.shifter, nonlinearity=m.nonlinearity,
                   l1=m.l1, burn_in=m.burn_in, readout=dict(m.readout))
    if m.modulator is not None:
        options["modulator_hidden"] = m.modulator_hidden
    if m.shifter:
        options["shifter_hidden"] = m.shifter_hidden
    h, w = data.sessions[0].frame_shape
    try:
        model = make_neuron_model(m.core, _specs(data), core_options=dict(m.core_options),
                                  frame_shape=(config.data.frames, h, w), **options)
    except InputError as e:
        raise ConfigError("model", str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError("model.core_options", f"bad option for the {m.core} core: {e}",
                          "fix model.core_options") from None
    if m.init_positions == "energy":
        import torch

        from cinebrain.data.neurons import energy_positions

        # a readout far from its receptive field finds it slowly (its position's gradient is
        # noisy): start each neuron where contrast energy best predicts it (training trials)
        with torch.no_grad():
            for s in data.sessions:
                xy = energy_positions(s, data.split[s.name]["train"])
                model.readouts[s.name].mu.copy_(torch.from_numpy(xy))
    return model


def _datasets(config: NeuronRunConfig, data: NeuronData):
    from cinebrain.data.neurons import NeuronClipDataset

    d = config.data
    common = dict(frames=d.frames, stats=data.stats)
    train = NeuronClipDataset(data.sessions, data.part("train"), stride=d.stride,
                              random_offset=d.random_offset, seed=d.seed, **common)
    val = NeuronClipDataset(data.sessions, data.part("validation"), **common)
    return train, val



def _threads(config: NeuronRunConfig) -> None:
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)


def train(config: NeuronRunConfig, log: Log = _print, resume: bool = False,
          evaluate_after: bool = True) -> dict:
    """Train the model of ``config`` into its run folder (stage ``neurons-train``), then
    evaluate it (stage ``neurons-evaluate``) unless ``evaluate_after`` is false.

    ``resume``: continue from the committed ``neurons/checkpoints/last.pt`` (the engine
    restores the data order, optimiser, schedule and RNGs; ``train.epochs`` may grow).
    Returns the training summary (``neurons/model.json``), with the evaluation summary
    under ``"evaluation"``.
    """

    import torch

    from cinebrain.train import Trainer
    from cinebrain.train.distributed import (
        all_gather_objects,
        barrier,
        cleanup_distributed,
        setup_distributed,
    )

    _threads(config)
    run = RunFolder(config.out)
    run.check_writable()
    if resume and run.manifest(TRAIN_STAGE) is None:
        raise InputError(run.root, "no trained neuron model to resume",
                         "train without --resume")
    t0 = time.perf_counter()
    check(config)
    data = prepare(config, log)
    log("  sessions: " + ", ".join(f"{s.name} ({s.n_neurons} neurons, "
                                   + "/".join(str(len(data.split[s.name][p]))
                                              for p in ("train", "validation", "test"))
                                   + " trials)" for s in data.sessions)
        + f"; frames {data.sessions[0].frame_shape}")
    torch.manual_seed(config.train.seed)  # the initial weights: one run, one model
    model = build_model(config, data)
    train_ds, val_ds = _datasets(config, data)
    for part, ds in (("training", train_ds), ("validation", val_ds)):
        if ds.dropped:
            log(f"  {len(ds.dropped)} {part} trial(s) shorter than {config.data.frames} frames "
                "left out (data.frames is longer than they are)")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"  model: {config.model.core} core, {n_params / 1e6:.3f} M parameters; "
        f"{len(train_ds)} training / {len(val_ds)} validation windows of {config.data.frames} frames")
    dump = config.model_dump(mode="json")
    hash_ = hash_inputs(dump["sessions"], dump["data"], dump["model"],
                        {k: v for k, v in dump["train"].items() if k not in ("progress", "out_dir")})
    # Under torchrun every rank trains (DDP); rank 0 alone owns the stage: its staging
    # folder is every rank's training folder (the engine writes from rank 0 only, and
    # every rank reads a resumed checkpoint from it), and only rank 0 commits and scores.
    on_cuda = config.train.device == "cuda" or (config.train.device == "auto"
                                                and torch.cuda.is_available())
    group = setup_distributed("nccl" if on_cuda else "gloo")
    main = group.is_main
    try:
        stage = (run.stage(TRAIN_STAGE, config_hash=hash_, owns=("neurons/checkpoints",))
                 if main else contextlib.nullcontext())
        with stage as st:
            staging = str(st.base) if main else None
            if main:
                folder = NeuronFolder(st.base)
                if resume:
                    committed = NeuronFolder(run.root)
                    shutil.copytree(committed.base, folder.base, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("predictions", "metrics"),
                                    copy_function=link_or_copy)
                folder.base.mkdir(parents=True, exist_ok=True)
            staging = all_gather_objects(staging)[0]
            folder = NeuronFolder(staging)
            tcfg = config.train.model_copy(update={"out_dir": str(folder.train_dir),
                                                   "progress": config.progress and main})
            trainer = Trainer(model, tcfg, train_ds, val_ds)
            t1 = time.perf_counter()
            history = trainer.fit(resume=resume)
            seconds = time.perf_counter() - t1
            info = {"steps": trainer.step, "epochs": trainer.epoch}
            if main:
                info = _commit_training(config, data, model, trainer, history, folder,
                                        seconds, int(n_params), st, log)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        if evaluate_after and main:
            info["evaluation"] = evaluate(config, log, data=data)
        barrier()  # the other ranks wait until rank 0 has committed and scored
    finally:
        if group.enabled:
            cleanup_distributed()
    return info


def _commit_training(config, data, model, trainer, history, folder, seconds, n_params, st,
                     log) -> dict:
    """Load the best state into ``model``; write the training summary, the statistics and
    the config into the staged stage."""
    from cinebrain.train import load_checkpoint

    best = history.best_checkpoint or history.last_checkpoint
    if best is not None:
        model.load_state_dict(load_checkpoint(best, map_location="cpu")["model"])
    best_metric = history.best_metric if history.best_metric is not None else float("nan")
    log(f"  trained {trainer.step} steps ({trainer.epoch} epochs) in {seconds:.1f} s; "
        f"best val_r {best_metric:.3f} at step {history.best_step}"
        + (" (stopped early)" if history.stopped_early else "")
        + (f" on {trainer.dist.world_size} ranks" if trainer.dist.enabled else ""))
    last_val = history.val[-1] if history.val else {}
    info = {
        "model": model.config,
        "parameters": n_params,
        "sessions": {s.name: {"source": s.source, "n_neurons": s.n_neurons,
                              "fingerprint": fingerprint(s),
                              "split": {k: v.tolist() for k, v in data.split[s.name].items()}}
                     for s in data.sessions},
        "steps": trainer.step, "epochs": trainer.epoch,
        "train_seconds": round(seconds, 1),
        "best_val_r": history.best_metric, "best_step": history.best_step,
        "stopped_early": history.stopped_early,
        "checkpoint": best.relative_to(folder.base).as_posix() if best is not None else None,
        "last_val": {k: v for k, v in last_val.items() if isinstance(v, (int, float))},
        "device": str(trainer.device), "ranks": trainer.dist.world_size,
    }
    write_json(folder.model_json, info)
    write_json(folder.stats_json, {n: s.to_dict() for n, s in data.stats.items()})
    save_neuron_config(config, st.config)
    st.info = {"sessions": [s.name for s in data.sessions], "steps": trainer.step}
    return info


def load_model(config: NeuronRunConfig):
    """The trained model of the run (its best checkpoint), in eval mode, on the training
    device, with the run's training summary."""
    from cinebrain.models.neurons import make_neuron_model
    from cinebrain.train import load_checkpoint, resolve_device

    run = RunFolder(config.out)
    run.require(TRAIN_STAGE, hint="run `cinebrain neurons train` first")
    folder = NeuronFolder(run.root)
    info = json.loads(folder.model_json.read_text())
    model = make_neuron_model(**info["model"])
    state = load_checkpoint(folder.base / info["checkpoint"], map_location="cpu")
    model.load_state_dict(state["model"])
    device = resolve_device(config.train.device, key="train.device")
    return model.to(device).eval(), info


# --------------------------------------------------------------------------- prediction
def _stat(values: np.ndarray) -> dict[str, float | None]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"median": None, "mean": None, "n": 0}
    return {"median": float(np.median(v)), "mean": float(v.mean()), "n": int(v.size)}


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def baseline_factor(session: NeuronSession) -> int:
    """The frame-ridge baseline's default block factor: the frame's width to about 16
    pixels (measured on the simulated study at 18 x 32: correlation to the average 0.149
    with factor 2, 0.057 with 4)."""
    return max(1, round(session.frame_shape[1] / 16))


def _baseline(config: NeuronRunConfig, session: NeuronSession, train_trials, test_trials):
    from cinebrain.linear.frames import fit_frame_ridge

    b = config.baseline
    behavior = [session.behavior[t] for t in train_trials] if b.behavior else None
    ridge = fit_frame_ridge([session.videos[t] for t in train_trials],
                            [session.responses[t] for t in train_trials], delays=b.delays,
                            alphas=b.alphas, factor=b.factor or baseline_factor(session),
                            n_folds=b.n_folds,
                            behavior=behavior)
    test_behavior = [session.behavior[t] for t in test_trials] if b.behavior else None
    return ridge.predict([session.videos[t] for t in test_trials], test_behavior)


def ground_truth(config: NeuronRunConfig, model, data: NeuronData, test: dict,
                 scores: dict[str, list[np.ndarray]], log: Log = _print
                 ) -> tuple[dict, dict[str, dict[str, np.ndarray]]] | None:
    """For sessions of a simulated study (its ``truth.npz`` beside them): the model against
    the noiseless ground-truth rates scored the same way on the same test repeats, its
    reading centres against the true receptive fields, its learned running and pupil gains
    against the true ones, and the behaviour shuffle on modulated and unmodulated neurons
    (:func:`cinebrain.evaluate.neurons.truth_recovery`). Returns that summary and per
    session the per-neuron arrays it compared (saved beside the scores); None for real
    data."""
    from cinebrain.data.simulate.neurons import (
        PUPIL_SCALE,
        RUNNING_SCALE,
        find_neuron_truth,
        read_neuron_truth,
    )
    from cinebrain.evaluate.neurons import truth_recovery
    from cinebrain.models.neurons import behavior_gain, readout_centres

    files = [find_neuron_truth(s.source) if s.source else None for s in data.sessions]
    if any(f is None for f in files) or not {"correlation_to_average", "oracle_r"} <= set(scores):
        return None
    cache: dict = {}
    truths = []
    for s, f in zip(data.sessions, files, strict=True):
        t = cache.setdefault(f, read_neuron_truth(f)).get(s.name)
        if (t is None or len(t.get("rate", [])) != s.n_trials
                or any(r.shape != y.shape for r, y in zip(t["rate"], s.responses, strict=True))):
            log(f"  {s.name}: {f} does not describe this session; no ground-truth scores")
            return None
        truths.append(t)
    skip = config.skip_frames
    cta_truth = []
    for s, t in zip(data.sessions, truths, strict=True):
        trials = test[s.name]
        sc = score_trials([s.responses[i] for i in trials], [t["rate"][i] for i in trials],
                          [str(s.clip_ids[i]) for i in trials], skip=skip,
                          null_rate=np.asarray(data.stats[s.name].response_mean, np.float32),
                          metrics=["correlation_to_average"])
        cta_truth.append(sc["correlation_to_average"])
    centres = readout_centres(model, data.sessions, test, data.stats)
    gains = {col: behavior_gain(model, data.sessions, test, data.stats, col,
                                predict_frames=config.evaluate.predict_frames,
                                burn_in=config.model.burn_in)
             for col in ("running_speed", "pupil_dilation")}
    cat = lambda key: np.concatenate([t["params"][key] for t in truths])  # noqa: E731
    names = [s.name for s in data.sessions]
    base = dict(model_cta=np.concatenate(scores["correlation_to_average"]),
                truth_cta=np.concatenate(cta_truth), oracle=np.concatenate(scores["oracle_r"]),
                centres=np.concatenate([centres[n] for n in names]),
                true_centres=np.stack([cat("x"), cat("y")], 1),
                shuffle_drop=(np.concatenate(scores["behavior_shuffle_drop"])
                              if "behavior_shuffle_drop" in scores else None),
                modulated=(cat("running_gain") != 0) | (cat("pupil_gain") != 0))
    out = truth_recovery(learned_gain=np.concatenate([gains["running_speed"][n] for n in names]),
                         true_gain=cat("running_gain") / RUNNING_SCALE, **base)
    pupil = truth_recovery(learned_gain=np.concatenate([gains["pupil_dilation"][n] for n in names]),
                           true_gain=cat("pupil_gain") / PUPIL_SCALE, **base)
    out["running_gain_r"] = out.pop("gain_r")
    out["pupil_gain_r"] = pupil["gain_r"]
    arrays = {}
    for s, t, cta in zip(data.sessions, truths, cta_truth, strict=True):
        p = t["params"]
        arrays[s.name] = {
            "reading_centre": centres[s.name], "true_centre": np.stack([p["x"], p["y"]], 1),
            "learned_running_gain": gains["running_speed"][s.name],
            "true_running_gain": p["running_gain"] / RUNNING_SCALE,
            "learned_pupil_gain": gains["pupil_dilation"][s.name],
            "true_pupil_gain": p["pupil_gain"] / PUPIL_SCALE,
            "modulated": (p["running_gain"] != 0) | (p["pupil_gain"] != 0),
            "truth_correlation_to_average": cta}
        arrays[s.name] = {k: np.asarray(v, np.float32) for k, v in arrays[s.name].items()}
    ratio = out["ratio_to_truth"]
    log(f"  ground truth: correlation to average {out['model_median_cta']:.3f} against "
        f"{out['truth_median_cta']:.3f} for the noiseless rates"
        + (f" ({ratio:.2f}x)" if ratio is not None else "")
        + f"; centres within {out['centre_tol']} of the true RF for "
        f"{_show(out['centres_within_tol'])} of the {out['n_reliable']} neurons above median "
        f"reliability; learned vs true gain r: running {_show(out['running_gain_r'])}, pupil "
        f"{_show(out['pupil_gain_r'])}"
        + (f"; shuffle drop modulated {_show(out['shuffle_drop_modulated'])}, unmodulated "
           f"{_show(out['shuffle_drop_unmodulated'])}" if "shuffle_drop_modulated" in out else ""))
    return out, arrays


def report(config: NeuronRunConfig, log: Log = _print):
    """``report.html`` of a neuron run (stage ``neurons-report``): scores against the oracle
    and the baseline; a simulated study's ground truth."""
    from cinebrain.report import build_report
    from cinebrain.report.neurons import neuron_sections

    run = RunFolder(config.out)
    run.require(EVALUATE_STAGE)
    with run.stage("neurons-report", depends=[EVALUATE_STAGE], owns=("figures",)) as st:
        path = build_report(run, st, subjects=[], mask_img=None, families=(neuron_sections,),
                            title="cinebrain neuron report")
    log(f"  report: {run.report}")
    return path


def evaluate(config: NeuronRunConfig, log: Log = _print, data: NeuronData | None = None) -> dict:
    """Score the trained model (and the baseline) on every session's test trials; stage
    ``neurons-evaluate``. Returns the summary written to ``summary.json``."""
    import torch

    from cinebrain.data.neurons import SessionStats

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return {}  # under torchrun rank 0 alone scores and writes
    _threads(config)
    t0 = time.perf_counter()
    run = RunFolder(config.out)
    model, info = load_model(config)
    if data is None:
        sessions = load_sessions(config, log)
        split = {}
        for s in sessions:
            saved = info["sessions"].get(s.name)
            if saved is None or saved["fingerprint"] != fingerprint(s):
                raise InputError(s.source, "is not the session the model was trained on "
                                 "(its trials, clips or neurons differ)",
                                 "evaluate with the sessions of training, or train again")
            split[s.name] = {k: np.asarray(v, np.int64) for k, v in saved["split"].items()}
        stats_raw = json.loads(NeuronFolder(run.root).stats_json.read_text())
        data = NeuronData(sessions, split, {n: SessionStats.from_dict(d) for n, d in stats_raw.items()})
    if [s.name for s in data.sessions] != list(info["sessions"]):
        raise InputError(run.root, "the config's sessions are not the model's "
                         f"({', '.join(info['sessions'])})", "evaluate with the sessions of training")
    metrics = config.evaluate.metrics
    skip = config.skip_frames
    test = data.part("test")
    torch.manual_seed(0)
    pred = predict_trials(model, data.sessions, test, data.stats,
                          predict_frames=config.evaluate.predict_frames, burn_in=config.model.burn_in)
    shuffled = None
    if "behavior_shuffle_drop" in metrics:
        rng = np.random.default_rng(config.evaluate.shuffle_seed)
        orders = {s.name: shuffle_order([s.videos[t].shape[0] for t in test[s.name]], rng)
                  for s in data.sessions}
        shuffled = predict_trials(model, data.sessions, test, data.stats,
                                  predict_frames=config.evaluate.predict_frames,
                                  burn_in=config.model.burn_in, behavior_order=orders)
    summary: dict[str, Any] = {
        "prediction": ("whole test trials, one causal pass each" if config.evaluate.predict_frames
                       is None else f"windows of {config.evaluate.predict_frames} frames, "
                       f"{config.model.burn_in} frames of burn-in"),
        "skip_frames": skip, "metrics": list(metrics), "baseline": config.baseline.enabled,
        "sessions": {}, "overall": {},
    }
    pooled: dict[str, dict[str, list[np.ndarray]]] = {"model": {}, "baseline": {}}
    dump = config.model_dump(mode="json")
    with run.stage(EVALUATE_STAGE, depends=[TRAIN_STAGE], config_hash=hash_inputs(dump["evaluate"], dump["baseline"]),
                   owns=("neurons/predictions", "neurons/metrics")) as st:
        folder = NeuronFolder(st.base)
        for s in data.sessions:
            trials = test[s.name]
            y = [s.responses[t] for t in trials]
            clip_ids = [str(s.clip_ids[t]) for t in trials]
            null_rate = np.asarray(data.stats[s.name].response_mean, np.float32)
            scores = {"model": score_trials(y, pred[s.name], clip_ids, skip=skip,
                                            null_rate=null_rate, metrics=metrics,
                                            shuffled=None if shuffled is None else shuffled[s.name])}
            base_pred = None
            if config.baseline.enabled:
                t1 = time.perf_counter()
                base_pred = _baseline(config, s, data.split[s.name]["train"], trials)
                scores["baseline"] = score_trials(
                    y, base_pred, clip_ids, skip=skip, null_rate=null_rate,
                    metrics=[m for m in metrics if m != "behavior_shuffle_drop"])
                log(f"  {s.name}: frame ridge fit in {time.perf_counter() - t1:.1f} s")
            save_npy(folder.prediction(s.name, "test_true"), np.concatenate(y).astype(np.float32))
            save_npy(folder.prediction(s.name, "test_pred"), np.concatenate(pred[s.name]))
            if shuffled is not None:
                save_npy(folder.prediction(s.name, "test_pred_shuffled"),
                         np.concatenate(shuffled[s.name]))
            if base_pred is not None:
                save_npy(folder.prediction(s.name, "baseline_pred"),
                         np.concatenate(base_pred).astype(np.float32))
            save_npy(folder.prediction(s.name, "test_trials"), np.asarray(trials, np.int64))
            save_npy(folder.prediction(s.name, "test_lengths"),
                     np.asarray([len(a) for a in y], np.int64))
            save_npy(folder.prediction(s.name, "test_clip_ids"), np.asarray(clip_ids, dtype=str))
            save_npy(folder.prediction(s.name, "null_rate"), null_rate)
            entry: dict[str, Any] = {"n_neurons": s.n_neurons, "n_test_trials": len(trials)}
            _, groups = repeat_arrays(y, clip_ids, skip)
            entry["repeated_clips"] = len(groups)
            entry["repeats_per_clip"] = len(groups[0]) if groups else 0
            for who, sc in scores.items():
                prefix = "" if who == "model" else "baseline_"
                for name, values in sc.items():
                    if who == "baseline" and name == "oracle_r":
                        continue  # a property of the data, saved once
                    save_npy(folder.metric(s.name, prefix + name), values)
                    pooled[who].setdefault(name, []).append(values)
                entry[who] = {name: _stat(v) for name, v in sc.items() if
                              not (who == "baseline" and name == "oracle_r")}
            summary["sessions"][s.name] = entry
            log(f"  {s.name}: " + ", ".join(
                f"{who} " + " ".join(f"{name} {_show(v['median'])}" for name, v in sc.items())
                for who, sc in entry.items() if who in ("model", "baseline")) + " (medians)")
        for who, by_name in pooled.items():
            if by_name:
                summary["overall"][who] = {name: _stat(np.concatenate(v)) for name, v in by_name.items()}
        truth = ground_truth(config, model, data, test, pooled["model"], log)
        if truth is not None:
            summary["ground_truth"], per_neuron = truth
            for name, arrays in per_neuron.items():
                for key, values in arrays.items():
                    save_npy(folder.metric(name, key), values)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(st.summary, summary)
        save_neuron_config(config, st.config)
        st.info = {"sessions": [s.name for s in data.sessions]}
    return summary
