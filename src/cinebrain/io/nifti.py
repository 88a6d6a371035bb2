"""NIfTI BOLD series and masks (nibabel).

Images are opened lazily (``nib.load`` only reads the header) and their data are read a
block of volumes at a time through ``img.dataobj``, so a long run is never held in memory
twice. Masks are 3D ``uint8`` images holding 0/1.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from cinebrain.errors import InputError

_NIFTI_TYPES = (nib.Nifti1Image, nib.Nifti2Image)
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError, TypeError)
_CHUNK_VALUES = 2**25  # values per block of volumes read at once (~128 MB as float32)
_MASK_FIX = "remove these voxels from the mask or leave `mask: null` so cinebrain computes one"


def _where(img: nib.spatialimages.SpatialImage, path: str | os.PathLike | None) -> str:
    if path is not None:
        return str(path)
    return str(img.get_filename() or "BOLD image")


def _load_nifti(path: str | os.PathLike, what: str) -> nib.spatialimages.SpatialImage:
    path = Path(path)
    if path.is_dir():
        raise InputError(
            path,
            f"is a folder, not a {what} file",
            f"give the path of the {what} .nii/.nii.gz file",
        )
    if not path.is_file():
        raise InputError(
            path,
            f"{what} file not found",
            "check the path (paths in a study file are relative to its folder)",
        )
    if path.stat().st_size == 0:
        raise InputError(
            path, f"the {what} file is empty (0 bytes)", "re-export or re-download the file"
        )
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise InputError(
            path,
            f"cannot be read as a NIfTI image ({type(e).__name__}: {' '.join(str(e).split())})",
            "give a .nii or .nii.gz file",
        ) from None
    if not isinstance(img, _NIFTI_TYPES):
        raise InputError(
            path,
            f"is a {type(img).__name__}, not a NIfTI image",
            "convert it to .nii.gz, e.g. nibabel.save(nibabel.Nifti1Image(img.get_fdata(), img.affine), 'x.nii.gz')",
        )
    dtype = img.header.get_data_dtype()
    if dtype.kind not in "biuf":
        raise InputError(
            path,
            f"the {what} image holds {dtype} values, not real numbers",
            "save it with a numeric data type (e.g. float32)",
        )
    _check_file_size(img, path, what)
    return img


def _check_file_size(img: nib.spatialimages.SpatialImage, path: Path, what: str) -> None:
    """An uncompressed ``.nii`` must hold every byte its header describes (a cheap test of
    truncation; a ``.nii.gz`` is only found truncated when its data are read)."""
    if path.name.lower().endswith(".gz"):
        return
    offset = getattr(img.dataobj, "offset", None)  # where the data start (the header's
    if offset is None:  # vox_offset may read 0 for a single .nii file)
        return
    offset = int(offset)
    shape = img.shape
    per_volume = int(np.prod(shape[:3])) * img.header.get_data_dtype().itemsize
    expected = offset + per_volume * int(np.prod(shape[3:]))
    size = path.stat().st_size
    if size < expected:
        whole = max(0, size - offset) // per_volume if per_volume else 0
        extra = f" ({whole} complete volume(s) of {shape[3]})" if len(shape) == 4 else ""
        raise InputError(
            path,
            f"the {what} file is truncated: its header describes {expected} bytes, the file "
            f"holds {size}{extra}",
            "re-export or re-download the file",
        )


#: Seconds per unit of the NIfTI time field (``xyzt_units``).
_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def header_tr(img: nib.spatialimages.SpatialImage) -> float | None:
    """The repetition time the NIfTI header states, in seconds, or ``None`` if it states none.

    ``pixdim[4]`` is read with the time unit of ``xyzt_units`` (s, ms or µs). It is
    ``None`` (unknown) when the field is 0, negative or not finite, when the image has no
    time axis, when the unit is spectral (Hz, ppm, rad/s), and when the field is exactly
    1.0 with no unit: that is the value nibabel (and many converters) write when nobody set
    the TR, so it is a placeholder, not a statement. Any other value without a unit is
    taken as seconds (see :func:`check_tr` for milliseconds).
    """
    header = img.header
    if len(img.shape) < 4 or not hasattr(header, "get_xyzt_units"):
        return None
    try:
        raw = float(header["pixdim"][4])
        unit = header.get_xyzt_units()[1]
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    if not np.isfinite(raw) or raw <= 0:
        return None
    raw = float(f"{raw:.7g}")  # the header stores float32: 2.01, not 2.009999990463257
    if unit in _TIME_UNITS:
        return raw * _TIME_UNITS[unit]
    if unit == "unknown" and raw != 1.0:
        return raw
    return None


def check_tr(
    img: nib.spatialimages.SpatialImage, tr: float, where: str | os.PathLike | None = None
) -> float | None:
    """Check that a BOLD header's TR agrees with the study's ``tr`` (within 1 %).

    Parameters
    ----------
    img : nibabel image
        A 4D BOLD series (only the header is read).
    tr : float
        The study's repetition time, seconds.
    where : path, optional
        File named in the error (default: the image's file name).

    Returns
    -------
    float or None
        The header's TR in seconds, or ``None`` when the header states none.

    Raises
    ------
    InputError
        The header states a TR that differs from ``tr`` by more than 1 %.

    Notes
    -----
    A header that states no TR never fails (``pixdim[4]`` of 0, or spectral units).
    ``pixdim[4] == 1.0`` *without a time unit* is not checked either: it is nibabel's
    default for an image saved without zooms, so it says nothing about the
    acquisition, and refusing it would refuse most hand-made files. A value without a
    unit is read as seconds, and also accepted when it matches ``tr`` in milliseconds
    (e.g. 2000 for a TR of 2 s, as old Analyze converters wrote it). With a unit (s, ms,
    µs) the value is converted and must match.
    """
    if not tr or tr <= 0:
        raise ValueError(f"tr must be > 0 s, got {tr}")
    stated = header_tr(img)
    if stated is None:
        return None

    def close(value: float) -> bool:
        return abs(value - tr) <= 0.01 * tr

    if close(stated):
        return stated
    unit = img.header.get_xyzt_units()[1]
    if unit == "unknown" and close(stated * 1e-3):
        return stated * 1e-3
    raw = float(img.header["pixdim"][4])
    stated_as = f"{raw:g} {unit}" if unit != "unknown" else f"{raw:g}, no unit: read as seconds"
    raise InputError(
        _where(img, where),
        f"the NIfTI header states a TR of {stated:g} s (pixdim[4] = {stated_as}) but the "
        f"study's tr is {tr:g} s",
        "correct tr in the study file, or the header (e.g. img.header.set_zooms(...) with "
        "the TR in seconds and img.header.set_xyzt_units(t='sec'))",
    )


def load_bold_header(path: str | os.PathLike) -> nib.Nifti1Image:
    """A validated BOLD series with no data read: the header checks of :func:`load_bold`.

    Use it wherever only the grid (shape, affine) or the number of volumes is needed,
    e.g. the ``like=`` of :func:`load_mask`.

    Raises
    ------
    InputError
        Missing, empty or folder path, not NIfTI, non-numeric data, an uncompressed file
        shorter than its header, not 4D, or fewer than 2 volumes.
    """
    img = _load_nifti(path, "BOLD")
    shape = img.shape
    if len(shape) == 3:
        raise InputError(
            path,
            "expected a 4D BOLD series (x, y, z, time), got 3D",
            "pass one 4D file per run, e.g. merge volumes with nilearn.image.concat_imgs",
        )
    if len(shape) != 4:
        raise InputError(
            path,
            f"expected a 4D BOLD series (x, y, z, time), got shape {shape}",
            "pass one 4D file per run",
        )
    if shape[3] < 2:
        raise InputError(
            path,
            f"the BOLD series has {shape[3]} volume(s); at least 2 are needed",
            "pass one 4D file per run with all its volumes",
        )
    return img


def load_bold(path: str | os.PathLike, tr: float | None = None) -> nib.Nifti1Image:
    """Open a 4D BOLD series lazily and validate its header.

    Parameters
    ----------
    path : str or PathLike
        ``.nii`` / ``.nii.gz`` file, shape (x, y, z, time).
    tr : float, optional
        The study's TR in seconds: when given, the header's TR must agree
        (:func:`check_tr`).

    Returns
    -------
    nibabel image
        Data not yet read (``img.shape[3]`` is the number of volumes).

    Raises
    ------
    InputError
        Missing, empty or folder path, not NIfTI, truncated (uncompressed files), not 4D,
        fewer than 2 volumes, or a header TR other than ``tr``.
    """
    img = load_bold_header(path)
    if tr is not None:
        check_tr(img, tr, path)
    return img


def _same_grid(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage) -> bool:
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=1e-3)


def _mask_array(mask: nib.spatialimages.SpatialImage | np.ndarray) -> np.ndarray:
    data = np.asarray(mask.dataobj if hasattr(mask, "dataobj") else mask)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return np.nan_to_num(data) != 0


def _mask_image(
    data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None
) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data.astype(np.uint8), affine)
    if header is not None:
        img.header.set_zooms(header.get_zooms()[:3])
        img.header.set_xyzt_units(*header.get_xyzt_units())
    img.header.set_data_dtype(np.uint8)
    return img


def load_mask(
    path: str | os.PathLike, like: nib.spatialimages.SpatialImage | None = None
) -> nib.Nifti1Image:
    """Read a brain mask (any non-zero voxel is in).

    Parameters
    ----------
    path : str or PathLike
        3D NIfTI (a 4D file with one volume is accepted).
    like : nibabel image, optional
        A BOLD image whose grid (first three dimensions and affine) the mask must match.

    Returns
    -------
    nibabel.Nifti1Image
        3D uint8 image of 0/1.

    Raises
    ------
    InputError
        Missing/non-NIfTI file, not 3D, empty mask, or a grid different from ``like``.
    """
    img = _load_nifti(path, "mask")
    if not (len(img.shape) == 3 or (len(img.shape) == 4 and img.shape[3] == 1)):
        raise InputError(
            path, f"a mask must be 3D (x, y, z), got shape {img.shape}", "give a single-volume mask"
        )
    try:
        data = _mask_array(img)
    except _READ_ERRORS as e:
        raise InputError(
            path,
            f"the mask data are truncated or corrupt ({type(e).__name__})",
            "re-export the file",
        ) from None
    if not data.any():
        raise InputError(
            path,
            "the mask is empty (no non-zero voxel)",
            "give a mask with brain voxels, or leave `mask: null`",
        )
    if like is not None and not _same_grid(img, like):
        raise InputError(
            path,
            f"the mask grid (shape {tuple(img.shape[:3])}) does not match the BOLD grid "
            f"(shape {tuple(like.shape[:3])}{'' if img.shape[:3] != like.shape[:3] else ', different affine'})",
            "resample the mask to the BOLD, e.g. nilearn.image.resample_to_img(mask, bold, interpolation='nearest')",
        )
    return _mask_image(data, img.affine, img.header)


def _volume_blocks(
    img: nib.spatialimages.SpatialImage, where: str
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(t0, block)`` with ``block`` of shape (x, y, z, n) float32, in time order."""
    n_vol = img.shape[3]
    per_vol = int(np.prod(img.shape[:3]))
    step = max(1, _CHUNK_VALUES // max(per_vol, 1))
    for t0 in range(0, n_vol, step):
        try:
            block = np.asarray(img.dataobj[..., t0 : t0 + step], dtype=np.float32)
        except _READ_ERRORS as e:
            raise InputError(
                where,
                f"the BOLD data are truncated or corrupt (reading volume {t0}: {type(e).__name__})",
                "re-export or re-download the file",
            ) from None
        yield t0, block


def _run_stats(img: nib.spatialimages.SpatialImage, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel temporal std (float64, (x, y, z)) and whether every value is finite."""
    shape = img.shape[:3]
    finite = np.ones(shape, bool)
    s1 = np.zeros(shape, np.float64)
    s2 = np.zeros(shape, np.float64)
    ref = None
    n = 0
    for _, block in _volume_blocks(img, where):
        ok = np.isfinite(block)
        finite &= ok.all(axis=3)
        block = np.where(ok, block, 0.0).astype(np.float64)
        if ref is None:
            ref = block[..., :1].copy()  # shift by the first volume: no cancellation in var
        block -= ref
        s1 += block.sum(axis=3)
        s2 += np.square(block).sum(axis=3)
        n += block.shape[3]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return std, finite


def compute_mask(
    bold_paths: Sequence[str | os.PathLike],
    min_std: float = 1e-6,
    min_fraction: float = 0.5,
    rel_std: float = 1e-3,
) -> nib.Nifti1Image:
    """A mask of voxels usable in every run, computed from the BOLD series themselves.

    A voxel is kept when

    * it is finite and not constant (temporal std > ``min_std``) in **every** run, since a
      NaN or flat voxel in any run cannot be modelled or scored there, and
    * its temporal std exceeds ``rel_std`` times the median std of the non-constant
      voxels of the run in at least ``min_fraction`` of the runs (drops background that
      is only numerically noisy).

    Runs are read one at a time, a block of volumes at a time.

    Parameters
    ----------
    bold_paths : sequence of paths
        4D NIfTI runs (any subjects), all on the same grid (shape and affine).
    min_std : float
        Absolute std threshold, in the data's units.
    min_fraction : float in (0, 1]
        Fraction of runs in which a voxel must pass the relative threshold.
    rel_std : float
        Relative std threshold (fraction of the median voxel std of a run).

    Returns
    -------
    nibabel.Nifti1Image
        3D uint8 mask (0/1) on the runs' grid.

    Raises
    ------
    InputError
        No runs, runs on different grids, unreadable runs, or no voxel left.
    """
    paths = [Path(p) for p in bold_paths]
    if not paths:
        raise InputError(
            "mask", "no BOLD runs to compute a mask from", "give at least one run with a bold: file"
        )
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    imgs = [load_bold(p) for p in paths]  # headers only
    ref = imgs[0]
    for p, img in zip(paths[1:], imgs[1:], strict=True):
        if not _same_grid(ref, img):
            raise InputError(
                p,
                f"grid (shape {tuple(img.shape[:3])}) differs from {paths[0].name} (shape "
                f"{tuple(ref.shape[:3])}{'' if img.shape[:3] != ref.shape[:3] else ', different affine'})",
                "register/resample all runs to one space (e.g. with fMRIPrep or "
                "nilearn.image.resample_to_img) before cinebrain",
            )
    usable = np.ones(ref.shape[:3], bool)
    votes = np.zeros(ref.shape[:3], np.int32)
    for p, img in zip(paths, imgs, strict=True):
        std, finite = _run_stats(img, str(p))
        varying = finite & (std > min_std)
        usable &= varying
        med = float(np.median(std[varying])) if varying.any() else 0.0
        votes += varying & (std > rel_std * med)
    keep = usable & (votes >= min_fraction * len(paths) - 1e-9)
    if not keep.any():
        raise InputError(
            paths[0],
            "no voxel is finite and varying in every run",
            "check the BOLD files (all NaN or constant?) or give a mask in the study file",
        )
    return _mask_image(keep, ref.affine, ref.header)


def apply_mask(
    img: nib.spatialimages.SpatialImage,
    mask: nib.spatialimages.SpatialImage | np.ndarray,
    path_for_errors: str | os.PathLike | None = None,
) -> np.ndarray:
    """The time series of the voxels inside ``mask``.

    Parameters
    ----------
    img : nibabel image, shape (x, y, z, n_trs)
    mask : nibabel image or bool array, shape (x, y, z)
    path_for_errors : path, optional
        File named in error messages (default: the image's file name).

    Returns
    -------
    ndarray, shape (n_trs, n_voxels), float32
        Voxels in C order of their (i, j, k) index (as ``np.argwhere(mask)``).

    Raises
    ------
    InputError
        Grid mismatch, or voxels inside the mask that are NaN/inf or constant over time.
    """
    where = _where(img, path_for_errors)
    try:
        mask_bool = _mask_array(mask)
    except _READ_ERRORS as e:
        mask_where = mask.get_filename() if hasattr(mask, "get_filename") else None
        raise InputError(
            mask_where or "mask",
            f"the mask data are truncated or corrupt ({type(e).__name__})",
            "re-export the mask, or leave `mask: null` so cinebrain computes one",
        ) from None
    if len(img.shape) != 4:
        raise InputError(
            where,
            f"expected a 4D BOLD series (x, y, z, time), got shape {img.shape}",
            "pass one 4D file per run",
        )
    if mask_bool.shape != tuple(img.shape[:3]) or (
        hasattr(mask, "affine") and not _same_grid(mask, img)
    ):
        raise InputError(
            where,
            f"the BOLD grid (shape {tuple(img.shape[:3])}) does not match the mask (shape "
            f"{mask_bool.shape}{', different affine' if mask_bool.shape == tuple(img.shape[:3]) else ''})",
            "resample the mask to the BOLD grid, or leave `mask: null` so cinebrain computes one",
        )
    n_trs = img.shape[3]
    out = np.empty((n_trs, int(mask_bool.sum())), np.float32)
    for t0, block in _volume_blocks(img, where):
        out[t0 : t0 + block.shape[3]] = block[mask_bool].T
    coords = None
    bad = ~np.isfinite(out).all(axis=0)
    if bad.any():
        coords = np.argwhere(mask_bool)
        first = tuple(int(c) for c in coords[int(np.argmax(bad))])
        raise InputError(
            where,
            f"{int(bad.sum())} voxel(s) inside the mask have NaN or infinite values "
            f"(first at voxel (i, j, k) = {first})",
            _MASK_FIX,
        )
    flat = (out.max(axis=0) - out.min(axis=0)) == 0
    if flat.any():
        coords = np.argwhere(mask_bool)
        first = tuple(int(c) for c in coords[int(np.argmax(flat))])
        raise InputError(
            where,
            f"{int(flat.sum())} voxel(s) inside the mask are constant over time "
            f"(first at voxel (i, j, k) = {first})",
            _MASK_FIX,
        )
    return out


def unmask(values: np.ndarray, mask_img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """Put per-voxel values back into the mask's 3D grid.

    Parameters
    ----------
    values : ndarray, shape (n_voxels,) or (k, n_voxels)
        In the order of :func:`apply_mask`.
    mask_img : nibabel image, shape (x, y, z)

    Returns
    -------
    nibabel.Nifti1Image
        float32, shape (x, y, z) for 1D ``values`` or (x, y, z, k) for 2D; 0 outside the
        mask.
    """
    mask_bool = _mask_array(mask_img)
    values = np.asarray(values, dtype=np.float32)
    n_vox = int(mask_bool.sum())
    if values.ndim not in (1, 2) or values.shape[-1] != n_vox:
        raise ValueError(
            f"values of shape {values.shape} do not fit a mask of {n_vox} voxels; expected (n_voxels,) or (k, n_voxels)"
        )
    if values.ndim == 1:
        data = np.zeros(mask_bool.shape, np.float32)
        data[mask_bool] = values
    else:
        data = np.zeros((*mask_bool.shape, values.shape[0]), np.float32)
        data[mask_bool] = values.T
    img = nib.Nifti1Image(data, mask_img.affine)
    img.header.set_zooms(mask_img.header.get_zooms()[:3] + ((1.0,) if values.ndim == 2 else ()))
    img.header.set_data_dtype(np.float32)
    return img
