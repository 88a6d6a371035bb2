"""The brain responses of a simulated study, and :func:`simulate_study`, which writes it all.

A brain mask on an MNI grid, driven regions (:data:`~cinebrain.data.simulate.truth.REGIONS`)
with smooth true-SNR fields, voxel drives from the stimulus features (receptive fields on
the downsampled frame, tonotopic mel tuning, projections of the sentence embedding), the
clean signal after the causal HRF, and per-subject noise on a smooth baseline, written as
4D BOLD NIfTI files with a study YAML. The stimulus comes from
:mod:`cinebrain.data.simulate.stimulus` and the ``ground_truth/`` folder from
:mod:`cinebrain.data.simulate.truth`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cinebrain._files import atomic_folder
from cinebrain.data.simulate.stimulus import BIN_S, GRID_W, N_MELS, SR, _write_stimulus
from cinebrain.data.simulate.truth import (
    REGIONS,
    _write_ground_truth,
    _write_nifti,
    _write_truth_json,
)
from cinebrain.errors import InputError
from cinebrain.metrics import pearson_r

__all__ = ["simulate_study"]

BASELINE = 1000.0


def _mel_space(audio: np.ndarray) -> Any:
    """Log-mel energy (dB) of the soundtrack averaged in ``BIN_S`` bins."""
    import librosa

    from cinebrain.features.base import FeatureSpace

    hop = SR // 100
    mel = librosa.feature.melspectrogram(
        y=audio, sr=SR, n_fft=400, hop_length=hop, n_mels=N_MELS, center=False, power=2.0
    )
    logmel = 10.0 * np.log10(mel.T + 1e-10)
    per = int(round(BIN_S * SR / hop))
    n_bins = logmel.shape[0] // per
    binned = logmel[: n_bins * per].reshape(n_bins, per, N_MELS).mean(axis=1)
    onsets = np.arange(n_bins) * BIN_S
    return FeatureSpace("truth_logmel", binned, onsets, BIN_S, method="mean")


# --------------------------------------------------------------------------------------
# brain
# --------------------------------------------------------------------------------------


def _brain_mask(voxel_size: float) -> Any:
    """nilearn's MNI152 brain mask resampled (nearest) to ``voxel_size`` mm."""
    import nibabel as nib
    from nilearn import datasets, image

    mni = datasets.load_mni152_brain_mask(resolution=2)
    affine = np.diag([float(voxel_size)] * 3 + [1.0])
    affine[:3, 3] = mni.affine[:3, 3]
    shape = tuple(
        int(math.ceil(s * abs(mni.affine[i, i]) / voxel_size)) for i, s in enumerate(mni.shape)
    )
    res = image.resample_img(
        mni,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    data = (np.asarray(res.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(data, affine)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian random field smoothed with ``sigma`` voxels."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="nearest")
    return ((f - f.mean()) / (f.std() + 1e-12)).astype(np.float32)


def _rank01(x: np.ndarray) -> np.ndarray:
    if x.size <= 1:
        return np.full(x.shape, 0.5)
    return np.argsort(np.argsort(x)) / (x.size - 1)


def _zscore(x: np.ndarray, axis: int = 0) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sd = x.std(axis=axis, keepdims=True)
    return (x - x.mean(axis=axis, keepdims=True)) / np.where(sd > 0, sd, 1.0)


@dataclass
class _Design:
    tr: float
    n_runs: int
    run_duration: float
    fixation: float
    n_trs: int

    def segment(self, r: int) -> tuple[float, float]:
        return (r * self.run_duration, (r + 1) * self.run_duration)


def _run_features(fs: Any, design: _Design) -> np.ndarray:
    """``fs`` on each run's TR grid, stacked: ``(n_runs * n_trs, n_features)``."""
    from cinebrain.timing import resample

    return np.concatenate(
        [
            np.asarray(
                resample(
                    fs, design.tr, design.n_trs, offset=design.fixation, segment=design.segment(r)
                ),
                np.float64,
            )
            for r in range(design.n_runs)
        ]
    )



def _write_study_yaml(study: dict, path: Path) -> None:
    """Write the study file via ``cinebrain.io.study`` (or plain YAML if it is missing)."""
    try:
        from cinebrain.io.study import Study, write_study
    except ImportError:
        import yaml

        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return
    write_study(Study.model_validate(study), path)


# --------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------


def simulate_study(
    out_dir: str | os.PathLike,
    n_subjects: int = 3,
    n_runs: int = 3,
    run_duration: float = 200.0,
    tr: float = 1.5,
    fps: int = 24,
    size: tuple[int, int] = (320, 180),
    voxel_size: float = 4,
    seed: int = 0,
    snr: tuple[float, float] = (0.3, 1.5),
    progress: bool = True,
    fixation: float = 6.0,
    tail: float = 10.0,
    overwrite: bool = False,
) -> Path:
    """Simulate a naturalistic-viewing fMRI study with known ground truth.

    Parameters
    ----------
    out_dir : path
        Folder to create. It must not exist unless ``overwrite`` (then it is replaced
        only once the new simulation is complete).
    n_subjects, n_runs : int
        Subjects (``sub-01``...) and runs per subject (``run-1``...). Every subject sees
        the whole movie, one segment of ``run_duration`` seconds per run.
    run_duration : float
        Seconds of movie per run; the movie lasts ``n_runs * run_duration``.
    tr : float
        Repetition time (s).
    fps, size : int, (width, height)
        Frame rate and frame size of ``stimulus/movie.mp4``.
    voxel_size : float
        Isotropic voxel size (mm) of the MNI grid of the BOLD images.
    seed : int
        Everything is a deterministic function of the seed (and the other arguments).
    snr : (low, high)
        Range of the true per-voxel SNR (std of the stimulus-driven signal / std of the
        noise) of driven voxels, before each subject's SNR factor (0.8-1.2).
    progress : bool
        Show progress bars (tqdm).
    fixation, tail : float
        Seconds scanned before the movie segment starts (the run's ``offset``) and after
        it ends; ``n_trs = ceil((fixation + run_duration + tail) / tr)``.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    Path
        ``out_dir / "study.yaml"``.
    """
    out_dir = Path(out_dir)
    width, height = int(size[0]), int(size[1])
    if n_subjects < 1 or n_runs < 1:
        raise InputError(
            "simulate_study", "n_subjects and n_runs must be >= 1", "pass positive counts"
        )
    if run_duration <= 0 or tr <= 0 or fps <= 0 or voxel_size <= 0:
        raise InputError(
            "simulate_study",
            "run_duration, tr, fps and voxel_size must be > 0",
            "pass positive values",
        )
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise InputError(
            "simulate_study", f"size {size} must be even and at least 16x16", "pass e.g. (320, 180)"
        )
    if not 0 < snr[0] <= snr[1]:
        raise InputError(
            "simulate_study",
            f"snr range {snr} must satisfy 0 < low <= high",
            "pass e.g. (0.3, 1.5)",
        )
    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "already exists", "choose a new folder or pass overwrite=True")
    with atomic_folder(out_dir) as tmp:
        _simulate_into(
            tmp,
            n_subjects,
            n_runs,
            float(run_duration),
            float(tr),
            float(fps),
            (width, height),
            float(voxel_size),
            int(seed),
            (float(snr[0]), float(snr[1])),
            progress,
            float(fixation),
            float(tail),
        )
    return out_dir / "study.yaml"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _simulate_into(
    root: Path,
    n_subjects: int,
    n_runs: int,
    run_duration: float,
    tr: float,
    fps: float,
    size: tuple[int, int],
    voxel_size: float,
    seed: int,
    snr: tuple[float, float],
    progress: bool,
    fixation: float,
    tail: float,
) -> None:
    from tqdm.auto import tqdm

    from cinebrain.features.base import FeatureSpace
    from cinebrain.features.text_model import embed_texts
    from cinebrain.timing import convolve_hrf

    width, height = size
    ss = np.random.SeedSequence(seed)
    rng_movie, rng_audio, rng_brain, ss_subjects = _streams(ss)
    total = n_runs * run_duration
    n_frames = int(round(total * fps))
    design = _Design(
        tr,
        n_runs,
        run_duration,
        fixation,
        int(math.ceil((fixation + run_duration + tail) / tr - 1e-9)),
    )

    # ---- stimulus ---------------------------------------------------------------------
    scenes, audio, (lum_fs, mot_fs) = _write_stimulus(
        root / "stimulus", rng_movie, rng_audio, total, n_frames, fps, size, progress
    )

    # ---- brain and regions ----------------------------------------------------------
    mask_img = _brain_mask(voxel_size)
    affine = mask_img.affine
    mask = np.asarray(mask_img.dataobj).astype(bool)
    ijk = np.argwhere(mask)  # C order == boolean-indexing order
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    n_vox = len(ijk)
    modality = np.zeros(n_vox, np.uint8)
    region_of = np.full(n_vox, -1, np.int64)
    centre_dist = np.zeros(n_vox)
    region_names = list(REGIONS)
    for ri, reg in enumerate(REGIONS.values()):
        if reg["kind"] == "slab":
            sel = (xyz[:, 1] < reg["y_max"]) & (xyz[:, 2] > reg["z_min"])
            d = np.zeros(n_vox)
        else:
            d = np.linalg.norm(xyz - np.array(reg["centre"]), axis=1) / reg["radius"]
            sel = d <= 1.0
        sel &= modality == 0
        modality[sel] = reg["modality"]
        region_of[sel] = ri
        centre_dist[sel] = d[sel]
    driven = np.flatnonzero(modality > 0)
    if not all((modality == m).any() for m in (1, 2, 3)):
        raise InputError(
            "simulate_study",
            f"voxel_size {voxel_size} mm leaves a driven region empty",
            "use voxel_size <= 8",
        )

    # true SNR: smooth random field, higher near sphere centres
    field3 = _smooth_field(rng_brain, mask.shape, 1.5)[mask]
    snr_base = np.zeros(n_vox, np.float32)
    for ri in range(len(region_names)):
        sel = region_of == ri
        if not sel.any():
            continue
        u = _rank01(field3[sel])
        if REGIONS[region_names[ri]]["kind"] == "sphere":
            u = 0.5 * u + 0.5 * (1.0 - centre_dist[sel])
        snr_base[sel] = snr[0] + (snr[1] - snr[0]) * u

    # ---- voxel drives ------------------------------------------------------------------
    block = max(1, width // GRID_W)
    gw, gh = width // block, height // block
    drive = np.zeros((n_runs * design.n_trs, len(driven)))
    params: dict[str, np.ndarray] = {}

    vis = np.flatnonzero(modality[driven] == 1)
    vx = xyz[driven[vis]]
    ecc = np.clip((vx[:, 1] + 105.0) / 40.0, 0.1, 1.0)
    jitter = rng_brain.normal(0, 0.03, (len(vis), 2))
    rf_x = np.clip(0.5 + ecc * (-0.45 * np.clip(vx[:, 0] / 40.0, -1, 1)) + jitter[:, 0], 0.02, 0.98)
    rf_y = np.clip(
        0.5 + ecc * (0.4 * np.clip((vx[:, 2] - 10.0) / 20.0, -1, 1)) + jitter[:, 1], 0.02, 0.98
    )
    rf_sigma = 0.05 + 0.12 * ecc
    w_lum = rng_brain.uniform(0.3, 1.0, len(vis))
    gx = (np.arange(gw) + 0.5) / gw
    gy = (np.arange(gh) + 0.5) / gh
    dx = gx[None, None, :] - rf_x[:, None, None]
    dy = (gy[None, :, None] - rf_y[:, None, None]) * (gh / gw)
    rf = np.exp(-0.5 * (dx**2 + dy**2) / rf_sigma[:, None, None] ** 2).reshape(len(vis), -1)
    rf /= rf.sum(axis=1, keepdims=True)
    lum = _run_features(lum_fs, design) @ rf.T
    mot = _run_features(mot_fs, design) @ rf.T
    drive[:, vis] = w_lum * _zscore(lum) + (1.0 - w_lum) * _zscore(mot)
    params.update(
        visual_rf_x=rf_x, visual_rf_y=rf_y, visual_rf_sigma=rf_sigma, visual_w_luminance=w_lum
    )

    aud = np.flatnonzero(modality[driven] == 2)
    ay = xyz[driven[aud], 1]
    pref = np.clip(
        4.0 + (N_MELS - 10.0) * _rank01(ay + rng_brain.normal(0, 3.0, len(aud))), 2, N_MELS - 3
    )
    bands = np.arange(N_MELS)
    tuning = np.exp(-0.5 * ((bands[None, :] - pref[:, None]) / 3.0) ** 2)
    tuning /= tuning.sum(axis=1, keepdims=True)
    mel_fs = _mel_space(audio)
    del audio
    drive[:, aud] = _zscore(_run_features(mel_fs, design) @ tuning.T)
    params.update(auditory_preferred_mel=pref)

    lang = np.flatnonzero(modality[driven] == 3)
    emb = embed_texts([s.description for s in scenes]).astype(np.float64)
    text_fs = FeatureSpace(
        "truth_text",
        emb,
        [s.onset for s in scenes],
        [s.offset - s.onset for s in scenes],
        method="overlap",
    )
    centred = emb - emb.mean(axis=0)
    k = int(max(1, min(6, len(scenes) - 1)))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = vt[:k] if len(scenes) > 1 else rng_brain.standard_normal((1, emb.shape[1]))
    text_w = np.zeros((len(lang), emb.shape[1]))
    for ri, name in enumerate(region_names):
        if REGIONS[name]["modality"] != 3:
            continue
        sel = region_of[driven[lang]] == ri
        if not sel.any():
            continue
        mix = rng_brain.standard_normal((2, k))
        d1, d2 = mix @ pcs
        rel = (xyz[driven[lang][sel]] - np.array(REGIONS[name]["centre"])) / REGIONS[name]["radius"]
        theta = np.pi / 2 * (rel @ rng_brain.standard_normal(3)) / math.sqrt(3)
        text_w[sel] = np.cos(theta)[:, None] * d1 + np.sin(theta)[:, None] * d2
    text_w += 0.1 * rng_brain.standard_normal(text_w.shape) / math.sqrt(emb.shape[1])
    drive[:, lang] = _zscore(_run_features(text_fs, design) @ text_w.T)
    params.update(language_text_weights=text_w.astype(np.float32))

    drive = _zscore(drive)
    lengths = [design.n_trs] * n_runs
    signal = _zscore(
        np.asarray(
            convolve_hrf(drive.astype(np.float32), tr, run_lengths=lengths, model="spm"), np.float64
        )
    )

    # ---- subjects ------------------------------------------------------------------------
    subject_factor = np.array(
        [np.random.default_rng(s).uniform(0.8, 1.2) for s in ss_subjects(n_subjects)]
    )
    snr_subjects = (snr_base[None, :] * subject_factor[:, None]).astype(np.float32)
    signal_r = np.zeros((n_subjects, n_vox), np.float32)
    study_subjects: dict[str, Any] = {}
    t_run = np.arange(design.n_trs) * tr
    for si, sub_ss in enumerate(
        tqdm(ss_subjects(n_subjects), desc="simulate: BOLD", unit="subject", disable=not progress)
    ):
        rng = np.random.default_rng(sub_ss)
        rng.uniform()  # the subject factor's draw
        sub = f"sub-{si + 1:02d}"
        baseline = (BASELINE * (1.0 + 0.12 * _smooth_field(rng, mask.shape, 2.0)[mask])).clip(
            500, None
        )
        phys_maps = np.stack([_smooth_field(rng, mask.shape, 3.0)[mask] for _ in range(3)])
        noise = np.empty((n_runs, design.n_trs, n_vox), np.float32)
        phi = rng.uniform(0.3, 0.5, n_vox).astype(np.float32)
        for r in range(n_runs):
            e = rng.standard_normal((design.n_trs, n_vox)).astype(np.float32)
            ar = np.empty_like(e)
            ar[0] = e[0]
            innov = np.sqrt(1 - phi**2)
            for t in range(1, design.n_trs):
                ar[t] = phi * ar[t - 1] + innov * e[t]
            phys_t = np.zeros((design.n_trs, 3))
            pe = rng.standard_normal((design.n_trs, 3))
            for t in range(design.n_trs):
                phys_t[t] = (0.9 * phys_t[t - 1] if t else 0) + math.sqrt(1 - 0.81) * pe[t]
            T = design.n_trs * tr
            drift_basis = np.stack(
                [t_run / T - 0.5, np.cos(np.pi * t_run / T), np.cos(2 * np.pi * t_run / T)], axis=1
            )
            drift_w = rng.normal(0, 1.0, (3, n_vox)) * np.array([[1.0], [0.7], [0.4]])
            noise[r] = (
                0.8 * ar
                + 0.45 * (phys_t @ phys_maps).astype(np.float32)
                + 0.4 * (drift_basis @ drift_w).astype(np.float32)
            )
        noise -= noise.mean(axis=1, keepdims=True)
        noise /= noise.reshape(-1, n_vox).std(axis=0)[None, None, :]
        scale = 0.01 * baseline  # noise std = 1 % of the baseline
        eff = np.zeros(n_vox)
        eff[driven] = snr_subjects[si, driven]
        runs = []
        responses = []
        for r in range(n_runs):
            y = noise[r].astype(np.float64)
            y[:, driven] += eff[driven] * signal[r * design.n_trs : (r + 1) * design.n_trs]
            bold = baseline[None, :] + scale[None, :] * y
            # a 1/16 grid keeps gzip effective; the error is < 1 % of the noise std
            bold = (np.round(bold * 16.0) / 16.0).astype(np.float32)
            vol = np.zeros(mask.shape + (design.n_trs,), np.float32)
            vol[mask] = bold.T
            rel = Path(sub) / "func" / f"{sub}_run-{r + 1}_bold.nii.gz"
            _write_nifti(root / rel, vol, affine, tr=tr)
            responses.append(_zscore(bold[:, driven]))
            runs.append(
                {
                    "name": f"run-{r + 1}",
                    "bold": rel.as_posix(),
                    "segment": [float(design.segment(r)[0]), float(design.segment(r)[1])],
                    "offset": float(fixation),
                }
            )
        signal_r[si, driven] = pearson_r(signal, np.concatenate(responses))
        study_subjects[sub] = {"runs": runs}
        del noise

    # ---- ground truth -------------------------------------------------------------------
    gt = root / "ground_truth"
    _write_ground_truth(
        gt,
        mask=mask,
        affine=affine,
        modality=modality,
        snr=snr_base,
        snr_subjects=snr_subjects,
        signal_r=signal_r,
        driven=driven,
        signal=signal,
        drive=drive,
        params=params,
    )

    study = {
        "name": "simulated",
        "tr": tr,
        "length_policy": "error",
        "stimulus": {
            "video": "stimulus/movie.mp4",
            "audio": None,
            "annotations": {
                "path": "stimulus/annotations.tsv",
                "onset": "onset",
                "offset": "offset",
                "unit": "s",
                "text": ["description"],
                "categorical": ["location"],
                "numeric": ["n_objects", "indoor", "music"],
            },
            "transcript": "stimulus/transcript.tsv",
        },
        "mask": "ground_truth/mask.nii.gz",
        "subjects": study_subjects,
    }
    _write_study_yaml(study, root / "study.yaml")
    # truth.json last: its presence marks a complete simulation
    _write_truth_json(
        gt,
        seed=seed,
        parameters={
            "n_subjects": n_subjects,
            "n_runs": n_runs,
            "run_duration": run_duration,
            "tr": tr,
            "fps": fps,
            "size": [width, height],
            "voxel_size": voxel_size,
            "snr": list(snr),
            "fixation": fixation,
            "tail": tail,
            "n_trs": design.n_trs,
            "sr": SR,
        },
        modality=modality,
        region_of=region_of,
        driven=driven,
        n_scenes=len(scenes),
        subject_factor=subject_factor,
        signal_r=signal_r,
        run_lengths=lengths,
        grid=(gw, gh),
    )
    for p in root.rglob("*"):  # temp-file writers create 0600 files
        if p.is_file():
            os.chmod(p, 0o666 & ~_umask())


def _streams(ss: np.random.SeedSequence) -> tuple[Any, ...]:
    """Independent generators: movie, audio, brain, and a per-subject seed factory."""
    movie, audio, brain, subjects = ss.spawn(4)

    def subject_seeds(n: int) -> list[np.random.SeedSequence]:
        return list(np.random.SeedSequence(subjects.entropy, spawn_key=subjects.spawn_key).spawn(n))

    return (
        np.random.default_rng(movie),
        np.random.default_rng(audio),
        np.random.default_rng(brain),
        subject_seeds,
    )
