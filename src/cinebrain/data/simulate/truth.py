"""The ground truth of a simulated study: region and modality codes, and ``ground_truth/``.

:data:`MODALITIES` are the codes of ``modality.nii.gz`` / ``modality.npy``; :data:`REGIONS`
the driven regions. :func:`_write_ground_truth` writes the folder's maps and arrays and
:func:`_write_truth_json` its ``truth.json`` (written last: its presence marks a complete
simulation); :func:`truth_modality_file` finds the modality map of a study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cinebrain.data.simulate.stimulus import N_MELS

__all__ = ["truth_modality_file", "MODALITIES", "REGIONS"]

#: Codes used in ``modality.nii.gz`` / ``modality.npy``.
MODALITIES: dict[int, str] = {0: "none", 1: "visual", 2: "auditory", 3: "language"}


def truth_modality_file(study_root: str | Path) -> Path | None:
    """The ground-truth modality map of a simulated study in ``study_root`` (codes
    :data:`MODALITIES`, on the study's grid), or None for a study that is not simulated."""
    path = Path(study_root) / "ground_truth" / "modality.nii.gz"
    return path if path.is_file() else None


#: Driven regions: MNI spheres (centre mm, radius mm) or the occipital slab.
REGIONS: dict[str, dict[str, Any]] = {
    "visual": {"modality": 1, "kind": "slab", "y_max": -70.0, "z_min": -8.0},
    "auditory_left": {
        "modality": 2,
        "kind": "sphere",
        "centre": (-58.0, -22.0, 6.0),
        "radius": 15.0,
    },
    "auditory_right": {
        "modality": 2,
        "kind": "sphere",
        "centre": (58.0, -22.0, 6.0),
        "radius": 15.0,
    },
    "language_ifg": {
        "modality": 3,
        "kind": "sphere",
        "centre": (-48.0, 18.0, 12.0),
        "radius": 12.0,
    },
    "language_pt": {
        "modality": 3,
        "kind": "sphere",
        "centre": (-52.0, -52.0, 18.0),
        "radius": 12.0,
    },
    "language_atl": {
        "modality": 3,
        "kind": "sphere",
        "centre": (-56.0, -6.0, -18.0),
        "radius": 12.0,
    },
}


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header.set_zooms(tuple(abs(float(affine[i, i])) for i in range(3)) + (float(tr),))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _write_ground_truth(
    gt: Path,
    *,
    mask: np.ndarray,
    affine: np.ndarray,
    modality: np.ndarray,
    snr: np.ndarray,
    snr_subjects: np.ndarray,
    signal_r: np.ndarray,
    driven: np.ndarray,
    signal: np.ndarray,
    drive: np.ndarray,
    params: dict[str, np.ndarray],
) -> None:
    """The maps and arrays of ``ground_truth/`` (described in ``truth.json``'s ``files``)."""
    gt.mkdir()
    _write_nifti(gt / "mask.nii.gz", mask.astype(np.uint8), affine)
    mod_vol = np.zeros(mask.shape, np.uint8)
    mod_vol[mask] = modality
    _write_nifti(gt / "modality.nii.gz", mod_vol, affine)
    np.save(gt / "modality.npy", modality)
    np.save(gt / "snr.npy", snr)
    np.save(gt / "snr_subjects.npy", snr_subjects)
    np.save(gt / "signal_r.npy", signal_r)
    np.save(gt / "driven.npy", driven.astype(np.int64))
    np.save(gt / "signal.npy", signal.astype(np.float32))
    np.save(gt / "drive.npy", drive.astype(np.float32))
    np.savez(gt / "voxel_params.npz", **params)


def _write_truth_json(
    gt: Path,
    *,
    seed: int,
    parameters: dict[str, Any],
    modality: np.ndarray,
    region_of: np.ndarray,
    driven: np.ndarray,
    n_scenes: int,
    subject_factor: np.ndarray,
    signal_r: np.ndarray,
    run_lengths: list[int],
    grid: tuple[int, int],
) -> None:
    """``ground_truth/truth.json``: the parameters, regions, counts and how the signal was made.

    ``grid`` is the (width, height) of the block-averaged frame of the visual features.
    """
    from cinebrain._files import write_json

    n_vox = len(modality)
    n_subjects = len(signal_r)
    gw, gh = grid
    truth = {
        "seed": seed,
        "parameters": parameters,
        "modalities": {str(k): v for k, v in MODALITIES.items()},
        "regions": {
            name: {
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in reg.items()},
                "n_voxels": int((region_of == ri).sum()),
            }
            for ri, (name, reg) in enumerate(REGIONS.items())
        },
        "counts": {
            "n_voxels": n_vox,
            "n_driven": len(driven),
            **{MODALITIES[m]: int((modality == m).sum()) for m in (1, 2, 3)},
        },
        "n_scenes": n_scenes,
        "subject_snr_factor": subject_factor.tolist(),
        "mean_signal_r": {
            MODALITIES[m]: [float(signal_r[s, modality == m].mean()) for s in range(n_subjects)]
            for m in (1, 2, 3)
        },
        "run_lengths": run_lengths,
        "timing": "volume k covers scan time [k*tr, (k+1)*tr); stimulus time s of run r is at "
        "scan time fixation + (s - r*run_duration)",
        "features": {
            "visual": f"grayscale frame block-averaged to {gw}x{gh} (luminance) and |frame difference| "
            "(motion), Gaussian receptive field (visual_rf_* in voxel_params.npz, in frame-width "
            "units), mixed w_luminance*z(lum) + (1-w_luminance)*z(motion)",
            "auditory": f"log-mel (10*log10 power, {N_MELS} mels, 25 ms window, 10 ms hop) weighted "
            "by a Gaussian tuning (sd 3 bands) around auditory_preferred_mel",
            "language": "MiniLM sentence embedding of the annotation description (overlap "
            "resampling) projected on language_text_weights",
            "hrf": "cinebrain.timing.convolve_hrf(model='spm'), causal, per run; then z-scored",
            "noise": "AR(1) (phi 0.3-0.5) + 3 smooth physiological components (AR 0.9) + drift "
            "(linear + 2 cosines), per-run demeaned, unit std per voxel; BOLD = baseline + "
            "0.01*baseline*(snr_subject*signal + noise)",
        },
        "files": {
            "modality.npy": "(n_voxels,) uint8 code per masked voxel (C order of mask.nii.gz)",
            "snr.npy": "(n_voxels,) true signal/noise std before the subject factor (0 = not driven)",
            "snr_subjects.npy": "(n_subjects, n_voxels) true SNR per subject",
            "signal_r.npy": "(n_subjects, n_voxels) r between the clean signal and the BOLD "
            "(each run z-scored, runs concatenated): the ceiling for a perfect model",
            "driven.npy": "(n_driven,) indices of driven voxels among masked voxels",
            "signal.npy": "(n_runs*n_trs, n_driven) clean z-scored signal (shared by subjects)",
            "drive.npy": "(n_runs*n_trs, n_driven) the signal before the HRF (z-scored)",
            "voxel_params.npz": "receptive fields, preferred mel band, text weights",
        },
    }
    write_json(gt / "truth.json", truth)
