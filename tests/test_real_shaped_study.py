"""A miniature of a real, published ROI study, run through the CLI with no hand edits.

Modelled on an ROI study of a TV episode watched in two scans: named ROI time series of
several subjects, already shifted by the authors for the haemodynamic lag, and the authors'
annotation spreadsheet as published: trailing spaces in headers and cells, seconds that
restart at 0 in part two, 1-based inclusive TR columns with single-TR rows, blank rows,
multi-valued cells, a ``/`` in a column name and blanks in a numeric column. Scan 1 trains,
scan 2 is held out. Each obstacle a user met on the real study is checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nilearn.glm.first_level import spm_hrf

from cinebrain.cli import main
from cinebrain.features.stimulus import load_feature_spaces
from cinebrain.pipelines.runfolder import RunFolder

openpyxl = pytest.importorskip("openpyxl")

TR = 1.5
PARTS = (90, 80)  # TRs per scan
SHIFT_TRS = 3  # the authors' shift for the haemodynamic lag
SUBJECTS = ("sub-01", "sub-02", "sub-03", "sub-04")
NAMES = ["auditory", "visual", "PMC"]
LOCATIONS = ("Baker Street", "Lab", "Cab")
CHARACTERS = ("Sherlock", "John", "Mrs Hudson")
HEADER = ["Part", "Start Time (s) ", "End Time (s) ", "Start TR", "End TR", "Location ",
          "Characters Present", "Indoor/Outdoor", "Music Presence "]


def _scenes(rng):
    """Scenes of 1-5 TRs covering both parts; TRs 1-based and global, inclusive ends."""
    rows, tr = [], 1
    total = sum(PARTS)
    while tr <= total:
        length = int(rng.integers(1, 6))
        end = min(tr + length - 1, total, PARTS[0] if tr <= PARTS[0] else total)
        rows.append((tr, end))
        tr = end + 1
    return rows


def _write_study(root: Path, *, declare_shift: bool = True) -> Path:
    rng = np.random.default_rng(11)
    root.mkdir(parents=True, exist_ok=True)
    scenes = _scenes(rng)
    n_total = sum(PARTS)
    music = np.zeros(n_total)
    indoor = np.zeros(n_total)
    sherlock = np.zeros(n_total)
    wb = openpyxl.Workbook()
    sheet = wb.active
    sheet.append(HEADER)
    for i, (start, end) in enumerate(scenes):
        part = 1 if start <= PARTS[0] else 2
        origin = 0 if part == 1 else PARTS[0]
        on_s, off_s = (start - 1 - origin) * TR, (end - origin) * TR  # restart at 0 in part 2
        location = LOCATIONS[int(rng.integers(len(LOCATIONS)))]
        if i % 4 == 1:
            location += " "  # the same place, a trailing space
        who = [c for c in CHARACTERS if rng.random() < 0.5] or ["John"]
        place = "Indoor" if location.strip() != "Cab" else "Outdoor"
        level = None if i % 7 == 3 else float(rng.integers(0, 3))  # blanks: no music
        sheet.append([part, on_s, off_s, start, end, location, ", ".join(who), place, level])
        if i in (5, 17):
            sheet.append([None] * len(HEADER))  # the two empty rows of the published sheet
        span = slice(start - 1, end)
        music[span] = level or 0.0
        indoor[span] = place == "Indoor"
        sherlock[span] = "Sherlock" in who
    wb.save(root / "annotations.xlsx")

    # Responses: the HRF-convolved drive at each volume's acquisition time, then shifted by
    # the authors (the file's volume k was acquired at TR k + SHIFT_TRS); each scan keeps
    # all its volumes, as the published files do.
    kernel = spm_hrf(TR, oversampling=1)
    drive = np.stack([music - music.mean(), indoor - indoor.mean(), sherlock - sherlock.mean()], 1)
    bold = np.stack([np.convolve(d, kernel)[: n_total + SHIFT_TRS + 1] for d in drive.T], 1)
    bold = np.concatenate([bold, np.zeros((SHIFT_TRS + 1, 3))])[: n_total + SHIFT_TRS]
    runs = {}
    for s in SUBJECTS:
        (root / s).mkdir(exist_ok=True)
        gains = np.array([1.0, 0.8, 0.5]) * (1 + 0.2 * rng.standard_normal(3))
        Y_all = bold * gains / bold.std(0) + 0.8 * rng.standard_normal(bold.shape)
        entries, start = [], 0
        for k, n in enumerate(PARTS):
            shifted = Y_all[start + SHIFT_TRS: start + SHIFT_TRS + n]
            path = root / s / f"scan{k + 1}.csv"
            path.write_text(",".join(NAMES) + "\n" + "\n".join(
                ",".join(f"{x:.5f}" for x in row) for row in shifted) + "\n")
            shift = f", response_shift: {SHIFT_TRS * TR:g}" if declare_shift else ""
            entries.append(f"      - {{name: scan{k + 1}, responses: {s}/scan{k + 1}.csv, "
                           f"segment: [{start * TR:g}, {(start + n) * TR:g}]{shift}}}")
            start += n
        runs[s] = "\n".join(entries)
    subjects = "\n".join(f"  {s}:\n    runs:\n{e}" for s, e in runs.items())
    (root / "study.yaml").write_text(
        f"name: episode\ntr: {TR}\nstimulus:\n  annotations:\n"
        f"    path: annotations.xlsx\n"
        f"    onset: 'Start TR'\n    offset: 'End TR'\n    unit: tr\n"
        f"    tr_base: 1\n    inclusive: true\n"
        f"    categorical: ['Location ', 'Characters Present', 'Indoor/Outdoor']\n"
        f"    separator: ','\n"
        f"    numeric: ['Music Presence ']\n    numeric_blank: zero\n"
        f"subjects:\n{subjects}\n")
    return root / "study.yaml"


def _run(study: Path, out: Path, *extra: str) -> int:
    return main(["--threads", "1", "run", "--study", str(study), "--out", str(out),
                 "--no-progress", "--no-report", "--features-video", "--features-audio",
                 "--no-features-annotation-text", "--features-transcript",
                 "--model-kind", "ridge", "--model-n-alphas", "8", "--model-cv-folds", "3",
                 "--split-scheme", "held_out", "--split-test-runs", "scan2",
                 "--evaluate-n-permutations", "200", "--no-evaluate-variance-partitioning",
                 "--evaluate-reference", "subject", "group_mean", *extra])


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    root = tmp_path_factory.mktemp("episode")
    return _write_study(root / "study")


def test_the_published_study_runs_as_it_comes(episode, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(episode, out) == 0
    log = capsys.readouterr().out
    assert "2 empty row" in log  # the blank rows are skipped and counted
    folder = RunFolder(out)

    # The sheet as published: stripped cells are one category, multi-valued cells are
    # indicators, a "/" in a column name is a flat file name.
    spaces = load_feature_spaces(folder.features_dir)
    names = [n for space in spaces.values() for n in space.feature_names]
    assert sum(n.startswith("Location") and "Baker Street" in n for n in names) == 1
    for who in CHARACTERS:
        assert any(n.endswith(f"={who}") and n.startswith("Characters") for n in names), who
    assert not [p for p in folder.features_dir.rglob("*") if p.is_dir()]

    # Named regions, per subject and across subjects, and the group-mean reference.
    summary = json.loads(folder.summary.read_text())
    rows = summary["rois"]
    assert [r["roi"] for r in rows] == NAMES * len(SUBJECTS)
    group = {r["roi"]: r for r in summary["rois_group"]}
    assert set(group) == set(NAMES)
    for name in NAMES:
        assert group[name]["mean_r"] > 0.3, (name, group[name])
        assert group[name]["r_group_mean"] > group[name]["mean_r"]
        assert np.isfinite(group[name]["ceiling_group_mean"])

    # Pre-shifted responses: every volume of the held-out scan is scored (no stimulus lost).
    pred = np.load(folder.prediction("sub-01", "test_pred"))
    assert pred.shape == (PARTS[1], len(NAMES))


def test_undeclared_shift_scores_lower(episode, tmp_path):
    """The same study without ``response_shift`` fits the lag by the HRF alone, a few
    seconds late: declaring the authors' shift must score better."""
    plain = _write_study(tmp_path / "plain", declare_shift=False)
    assert _run(episode, tmp_path / "a") == 0
    assert _run(plain, tmp_path / "b") == 0
    shifted = json.loads(RunFolder(tmp_path / "a").summary.read_text())["rois_group"]
    unshifted = json.loads(RunFolder(tmp_path / "b").summary.read_text())["rois_group"]
    # Scenes last 1-5 TRs, so slow regions forgive a late model; on average it costs.
    assert [a["roi"] for a in shifted] == [b["roi"] for b in unshifted]
    gain = np.mean([a["mean_r"] - b["mean_r"] for a, b in zip(shifted, unshifted, strict=True)])
    assert gain > 0.05, (shifted, unshifted)


def test_seconds_that_restart_need_their_part(episode, tmp_path, capsys):
    """Reading the seconds columns, which restart at 0 in part two: refused without
    ``part`` (naming the row), and equal to the TR columns with it."""
    from cinebrain.io.annotations import read_annotations

    sheet = episode.parent / "annotations.xlsx"
    by_tr = read_annotations(sheet, onset="Start TR", offset="End TR", unit="tr", tr=TR,
                             tr_base=1, inclusive=True, warn=False)
    by_s = read_annotations(sheet, onset="Start Time (s) ", offset="End Time (s) ",
                            part="Part", part_start={"1": 0.0, "2": PARTS[0] * TR}, warn=False)
    np.testing.assert_allclose(by_s["onset"], by_tr["onset"])
    np.testing.assert_allclose(by_s["offset"], by_tr["offset"])
    text = episode.read_text().replace("onset: 'Start TR'", "onset: 'Start Time (s) '").replace(
        "offset: 'End TR'\n    unit: tr\n    tr_base: 1\n    inclusive: true\n",
        "offset: 'End Time (s) '\n")
    bad = episode.parent / "seconds.yaml"
    bad.write_text(text)
    assert _run(bad, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "row" in err and "part" in err
