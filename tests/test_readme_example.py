"""The README's Python example runs as written, with no run folder, and recovers the
simulated study's visual voxels.

Keep ``_readme_example`` identical to the README's code block (only the function around it
and the returned values are added here).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def _readme_example(study_yaml):
    # -- the README's code ------------------------------------------------------------
    from cinebrain.data import load_study, subject_design
    from cinebrain.data.splits import gap_trs
    from cinebrain.features import extract_stimulus_features
    from cinebrain.linear import BandedRidgeCV
    from cinebrain.metrics import pearson_r

    study = load_study(study_yaml)
    spaces = extract_stimulus_features(study, video=("pixels",), audio=("mel",), transcript=())
    d = subject_design(study, "sub-01", spaces)          # d.X, d.Y, d.run_index, d.band_sizes
    train, test = d.run_index < d.run_index.max(), d.run_index == d.run_index.max()
    model = BandedRidgeCV(groups=d.band_sizes, cv=3, gap=gap_trs(study.tr)).fit(
        d.X[train], d.Y[train], groups=d.run_index[train])
    r = pearson_r(d.Y[test], model.predict(d.X[test]))   # per voxel
    # -----------------------------------------------------------------------------------
    return study, r


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_readme_example_recovers_visual_voxels(tiny_study, tmp_path, monkeypatch):
    import nibabel as nib

    from cinebrain.data.simulate import truth_modality_file
    from cinebrain.data.study import study_mask

    src = tmp_path / "study"
    shutil.copytree(Path(tiny_study).parent, src)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _listing(tmp_path)

    study, r = _readme_example(src / "study.yaml")

    assert _listing(tmp_path) == before  # nothing written next to the study or in the cwd
    mask = np.asarray(study_mask(study).dataobj).astype(bool)
    modality = np.asarray(nib.load(truth_modality_file(study.root)).dataobj)[mask].astype(int)
    assert r.shape == (int(mask.sum()),)
    visual, undriven = np.median(r[modality == 1]), np.median(r[modality == 0])
    assert visual > 0.3 and visual > undriven + 0.2, (visual, undriven)
