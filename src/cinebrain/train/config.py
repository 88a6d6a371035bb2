"""The training configuration: the one schema of the training engine's settings.

A pydantic model of plain types (numbers, strings, tuples, ``None``), so that every deep
family's config takes it whole as its ``train`` section (YAML keys and ``--<family>-train-*``
flags come from the fields, their annotations and descriptions), and so that a checkpoint
stores it as a plain dict (:meth:`TrainConfig.model_dump`) that
``torch.load(weights_only=True)`` reads back (:meth:`TrainConfig.model_validate`).

A family sets its own defaults with :meth:`TrainConfig.with_defaults`, a subclass whose
fields are the same with other defaults: a YAML section or flag that sets some keys keeps
the family's defaults for the others.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from cinebrain.errors import ConfigError

__all__ = ["TrainConfig"]


class TrainConfig(BaseModel):
    """How to train a model; nothing here knows what the model predicts.

    Invalid values raise :class:`pydantic.ValidationError` naming the field (the config
    layer reports it as one line). Weight decay applies to parameters with two or more
    dimensions only (weights, embeddings), not to biases or norms. ``bf16`` runs the
    forward pass under ``torch.autocast`` (CPU and CUDA); ``fp16`` adds a gradient scaler
    and is CUDA only. Epoch ``e`` shuffles with the permutation drawn from ``seed + e``.

    ``out_dir`` and ``progress`` are run-time settings: a pipeline sets them per run (the
    run folder's training directory, and whether bars are shown); they may differ between
    a run and its resumption.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(10, ge=1, description="passes over the training set (ignored when max_steps is set)")
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps to run; overrides epochs (null: epochs decide)"
    )
    batch_size: int = Field(
        32, ge=1,
        description="samples per optimizer step, summed over all processes (under DDP each "
        "of N processes takes batch_size / N, which must divide evenly)",
    )
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="peak learning rate (AdamW)")
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay (weights and embeddings only, not biases or norms)"
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, two numbers in [0, 1)")
    eps: float = Field(1e-8, description="AdamW epsilon")
    warmup_steps: int = Field(
        0, ge=0, description="linear warmup from lr / warmup_steps to lr over this many steps"
    )
    warmup_fraction: float | None = Field(
        None, ge=0, lt=1,
        description="warmup as a fraction of the total steps, in [0, 1); overrides warmup_steps "
        "(null: warmup_steps decide)",
    )
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="learning rate after warmup: cosine decay to min_lr_ratio * lr, or constant"
    )
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="final learning rate of the cosine schedule, as a fraction of lr"
    )
    grad_clip: float | None = Field(
        1.0, gt=0, description="clip the global gradient L2 norm to this value (null: no clipping)"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="forward-pass precision: fp32, bf16 autocast, or fp16 autocast with a "
        "gradient scaler (CUDA only)",
    )
    grad_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (the model must support it)"
    )
    early_stopping_metric: str | None = Field(
        None, description="validation metric to watch, e.g. val_r; also picks best.pt (null: none)"
    )
    early_stopping_mode: Literal["max", "min"] = Field(
        "max", description="whether larger (max) or smaller (min) values of the metric are better"
    )
    patience: int | None = Field(
        None, ge=1,
        description="evaluations without improvement before stopping; needs early_stopping_metric "
        "(null: never stop early; best.pt is still kept)",
    )
    min_delta: float = Field(0.0, description="smallest change of the metric that counts as an improvement")
    eval_every_epochs: int | None = Field(
        1, ge=1, description="evaluate at the end of every n-th epoch (null: only at the end of the run)"
    )
    eval_every_steps: int | None = Field(
        None, ge=1, description="also evaluate every n optimizer steps (null: not by steps)"
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1,
        description="also write a checkpoint every n steps, besides every epoch end and the run's "
        "end (null: not by steps)",
    )
    keep_last: int = Field(
        2, ge=0,
        description="step checkpoints (step-XXXXXXXX.pt) kept, older ones deleted; last.pt and "
        "best.pt are always kept (0: only last.pt and best.pt)",
    )
    seed: int = Field(0, description="seed of Python, NumPy and torch at the start, and of the data order")
    shuffle: bool = Field(True, description="shuffle the training set every epoch")
    drop_last: bool = Field(True, description="drop the last incomplete training batch of an epoch")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    device_data: bool = Field(
        True, description="a dataset that offers device_batches (cinebrain.data.neurons."
        "NeuronClipDataset) keeps its arrays on the training device and gathers every batch "
        "there, in the DataLoader's order (no host assembly per step); false: the DataLoader")
    find_unused_parameters: bool = Field(
        False,
        description="under DDP, allow steps in which some parameters get no gradient (e.g. modality "
        "dropout skipping an encoder); costs a graph traversal per step",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="training device (auto: CUDA when present)"
    )
    log_every: int = Field(
        10, ge=1, description="steps between lines of metrics.jsonl (averaged over them)"
    )
    tensorboard: bool = Field(False, description="also write TensorBoard event files under out_dir/tensorboard")
    progress: bool = Field(True, description="show a progress bar (main process only)")
    out_dir: str | None = Field(
        None, description="where checkpoints and logs go (null: nothing is written)"
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("use two numbers in [0, 1)")
        return betas

    @field_validator("early_stopping_metric", "patience")
    @classmethod
    def _patience_needs_a_metric(cls, value: Any, info: ValidationInfo) -> Any:
        # A field validator (not a model validator) so that the error names the field and
        # a rejected assignment leaves the config as it was.
        other = {**info.data, info.field_name: value}
        if other.get("patience") is not None and other.get("early_stopping_metric") is None:
            raise ValueError(
                "patience is set but early_stopping_metric is not: name the validation metric "
                "to watch, for example early_stopping_metric: val_r"
            )
        return value

    @classmethod
    def with_defaults(cls, name: str, **defaults: Any) -> type[TrainConfig]:
        """A subclass named ``name`` with the same fields, validation and descriptions, and
        ``defaults`` as the defaults of the fields they name.

        A family's config declares ``train: T = Field(default_factory=T)`` with
        ``T = TrainConfig.with_defaults("AutoencoderTrainConfig", epochs=60, ...)``; keys
        a YAML section leaves out keep these defaults (a plain ``TrainConfig`` would fall
        back to its own). The defaults are validated here.
        """
        unknown = sorted(set(defaults) - set(cls.model_fields))
        if unknown:
            raise ConfigError(
                f"train.{unknown[0]}", "unknown key", f"use one of: {', '.join(cls.model_fields)}"
            )
        fields: dict[str, Any] = {}
        for key, value in defaults.items():
            info = cls.model_fields[key]
            # the same constraints (metadata) and description; only the default changes
            fields[key] = (
                info.rebuild_annotation(),
                Field(value, description=info.description),
            )
        model = create_model(name, __base__=cls, __doc__=cls.__doc__, **fields)
        model(**defaults)  # a default that breaks a rule fails here, not in a user's run
        return model
