"""Subjects that share a design fitted once (stacked targets) give each subject exactly
the results of fitting it alone: in the library (:func:`fit_shared_encoding_models`) and in
the ridge pipeline's fit stage (subjects grouped by their design matrices)."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.data.splits import run_index_from_lengths
from cinebrain.linear.encoding import (
    concat_targets,
    fit_encoding_model,
    fit_shared_encoding_models,
    split_targets,
)


def assert_float32_equal(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    """Equal to float32 rounding, for z-scored responses: 1e-5 relative over the array
    (Frobenius), every value within 1e-3 (the float32 solvers' rounding depends on how
    many targets are fitted together; tests/test_fit_torchrun.py uses it too)."""
    assert a.shape == b.shape and a.dtype == b.dtype, what
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert np.linalg.norm(a64 - b64) <= 1e-5 * max(np.linalg.norm(b64), 1e-12), what
    np.testing.assert_allclose(a64, b64, rtol=0, atol=1e-3, err_msg=what)


def _shared_study(n_subjects=3, n_targets=5, seed=0):
    """One design (3 runs x 90 TRs, 2 bands) and each subject's own responses."""
    rng = np.random.default_rng(seed)
    run_index = run_index_from_lengths([90, 90, 90])
    X = rng.standard_normal((run_index.size, 30)).astype(np.float32)
    Ys = []
    for _ in range(n_subjects):
        W = rng.standard_normal((30, n_targets)) * rng.uniform(0.05, 1.0, n_targets)
        Y = X @ W + rng.standard_normal((run_index.size, n_targets)) * 2.0
        Ys.append(Y.astype(np.float32))
    return X, Ys, run_index


