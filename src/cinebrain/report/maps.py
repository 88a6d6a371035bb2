"""Brain maps: per-voxel arrays to NIfTI images, and PNG renderings with nilearn.

Voxel order everywhere in cinebrain is the C-order of ``np.where(mask)`` (as
``nilearn.masking.apply_mask`` and ``mask_data[mask]`` produce it). Figures are drawn
with nilearn on its bundled MNI152 template (no download) and closed after saving;
matplotlib falls back to its Agg backend on machines without a display.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from cinebrain._files import atomic_path
from cinebrain.io.nifti import unmask

#: World-coordinate box (mm) of the MNI152 template; images outside it get no template.
_MNI_BOX = np.array([[-91.0, 91.0], [-127.0, 91.0], [-73.0, 109.0]])


def mask_array(mask_img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Boolean 3-D array of a mask image (non-zero voxels)."""
    data = np.asarray(mask_img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {data.shape}")
    return data != 0


def save_map(
    values: np.ndarray, mask_img: nib.spatialimages.SpatialImage, path: str | os.PathLike
) -> Path:
    """Write per-voxel ``values`` (n_voxels,) as a NIfTI image at ``path``, atomically.

    ``path`` should end in ``.nii.gz`` (or ``.nii``); NaN values are kept as NaN.
    """
    path = Path(path)
    if not (path.name.endswith(".nii.gz") or path.name.endswith(".nii")):
        raise ValueError(f"{path}: a NIfTI map needs a .nii.gz or .nii suffix")
    img = unmask(values, mask_img)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def _in_mni(img: nib.spatialimages.SpatialImage) -> bool:
    """Whether the image's centre lies in the MNI152 template's box (then draw it under)."""
    centre = (np.array(img.shape[:3]) - 1) / 2.0
    xyz = img.affine[:3, :3] @ centre + img.affine[:3, 3]
    return bool(np.all((xyz >= _MNI_BOX[:, 0]) & (xyz <= _MNI_BOX[:, 1])))


def _finite(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return nib.Nifti1Image(data, img.affine)


def robust_vmax(values: np.ndarray, percentile: float = 99.0) -> float:
    """A colour-scale maximum: the ``percentile`` of finite |values| (> 0)."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return 1.0
    return float(np.percentile(v, percentile)) or float(v.max())


def _save_figure(display, path_png: str | os.PathLike, dpi: int) -> Path:
    path = Path(path_png)
    with atomic_path(path) as tmp:
        display.savefig(str(tmp), dpi=dpi)
    display.close()
    return path


def plot_glass_brain(
    img: nib.spatialimages.SpatialImage | str | os.PathLike,
    title: str,
    path_png: str | os.PathLike,
    vmax: float | None = None,
    cmap: str = "cold_hot",
    threshold: float | None = None,
    symmetric: bool = True,
    display_mode: str = "lzr",
    dpi: int = 80,
) -> Path:
    """Glass-brain projection (maximum intensity) of a 3-D map, saved as PNG.

    Parameters
    ----------
    img : image or path
        3-D map.
    title : str
    path_png : path
        Output PNG (written atomically).
    vmax : float, optional
        Colour-scale maximum; default :func:`robust_vmax` of the map.
    cmap : str
        Matplotlib / nilearn colour map; diverging for signed maps.
    threshold : float, optional
        |values| below it are not drawn; default ``0.1 * vmax`` (a glass brain of
        all voxels is an unreadable haze).
    symmetric : bool
        Signed map with a colour scale symmetric around 0 (False: 0..vmax).
    display_mode : str
        Projections, as in ``nilearn.plotting.plot_glass_brain`` (each costs about as
        much as a whole slice figure).
    """
    from nilearn import plotting

    img = _finite(nib.load(img) if isinstance(img, (str, os.PathLike)) else img)
    data = np.asarray(img.dataobj)
    vmax = robust_vmax(data) if vmax is None else float(vmax)
    threshold = 0.1 * vmax if threshold is None else threshold
    display = plotting.plot_glass_brain(
        img,
        title=title,
        threshold=threshold,
        vmax=vmax,
        vmin=-vmax if symmetric else 0.0,
        cmap=cmap,
        colorbar=True,
        plot_abs=False,
        symmetric_cbar=symmetric,
        display_mode=display_mode,
    )
    return _save_figure(display, path_png, dpi)


def plot_slices(
    img: nib.spatialimages.SpatialImage | str | os.PathLike,
    title: str,
    path_png: str | os.PathLike,
    vmax: float | None = None,
    cmap: str = "cold_hot",
    threshold: float | None = None,
    symmetric: bool = True,
    display_mode: str = "z",
    cut_coords: int = 7,
    bg_img: nib.spatialimages.SpatialImage | str | None = "mni",
    dpi: int = 80,
) -> Path:
    """Axial (or other) slices of a 3-D map over an anatomical background, saved as PNG.

    ``bg_img="mni"`` draws the bundled MNI152 2 mm template underneath when the map
    lies in MNI space (its centre is within the template's box), and no background
    otherwise; pass an image for your own background, or None for none. Other
    parameters as in :func:`plot_glass_brain`; ``display_mode`` and ``cut_coords`` as in
    ``nilearn.plotting.plot_stat_map``.
    """
    from nilearn import datasets, plotting

    img = _finite(nib.load(img) if isinstance(img, (str, os.PathLike)) else img)
    data = np.asarray(img.dataobj)
    vmax = robust_vmax(data) if vmax is None else float(vmax)
    threshold = 0.1 * vmax if threshold is None else threshold
    if isinstance(bg_img, str) and bg_img == "mni":
        bg_img = datasets.load_mni152_template(resolution=2) if _in_mni(img) else None
    kwargs = {} if symmetric else {"vmin": 0.0}
    display = plotting.plot_stat_map(
        img,
        bg_img=bg_img,
        title=title,
        threshold=threshold,
        vmax=vmax,
        cmap=cmap,
        colorbar=True,
        symmetric_cbar=symmetric,
        display_mode=display_mode,
        cut_coords=cut_coords,
        draw_cross=False,
        **kwargs,
    )
    return _save_figure(display, path_png, dpi)


#: Tags of nilearn's viewer page that fetch from the network (its favicon); the viewer's
#: scripts and images are inlined, so without them the page needs no connection.
_NETWORK_TAG = re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)


def view_map_html(
    img: nib.spatialimages.SpatialImage | str | os.PathLike,
    title: str,
    vmax: float | None = None,
    cmap: str = "cold_hot",
    threshold: float | None = None,
    symmetric: bool = True,
    bg_img: nib.spatialimages.SpatialImage | str | None = "mni",
) -> str:
    """An interactive slice viewer of a 3-D map: one standalone HTML document.

    nilearn's ``view_img`` (brainsprite): click to move the cut, with the value under
    the cursor. Its scripts (jQuery, brainsprite) and the slice images are inlined and
    its network favicon is dropped, so the document works offline. Parameters as in
    :func:`plot_slices` (``bg_img="mni"``: the bundled MNI152 template when the map lies
    in MNI space); voxels are drawn at their own size (nearest-neighbour resampling).
    """
    from nilearn import datasets, plotting

    img = _finite(nib.load(img) if isinstance(img, (str, os.PathLike)) else img)
    data = np.asarray(img.dataobj)
    vmax = robust_vmax(data) if vmax is None else float(vmax)
    threshold = 0.1 * vmax if threshold is None else threshold
    if isinstance(bg_img, str) and bg_img == "mni":
        bg_img = datasets.load_mni152_template(resolution=2) if _in_mni(img) else None
    view = plotting.view_img(
        img,
        bg_img=bg_img if bg_img is not None else False,
        title=title,
        threshold=threshold,
        vmax=vmax,
        vmin=None if symmetric else 0.0,
        symmetric_cmap=symmetric,
        cmap=cmap,
        black_bg=False,
        resampling_interpolation="nearest",
    )
    return _NETWORK_TAG.sub("", view.get_standalone())
