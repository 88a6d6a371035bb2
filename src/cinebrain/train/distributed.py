"""Distributed data parallel under ``torchrun``: process group set-up and small collectives.

``torchrun`` starts one process per rank and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (plus the rendezvous address); :func:`setup_distributed` reads them and
joins the process group (gloo on CPU, NCCL on CUDA). Without those variables everything
here degrades to a single process: rank 0 of a world of 1.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

#: Seconds the process sleeps after leaving the process group (see cleanup_distributed).
_DRAIN_S = 0.05


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the environment names a rank and a world size."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group if launched by ``torchrun``; return this process's place.

    ``backend`` defaults to NCCL when CUDA is available and gloo otherwise. Calling it
    again, or in a process that already joined, only reports the current state.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def cleanup_distributed() -> None:
    """Leave the process group, if this process joined one.

    Every rank waits at a barrier first: a rank that tears its gloo connections down while
    another is still writing files can abort the other's process at exit. Then a second
    barrier drains the first: gloo's worker threads release a finished collective (and the
    earlier ones it holds, e.g. the tensors of an ``all_gather_object``) only after the
    caller has been woken, and that release takes the GIL. A release still pending when the
    interpreter finalises aborts the process ("terminate called without an active
    exception"), so the caller waits, with the GIL released, until they are done.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.barrier()
        dist.destroy_process_group()
        time.sleep(_DRAIN_S)  # the GIL released: a worker still releasing a collective ends


_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


@contextlib.contextmanager
def single_process():
    """Run the block as a process of its own, outside ``torchrun``'s world: the rank
    variables are hidden, so a :class:`~cinebrain.train.Trainer` inside trains alone (for
    independent jobs per rank, such as the cells of a sweep). Refused once this process
    has joined a process group."""
    if dist.is_available() and dist.is_initialized():
        raise RuntimeError("single_process() inside a joined process group")
    saved = {k: os.environ.pop(k) for k in _TORCHRUN_VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, and in any process that is not part of a process group."""
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-item list without a process group)."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (returned unchanged without a process group)."""
    if get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / get_world_size()


_OBJECT_GROUP: list = []


def _object_group():
    """The group object collectives travel over: the default one when it is gloo, else a
    gloo group of every rank (created on first use, by every rank at once), so that large
    pickled results stay in host memory rather than going through the GPUs."""
    if dist.get_backend() == "gloo":
        return None
    if not _OBJECT_GROUP:
        _OBJECT_GROUP.append(dist.new_group(backend="gloo"))
    return _OBJECT_GROUP[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` on rank ``dst``, in rank order (None on the other ranks); a
    one-item list without a process group. Every rank must call it."""
    if get_world_size() == 1:
        return [obj]
    group = _object_group()
    out: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst, group=group)
    return out
