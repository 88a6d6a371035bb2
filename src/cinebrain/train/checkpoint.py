"""Checkpoint files: written atomically, rotated, and loadable with ``weights_only=True``.

A run's ``checkpoints/`` folder holds ``step-XXXXXXXX.pt`` (the newest ``keep_last``),
``last.pt`` (the newest) and ``best.pt`` (the best by the early-stopping metric).
``last.pt`` and ``best.pt`` are hard links to a step file where the file system allows
(a copy elsewhere), so a checkpoint is written once and deleting an old step file never
deletes what ``last.pt`` or ``best.pt`` name. Every file appears under its final name
only when complete: a crash mid-write leaves the previous checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from cinebrain._files import atomic_path

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def plain(obj: Any) -> Any:
    """``obj`` as dicts, lists, tuples, numbers, strings and tensors (dataclasses, pydantic
    models, paths and other objects converted) so that ``torch.load(weights_only=True)``
    reads it."""
    if isinstance(obj, BaseModel):
        return plain(obj.model_dump())
    if is_dataclass(obj) and not isinstance(obj, type):
        return plain(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return str(obj)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, no pickled code)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The optimizer step a checkpoint was written at, without reading its tensors (they
    are memory-mapped, not loaded); None when the file is missing or unreadable."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, torn or not a checkpoint: whatever torch.load raises
        return None
    step = state.get("step") if isinstance(state, dict) else None
    return int(step) if step is not None else None


def _link(source: Path, target: Path) -> None:
    """Point ``target`` at ``source``'s content atomically (hard link, else a copy)."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(source, target):
            return  # already the same file (a rename onto it would leave the temporary)
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


class CheckpointManager:
    """The checkpoint files of one run folder."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 2):
        self.directory = Path(directory)
        self.keep_last = int(keep_last)

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def step_path(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}.pt"

    def step_files(self) -> list[Path]:
        """Step checkpoints present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := _STEP_FILE.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def save(self, payload: dict[str, Any], step: int, *, best: bool = False) -> Path:
        """Write ``payload`` as step ``step``, point ``last.pt`` at it (and ``best.pt`` with
        ``best``), then delete step files beyond the newest ``keep_last``.

        ``last.pt`` is updated before ``best.pt``: a crash between the two leaves a
        ``last.pt`` whose state names itself the best, which :meth:`link_best` repairs on
        resume. Only step files up to ``step`` count for rotation, so after resuming from
        an earlier checkpoint the file just written is never the one deleted; later step
        files (of the abandoned continuation) are replaced as the run reaches them.
        """
        if self.keep_last > 0:
            written = save_checkpoint(self.step_path(step), payload)
            _link(written, self.last)
        else:
            written = save_checkpoint(self.last, payload)
        if best:
            _link(written, self.best)
        self._rotate(step)
        return written

    def link_best(self, source: str | os.PathLike) -> None:
        """Point ``best.pt`` at the checkpoint ``source`` (atomically)."""
        _link(Path(source), self.best)

    def clear(self) -> None:
        """Delete every checkpoint of this folder (step files, ``last.pt``, ``best.pt``):
        what a fresh run does before writing its first one."""
        for path in (*self.step_files(), self.last, self.best):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _rotate(self, step: int) -> None:
        files = [p for p in self.step_files() if int(_STEP_FILE.match(p.name).group(1)) <= step]
        for old in files[: max(0, len(files) - self.keep_last)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