@pytest.mark.parametrize("kind,scheme", [("banded", "leave_one_run_out"), ("ridge", "held_out")])
def test_shared_fit_equals_one_by_one(kind, scheme):
    X, Ys, run_index = _shared_study()
    kw = dict(scheme=scheme, kind=kind, n_iter=6, cv_folds=3, alphas=np.logspace(-1, 4, 8))
    shared = fit_shared_encoding_models(X, Ys, run_index, [18, 12], ["a", "b"], **kw)
    assert len(shared) == len(Ys)
    for Y, s in zip(Ys, shared, strict=True):
        alone = fit_encoding_model(X, Y, run_index, [18, 12], ["a", "b"], **kw)
        np.testing.assert_array_equal(s.model.alphas, alone.model.alphas)
        if kind == "banded":
            np.testing.assert_allclose(s.model.deltas, alone.model.deltas, rtol=1e-5, atol=1e-5)
        for a, b in zip(s.folds, alone.folds, strict=True):
            np.testing.assert_array_equal(a["alphas"], b["alphas"])
        np.testing.assert_allclose(s.pred, alone.pred, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.pred_split, alone.pred_split, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.model.coef, alone.model.coef, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.model.intercept, alone.model.intercept, atol=1e-5)
        assert s.subsets.keys() == alone.subsets.keys()
        for k in s.subsets:
            np.testing.assert_allclose(s.subsets[k], alone.subsets[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(s.test_rows, alone.test_rows)
    # the subjects are different: a mix-up of their columns would be seen
    assert not np.allclose(shared[0].pred, shared[1].pred)


def test_shared_ridge_matches_scikit_learn_per_subject():
    """Independent reference: each subject's held-out prediction is scikit-learn's float64
    Ridge at the penalty chosen for each of its targets, on the training-standardised X."""
    from sklearn.linear_model import Ridge

    X, Ys, run_index = _shared_study(n_subjects=2, n_targets=3, seed=1)
    shared = fit_shared_encoding_models(X, Ys, run_index, [30], scheme="held_out", kind="ridge",
                                        cv_folds=3, alphas=np.logspace(-1, 4, 8))
    train, test = run_index != 2, run_index == 2
    mean, std = X[train].mean(0), X[train].std(0)
    Z = ((X - mean) / std).astype(np.float64)
    for Y, res in zip(Ys, shared, strict=True):
        for t in range(Y.shape[1]):
            ref = Ridge(alpha=float(res.model.alphas[t])).fit(Z[train], Y[train, t]).predict(Z[test])
            np.testing.assert_allclose(res.pred[:, t], ref, rtol=1e-3, atol=1e-4)


def test_split_and_concat_are_inverse():
    X, Ys, run_index = _shared_study(n_subjects=1, n_targets=6)
    res = fit_encoding_model(X, Ys[0], run_index, [18, 12], scheme="leave_one_run_out",
                             n_iter=4, cv_folds=3, alphas=np.logspace(-1, 4, 5))
    parts = split_targets(res, [2, 0, 4])
    assert [p.pred.shape[1] for p in parts] == [2, 0, 4]
    back = concat_targets(parts)
    np.testing.assert_array_equal(back.pred, res.pred)
    np.testing.assert_array_equal(back.model.coef, res.model.coef)
    np.testing.assert_array_equal(back.model.deltas, res.model.deltas)
    np.testing.assert_array_equal(back.folds[1]["alphas"], res.folds[1]["alphas"])
    for k in res.subsets:
        np.testing.assert_array_equal(back.subsets[k], res.subsets[k])
    with pytest.raises(ValueError, match="sum to"):
        split_targets(res, [2, 2])


# --------------------------------------------------------------------------- pipeline
def _config(study, out, subjects=None, **split):
    from cinebrain.config import RunConfig

    return RunConfig.model_validate({
        "study": str(study), "out": str(out), "progress": False, "report": False,
        "subjects": subjects,
        "features": {"video": ["pixels"], "audio": ["envelope"], "annotation_text": False,
                     "annotation_columns": False, "transcript": []},
        "model": {"kind": "banded", "n_alphas": 6, "n_iter": 4, "cv_folds": 3},
        "split": split,
        "evaluate": {"n_permutations": 0},
    })


def _files(root):
    from pathlib import Path

    root = Path(root)
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.parts[len(root.parts)] in ("models", "predictions")}


def test_pipeline_fits_subjects_sharing_a_design_together(tiny_study, tmp_path):
    """Two simulated subjects who watched the same movie in the same runs: fitted together
    (the log says so) into exactly the files, and the values, of fitting each alone."""
    import json
    import shutil

    from cinebrain.pipelines import ridge

    lines: list[str] = []
    together = _config(tiny_study, tmp_path / "together", scheme="leave_one_run_out")
    ridge.features(together, lambda m: None)
    ridge.fit(together, lines.append)
    assert any("sub-01, sub-02 share one design" in line for line in lines), lines
    alone_files = {}
    for s in ("sub-01", "sub-02"):  # the same features stage, each subject fitted alone
        shutil.copytree(tmp_path / "together", tmp_path / s)
        solo: list[str] = []
        ridge.fit(_config(tiny_study, tmp_path / s, subjects=[s], scheme="leave_one_run_out"),
                  solo.append)
        assert not any("share one design" in line for line in solo)
        alone_files.update({k: v for k, v in _files(tmp_path / s).items() if f"/{s}/" in k})
    joint = _files(tmp_path / "together")
    assert sorted(joint) == sorted(alone_files)
    assert any(k.endswith("subset_r2__visual.npy") for k in joint)  # band subsets too
    for rel, path in joint.items():
        if rel.endswith(".json"):
            assert json.loads(path.read_text()) == json.loads(alone_files[rel].read_text())
            continue
        a, b = np.load(path), np.load(alone_files[rel])
        assert a.shape == b.shape and a.dtype == b.dtype, rel
        if rel.endswith(("alpha.npy", "deltas.npy", "test_run_index.npy", "test_true.npy")):
            np.testing.assert_array_equal(a, b, err_msg=rel)
        else:
            assert_float32_equal(a, b, rel)
    p1 = np.load(joint["predictions/sub-01/test_pred.npy"])
    p2 = np.load(joint["predictions/sub-02/test_pred.npy"])
    assert not np.allclose(p1, p2)  # each subject's own targets, not a copy


def test_pipeline_keeps_different_designs_apart(tiny_study, tmp_path):
    """A subject whose runs are timed differently (another response_shift: another X) is
    not grouped with the others, however its runs are named."""
    import shutil

    import yaml

    from cinebrain.pipelines import ridge

    study = tmp_path / "study"
    shutil.copytree(tiny_study.parent, study)
    spec = yaml.safe_load((study / tiny_study.name).read_text())
    spec["subjects"]["sub-02"]["runs"][0]["response_shift"] = 1.5
    (study / tiny_study.name).write_text(yaml.safe_dump(spec))
    lines: list[str] = []
    cfg = _config(study / tiny_study.name, tmp_path / "run", scheme="leave_one_run_out")
    ridge.features(cfg, lambda m: None)
    ridge.fit(cfg, lines.append)
    assert not any("share one design" in line for line in lines), lines
