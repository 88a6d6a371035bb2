"""Region tables and ground-truth scoring (cinebrain.evaluate.regions)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cinebrain.evaluate import (
    TRUTH_MODALITIES,
    comparison_regions,
    ground_truth_recovery,
    ground_truth_summary,
    label_regions,
    region_table,
    roi_labels,
    truth_regions,
)


def _images(shape=(4, 5, 6)):
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 1:4, 1:5] = 1
    labels = np.zeros(shape, np.int16)
    labels[1:3, 1:2, :] = 2
    labels[1:3, 2:4, 1:3] = 5
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return nib.Nifti1Image(labels, affine), nib.Nifti1Image(mask, affine), labels, mask.astype(bool), rng


def test_roi_labels_in_mask_order_with_default_names():
    label_img, mask_img, labels, mask, _ = _images()
    values, names = roi_labels(label_img, mask_img, {2: "V1"})
    np.testing.assert_array_equal(values, labels[mask])
    assert names == {2: "V1", 5: "roi-5"}


def test_roi_labels_resampled_by_nearest_neighbour_onto_the_mask_grid():
    label_img, mask_img, labels, mask, _ = _images()
    # the same labels on a grid of twice the resolution: nearest resampling gives them back
    fine = np.repeat(np.repeat(np.repeat(labels, 2, 0), 2, 1), 2, 2)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -0.5  # fine voxel centres straddle the coarse ones
    values, names = roi_labels(nib.Nifti1Image(fine, affine), mask_img)
    np.testing.assert_array_equal(values, labels[mask])
    assert names == {2: "roi-2", 5: "roi-5"}
    assert set(np.unique(values)) <= {0, 2, 5}  # no interpolated label values


def test_region_table_by_hand_and_optional_columns():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 1, 2, 2, 2, 0, 1])
    r = rng.uniform(-0.2, 0.8, labels.size)
    ceiling = rng.uniform(0.3, 0.9, labels.size)
    sig = np.array([0, 1, 0, 1, 1, 0, 0, 1], bool)
    regions = label_regions(labels, {1: "V1", 2: "A1", 3: "empty"})
    assert list(regions) == ["V1", "A1", "empty"] and not regions["empty"].any()
    rows = region_table(r, regions, ceiling=ceiling, significant=sig, subject="sub-01")
    assert [row["roi"] for row in rows] == ["V1", "A1"]  # the empty region is left out
    v1 = labels == 1
    assert list(rows[0]) == ["roi", "subject", "n_voxels", "mean_r", "median_r", "ceiling",
                             "fraction_significant"]
    assert rows[0]["n_voxels"] == 3 and rows[0]["subject"] == "sub-01"
    assert rows[0]["mean_r"] == pytest.approx(r[v1].sum() / 3)
    assert rows[0]["median_r"] == pytest.approx(sorted(r[v1])[1])
    assert rows[0]["ceiling"] == pytest.approx(sorted(ceiling[v1])[1])
    assert rows[0]["fraction_significant"] == pytest.approx(2 / 3)
    bare = region_table(r, regions)
    assert list(bare[1]) == ["roi", "n_voxels", "mean_r", "median_r"]
    assert region_table(r, {}) == []


def test_label_regions_duplicate_names_stay_apart():
    regions = label_regions(np.array([1, 2, 2]), {1: "V", 2: "V"})
    assert list(regions) == ["V", "V (2)"]
    np.testing.assert_array_equal(regions["V (2)"], [False, True, True])


def test_truth_and_comparison_regions():
    modality = np.array([0, 1, 1, 2, 3, 3, 0])
    regions = truth_regions(modality)
    assert list(regions) == ["visual", "auditory", "language", "driven", "undriven"]
    np.testing.assert_array_equal(regions["driven"], modality > 0)
    assert "auditory" not in truth_regions(np.array([0, 1, 3]))  # empty: left out
    labels = np.array([1, 1, 1, 2, 0, 0, 4])
    both = comparison_regions(modality, (labels, {1: "visual", 2: "A1", 4: "roi-4", 9: "none"}))
    # label 1 is not the visual region (it has an undriven voxel): renamed; label 2 is the
    # auditory region (voxel 3): skipped; label 4 is voxel 6 only, not "undriven" (voxels 0
    # and 6); label 9 is empty
    assert list(both) == ["visual", "auditory", "language", "driven", "undriven",
                          "roi visual", "roi-4"]
    same = comparison_regions(modality, (np.array([0, 1, 1, 0, 0, 0, 0]), {1: "V1"}))
    assert "V1" not in same  # identical to the visual region already listed
    assert comparison_regions() == {}
    assert list(comparison_regions(rois=(labels, {2: "A1"}))) == ["A1"]


def test_ground_truth_recovery_by_hand():
    vis, aud, lang = (TRUTH_MODALITIES[c][0] for c in (1, 2, 3))
    assert (vis, aud, lang) == ("visual", "auditory", "language")
    modality = np.array([0, 0, 1, 1, 1, 1, 2, 2, 3, 3])
    r = np.linspace(-0.1, 0.8, modality.size)
    sig = np.array([0, 1, 1, 1, 0, 1, 0, 0, 1, 0], bool)
    ceiling = np.linspace(0.2, 0.9, modality.size)
    bands = ["visual", "auditory"]  # no text band fitted: language gets no assignment
    best = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 0])
    rows = ground_truth_recovery(modality, r, significant=sig, ceiling=ceiling, best_band=best,
                                 band_names=bands, subject="s1")
    assert [row["region"] for row in rows] == ["undriven", "visual", "auditory", "language"]
    v = rows[1]
    assert v["subject"] == "s1" and v["n_voxels"] == 4
    assert v["median_r"] == pytest.approx(np.median(r[2:6]))
    assert v["median_ceiling"] == pytest.approx(np.median(ceiling[2:6]))
    assert v["fraction_significant"] == pytest.approx(3 / 4)
    assert v["fraction_assigned_true_band"] == pytest.approx(3 / 4)  # best == 0 on 3 of 4
    assert v["fraction_assigned_true_band_significant"] == pytest.approx(1.0)  # voxels 2, 3, 5
    a = rows[2]
    assert a["fraction_assigned_true_band"] == pytest.approx(0.5)
    assert "fraction_assigned_true_band_significant" not in a  # no significant voxel there
    assert "fraction_assigned_true_band" not in rows[0] and "fraction_assigned_true_band" not in rows[3]
    bare = ground_truth_recovery(modality, r)
    assert list(bare[1]) == ["subject", "region", "n_voxels", "median_r"]


def test_ground_truth_summary_averages_subjects():
    modality = np.array([0, 1, 1, 3])
    rows = (ground_truth_recovery(modality, np.array([0.0, 0.2, 0.4, 0.1]), subject="a",
                                  significant=np.array([0, 1, 1, 0], bool))
            + ground_truth_recovery(modality, np.array([0.1, 0.6, 0.8, 0.3]), subject="b"))
    table = ground_truth_summary(rows)
    assert [t["region"] for t in table] == ["visual", "language", "undriven"]
    assert table[0]["median_r"] == pytest.approx((0.3 + 0.7) / 2)
    assert table[0]["fraction_significant"] == pytest.approx(1.0)  # subject a only
    assert "median_ceiling" not in table[0]
    assert ground_truth_summary([]) == []
