"""The ridge fit stage under a real ``torchrun`` (two CPU ranks, gloo): the same files as
one process, and a failure on one rank fails every rank and leaves the run folder as it
was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_shared_design import assert_float32_equal

QUIET = lambda msg: None  # noqa: E731


def _config(study, out):
    from cinebrain.config import RunConfig

    return RunConfig.model_validate({
        "study": str(study), "out": str(out), "progress": False, "report": False,
        "features": {"video": ["pixels"], "audio": ["envelope"], "annotation_text": False,
                     "annotation_columns": False, "transcript": []},
        "model": {"kind": "banded", "n_alphas": 6, "n_iter": 4, "cv_folds": 3},
        "split": {"scheme": "leave_one_run_out"},
        "evaluate": {"n_permutations": 0, "ceiling": "none"},
    })


def _torchrun(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "cinebrain", "fit", str(config), *args],
        env=env, capture_output=True, text=True, timeout=240)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def features(tiny_study, tmp_path_factory):
    """A run folder with the features stage done (two subjects who share the stimulus)."""
    from cinebrain.config import save_config
    from cinebrain.pipelines import ridge
    from cinebrain.pipelines.runfolder import RunFolder

    out = tmp_path_factory.mktemp("torchrun") / "run"
    config = _config(tiny_study, out)
    ridge.features(config, QUIET)
    save_config(config, RunFolder(out).config)
    return out


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(tiny_study, features, tmp_path):
    from cinebrain.pipelines import ridge

    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(features, one)
    shutil.copytree(features, two)
    ridge.fit(_config(tiny_study, one), QUIET)
    done = _torchrun(two / "config.yaml", "--out", str(two))
    assert done.returncode == 0, done.stderr[-3000:]
    # logs from rank 0 only: every line once
    assert done.stdout.count("[fit] run folder") == 1
    assert done.stdout.count("sub-01: ") == 1 and "2 ranks" in done.stdout
    assert "2 fit(s) on 2 ranks: rank 0 1, rank 1 1" in done.stdout  # both ranks worked
    assert not list(two.glob(".staging-*"))
    m1 = json.loads((one / "stages" / "fit.json").read_text())
    m2 = json.loads((two / "stages" / "fit.json").read_text())
    assert sorted(m1["files"]) == sorted(m2["files"]) and m2["info"]["ranks"] == 2
    for run in (one, two):
        ridge.evaluate(_config(tiny_study, run), QUIET)
    f1 = {k: v for k, v in _tree(one).items() if k.startswith(("models/", "predictions/", "metrics/"))}
    f2 = {k: v for k, v in _tree(two).items() if k.startswith(("models/", "predictions/", "metrics/"))}
    assert sorted(f1) == sorted(f2)
    assert {"metrics/sub-02/r.npy", "models/sub-01/alpha.npy",
            "predictions/sub-02/test_pred.npy"} <= set(f1)
    for rel in f1:
        if not rel.endswith(".npy"):
            assert f1[rel] == f2[rel], rel
            continue
        a, b = np.load(one / rel), np.load(two / rel)
        if rel.endswith(("alpha.npy", "deltas.npy", "test_true.npy", "test_run_index.npy")):
            assert f1[rel] == f2[rel], rel  # the penalties chosen: byte-equal
        else:  # fits on half the targets each: float32 kernels of other shapes
            assert_float32_equal(a, b, rel)


@pytest.mark.slow
def test_a_failure_on_one_rank_fails_every_rank_and_changes_nothing(tiny_study, features,
                                                                    tmp_path):
    """sub-02's BOLD is corrupt past its header: only the rank fitting sub-02's voxels
    reads it, yet both ranks fail with its one-line error and the folder is untouched."""
    study = tmp_path / "study"
    shutil.copytree(Path(tiny_study).parent, study)
    bold = study / "sub-02" / "func" / "sub-02_run-2_bold.nii.gz"
    bold.write_bytes(bold.read_bytes()[: bold.stat().st_size // 2])
    run = tmp_path / "run"
    shutil.copytree(features, run)
    before = _tree(run)
    done = _torchrun(run / "config.yaml", "--out", str(run), "--study",
                     str(study / Path(tiny_study).name))
    assert done.returncode != 0
    # rank 0 prints the failing rank's one-line error; the failing rank prints its own too,
    # and the two processes' stderr interleave in either order
    lines = done.stderr.splitlines()
    main_errors = [line for line in lines if line.startswith("cinebrain: error: ")]
    assert len(main_errors) == 1 and "sub-02_run-2" in main_errors[0], lines
    assert all("sub-02_run-2" in line for line in lines if line.startswith("cinebrain (rank"))
    assert "exitcode  : 2" in done.stderr  # both ranks: user error, no traceback
    assert done.stderr.count("exitcode  : 2") == 2
    assert _tree(run) == before and not list(run.glob(".staging-*"))


def test_units_split_large_subjects_and_keep_small_ones_whole():
    from cinebrain.pipelines.ridge import assign_units, fit_units

    # 17 ROI subjects that share nothing, 2 ranks: whole subjects, 9 and 8
    units = fit_units([6] * 17, 2)
    assert [(u.start, u.stop) for u in units] == [(0, 6)] * 17
    assert sorted(len(r) for r in assign_units(units, 2)) == [8, 9]
    # two whole-brain subjects sharing a design on 4 ranks: 4 even voxel chunks, one each
    units = fit_units([2 * 85810], 4)
    assert [u.stop - u.start for u in units] == [42905] * 4 and units[-1].stop == 171620
    assert [len(r) for r in assign_units(units, 4)] == [1, 1, 1, 1]
    # one process: a group whole, unless it stacks more than the cap
    assert [(u.start, u.stop) for u in fit_units([300, 7], 1, cap=100)] == [
        (0, 100), (100, 200), (200, 300), (0, 7)]
    # every target of every group exactly once, whatever the ranks
    for world in (1, 3, 8):
        units = fit_units([5, 1000, 37, 0], world)
        for g, total in enumerate([5, 1000, 37, 0]):
            cols = [c for u in units if u.group == g for c in range(u.start, u.stop)]
            assert cols == list(range(total))
        assert sum(len(r) for r in assign_units(units, world)) == len(units)
