"""Checkpoint files: written atomically, rotated, and loadable with ``weights_only=True``.

A run's ``checkpoints/`` folder holds ``step-XXXXXXXX.pt`` (the newest ``keep_last``),
``last.pt`` (the newest) and ``best.pt`` (the best by the early-stopping metric).
``last.pt`` and ``best.pt`` are hard links to a step file where the file system allows,
so a checkpoint is written once. Every file appears under its final name only when
complete: a crash mid-write leaves the previous checkpoint untouched.
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

from cinebrain._files import atomic_path

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def plain(obj: Any) -> Any:
    """``obj`` as dicts, lists, tuples, numbers, strings and tensors (dataclasses, paths
    and other objects converted) so that ``torch.load(weights_only=True)`` reads it."""
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


def _link(source: Path, target: Path) -> None:
    """Point ``target`` at ``source``'s content atomically (hard link, else a copy)."""
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

    def save(
        self, payload: dict[str, Any], step: int, *, last: bool = True, best: bool = False
    ) -> Path:
        """Write ``payload`` as step ``step``; update ``last.pt`` and/or ``best.pt``.

        With ``last=False`` only ``best.pt`` is written (an evaluation between regular
        checkpoints found a new best).
        """
        if not last:
            return save_checkpoint(self.best, payload)
        if self.keep_last > 0:
            written = save_checkpoint(self.step_path(step), payload)
            _link(written, self.last)
        else:
            written = save_checkpoint(self.last, payload)
        if best:
            _link(written, self.best)
        self._rotate()
        return written

    def _rotate(self) -> None:
        files = self.step_files()
        for old in files[: max(0, len(files) - self.keep_last)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
