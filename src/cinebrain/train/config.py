"""The training configuration: one flat dataclass of plain types.

Plain types (numbers, strings, tuples, ``None``) so that a YAML file validated by pydantic
maps onto it directly, and so that it can be stored inside a checkpoint and read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from cinebrain.errors import ConfigError

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MODES = ("max", "min")


@dataclass
class TrainConfig:
    """How to train a model; nothing here knows what the model predicts.

    Attributes
    ----------
    epochs : int
        Passes over the training set. Ignored when ``max_steps`` is set.
    max_steps : int or None
        Optimizer steps to run; overrides ``epochs`` when set.
    batch_size : int
        Global batch size (samples per optimizer step, summed over all ranks). Under DDP
        each rank gets ``batch_size // world_size``; it must divide evenly.
    lr, weight_decay, betas, eps : AdamW parameters. Weight decay applies to parameters
        with two or more dimensions only (weights, embeddings), not to biases or norms.
    warmup_steps : int
        Linear warmup from ``lr / warmup_steps`` to ``lr`` over this many steps.
    warmup_fraction : float or None
        Warmup as a fraction of the total steps; overrides ``warmup_steps`` when set.
    schedule : {"cosine", "constant"}
        Learning rate after warmup: cosine decay to ``min_lr_ratio * lr``, or constant.
    min_lr_ratio : float
        Final learning rate of the cosine schedule, as a fraction of ``lr``.
    grad_clip : float or None
        Clip the global gradient norm (L2 over all parameters) to this value.
    precision : {"fp32", "bf16", "fp16"}
        ``bf16`` runs the forward pass under ``torch.autocast`` (CPU and CUDA); ``fp16``
        adds a gradient scaler and is CUDA only.
    grad_checkpointing : bool
        Ask the model to recompute activations in the backward pass; the model must
        define ``set_grad_checkpointing(enabled: bool)``.
    early_stopping_metric : str or None
        Validation metric to watch (for example ``"val_r"``); also picks ``best.pt``.
    early_stopping_mode : {"max", "min"}
    patience : int or None
        Evaluations without improvement before stopping; ``None`` never stops early
        (``best.pt`` is still kept).
    min_delta : float
        Smallest change that counts as an improvement.
    eval_every_epochs : int or None
        Evaluate at the end of every n-th epoch.
    eval_every_steps : int or None
        Evaluate every n optimizer steps as well.
    checkpoint_every_steps : int or None
        Write a checkpoint every n steps, in addition to the end of every epoch and of
        the run.
    keep_last : int
        Step checkpoints (``step-XXXXXXXX.pt``) kept; older ones are deleted.
        ``last.pt`` and ``best.pt`` are always kept.
    seed : int
        Seeds Python, NumPy and torch at the start of a run, and the data order: epoch
        ``e`` uses the permutation drawn from ``seed + e``.
    shuffle : bool
        Shuffle the training set every epoch.
    drop_last : bool
        Drop the last incomplete training batch of an epoch.
    num_workers : int
        DataLoader worker processes.
    find_unused_parameters : bool
        Under DDP, allow steps in which some parameters get no gradient (for example
        modality dropout skipping an encoder); costs a graph traversal per step.
    device : {"auto", "cpu", "cuda"}
        ``auto`` takes CUDA when present.
    log_every : int
        Steps between lines in ``metrics.jsonl`` (loss and metrics averaged over them).
    tensorboard : bool
        Also write TensorBoard event files under ``out_dir/tensorboard``.
    progress : bool
        Show a progress bar (main process only).
    out_dir : str or None
        Where checkpoints and logs go; ``None`` writes nothing.
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    warmup_fraction: float | None = None
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    grad_checkpointing: bool = False
    early_stopping_metric: str | None = None
    early_stopping_mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    eval_every_epochs: int | None = 1
    eval_every_steps: int | None = None
    checkpoint_every_steps: int | None = None
    keep_last: int = 2
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = 0
    find_unused_parameters: bool = False
    device: str = "auto"
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True
    out_dir: str | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # lists from YAML
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key and its allowed values."""

        def bad(key: str, allowed: str) -> ConfigError:
            return ConfigError(
                f"train.{key}", f"invalid value {getattr(self, key)!r}", f"use {allowed}"
            )

        for key, allowed in (
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("device", DEVICES),
            ("early_stopping_mode", MODES),
        ):
            if getattr(self, key) not in allowed:
                raise bad(key, " or ".join(repr(a) for a in allowed))
        for key in ("epochs", "batch_size", "log_every"):
            if int(getattr(self, key)) < 1:
                raise bad(key, "an integer >= 1")
        for key in (
            "max_steps",
            "eval_every_epochs",
            "eval_every_steps",
            "checkpoint_every_steps",
            "patience",
        ):
            value = getattr(self, key)
            if value is not None and int(value) < 1:
                raise bad(key, "an integer >= 1, or null")
        for key in ("warmup_steps", "keep_last", "num_workers"):
            if int(getattr(self, key)) < 0:
                raise bad(key, "an integer >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "a positive number")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise bad("warmup_fraction", "a number in [0, 1), or null")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "a number in [0, 1]")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "a positive number, or null")
        if self.patience is not None and self.early_stopping_metric is None:
            raise ConfigError(
                "train.patience",
                "patience is set but early_stopping_metric is not",
                "name the validation metric to watch, for example early_stopping_metric: val_r",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (tuples stay tuples)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"train.{unknown[0]}", "unknown key", f"use one of: {', '.join(sorted(known))}"
            )
        return cls(**values)
