"""Shared fixtures: a tiny simulated study written once per test session.

Under pytest-xdist (the README's ``-n 2``) this file also shares the machine out: each
worker runs on its own cores (two workers whose BLAS and torch each start a thread per
core would spin on each other's cores), the modules with the longest fixtures are handed
out first (pyproject's ``--dist loadfile`` keeps a module's tests, and so its module-scoped
fixtures, on one worker), and the tiny study is written once for all workers.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

#: This process's pytest-xdist worker ("gw0", ...), None when tests run in one process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _own_cores() -> None:
    """Give this xdist worker its share of the process's cores (``n`` cores for ``w``
    workers: ``n // w`` each), so that its BLAS and torch threads (one per available core,
    as the CLI sets them) never outnumber the cores. Nothing changes with fewer cores than
    workers, or outside xdist."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if WORKER is None or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // count
    if share < 1:
        return
    index = int(WORKER.removeprefix("gw")) % count
    os.sched_setaffinity(0, cores[index * share:(index + 1) * share])
    # libraries loaded before this point started one thread per core of the whole machine
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=share)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(share)


_own_cores()

#: The longest modules (seconds on one core, with ``--durations``; those that write the tiny
#: study count it), longest first: handed out first, so that the short modules fill the end
#: of the run on both workers.
_LONG_MODULES = {
    "test_pipeline_videogpt.py": 60, "test_pipeline_neurons.py": 40,
    "test_pipeline_autoencoder.py": 30, "test_train.py": 16, "test_pipeline_ridge.py": 14,
    "test_fit_torchrun.py": 12, "test_report.py": 10, "test_report_browser.py": 10,
    "test_pinned_ridge.py": 9, "test_significance_refit.py": 8, "test_runfolder.py": 6,
    "test_cli_options.py": 6, "test_cli_bad_input.py": 6, "test_shared_design.py": 5,
    "test_simulate.py": 5, "test_regions_group.py": 4, "test_config_cli.py": 3,
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under xdist, the modules with long fixtures first (``--dist loadfile`` hands out
    whole modules in this order, so a module's fixtures are built once)."""
    if WORKER is None:
        return
    weight = {id(item): _LONG_MODULES.get(item.path.name, 0) for item in items}
    items.sort(key=lambda item: -weight[id(item)])  # stable: the files' own order within


@pytest.fixture
def fake_embed(monkeypatch):
    """A deterministic stand-in for the sentence model: one-hot of the text's length."""
    import numpy as np

    import cinebrain.features.text as text_mod

    def embed(texts):
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            if t.strip():
                out[i, len(t.strip()) % 8] = 1.0
        return out

    monkeypatch.setattr(text_mod, "embed_texts", embed)
    return embed


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A small but complete simulated study (2 subjects x 2 runs, 8 mm voxels).

    Returns the path of its ``study.yaml``. Tests must not modify it: copy it first.
    Under xdist the first worker to need it writes it for all (the others wait for it).
    """
    from filelock import FileLock

    from cinebrain.data.simulate import simulate_study

    root = tmp_path_factory.getbasetemp()
    if WORKER is not None:
        root = root.parent  # the session's folder, above every worker's own
    done = root / "tiny" / "study"
    with FileLock(str(root / "tiny.lock")):
        if not (done / "study.yaml").is_file():
            part = root / "tiny-part"  # whole or not at all: a failed build is not reused
            shutil.rmtree(part, ignore_errors=True)
            simulate_study(
                part / "study", n_subjects=2, n_runs=2, run_duration=60.0, tr=1.5, fps=12,
                size=(160, 90), voxel_size=8, seed=1, progress=False,
            )
            part.rename(root / "tiny")
    return done / "study.yaml"
