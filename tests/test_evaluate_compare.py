"""Model comparison and lesion effects (cinebrain.evaluate.compare, cinebrain.evaluate.lesion)."""

from __future__ import annotations

import numpy as np
import pytest

from cinebrain.evaluate import (
    average_comparison,
    average_lesion_regions,
    compare_regions,
    lesion_maps,
    lesion_regions,
    lesion_summary,
    mean_direction,
    mean_maps,
    noise_ceiling_subjects,
    pearson_r,
    reconstruction_baseline,
    reconstruction_comparison,
    scores_on_rows,
    select_rows,
)


def _scores(seed=0, n=12):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.1, 0.7, n), rng.uniform(-0.1, 0.7, n), rng.uniform(0.3, 0.9, n)


# --------------------------------------------------------------------------- comparison
def test_compare_regions_by_hand():
    r_a, r_b, ceiling = _scores()
    sel = np.zeros(12, bool)
    sel[[1, 4, 5]] = True
    rows = compare_regions(r_a, r_b, {"V1": sel, "empty": np.zeros(12, bool)},
                           ceiling=ceiling, subject="s1")
    assert [row["region"] for row in rows] == ["all", "V1"]  # the empty region left out
    v1 = rows[1]
    assert v1["subject"] == "s1" and v1["n_voxels"] == 3
    assert v1["autoencoder_median_r"] == pytest.approx(sorted(r_a[sel])[1])
    assert v1["ridge_median_r"] == pytest.approx(sorted(r_b[sel])[1])
    assert v1["ratio"] == pytest.approx(v1["autoencoder_median_r"] / v1["ridge_median_r"])
    assert v1["fraction_voxels_autoencoder_better"] == pytest.approx(np.sum(r_a[sel] > r_b[sel]) / 3)
    assert v1["median_ceiling"] == pytest.approx(sorted(ceiling[sel])[1])
    assert rows[0]["n_voxels"] == 12


def test_compare_regions_without_second_model_ceiling_or_positive_baseline():
    r_a, r_b, _ = _scores()
    alone = compare_regions(r_a, None, {}, ceiling=np.ones(5))  # ceiling of another shape
    assert list(alone[0]) == ["subject", "region", "n_voxels", "autoencoder_median_r"]
    neg = compare_regions(np.abs(r_a) + 0.01, -np.abs(r_b), {}, names=("vivit", "ridge"), all_voxels=True)
    assert neg[0]["ratio"] is None and neg[0]["fraction_voxels_vivit_better"] == 1.0
    assert compare_regions(r_a, r_b, {}, all_voxels=False) == []


def test_average_comparison_over_subjects():
    r_a, r_b, c = _scores()
    sel = np.arange(12) < 6
    rows = (compare_regions(r_a, r_b, {"V1": sel}, ceiling=c, subject="a")
            + compare_regions(r_a + 0.1, r_b, {"V1": sel}, subject="b"))
    table = average_comparison(rows)
    assert [t["region"] for t in table] == ["all", "V1"]
    v1 = table[1]
    a_med = (np.median(r_a[sel]) + np.median(r_a[sel] + 0.1)) / 2
    assert v1["autoencoder_median_r"] == pytest.approx(a_med)
    assert v1["ridge_median_r"] == pytest.approx(np.median(r_b[sel]))
    assert v1["ratio"] == pytest.approx(a_med / np.median(r_b[sel]))
    assert v1["median_ceiling"] == pytest.approx(np.median(c[sel]))  # subject a only
    # no second model: no ratio
    assert "ratio" not in average_comparison(compare_regions(r_a, None, {}))[0]


