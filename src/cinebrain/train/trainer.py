"""The training loop shared by every deep model of cinebrain.

A model brings its own loss; the engine brings everything else. The model is an
``nn.Module`` with

``training_step(batch) -> dict``
    ``"loss"`` (a scalar tensor to minimise) plus any scalar metrics to log.
``validation_step(batch) -> dict``
    Tensors to aggregate over the validation set (under ``torch.no_grad``).
``validation_epoch_end(outputs: list[dict]) -> dict[str, float]`` (optional)
    Metrics from the outputs of every validation batch, from all ranks, in dataset order
    (for example per-voxel r over the whole set). Without it the engine averages each
    output over samples.
``set_grad_checkpointing(enabled: bool)`` (optional)
    Called when ``TrainConfig.grad_checkpointing`` is set.
``config`` (optional)
    A dataclass, pydantic model or dict, stored in every checkpoint (as plain dicts) so the
    model can be rebuilt.
``flops_per_sample`` (optional)
    Training FLOPs (forward + backward) per sample, a number or a zero-argument callable;
    with it the log reports achieved FLOP/s.

Validation metrics are logged with a ``val_`` prefix (``"r"`` becomes ``"val_r"``) unless
the model already used one.

Resume is exact (the resumed run's losses equal the uninterrupted run's, bit for bit on
the CPU) when the dataset's ``__getitem__`` is deterministic: the data order, the
optimizer, the schedule and every RNG of every rank are restored, and the batches of the
interrupted epoch already trained on are skipped. Random augmentation inside DataLoader
workers (``num_workers > 0``) is reseeded per epoch, not per batch, so it does not resume
exactly mid-epoch.

Checkpoints (``out_dir/checkpoints``, see :mod:`cinebrain.train.checkpoint`): a run that
starts from step 0 without resuming first deletes the checkpoints an earlier run left
there, so ``last.pt`` and ``best.pt`` only ever name this run's states. A new best is
always written as a regular checkpoint, so ``last.pt`` is never older than ``best.pt``
and resuming from it restores the early-stopping state that ``best.pt`` belongs to.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from cinebrain.errors import ConfigError
from cinebrain.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointManager,
    checkpoint_step,
    load_checkpoint,
    plain,
)
from cinebrain.train.config import TrainConfig
from cinebrain.train.data import (
    ResumableSampler,
    ShardSampler,
    batch_size_of,
    detach_to_cpu,
    to_device,
)
from cinebrain.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    setup_distributed,
)
from cinebrain.train.log import MetricsLog
from cinebrain.train.optim import build_optimizer, build_scheduler
from cinebrain.train.seeding import rng_state, seed_everything, set_rng_state

#: TrainConfig fields that may change between a run and its resumption without
#: changing the trajectory.
_RESUME_SAFE = {
    "progress",
    "tensorboard",
    "out_dir",
    "log_every",
    "num_workers",
    "device",
    "keep_last",
    "checkpoint_every_steps",
    "epochs",
    "max_steps",
    "patience",
    "find_unused_parameters",
    "device_data",
}


@dataclass
class History:
    """What :meth:`Trainer.fit` did: logged train and validation records (this call only;
    ``metrics.jsonl`` holds the whole run), the best validation metric and the files
    (``best_checkpoint`` is None unless ``best.pt`` holds the state of ``best_step``)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


class EarlyStopping:
    """Tracks the best value of one validation metric and evaluations since it improved."""

    def __init__(
        self,
        metric: str | None,
        mode: str = "max",
        patience: int | None = None,
        min_delta: float = 0.0,
    ):
        self.metric = metric
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def update(self, metrics: dict[str, float], step: int) -> bool:
        """Record one evaluation; True when it is a new best."""
        if self.metric is None:
            return False
        if self.metric not in metrics:
            raise ConfigError(
                "train.early_stopping_metric",
                f"the model's validation reports no metric {self.metric!r}",
                f"use one of: {', '.join(sorted(metrics))}",
            )
        value = float(metrics[self.metric])
        if self.best is None:
            improved = math.isfinite(value)
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
        self.bad_evals = state["bad_evals"]


