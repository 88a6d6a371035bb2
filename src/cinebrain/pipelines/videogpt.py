"""The video-model pipeline: a VQ-VAE and a VideoGPT trained on the study's movie alone,
their layers' activations as feature spaces, scored by ridge against the responses.

``train(config)`` (stage ``videogpt-train``) decodes the study's movie onto the frame grid
of ``videogpt.video`` and cuts it into clips of the stimulus segments of the training runs
only (``frames_from: train_runs``, the default: no frame of a held-out run is seen; no
clip crosses a segment's edge). Stage 1 trains the VQ-VAE on clips; stage 2 trains the
GPT to predict each next clip's codes from the previous clip's, the VQ-VAE frozen in eval
mode. Both use the training engine (:class:`cinebrain.train.Trainer`: fp32 / bf16 / fp16,
checkpoints and exact resume, DDP under torchrun); the last tenth of the training clips
(in time) validates. Then, on the held-out segments: the VQ-VAE's reconstruction PSNR and
codebook usage, the GPT's next-clip cross-entropy against the code-frequency baseline
(each code's frequency in the training clips), and ``samples`` held-out clips written as
mp4: the real next clip, the GPT's prediction and the VQ-VAE's reconstruction.

``evaluate(config)`` (stage ``videogpt-evaluate``) extracts every chosen GPT layer over
the whole movie (:func:`cinebrain.features.activations.extract_activations`: windows of
two clips, a row stamped at the window's last frame, so a feature at time t sees frames
up to t only), aligns each layer as the ridge pipeline aligns a feature space
(``alignment``), fits ridge per layer and subject on the training runs and scores the
held-out runs (``split.test_runs``). With ``features.random_baseline`` the same
architecture with random weights is scored on the same split, and the two are compared
layer by layer, paired across voxels (:func:`cinebrain.evaluate.paired_comparison`).

Run folder: :class:`cinebrain.pipelines.runfolder.VideoGPTFolder`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cinebrain._files import save_npy, write_json
from cinebrain.config import RunConfig, save_config, section_hash
from cinebrain.errors import InputError
from cinebrain.pipelines import ridge
from cinebrain.pipelines.runfolder import RunFolder, VideoGPTFolder, link_or_copy

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- the movie
@dataclass
class MovieData:
    """The study's movie on the video models' frame grid, and which frames they may learn
    from (``train_ranges``) and are scored on (``test_ranges``): frame index ranges."""

    frames: np.ndarray
    onsets: np.ndarray
    fps: float
    train_ranges: list[tuple[int, int]]
    test_ranges: list[tuple[int, int]]

    def starts(self, length: int, stride: int, part: str = "train",
               data_fraction: float = 1.0, val_fraction: float = 0.0):
        """Window starts of ``part``; for "train", (training, validation) starts."""
        from cinebrain.data.clips import clip_starts, split_starts

        if part == "test":
            return clip_starts(self.test_ranges, length, stride)
        starts = clip_starts(self.train_ranges, length, stride)
        train, val = split_starts(starts, length, val_fraction)
        keep = max(1, int(round(len(train) * data_fraction))) if len(train) else 0
        return train[:keep], val


def movie_data(config: RunConfig, study=None) -> MovieData:
    """Decode the study's movie as ``videogpt.video`` says and find its training and
    held-out frames (the segments of the training runs and of ``split.test_runs`` of the
    run's subjects)."""
    from cinebrain.data.clips import movie_frames, segment_frames

    study = ridge.load(config) if study is None else study
    v = config.videogpt.video
    if not study.stimulus.video:
        raise InputError(config.study, "the study has no movie (stimulus.video)",
                         "the video models learn from the movie; add stimulus.video")
    frames, onsets = movie_frames(study.resolve(study.stimulus.video), v.size, v.fps, v.gray)
    subjects = ridge.run_subjects(config, study)
    train_seg, test_seg = [], []
    for s in subjects:
        runs = study.subjects[s].runs
        names = [r.name for r in runs]
        test = set(ridge.test_run_indices(config, names, f"{config.study}: {s}"))
        for i, r in enumerate(runs):
            if r.segment is not None:
                (test_seg if i in test else train_seg).append(tuple(r.segment))
    if v.frames_from == "all":
        train_ranges = [(0, len(frames))]
    else:
        held = segment_frames(onsets, v.fps, test_seg)
        train_ranges = [(a, b) for a, b in segment_frames(onsets, v.fps, train_seg)]
        train_ranges = _minus(train_ranges, held)
    return MovieData(frames, onsets, v.fps, train_ranges, segment_frames(onsets, v.fps, test_seg))


def _minus(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` without the frames of ``holes`` (a segment shown in a training run of one
    subject and a held-out run of another is never trained on)."""
    out = []
    for a, b in ranges:
        cuts = [(a, b)]
        for h0, h1 in holes:
            cuts = [piece for x0, x1 in cuts
                    for piece in ((x0, min(x1, h0)), (max(x0, h1), x1)) if piece[1] > piece[0]]
        out += cuts
    return out


# --------------------------------------------------------------------------- models
def vqvae_config(config: RunConfig):
    """The VQ-VAE's config: the preset, its overrides, and the clips' shape."""
    from cinebrain.models.vqvae import get_preset

    v, s = config.videogpt.video, config.videogpt.vqvae
    shape = (v.clip_frames, v.size[1], v.size[0])
    return get_preset(s.preset, **{"input_shape": shape, "in_channels": 1 if v.gray else 3,
                                   **s.overrides})


def gpt_config(config: RunConfig, vq_config):
    """The GPT's config: the preset, its overrides, and the VQ-VAE's code grid."""
    from cinebrain.models.videogpt import get_preset

    s = config.videogpt.gpt
    return get_preset(s.preset, vq_config, **s.overrides)


def build_models(config: RunConfig, seed: int | None = None):
    """A fresh (VQ-VAE, VideoGPT) pair of the run's configs, initialised from ``seed``
    (default: the VQ-VAE stage's training seed, so a run is repeatable)."""
    import torch

    from cinebrain.models.videogpt import VideoGPT
    from cinebrain.models.vqvae import VQVAE

    torch.manual_seed(config.videogpt.vqvae.train.seed if seed is None else seed)
    vq_cfg = vqvae_config(config)
    vq = VQVAE(vq_cfg)
    # the GPT freezes a VQ-VAE of its own (stage 1 trains ``vq``; its weights are then copied)
    frozen = VQVAE(vq_cfg)
    frozen.load_state_dict(vq.state_dict())
    return vq, VideoGPT(gpt_config(config, vq_cfg), frozen)


def load_models(config: RunConfig, folder: VideoGPTFolder | None = None):
    """The trained (VQ-VAE, VideoGPT) of a run (best checkpoints), in eval mode."""
    from cinebrain.train import load_checkpoint

    run = RunFolder(config.out)
    folder = run.videogpt if folder is None else folder
    if folder is run.videogpt or folder.base == run.videogpt.base:
        run.require("videogpt-train")
    info = _read_json(folder.model_json)
    vq, gpt = build_models(config)
    vq.load_state_dict(load_checkpoint(folder.base / info["vqvae"]["checkpoint"],
                                       map_location="cpu")["model"])
    gpt.load_state_dict(load_checkpoint(folder.base / info["gpt"]["checkpoint"],
                                        map_location="cpu")["model"])
    return vq.eval(), gpt.eval()


def _read_json(path) -> dict:
    import json

    return json.loads(path.read_text())


# --------------------------------------------------------------------------- train
def _train_stage(model, tcfg, train_ds, val_ds, out_dir, config: RunConfig, resume: bool,
                 log: Log, what: str) -> dict:
    from cinebrain.train import Trainer, load_checkpoint

    tcfg = tcfg.model_copy(update={"out_dir": str(out_dir), "progress": config.progress})
    trainer = Trainer(model, tcfg, train_ds, val_ds)
    t0 = time.perf_counter()
    history = trainer.fit(resume=resume)
    seconds = time.perf_counter() - t0
    best = history.best_checkpoint or history.last_checkpoint
    if best is not None:
        model.load_state_dict(load_checkpoint(best, map_location="cpu")["model"])
    last = history.val[-1] if history.val else {}
    log(f"  {what}: {trainer.step} steps ({trainer.epoch} epochs) in {seconds:.1f} s; "
        + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float)))
    return {"steps": trainer.step, "epochs": trainer.epoch, "train_seconds": round(seconds, 1),
            "best_step": history.best_step, "best_metric": history.best_metric,
            "stopped_early": history.stopped_early,
            "checkpoint": None if best is None else best.relative_to(out_dir.parent).as_posix(),
            "last_val": {k: v for k, v in last.items() if isinstance(v, (int, float))},
            "samples_per_s": round(trainer.step * tcfg.batch_size / max(seconds, 1e-9), 1)}


def train_hash(config: RunConfig) -> str:
    """The hash of the options the ``videogpt-train`` stage depends on."""
    from cinebrain._files import hash_inputs

    d = config.model_dump(mode="json")
    v = d["videogpt"]
    for section in ("vqvae", "gpt"):  # neither changes what is trained
        v[section]["train"].pop("progress", None)
    return hash_inputs(["study", d["study"]], ["subjects", d["subjects"]], ["split", d["split"]],
                       ["video", v["video"]], ["vqvae", v["vqvae"]], ["gpt", v["gpt"]])


def check(config: RunConfig) -> None:
    """Refuse a bad preset, override or clip shape before any work."""
    vq_cfg = vqvae_config(config)
    gpt_config(config, vq_cfg)
    v = config.videogpt.video
    if config.videogpt.features.layers is not None and not config.videogpt.features.layers:
        raise InputError("videogpt.features.layers", "an empty list of layers",
                         "name some layers, or null for every attention block")
    if v.clip_frames < 1:  # (pydantic already refuses it; kept for library callers)
        raise InputError("videogpt.video.clip_frames", "must be >= 1", "fix the value")


def _clip_sets(config: RunConfig, data: MovieData):
    v = config.videogpt.video
    n = v.clip_frames
    vq_train, vq_val = data.starts(n, v.stride, "train", v.data_fraction, v.val_fraction)
    pair_train, pair_val = data.starts(2 * n, v.stride, "train", v.data_fraction, v.val_fraction)
    if len(vq_train) == 0 or len(pair_train) == 0:
        raise InputError(config.study, f"no training clip pair of {2 * n} frames at "
                         f"{v.fps:g} fps inside the training runs' segments",
                         "use shorter clips (videogpt.video.clip_frames) or a higher fps")
    return vq_train, vq_val, pair_train, pair_val


def train_vqvae_only(config: RunConfig, folder: VideoGPTFolder, log: Log = _print,
                     data: MovieData | None = None):
    """Train the VQ-VAE stage alone into ``folder.vqvae_dir`` (a folder outside a run's
    stages, e.g. the VQ-VAE a sweep's cells share); returns its best checkpoint's path.
    It is trained in a temporary folder renamed into place when it finishes."""
    import os

    import torch

    from cinebrain.data.clips import ClipDataset
    from cinebrain.models.vqvae import VQVAE

    data = movie_data(config) if data is None else data
    vq_train, vq_val, _, _ = _clip_sets(config, data)
    n = config.videogpt.video.clip_frames
    torch.manual_seed(config.videogpt.vqvae.train.seed)
    vq = VQVAE(vqvae_config(config))
    tmp = folder.base.parent / f".tmp-{os.getpid()}-{folder.base.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        res = _train_stage(vq, config.videogpt.vqvae.train, ClipDataset(data.frames, vq_train, n),
                           ClipDataset(data.frames, vq_val, n) if len(vq_val) else None,
                           VideoGPTFolder(tmp).vqvae_dir, config, False, log, "VQ-VAE")
        write_json(VideoGPTFolder(tmp).model_json, {"vqvae": res})
        shutil.rmtree(folder.base, ignore_errors=True)
        folder.base.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, folder.base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder.base / res["checkpoint"]


def train(config: RunConfig, log: Log = _print, resume: bool = False,
          data: MovieData | None = None, vqvae_checkpoint=None) -> dict:
    """Train both stages on the movie's training clips; score them on the held-out clips.

    ``vqvae_checkpoint``: a trained VQ-VAE's checkpoint to use instead of training stage 1
    (its config must be the run's). ``resume``: continue both stages from the run's last
    checkpoints (of a finished ``videogpt-train``, e.g. with more epochs). The stage
    commits at once: a failure leaves the previous models in place. Returns what
    ``videogpt/model.json`` holds.

    Under ``torchrun`` every rank trains both stages (DDP); rank 0 alone owns the stage (its
    staging folder is the engine's folder: the engine writes from rank 0 only), sends its
    best weights of each stage to every rank, and alone scores, writes and commits.
    """
    import contextlib

    import torch

    from cinebrain.train.distributed import (
        all_gather_objects,
        barrier,
        cleanup_distributed,
        setup_distributed,
    )

    if config.threads:
        torch.set_num_threads(config.threads)
    run = RunFolder(config.out)
    run.check_writable()
    if resume and run.manifest("videogpt-train") is None:
        raise InputError(run.root, "no trained video model to resume", "train without --resume")
    on_cuda = config.videogpt.gpt.train.device == "cuda" or (
        config.videogpt.gpt.train.device == "auto" and torch.cuda.is_available())
    group = setup_distributed("nccl" if on_cuda else "gloo")
    main = group.is_main
    log = log if main else (lambda m: None)
    try:
        data = movie_data(config) if data is None else data
        stage = (run.stage("videogpt-train", config_hash=train_hash(config), owns=("videogpt",))
                 if main else contextlib.nullcontext())
        with stage as st:
            staging = str(st.base) if main else None
            if main and resume:
                shutil.copytree(run.videogpt.base, st.videogpt.base, dirs_exist_ok=True,
                                copy_function=link_or_copy, ignore=shutil.ignore_patterns(
                                    "features", "metrics", "evaluation.json", "samples"))
            staging = all_gather_objects(staging)[0] if group.enabled else staging
            info = _train_both(config, data, VideoGPTFolder(Path(staging) / "videogpt"), resume,
                               vqvae_checkpoint, log, main, group.enabled)
            if main:
                save_config(config, st.config)
                st.info = {"trainable_parameters": info["trainable_parameters"]}
        if main and run.manifest("videogpt-evaluate") is not None:
            run.forget("videogpt-evaluate")
        barrier()
    finally:
        if group.enabled:
            cleanup_distributed()
    return info


def _broadcast_state(model) -> None:
    """Every rank gets rank 0's parameters and buffers."""
    import torch.distributed as dist

    for t in model.state_dict().values():
        dist.broadcast(t, 0)


def _train_both(config: RunConfig, data: MovieData, folder: VideoGPTFolder, resume: bool,
                vqvae_checkpoint, log: Log, main: bool, distributed: bool) -> dict:
    from cinebrain.data.clips import ClipDataset, CodePairDataset, encode_clips
    from cinebrain.models.videogpt import count_parameters as gpt_counts
    from cinebrain.models.vqvae import count_parameters as vq_counts
    from cinebrain.train import load_checkpoint

    v = config.videogpt.video
    t0 = time.perf_counter()
    n = v.clip_frames
    vq_train, vq_val, pair_train, pair_val = _clip_sets(config, data)
    log(f"  movie: {len(data.frames)} frames of {v.size[0]}x{v.size[1]} at {v.fps:g} fps; "
        f"{len(vq_train)} training / {len(vq_val)} validation clips of {n} frames, "
        f"{len(pair_train)} / {len(pair_val)} clip pairs")
    vq, gpt = build_models(config)
    info: dict[str, Any] = {"video": v.model_dump(mode="json"),
                            "frames": {"train": data.train_ranges, "test": data.test_ranges},
                            "vqvae": {"preset": config.videogpt.vqvae.preset,
                                      "config": _plain(vq.config), "parameters": vq_counts(vq)},
                            "gpt": {"preset": config.videogpt.gpt.preset,
                                    "config": _plain(gpt.gpt_config),
                                    "parameters": gpt_counts(gpt)}}
    log(f"  VQ-VAE {sum(info['vqvae']['parameters'].values()) / 1e6:.2f} M parameters, "
        f"codes {tuple(vq.latent_shape)} of {vq.n_codes}")
    if vqvae_checkpoint is not None:
        vq.load_state_dict(load_checkpoint(vqvae_checkpoint, map_location="cpu")["model"])
        target = folder.vqvae_dir / "checkpoints" / "best.pt"
        if main:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(vqvae_checkpoint, target)
        info["vqvae"] |= {"from": str(Path(vqvae_checkpoint).resolve()),
                          "checkpoint": target.relative_to(folder.base).as_posix()}
        log(f"  VQ-VAE from {vqvae_checkpoint}")
    else:
        info["vqvae"] |= _train_stage(vq, config.videogpt.vqvae.train,
                                      ClipDataset(data.frames, vq_train, n),
                                      ClipDataset(data.frames, vq_val, n) if len(vq_val) else None,
                                      folder.vqvae_dir, config, resume, log, "VQ-VAE")
    if distributed:
        _broadcast_state(vq)
    gpt.vqvae.load_state_dict(vq.state_dict())
    n_gpt = sum(p.numel() for p in gpt.parameters() if p.requires_grad)
    log(f"  GPT {n_gpt / 1e6:.2f} M trainable parameters (VQ-VAE frozen)")
    # the VQ-VAE is frozen: every clip the GPT trains on is encoded once
    starts = np.unique(np.concatenate([pair_train, pair_train + n, pair_val, pair_val + n]))
    gpt.vqvae.eval()
    codes = encode_clips(gpt.vqvae.encode, data.frames, starts, n)
    info["gpt"] |= _train_stage(gpt, config.videogpt.gpt.train,
                                CodePairDataset(codes, starts, pair_train, n),
                                CodePairDataset(codes, starts, pair_val, n) if len(pair_val) else None,
                                folder.gpt_dir, config, resume, log, "GPT")
    if distributed:
        _broadcast_state(gpt)
    info["gpt"]["flops_per_sample"] = float(gpt.flops_per_sample())
    info["trainable_parameters"] = n_gpt
    if not main:
        return info
    info["held_out"] = held_out_scores(vq, gpt, data, n, pair_train)
    h = info["held_out"]
    log(f"  held out: VQ-VAE PSNR {h['psnr']:.2f} dB, {h['usage']:.0%} of codes used; "
        f"GPT next-clip cross-entropy {h['cross_entropy']:.3f} nats/code against "
        f"{h['frequency_baseline']:.3f} for code frequencies")
    info["samples"] = write_samples(gpt, data, n, config.videogpt.samples, folder)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(folder.model_json, info)
    return info



def _plain(cfg) -> dict:
    from dataclasses import asdict, is_dataclass

    d = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def held_out_scores(vq, gpt, data: MovieData, n: int, train_pairs: np.ndarray,
                    batch_size: int = 16) -> dict:
    """The video models on the held-out frames (non-overlapping clips): the VQ-VAE's PSNR
    and code usage, the GPT's next-clip cross-entropy (nats per code) and the cross-entropy
    of the training clips' code frequencies (add-one smoothed) on the same codes."""
    import torch

    from cinebrain.data.clips import ClipPairDataset
    from cinebrain.models.vqvae import psnr

    test = data.starts(2 * n, n, "test")
    if len(test) == 0:
        return {"psnr": float("nan"), "usage": float("nan"), "cross_entropy": float("nan"),
                "frequency_baseline": float("nan"), "n_clips": 0}
    vq.eval(), gpt.eval()

    def batches(starts):
        ds = ClipPairDataset(data.frames, starts, n)
        for i in range(0, len(ds), batch_size):
            items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
            yield {k: torch.stack([it[k] for it in items]) for k in items[0]}

    freq = torch.ones(vq.n_codes, dtype=torch.float64)
    with torch.no_grad():
        for b in batches(train_pairs[:: max(1, len(train_pairs) // 200)]):
            freq += torch.bincount(vq.encode(b["next"]).flatten(), minlength=vq.n_codes).double()
        logp = torch.log(freq / freq.sum())
        mse, counts, ce, base, n_codes = [], torch.zeros(vq.n_codes), 0.0, 0.0, 0
        for b in batches(test):
            recon = vq.decode_codes(vq.encode(b["next"]))
            mse.append((recon - b["next"]).pow(2).flatten(1).mean(1))
            codes = vq.encode(b["next"])
            counts += torch.bincount(codes.flatten(), minlength=vq.n_codes).float()
            out = gpt.validation_step(b)
            ce += float(out["cross_entropy"].double().sum() * codes[0].numel())
            base += float(-logp[codes.flatten()].sum())
            n_codes += codes.numel()
    mse = torch.cat(mse).double()
    return {"psnr": float(psnr(mse).mean()), "usage": float((counts > 0).float().mean()),
            "cross_entropy": ce / n_codes, "frequency_baseline": base / n_codes,
            "n_clips": int(len(test))}


def write_samples(gpt, data: MovieData, n: int, k: int, folder: VideoGPTFolder,
                  seed: int = 0) -> list[str]:
    """``k`` held-out clip pairs as mp4: the real next clip, the GPT's sampled prediction
    from the previous clip, and the VQ-VAE's reconstruction of the real one."""
    import torch

    from cinebrain.data.clips import ClipPairDataset
    from cinebrain.io.video import write_video

    test = data.starts(2 * n, 2 * n, "test")
    if k == 0 or len(test) == 0:
        return []
    picks = test[np.linspace(0, len(test) - 1, min(k, len(test))).round().astype(int)]
    ds = ClipPairDataset(data.frames, picks, n)
    g = torch.Generator().manual_seed(seed)
    written = []
    with torch.no_grad():
        for i in range(len(ds)):
            b = {key: v[None] for key, v in ds[i].items()}
            clips = {"real": b["next"][0],
                     "predicted": gpt.sample(b["previous"], generator=g)[0],
                     "reconstructed": gpt.vqvae.decode_codes(gpt.vqvae.encode(b["next"]))[0]}
            for kind, clip in clips.items():
                path = folder.sample(i, kind)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_video(path, _rgb_frames(clip), fps=data.fps, size=_size(clip))
                written.append(path.name)
    return written


def _rgb_frames(clip, scale: int = 4):
    """(C, T, H, W) in [-0.5, 0.5] -> RGB uint8 frames, each pixel ``scale`` x ``scale``."""
    a = ((clip.clamp(-0.5, 0.5) + 0.5) * 255).round().byte().numpy()
    a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
    a = np.moveaxis(a, 0, -1)  # T, H, W, 3
    a = a.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = a.shape[1] - a.shape[1] % 2, a.shape[2] - a.shape[2] % 2
    return [np.ascontiguousarray(f[:h, :w]) for f in a]


def _size(clip, scale: int = 4) -> tuple[int, int]:
    h, w = clip.shape[-2] * scale, clip.shape[-1] * scale
    return w - w % 2, h - h % 2


# --------------------------------------------------------------------------- features
def gpt_layers(gpt) -> list[str]:
    """The default layers whose outputs become features: ``fc_in`` (the next clip's code
    vectors projected to the GPT's width: what the codes alone carry) and every attention
    block (``attn_stack.blocks.<i>``)."""
    return ["fc_in"] + [f"attn_stack.blocks.{name}"
                        for name, _ in gpt.attn_stack.blocks.named_children()]


def activation_spaces(gpt, data: MovieData, n: int, layers: Sequence[str] | None = None,
                      pool: str = "mean", stride: int = 1, prefix: str = "videogpt.",
                      batch_size: int = 32, cache_dir=None) -> dict:
    """Feature spaces of the GPT's ``layers`` over the whole movie, one per layer: a row
    for each window of two clips (previous, next), stamped at the window's last frame; the
    windows before the first whole one repeat the first frame."""
    from cinebrain.features.activations import extract_activations

    layers = gpt_layers(gpt) if layers is None else list(layers)
    pool = code_grid_pool(pool, tuple(gpt.gpt_config.code_shape))

    def as_pairs(clip: np.ndarray):  # (2n, H, W[, C]) -> the GPT's batch of one pair
        import torch

        x = torch.from_numpy(np.ascontiguousarray(clip, np.float32))
        x = x[None] if x.ndim == 3 else x.movedim(-1, 0)  # C, 2n, H, W
        return ({"previous": x[None, :, :n], "next": x[None, :, n:]},)

    as_pairs.cache_token = f"videogpt-pairs-{n}"

    spaces = extract_activations(gpt, data.frames, data.fps, layers, window=2 * n,
                                 stride=stride, pool=pool, input_fn=as_pairs,
                                 batch_size=batch_size, pad="edge", name_prefix=prefix,
                                 cache_dir=cache_dir)
    return {fs.name: fs for fs in spaces}


def code_grid_pool(pool: str, code_shape: tuple[int, int, int]):
    """The pooling of a GPT layer's output ``(B, t' h' w', D)`` (the next clip's code grid
    in raster order): "space" keeps the grid's positions and averages its time steps
    (``h' w' D`` features: visual responses depend on where things are), "last" keeps the
    positions of its last time step (the most recent frames), "mean" averages every
    position (``D`` features). Other values pass through to the extractor."""
    if pool not in ("space", "last", "mean"):
        return pool
    t, h, w = code_shape

    def grid(x):
        import torch

        if x.ndim != 3 or x.shape[1] != t * h * w:
            raise InputError("videogpt.features.pool", f"a layer output of shape "
                             f"{tuple(x.shape)} is not the code grid ({t}x{h}x{w} positions)",
                             "use pool: mean for layers outside the attention stack")
        g = x.reshape(x.shape[0], t, h * w * x.shape[-1])
        out = {"space": g.mean(1), "last": g[:, -1], "mean": x.mean(1)}[pool]
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(out)

    grid.cache_token = f"videogpt-grid-{pool}-{t}x{h}x{w}"
    return grid


def network_spaces(config: RunConfig, study, cache_dir=None, log: Log = _print) -> dict:
    """The feature spaces of ``features.networks``: every listed layer of each network over
    the study's movie, one band per layer (``<name>.<layer>``). A network is a cinebrain run
    folder with a finished ``videogpt train`` (its GPT on clip pairs of its own frame size
    and rate) or a Hugging Face model folder (:func:`cinebrain.features.activations.
    load_pretrained`, offline)."""
    from pathlib import Path

    from cinebrain.config import load_config
    from cinebrain.data.clips import movie_frames
    from cinebrain.features.activations import extract_movie_activations, load_pretrained

    out: dict = {}
    if not config.features.networks:
        return out
    if not study.stimulus.video:
        raise InputError("features.networks", "the study has no movie (stimulus.video)",
                         "network features are computed from the movie; add stimulus.video")
    movie = study.resolve(study.stimulus.video)
    for net in config.features.networks:
        path = Path(net.model)
        t0 = time.perf_counter()
        if (path / "stages" / "videogpt-train.json").is_file():
            other = load_config(path / "config.yaml", {"out": str(path)})
            _, gpt = load_models(other)
            v = other.videogpt.video
            frames, onsets = movie_frames(movie, v.size, v.fps, v.gray)
            data = MovieData(frames, onsets, v.fps, [], [])
            spaces = activation_spaces(gpt, data, v.clip_frames, net.layers, net.pool,
                                       net.stride, prefix=f"{net.name}.", cache_dir=cache_dir)
        else:
            if not net.layers:
                raise InputError(f"features.networks ({net.name})", "a Hugging Face model "
                                 "needs its layers named", "give layers, e.g. [layers.0, "
                                 "layers.1] (module names of the model)")
            model = load_pretrained(path)
            spaces = {fs.name: fs for fs in extract_movie_activations(
                movie, model, net.layers, window=net.window, size=tuple(net.size),
                gray=net.gray, stride=net.stride, pool=net.pool, name_prefix=f"{net.name}.",
                cache_dir=cache_dir)}
        for name, fs in spaces.items():
            fs.meta["band"] = name
            if name in out:
                raise InputError("features.networks", f"two networks give the space {name}",
                                 "give each network its own name")
            out[name] = fs
        log(f"  network {net.name}: {len(spaces)} layer(s) ({time.perf_counter() - t0:.1f} s)")
    return out


# --------------------------------------------------------------------------- evaluate
def layer_scores(config: RunConfig, study, spaces: dict, subjects: Sequence[str], mask,
                 log: Log = _print) -> dict[str, dict[str, np.ndarray]]:
    """Held-out r per voxel of ridge on each feature space alone: {subject: {space: r}}."""
    from cinebrain.data.design import subject_design
    from cinebrain.data.study import load_responses, run_timings
    from cinebrain.linear import fit_encoding_model
    from cinebrain.linear.encoding import alpha_grid
    from cinebrain.metrics import pearson_r

    a, m = config.alignment, config.model
    alphas = alpha_grid(m.alpha_min, m.alpha_max, m.n_alphas)
    out: dict[str, dict[str, np.ndarray]] = {}
    for s in subjects:
        timings = run_timings(study, s, spaces)
        responses = load_responses(study, s, timings, mask)
        names = [r.name for r in study.subjects[s].runs]
        test = ridge.test_run_indices(config, names, f"{config.study}: {s}")
        out[s] = {}
        for name, fs in spaces.items():
            d = subject_design(study, s, {name: fs}, {name: [name]}, mask=mask, hrf=a.hrf,
                               delays=a.delays, high_pass=a.high_pass, timings=timings,
                               responses=responses)
            res = fit_encoding_model(d.X, d.Y, d.run_index, d.band_sizes, [name],
                                     scheme="held_out", test_runs=test, kind="ridge",
                                     alphas=alphas, cv_folds=m.cv_folds, backend=m.backend,
                                     device=m.device, variance_partitioning=False,
                                     refit=False)
            out[s][name] = pearson_r(d.Y[res.test_rows], res.pred).astype(np.float32)
    return out


def evaluate(config: RunConfig, log: Log = _print) -> dict:
    """Score every layer of the trained GPT (and of the random-weights twin) by held-out
    ridge; layer-wise r per region; trained against random, paired across voxels."""
    import torch

    from cinebrain.data.study import study_mask
    from cinebrain.evaluate import comparison_regions
    from cinebrain.evaluate.compare import layer_comparison
    from cinebrain.features.stimulus import save_feature_spaces

    if config.threads:
        torch.set_num_threads(config.threads)
    run = RunFolder(config.out)
    run.require("videogpt-train")
    study = ridge.load(config)
    subjects = ridge.run_subjects(config, study)
    s = config.videogpt.features
    n = config.videogpt.video.clip_frames
    t0 = time.perf_counter()
    data = movie_data(config, study)
    vq, gpt = load_models(config)
    models = {"trained": gpt}
    if s.random_baseline:
        models["random"] = build_models(config, seed=s.seed)[1].eval()
    mask = study_mask(study, subjects)
    modality, rois = ridge.regions_of(config, study, mask)
    regions = comparison_regions(modality, rois)
    if mask is None:  # ROI series: each named target is its own region
        from cinebrain.data.study import response_names
        from cinebrain.evaluate import target_regions

        names = response_names(study, subjects)
        regions = target_regions(names) if names else {}
    hash_ = section_hash(config, "study", "subjects", "alignment", "model", "split", "videogpt")
    with run.stage("videogpt-evaluate", depends=["videogpt-train"], config_hash=hash_,
                   owns=("videogpt/features", "videogpt/metrics", "videogpt/evaluation.json")) as st:
        folder = st.videogpt
        r_all: dict[str, dict] = {}
        for weights, model in models.items():
            t1 = time.perf_counter()
            spaces = activation_spaces(model, data, n, s.layers, s.pool, s.stride,
                                       prefix=f"{weights}.")
            save_feature_spaces(spaces, folder.features_dir(weights))
            scores = layer_scores(config, study, spaces, subjects, mask, log)
            for subj, per in scores.items():
                for name, r in per.items():
                    save_npy(folder.metric(subj, weights, _layer(name)), r)
            r_all[weights] = scores
            log(f"  {weights} weights: {len(spaces)} layers extracted and fitted "
                f"({time.perf_counter() - t1:.1f} s)")
        result = layer_comparison(
            {w: {_layer(k): {subj: per[k] for subj, per in scores.items()}
                 for k in next(iter(scores.values()))} for w, scores in r_all.items()},
            regions, subjects)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(folder.evaluation, result)
        save_config(config, st.config)
        st.info = {"subjects": list(subjects)}
    _log_result(result, log)
    return result


def _layer(space_name: str) -> str:
    return space_name.split(".", 1)[1] if "." in space_name else space_name


def _log_result(result: dict, log: Log) -> None:
    for region, b in result["best_layer"].items():
        line = f"  {region}: best layer {b['layer']}, median r {b['median_r']:.3f}"
        for c in result["trained_vs_random"]:
            if c["region"] == region and c["layer"] == b["layer"]:
                line += (f" (random weights {c['median_b']:.3f}; trained better in "
                         f"{c['fraction_a_better']:.0%} of voxels, Wilcoxon p {c['wilcoxon_p']:.2g})")
        log(line)
