"""AdamW with decoupled weight decay, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from cinebrain.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    Weight decay applies to parameters with two or more dimensions (weight matrices,
    convolution kernels, embeddings); biases and normalisation scales are not decayed.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


class WarmupCosine:
    """Learning-rate multiplier for optimizer step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then
    either constant 1, or a cosine from 1 down to ``min_lr_ratio`` reached at step
    ``total_steps - 1``. A class rather than a closure so that ``LambdaLR`` stores its
    parameters in the scheduler's state dict.
    """

    def __init__(
        self,
        warmup_steps: int,
        total_steps: int,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
    ):
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.schedule = schedule
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        decay_steps = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def warmup_steps_for(config: TrainConfig, total_steps: int) -> int:
    """Warmup length in steps (``warmup_fraction`` of ``total_steps`` when set)."""
    if config.warmup_fraction is not None:
        return int(round(config.warmup_fraction * total_steps))
    return config.warmup_steps


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` stepping once per optimizer step with :class:`WarmupCosine`."""
    factor = WarmupCosine(
        warmup_steps_for(config, total_steps), total_steps, config.schedule, config.min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