class _TrainingStep(nn.Module):
    """Routes ``forward`` to ``model.training_step``: DDP synchronises gradients only for
    work done through its own ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, Any]:
        return self.model.training_step(batch)


def resolve_device(name: str, dist: DistInfo | None = None,
                   key: str = "train.device") -> torch.device:
    """The torch device for ``name`` ("auto": CUDA when present, "cpu", "cuda"): under DDP
    this process's GPU. ``key`` names the config field in the error when CUDA is asked for
    but absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            key,
            "device 'cuda' asked for but CUDA is not available",
            "use device: auto or cpu",
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device(
            "cuda", dist.local_rank if dist is not None and dist.enabled
            else torch.cuda.current_device()
        )
    return torch.device("cpu")


class Trainer:
    """Trains ``model`` on ``train_dataset`` as ``config`` says.

    Parameters
    ----------
    model : nn.Module
        Follows the protocol in this module's docstring.
    config : TrainConfig
    train_dataset, val_dataset : torch Dataset
        Map-style datasets; batches are made by ``collate_fn`` (default collation when
        ``None``) and may be tensors or (nested) dicts / tuples of tensors.
    callbacks : sequence of callables
        Each is called as ``callback(trainer)`` after every optimizer step, once that
        step's evaluation and checkpoint are done (``trainer.step`` counts steps).

    Under ``torchrun`` the trainer joins the process group, wraps the model in
    ``DistributedDataParallel`` and gives each rank ``batch_size // world_size`` samples
    per step; only rank 0 writes files.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        callbacks: Sequence[Callable[[Trainer], None]] = (),
    ):
        for method in ("training_step", "validation_step"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"{type(model).__name__} has no {method}(batch) method; "
                    "see cinebrain.train.trainer for the model protocol"
                )
        self.config = config
        on_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        self.dist = setup_distributed("nccl" if on_cuda else "gloo")
        self.device = resolve_device(config.device, self.dist)
        if config.batch_size % self.dist.world_size:
            raise ConfigError(
                "train.batch_size",
                f"batch size {config.batch_size} does not divide among "
                f"{self.dist.world_size} processes",
                f"use a multiple of {self.dist.world_size}",
            )
        self._check_precision()
        self.model = model.to(self.device)
        if config.grad_checkpointing:
            if not callable(getattr(model, "set_grad_checkpointing", None)):
                raise ConfigError(
                    "train.grad_checkpointing",
                    f"{type(model).__name__} does not support gradient checkpointing",
                    "set grad_checkpointing: false",
                )
            model.set_grad_checkpointing(True)
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.collate_fn = collate_fn
        self.callbacks = list(callbacks)

        self.per_rank_batch = config.batch_size // self.dist.world_size
        # A private generator for worker seeds: iterating a DataLoader without one draws
        # from the global torch RNG, which would shift dropout masks after a resume.
        self._loader_generator = torch.Generator()
        if self._device_batches(train_dataset):
            # the dataset's arrays live on the device and batches are gathered there, in
            # the order ResumableSampler would give (same set_epoch / start / num_samples)
            self.train_sampler = self.train_loader = train_dataset.device_batches(
                self.per_rank_batch, shuffle=config.shuffle, seed=config.seed,
                device=self.device, drop_last=config.drop_last,
                num_replicas=self.dist.world_size, rank=self.dist.rank)
        else:
            self.train_sampler = ResumableSampler(
                train_dataset, self.dist.world_size, self.dist.rank, config.shuffle,
                config.seed
            )
            self.train_loader = DataLoader(
                train_dataset,
                batch_size=self.per_rank_batch,
                sampler=self.train_sampler,
                drop_last=config.drop_last,
                collate_fn=collate_fn,
                num_workers=config.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=self._loader_generator,
            )
        n = self.train_sampler.num_samples
        self.steps_per_epoch = (
            n // self.per_rank_batch if config.drop_last else math.ceil(n / self.per_rank_batch)
        )
        if self.steps_per_epoch == 0:
            raise ConfigError(
                "train.batch_size",
                f"the training set has {len(train_dataset)} samples, fewer "
                f"than one batch of {config.batch_size}",
                "use a smaller batch_size, or drop_last: false",
            )
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch

        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.ddp_model = None
        if self.dist.enabled:
            self.ddp_model = DistributedDataParallel(
                _TrainingStep(self.model),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
        self.early_stopping = EarlyStopping(
            config.early_stopping_metric,
            config.early_stopping_mode,
            config.patience,
            config.min_delta,
        )
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.checkpoints = (
            CheckpointManager(self.out_dir / "checkpoints", config.keep_last)
            if self.out_dir is not None
            else None
        )
        self.step = 0  # optimizer steps done
        self.epoch = 0  # current epoch
        self.batch_in_epoch = 0  # batches of the current epoch already trained on
        self.elapsed_s = 0.0  # training wall time, summed over resumptions
        self.history = History()
        self._resumed = False
        self._best_stale = False  # best.pt on disk is not the state of early_stopping.best_step

    # ------------------------------------------------------------------ set-up helpers
    def _check_precision(self) -> None:
        precision = self.config.precision
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                "train.precision", "fp16 needs a CUDA device", "use precision: bf16 on the CPU"
            )
        if (
            precision == "bf16"
            and self.device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise ConfigError(
                "train.precision", "this GPU does not support bf16", "use precision: fp16 or fp32"
            )

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of the forward pass (a no-op for fp32)."""
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool | str | Path = False) -> History:
        """Train until ``max_steps`` / ``epochs`` or early stopping; return the history.

        ``resume=True`` continues from ``out_dir/checkpoints/last.pt`` when it exists
        (and starts afresh when it does not); a path continues from that checkpoint.
        A resumed run takes exactly the steps the uninterrupted run would have taken.
        """
        if resume:
            path = self._find_resume(resume)
            if path is not None:
                self.resume(path)
        if not self._resumed:
            seed_everything(self.config.seed + self.dist.rank)
            if self.step == 0 and self.checkpoints is not None and self.is_main:
                self.checkpoints.clear()  # a fresh run: an earlier run's files are not its own
        config = self.config
        log = MetricsLog(
            self.out_dir,
            tensorboard=config.tensorboard,
            enabled=self.is_main,
            resume_step=self.step if self._resumed else None,
        )
        progress = None
        if config.progress and self.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=self.total_steps, initial=self.step, desc="train", dynamic_ncols=True
            )
        flops_per_sample = getattr(self.model, "flops_per_sample", None)
        if callable(flops_per_sample):
            flops_per_sample = flops_per_sample()

        sums: dict[str, torch.Tensor] = {}
        interval = {"steps": 0, "samples": 0, "seconds": 0.0}
        done = self.step >= self.total_steps or self.early_stopping.should_stop
        self.model.train()
        try:
            while not done:
                self.train_sampler.set_epoch(self.epoch)
                self.train_sampler.start = self.batch_in_epoch * self.per_rank_batch
                # datasets that redraw per epoch (random window offsets) are told too
                getattr(self.train_dataset, "set_epoch", lambda epoch: None)(self.epoch)
                self._loader_generator.manual_seed(config.seed + self.epoch)
                mark = time.perf_counter()
                for batch in self.train_loader:
                    epoch = self.epoch
                    values, lr = self._train_step(batch)
                    for key, value in values.items():
                        sums[key] = sums.get(key, 0.0) + value
                    self.step += 1
                    self.batch_in_epoch += 1
                    interval["steps"] += 1
                    interval["samples"] += batch_size_of(batch) * self.dist.world_size
                    now = time.perf_counter()
                    interval["seconds"] += now - mark
                    self.elapsed_s += now - mark
                    end_of_epoch = self.batch_in_epoch >= self.steps_per_epoch
                    if end_of_epoch:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    finished = self.step >= self.total_steps
                    if progress is not None:
                        progress.update(1)

                    if self.step % config.log_every == 0 or end_of_epoch or finished:
                        record = self._train_record(sums, interval, epoch, lr, flops_per_sample)
                        log.write(record)
                        self.history.train.append(record)
                        if progress is not None:
                            progress.set_postfix(
                                loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}"
                            )
                        sums = {}
                        interval = {"steps": 0, "samples": 0, "seconds": 0.0}

                    improved = False
                    if self._eval_due(end_of_epoch, finished):
                        metrics = self.evaluate()
                        improved = self.early_stopping.update(metrics, self.step)
                        record = {
                            "kind": "val",
                            "step": self.step,
                            "epoch": epoch,
                            **metrics,
                            "elapsed_s": self.elapsed_s,
                        }
                        log.write(record)
                        self.history.val.append(record)
                    done = finished or self.early_stopping.should_stop
                    due = (
                        improved
                        or end_of_epoch
                        or done
                        or (
                            config.checkpoint_every_steps is not None
                            and self.step % config.checkpoint_every_steps == 0
                        )
                    )
                    if self.checkpoints is not None and due:
                        self.save_checkpoint(best=improved)
                    for callback in self.callbacks:
                        callback(self)
                    if done:
                        break
                    mark = time.perf_counter()
                else:
                    if self.batch_in_epoch:  # the loader ran short of steps_per_epoch
                        self.epoch += 1
                        self.batch_in_epoch = 0
        finally:
            log.close()
            if progress is not None:
                progress.close()

        history = self.history
        history.best_metric = self.early_stopping.best
        history.best_step = self.early_stopping.best_step
        history.stopped_early = self.early_stopping.should_stop
        if self.checkpoints is not None:
            history.last_checkpoint = (
                self.checkpoints.last if self.checkpoints.last.exists() else None
            )
            named = self.early_stopping.best_step is not None and not self._best_stale
            history.best_checkpoint = (
                self.checkpoints.best if named and self.checkpoints.best.exists() else None
            )
        return history

    def _train_step(self, batch: Any) -> tuple[dict[str, torch.Tensor], float]:
        """One optimizer step; returns the step's detached scalars and its learning rate."""
        batch = to_device(batch, self.device)
        with self.autocast():
            out = (
                self.ddp_model(batch)
                if self.ddp_model is not None
                else (self.model.training_step(batch))
            )
        loss = out.get("loss") if isinstance(out, dict) else None
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError(
                f"{type(self.model).__name__}.training_step must return a dict "
                "with a scalar tensor under 'loss'"
            )
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        values = {
            key: torch.as_tensor(value).detach().float().to(self.device)
            for key, value in out.items()
        }
        shaped = sorted(key for key, value in values.items() if value.ndim)
        if shaped:
            raise TypeError(
                f"{type(self.model).__name__}.training_step returned non-scalar "
                f"metrics {shaped}; log scalars only"
            )
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            values["grad_norm"] = (
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                .detach()
                .float()
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return values, lr

    def _train_record(
        self,
        sums: dict[str, torch.Tensor],
        interval: dict[str, float],
        epoch: int,
        lr: float,
        flops_per_sample: float | None,
    ) -> dict[str, Any]:
        keys = sorted(sums)
        # one collective (and one device sync) per logged line, not per step
        means = all_reduce_mean(torch.stack([sums[k] for k in keys]) / interval["steps"])
        record: dict[str, Any] = {"kind": "train", "step": self.step, "epoch": epoch, "lr": lr}
        record.update(zip(keys, means.tolist(), strict=True))
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(
                f"training loss is {record['loss']} at step {self.step}; "
                "lower lr, set grad_clip, or use fp32"
            )
        seconds = max(interval["seconds"], 1e-12)
        record["samples_per_s"] = interval["samples"] / seconds
        if flops_per_sample:
            record["flops_per_s"] = record["samples_per_s"] * float(flops_per_sample)
        record["elapsed_s"] = self.elapsed_s
        return record

    def _eval_due(self, end_of_epoch: bool, finished: bool) -> bool:
        config = self.config
        if self.val_dataset is None:
            return False
        if config.eval_every_steps is not None and self.step % config.eval_every_steps == 0:
            return True
        if (
            end_of_epoch
            and config.eval_every_epochs is not None
            and self.epoch % config.eval_every_epochs == 0
        ):
            return True
        # the final model is always evaluated, so best.pt and the history see it
        return finished

    def _device_batches(self, dataset) -> bool:
        """Whether ``dataset``'s batches are gathered on the device
        (``TrainConfig.device_data`` and a dataset with ``device_batches``)."""
        return self.config.device_data and callable(getattr(dataset, "device_batches", None))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Validation metrics over ``dataset`` (default: the validation set).

        Under DDP every rank must call it; each rank runs its contiguous share, the
        outputs are gathered, and every rank returns the same metrics.
        """
        dataset = self.val_dataset if dataset is None else dataset
        if dataset is None:
            raise ValueError("no validation dataset: pass one to Trainer or evaluate()")
        if self._device_batches(dataset):
            loader = dataset.device_batches(
                self.per_rank_batch, shuffle=False, shard=True, device=self.device,
                num_replicas=self.dist.world_size, rank=self.dist.rank)
        else:
            loader = DataLoader(
                dataset,
                batch_size=self.per_rank_batch,
                sampler=ShardSampler(len(dataset), self.dist.world_size, self.dist.rank),
                collate_fn=self.collate_fn,
                num_workers=self.config.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator(),
            )
        was_training = self.model.training
        self.model.eval()
        outputs, sizes = [], []
        try:
            for batch in loader:
                with self.autocast():
                    out = self.model.validation_step(to_device(batch, self.device))
                outputs.append(detach_to_cpu(out))
                sizes.append(batch_size_of(batch))
        finally:
            self.model.train(was_training)
        gathered = all_gather_objects((outputs, sizes))
        outputs = [o for rank_outputs, _ in gathered for o in rank_outputs]
        sizes = [n for _, rank_sizes in gathered for n in rank_sizes]
        epoch_end = getattr(self.model, "validation_epoch_end", None)
        metrics = epoch_end(outputs) if callable(epoch_end) else _average(outputs, sizes)
        return {(k if k.startswith("val_") else f"val_{k}"): float(v) for k, v in metrics.items()}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimizer, scheduler,
        scaler, position in the data, RNG states (this process's), early stopping, and
        the model and training configurations."""
        model_config = getattr(self.model, "config", None)
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed_s": self.elapsed_s,
            "data": {
                "seed": self.config.seed,
                "shuffle": self.config.shuffle,
                "n_train": len(self.train_dataset),
                "per_rank_batch": self.per_rank_batch,
                "world_size": self.dist.world_size,
            },
            "rng": [rng_state()],
            "early_stopping": self.early_stopping.state_dict(),
            "train_config": plain(self.config),
            "model_config": plain(model_config) if model_config is not None else None,
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "torch_version": str(torch.__version__),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (or a checkpoint file held)."""
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint format {state.get('format_version')!r} is not {FORMAT_VERSION}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.elapsed_s = state["elapsed_s"]
        self.early_stopping.load_state_dict(state["early_stopping"])
        data = state["data"]
        if data["n_train"] != len(self.train_dataset) or data["per_rank_batch"] != (
            self.per_rank_batch
        ):
            warnings.warn(
                "resuming with a different training set size or per-process batch: "
                "the data order will not match the interrupted run",
                stacklevel=2,
            )
        states = state["rng"]
        if len(states) == self.dist.world_size:
            set_rng_state(states[self.dist.rank])
        else:
            warnings.warn(
                f"checkpoint has RNG states for {len(states)} processes, this run "
                f"has {self.dist.world_size}: restoring the first",
                stacklevel=2,
            )
            set_rng_state(states[0])

    def save_checkpoint(self, *, best: bool = False) -> Path | None:
        """Write a checkpoint of the current state (rank 0 writes; every rank must call).

        Writes ``step-XXXXXXXX.pt`` (``last.pt`` alone when ``keep_last`` is 0) and points
        ``last.pt`` at it; ``best`` also points ``best.pt`` at it.
        """
        if self.checkpoints is None:
            raise ValueError("no out_dir in the TrainConfig: nowhere to write checkpoints")
        rng = all_gather_objects(rng_state())  # collective: every rank's generators
        if not self.is_main:
            return None
        payload = self.state_dict()
        payload["rng"] = rng
        written = self.checkpoints.save(payload, self.step, best=best)
        if best:
            self._best_stale = False
        return written

    def resume(self, path: str | Path) -> None:
        """Load the checkpoint at ``path``; the next :meth:`fit` continues from it."""
        state = load_checkpoint(path, map_location="cpu")
        saved = state.get("train_config") or {}
        current = plain(self.config)
        changed = sorted(
            k for k in current if k not in _RESUME_SAFE and k in saved and saved[k] != current[k]
        )
        if changed:
            warnings.warn(
                f"resuming {path} with changed settings {changed}: the run will "
                "differ from an uninterrupted one",
                stacklevel=2,
            )
        self.load_state_dict(state)
        self._resumed = True
        if self.checkpoints is not None and self.is_main:
            self._match_best(Path(path))

    def _match_best(self, resumed: Path) -> None:
        """Make ``best.pt`` the checkpoint of the resumed early-stopping state's best step,
        or mark it stale (kept, not reported) when that checkpoint is gone."""
        best_step = self.early_stopping.best_step
        best = self.checkpoints.best
        on_disk = checkpoint_step(best) if best.exists() else None
        if on_disk == best_step or (best_step is None and on_disk is None):
            self._best_stale = False
            return
        if best_step == self.step:
            # the resumed checkpoint is the best (a crash came between last.pt and best.pt)
            self.checkpoints.link_best(resumed)
        elif best_step is not None and checkpoint_step(self.checkpoints.step_path(best_step)) == best_step:
            self.checkpoints.link_best(self.checkpoints.step_path(best_step))
        else:
            self._best_stale = True
            warnings.warn(
                f"{best} holds step {on_disk}, not the resumed run's best step {best_step}: "
                "it is kept, but not reported as the best, until a new best replaces it",
                stacklevel=3,
            )
            return
        self._best_stale = False

    def _find_resume(self, resume: bool | str | Path) -> Path | None:
        if resume is True:
            if self.checkpoints is None:
                raise ValueError("fit(resume=True) needs out_dir in the TrainConfig")
            return self.checkpoints.last if self.checkpoints.last.exists() else None
        return Path(resume)


def _average(outputs: list[dict[str, Any]], sizes: list[int]) -> dict[str, float]:
    """Mean of each validation output over samples: scalars weighted by batch size,
    tensors averaged over all their elements."""
    if not outputs:
        return {}
    metrics = {}
    for key in outputs[0]:
        values = [torch.as_tensor(o[key]).float() for o in outputs]
        if all(v.ndim == 0 for v in values):
            weights = torch.tensor(sizes, dtype=torch.float64)
            stacked = torch.stack(values).double()
            metrics[key] = float((stacked * weights).sum() / weights.sum())
        else:
            metrics[key] = float(torch.cat([v.reshape(-1) for v in values]).double().mean())
    return metrics
