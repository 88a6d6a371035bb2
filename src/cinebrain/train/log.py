"""The metrics log of a run: ``metrics.jsonl`` and, optionally, TensorBoard event files.

One JSON object per line: ``{"kind": "train" | "val", "step", "epoch", ...}``. A line is
flushed as soon as it is written, so a killed run keeps every line it logged; a resumed
run first drops the lines past the step it resumes from, so the log reads as one run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from cinebrain._files import write_text


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line, from a kill, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Appends records to ``directory/metrics.jsonl`` and mirrors scalars to TensorBoard.

    ``enabled=False`` (every rank but the main one) makes every method a no-op.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None,
        *,
        tensorboard: bool = False,
        enabled: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled and directory is not None
        self.path = Path(directory) / "metrics.jsonl" if directory is not None else None
        self._file = None
        self._writer = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged past its last checkpoint
            self._writer = SummaryWriter(
                str(Path(directory) / "tensorboard"), purge_step=resume_step
            )

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()
        if self._writer is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{kind}/{key}", value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