def test_reconstruction_baselines_by_hand():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((10, 2, 3))
    assert reconstruction_baseline(target, "mse") == pytest.approx(np.mean(target**2))
    train = rng.standard_normal((20, 2, 3)) + 1.0
    d = mean_direction(train)
    flat = train.reshape(20, -1)
    np.testing.assert_allclose(d, np.mean([x / np.linalg.norm(x) for x in flat], axis=0))
    t = target.reshape(10, -1)
    cos = [x @ d / (np.linalg.norm(x) * np.linalg.norm(d)) for x in t]
    assert reconstruction_baseline(target, "cosine", d) == pytest.approx(1 - np.mean(cos))
    out = reconstruction_comparison(0.5, target, "cosine", train)
    assert out["loss"] == "cosine" and out["autoencoder"] == 0.5
    assert out["ratio"] == pytest.approx(0.5 / (1 - np.mean(cos)))
    assert reconstruction_comparison(0.2, np.zeros((3, 4)), "mse")["ratio"] is None
    with pytest.raises(ValueError):
        reconstruction_baseline(target, "cosine")


def test_select_rows_and_scores_on_rows():
    rng = np.random.default_rng(3)
    run_index = np.repeat([0, 1, 2], 10)
    true = rng.standard_normal((30, 4)).astype(np.float32)
    pred = true + rng.standard_normal((30, 4)).astype(np.float32)
    picked = select_rows(true, pred, run_index, [2], true[20:])
    np.testing.assert_array_equal(picked[0], true[20:])
    np.testing.assert_array_equal(picked[1], pred[20:])
    assert select_rows(true, pred, run_index, [1, 2], true[20:]) is None  # other rows
    assert select_rows(true, pred, run_index, [2], true[20:] + 1.0) is None  # other cleaning
    both = {"a": picked, "b": (picked[0] * 0.5 + 0.1, picked[1])}
    scores = scores_on_rows(both, "subjects")
    shared = noise_ceiling_subjects(np.stack([both["a"][0], both["b"][0]]))
    np.testing.assert_allclose(scores["a"][0], pearson_r(true[20:], pred[20:]), rtol=1e-6)
    assert scores["a"][0].dtype == np.float32
    np.testing.assert_array_equal(scores["b"][1], shared)
    own = {"a": np.full(4, 0.8)}
    rep = scores_on_rows(both, "repeats", own)
    np.testing.assert_array_equal(rep["a"][1], own["a"])
    assert rep["b"][1] is None
    assert scores_on_rows({"a": picked}, "subjects")["a"][1] is None  # one subject
    assert scores_on_rows(both, None)["a"][1] is None


# --------------------------------------------------------------------------- lesions
def _lesion(seed=0, n_trs=20, n_vox=8, with_r=True):
    from cinebrain.metrics import pearson_r as r_of
    from cinebrain.models.lesion import LesionResult

    rng = np.random.default_rng(seed)
    intact = rng.standard_normal((n_trs, n_vox))
    lesioned = intact + rng.standard_normal((n_trs, n_vox)) * np.linspace(0, 1, n_vox)
    change = (lesioned - intact).std(0)
    rel = change / intact.std(0)
    Y = intact + rng.standard_normal((n_trs, n_vox))
    r_i, r_l = (r_of(Y, intact), r_of(Y, lesioned)) if with_r else (None, None)
    return LesionResult(intact, lesioned, change, rel, (lesioned - intact).mean(0), r_i, r_l,
                        None if r_i is None else r_i - r_l,
                        {"video": {"intact": 0.5, "lesioned": 0.7, "delta": 0.2}})


def test_lesion_maps_regions_and_summary_by_hand():
    res = _lesion()
    res.relative_change[0] = np.nan  # not finite maps are written finite
    maps = lesion_maps(res)
    assert list(maps) == ["change", "relative_change", "delta_r"]
    assert maps["relative_change"][0] == 0.0 and maps["change"].dtype == np.float32
    sel = np.zeros(8, bool)
    sel[[2, 3, 6]] = True
    regions = lesion_regions(res, {"V1": sel, "empty": np.zeros(8, bool)})
    assert list(regions) == ["V1"]
    assert regions["V1"]["n_voxels"] == 3
    assert regions["V1"]["mean_relative_change"] == pytest.approx(res.relative_change[sel].mean())
    assert regions["V1"]["median_delta_r"] == pytest.approx(sorted(res.delta_r[sel])[1])
    entry = lesion_summary(res, {"V1": sel})
    assert entry["recon"]["video"]["delta"] == 0.2
    assert entry["median_change"] == pytest.approx(np.median(res.change))
    assert entry["median_r_lesioned"] == pytest.approx(np.median(res.r_lesioned))
    assert entry["regions"] == regions


