"""User-facing errors.

An :class:`InputError` is raised by every reader and validator when the user's input is
wrong. Its message is one line: the file (or key), the problem, and the fix. The CLI
prints it and exits with status 2, never with a traceback.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input: names the file, the problem and the fix, on one line.

    A :class:`ValueError`, so code that validates values catches it as one; the CLI
    prints it as one line and exits with status 2.
    """

    def __init__(self, where: str | os.PathLike | None, problem: str, fix: str | None = None):
        self.where = str(where) if where is not None else None
        self.problem = problem
        self.fix = fix
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(problem.rstrip("."))
        if fix:
            parts.append(f"; {fix.rstrip('.')}")
        super().__init__(" ".join("".join(parts).split()))


class ConfigError(InputError):
    """A configuration value or key is invalid."""
