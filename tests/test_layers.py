"""The layering of DESIGN.md is a checked contract: ``lint-imports`` (import-linter) with
the layers declared in pyproject.toml, so an import that runs the wrong way fails here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports (import-linter) is not installed; install the test extras")
    res = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.split("Contracts:")[-1].lower() or " 0 broken" in res.stdout


def test_no_science_left_at_the_top_level():
    src = ROOT / "src" / "cinebrain"
    assert not (src / "workflow.py").exists()
    assert not (src / "deep.py").exists()