def test_lesion_without_measured_responses_and_subject_means():
    a, b = _lesion(0), _lesion(1, with_r=False)
    assert "delta_r" not in lesion_maps(b)
    entry_b = lesion_summary(b, {"all": np.ones(8, bool)})
    assert "median_r_intact" not in entry_b and "median_delta_r" not in entry_b["regions"]["all"]
    entry_a = lesion_summary(a, {"all": np.ones(8, bool)})
    means = average_lesion_regions([entry_a, entry_b])
    want = (entry_a["regions"]["all"]["mean_relative_change"]
            + entry_b["regions"]["all"]["mean_relative_change"]) / 2
    assert means["all"]["mean_relative_change"] == pytest.approx(want)
    assert means["all"]["median_delta_r"] is None  # subject b has none
    assert average_lesion_regions([entry_a])["all"]["median_delta_r"] == pytest.approx(
        entry_a["regions"]["all"]["median_delta_r"])
    maps = mean_maps([lesion_maps(a), lesion_maps(b)])
    assert list(maps) == ["change", "relative_change"]  # delta_r only where all have it
    np.testing.assert_allclose(maps["change"], (lesion_maps(a)["change"] + lesion_maps(b)["change"]) / 2)
    assert mean_maps([]) == {} and average_lesion_regions([]) == {}


def test_paired_comparison_matches_scipy_and_counts():
    from scipy.stats import wilcoxon

    from cinebrain.evaluate import paired_comparison

    rng = np.random.default_rng(3)
    b = rng.normal(0.1, 0.05, 300)
    a = b + rng.normal(0.02, 0.03, 300)
    out = paired_comparison(a, b)
    assert out["n"] == 300 and out["fraction_a_better"] == pytest.approx(np.mean(a > b))
    assert out["wilcoxon_p"] == pytest.approx(wilcoxon(a, b, alternative="greater").pvalue)
    assert out["wilcoxon_p"] < 1e-6
    assert paired_comparison(b, a)["wilcoxon_p"] > 0.99


def test_layer_comparison_tables_best_layers_and_pairs():
    from cinebrain.evaluate.compare import layer_comparison

    rng = np.random.default_rng(0)
    vis = np.zeros(50, bool)
    vis[:20] = True
    scores = {w: {f"blocks.{i}": {s: rng.normal(0.1 * i + (0.2 if w == "trained" else 0), 0.01, 50)
                                  for s in ("a", "b")} for i in (0, 1, 10)}
              for w in ("trained", "random")}
    out = layer_comparison(scores, {"visual": vis}, ["a", "b"])
    assert out["layers"] == ["blocks.0", "blocks.1", "blocks.10"]  # natural order
    row = next(r for r in out["table"] if r["weights"] == "trained" and r["layer"] == "blocks.1"
               and r["region"] == "visual")
    both = np.concatenate([scores["trained"]["blocks.1"]["a"][vis],
                           scores["trained"]["blocks.1"]["b"][vis]])
    assert row["n_voxels"] == 40 and row["median_r"] == pytest.approx(np.median(both))
    assert out["best_layer"]["visual"]["layer"] == "blocks.10"
    pair = next(c for c in out["trained_vs_random"] if c["region"] == "all"
                and c["layer"] == "blocks.0")
    assert pair["n"] == 100 and pair["fraction_a_better"] > 0.99
