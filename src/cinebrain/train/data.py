"""Samplers and batch helpers: deterministic, shardable, and resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start part-way through an epoch.

    The order of epoch ``e`` is the permutation drawn from ``seed + e`` (the same on every
    rank), padded to a multiple of ``num_replicas`` and dealt out round-robin: rank ``r``
    gets positions ``r, r + R, r + 2R, ...``. So a global batch of ``b`` samples is the
    same set of samples whatever the number of ranks. ``start`` skips that many of this
    rank's samples: the ones a killed run already trained on.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous block of ``range(n)``, no padding, in order.

    Used for validation: concatenating the ranks' outputs in rank order gives back the
    whole set in its original order, with no sample counted twice.
    """

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0):
        self.begin = n * rank // num_replicas
        self.end = n * (rank + 1) // num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict / list / tuple to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def detach_to_cpu(outputs: Any) -> Any:
    """``outputs`` with every tensor detached, on the CPU, and half-precision floats made
    float32 (so that NumPy can read them)."""
    if isinstance(outputs, torch.Tensor):
        outputs = outputs.detach().cpu()
        return outputs.float() if outputs.dtype in (torch.bfloat16, torch.float16) else outputs
    if isinstance(outputs, Mapping):
        return {k: detach_to_cpu(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(detach_to_cpu(v) for v in outputs)
    return outputs


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the length of its first tensor (1 if it holds none)."""
    return _first_length(batch) or 1


def _first_length(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for value in batch:
            n = _first_length(value)
            if n is not None:
                return n
    return None
