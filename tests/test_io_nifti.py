"""Tests for cinebrain.io.nifti: BOLD loading, masks, apply/unmask."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import cinebrain.io.nifti as nifti
from cinebrain.errors import InputError
from cinebrain.io.nifti import apply_mask, compute_mask, load_bold, load_mask, unmask

SHAPE = (6, 5, 4)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _bold(
    path: Path, n_trs: int = 20, seed: int = 0, edit=None, affine=AFFINE, shape=SHAPE
) -> Path:
    """A BOLD run: noise around 100 inside, zero background in the slab i == 0."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 5, (*shape, n_trs)).astype(np.float32)
    data[0] = 0.0
    if edit is not None:
        edit(data)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _msg(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_load_bold_is_lazy_and_4d(tmp_path):
    path = _bold(tmp_path / "run.nii.gz")
    img = load_bold(path)
    assert img.shape == (*SHAPE, 20)
    assert not img.in_memory


def test_load_bold_3d(tmp_path):
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), path)
    with pytest.raises(InputError) as e:
        load_bold(path)
    msg = _msg(e, path)
    assert "expected a 4D BOLD series (x, y, z, time), got 3D" in msg
    assert "nilearn.image.concat_imgs" in msg


def test_load_bold_one_volume(tmp_path):
    path = _bold(tmp_path / "one.nii.gz", n_trs=1)
    with pytest.raises(InputError, match="1 volume") as e:
        load_bold(path)
    _msg(e, path)


def test_load_bold_not_nifti(tmp_path):
    path = tmp_path / "run.nii.gz"
    path.write_text("hello")
    with pytest.raises(InputError, match="NIfTI") as e:
        load_bold(path)
    _msg(e, path)
    path = tmp_path / "run.mgz"
    nib.save(nib.MGHImage(np.ones((*SHAPE, 3), np.float32), AFFINE), path)
    with pytest.raises(InputError, match="not a NIfTI image") as e:
        load_bold(path)
    _msg(e, path)
    with pytest.raises(InputError, match="not found"):
        load_bold(tmp_path / "nope.nii.gz")


def test_truncated_bold_data(tmp_path):
    """A cut .nii.gz has an intact header: the damage is found when its data are read."""
    path = _bold(tmp_path / "run.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    img = load_bold(path)  # the header is intact
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        apply_mask(img, np.ones(SHAPE, bool), path_for_errors=path)
    _msg(e, path)
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        compute_mask([path])
    _msg(e, path)


def test_truncated_uncompressed_bold_found_from_the_header(tmp_path):
    """A cut .nii is shorter than its header says: refused before any data are read."""
    path = _bold(tmp_path / "run.nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for call in (load_bold, nifti.load_bold_header, lambda p: compute_mask([p])):
        with pytest.raises(InputError, match=r"BOLD file is truncated: its header describes") as e:
            call(path)
        assert "complete volume(s) of 20" in _msg(e, path)
    with pytest.raises(InputError, match="mask file is truncated") as e:
        load_mask(path)
    _msg(e, path)


@pytest.mark.parametrize("kind", ["empty", "folder", "text", "missing"])
def test_bad_paths_are_input_errors(tmp_path, kind):
    """Every reader of NIfTI files answers a bad path with one line, never a traceback."""
    path = tmp_path / "run.nii.gz"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("not an image\n" * 50)
    match = {
        "empty": r"empty \(0 bytes\)",
        "folder": "is a folder",
        "text": "cannot be read as a NIfTI image",
        "missing": "not found",
    }[kind]
    good = _bold(tmp_path / "good.nii.gz")
    calls = {
        "load_bold": lambda: load_bold(path),
        "load_bold_header": lambda: nifti.load_bold_header(path),
        "load_mask": lambda: load_mask(path, like=nifti.load_bold_header(good)),
        "compute_mask": lambda: compute_mask([good, path]),
    }
    for name, call in calls.items():
        with pytest.raises(InputError, match=match) as e:
            call()
        assert str(path) in _msg(e, path), name


def test_load_bold_header_is_lazy_and_validates(tmp_path):
    img = nifti.load_bold_header(_bold(tmp_path / "run.nii.gz"))
    assert img.shape == (*SHAPE, 20) and not img.in_memory
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), vol)
    with pytest.raises(InputError, match="got 3D") as e:
        nifti.load_bold_header(vol)
    _msg(e, vol)


def test_non_numeric_image_is_refused(tmp_path):
    path = tmp_path / "rgb.nii.gz"
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, AFFINE), path)
    with pytest.raises(InputError, match="not real numbers") as e:
        load_mask(path)
    _msg(e, path)


def _with_tr(path: Path, value: float | None, unit: str | None) -> Path:
    img = nib.load(_bold(path))
    if value is not None:
        img.header.set_zooms((3.0, 3.0, 3.0, value))
    if unit is not None:
        img.header.set_xyzt_units("mm", unit)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), path)
    return path


@pytest.mark.parametrize(
    ("value", "unit", "stated"),
    [
        (2.0, "sec", 2.0),
        (2000.0, "msec", 2.0),
        (2e6, "usec", 2.0),
        (2.01, "sec", 2.01),  # within 1 %
        (2.0, None, 2.0),  # no unit: seconds
        (2000.0, None, 2.0),  # no unit, in milliseconds
        (1.0, None, None),  # nibabel's default: a placeholder, not a TR
        (0.0, "sec", None),  # unset
        (None, None, None),  # never set
    ],
)
def test_check_tr_accepts(tmp_path, value, unit, stated):
    path = _with_tr(tmp_path / "run.nii.gz", value, unit)
    img = load_bold(path, tr=2.0)
    result = nifti.check_tr(img, 2.0, path)
    assert result == (pytest.approx(stated) if stated is not None else None)


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (2.5, "sec", "2.5 sec"),
        (1.0, "sec", "1 sec"),  # 1.0 *with* a unit is a statement
        (2500.0, "msec", "2500 msec"),
        (2.03, "sec", "2.03 sec"),  # more than 1 % off
        (3.0, None, "no unit"),
    ],
)
def test_check_tr_refuses_a_different_tr(tmp_path, value, unit, shown):
    path = _with_tr(tmp_path / "run.nii.gz", value, unit)
    img = load_bold(path)
    with pytest.raises(InputError, match="the NIfTI header states a TR of") as e:
        nifti.check_tr(img, 2.0, path)
    msg = _msg(e, path)
    assert shown in msg and "the study's tr is 2 s" in msg
    assert "correct tr in the study file, or the header" in msg
    with pytest.raises(InputError, match="states a TR"):
        load_bold(path, tr=2.0)
    assert nifti.header_tr(img) is not None


def test_compute_mask_logic(tmp_path):
    def nan_voxel(d):
        d[1, 0, 0, 3] = np.nan  # NaN in one run only: unusable everywhere

    def flat_voxel(d):
        d[2, 0, 0] = 50.0  # constant in one run only: unusable everywhere

    def quiet_voxel(d):
        d[3, 0, 0] = 100 + 1e-6 * np.arange(d.shape[3])  # varies, but far below the brain's std

    runs = [
        _bold(tmp_path / "r0.nii.gz", seed=0, edit=lambda d: (nan_voxel(d), quiet_voxel(d))),
        _bold(tmp_path / "r1.nii.gz", seed=1, edit=lambda d: (flat_voxel(d), quiet_voxel(d))),
        _bold(tmp_path / "r2.nii.gz", seed=2),
    ]
    mask = compute_mask(runs)
    m = np.asarray(mask.dataobj)
    assert m.shape == SHAPE and m.dtype == np.uint8
    np.testing.assert_allclose(mask.affine, AFFINE)
    assert m[0].sum() == 0  # background
    assert m[1, 0, 0] == 0 and m[2, 0, 0] == 0
    assert m[3, 0, 0] == 0  # too quiet in 2 of 3 runs (< min_fraction)
    assert m[1:].sum() == np.prod(SHAPE[1:]) * (SHAPE[0] - 1) - 3
    # quiet in only 1 of 3 runs: still enough (2/3 >= 0.5)
    runs[1] = _bold(tmp_path / "r1b.nii.gz", seed=1)
    m2 = np.asarray(compute_mask(runs).dataobj)
    assert m2[3, 0, 0] == 1
    # every mask voxel is usable in every run
    for p in runs:
        Y = apply_mask(load_bold(p), compute_mask(runs))
        assert Y.shape == (20, int(m2.sum()))


def test_compute_mask_chunked_reading(tmp_path, monkeypatch):
    """Reading a few volumes at a time gives the same mask as reading all at once."""
    runs = [_bold(tmp_path / f"r{i}.nii.gz", seed=i) for i in range(2)]
    full = np.asarray(compute_mask(runs).dataobj)
    monkeypatch.setattr(nifti, "_CHUNK_VALUES", 3 * int(np.prod(SHAPE)))
    np.testing.assert_array_equal(np.asarray(compute_mask(runs).dataobj), full)
    Y_chunked = apply_mask(load_bold(runs[0]), full)
    monkeypatch.undo()
    np.testing.assert_array_equal(Y_chunked, apply_mask(load_bold(runs[0]), full))


def test_compute_mask_grid_mismatch(tmp_path):
    a = _bold(tmp_path / "a.nii.gz")
    b = _bold(tmp_path / "b.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(InputError, match="differs") as e:
        compute_mask([a, b])
    _msg(e, b)
    c = _bold(tmp_path / "c.nii.gz", shape=(6, 5, 3))
    with pytest.raises(InputError, match="differs") as e:
        compute_mask([a, c])
    _msg(e, c)


def test_apply_unmask_round_trip(tmp_path):
    path = _bold(tmp_path / "run.nii.gz")
    img = load_bold(path)
    mask_data = np.zeros(SHAPE, bool)
    mask_data[2:, 1:4, :3] = True
    mask = nib.Nifti1Image(mask_data.astype(np.uint8), AFFINE)
    Y = apply_mask(img, mask)
    assert Y.shape == (20, mask_data.sum()) and Y.dtype == np.float32
    data = np.asarray(img.dataobj)
    i, j, k = np.argwhere(mask_data)[5]
    np.testing.assert_array_equal(Y[:, 5], data[i, j, k])
    back = unmask(Y, mask)
    assert back.shape == (*SHAPE, 20)
    np.testing.assert_array_equal(np.asarray(back.dataobj)[mask_data], data[mask_data])
    assert np.all(np.asarray(back.dataobj)[~mask_data] == 0)
    one = unmask(Y[0], mask)
    assert one.shape == SHAPE and one.get_data_dtype() == np.float32
    np.testing.assert_allclose(one.affine, AFFINE)
    with pytest.raises(ValueError):
        unmask(Y[:, :-1], mask)


def test_apply_mask_nan_and_constant(tmp_path):
    def nan(d):
        d[2, 3, 1, 7] = np.nan

    path = _bold(tmp_path / "nan.nii.gz", edit=nan)
    mask = np.ones(SHAPE, bool)
    mask[0] = False
    with pytest.raises(InputError) as e:
        apply_mask(load_bold(path), mask)
    msg = _msg(e, path)  # the image's own file name is used
    assert "1 voxel(s)" in msg and "NaN" in msg and "(2, 3, 1)" in msg
    assert (
        "remove these voxels from the mask or leave `mask: null` so cinebrain computes one" in msg
    )

    path = _bold(tmp_path / "bg.nii.gz")
    with pytest.raises(InputError, match="constant over time") as e:
        apply_mask(load_bold(path), np.ones(SHAPE, bool), path_for_errors="sub-01/run-1.nii.gz")
    assert "sub-01/run-1.nii.gz" in str(e.value)
    assert f"{SHAPE[1] * SHAPE[2]} voxel(s)" in str(e.value) and "(0, 0, 0)" in str(e.value)


def test_apply_mask_grid_mismatch(tmp_path):
    path = _bold(tmp_path / "run.nii.gz")
    with pytest.raises(InputError, match="does not match") as e:
        apply_mask(load_bold(path), np.ones((6, 5, 3), bool))
    _msg(e, path)
    shifted = nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(InputError, match="different affine") as e:
        apply_mask(load_bold(path), shifted)
    _msg(e, path)


def test_load_mask(tmp_path):
    bold = load_bold(_bold(tmp_path / "run.nii.gz"))
    data = np.zeros(SHAPE, np.float32)
    data[1:, :, :] = 0.7  # any non-zero is in
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    mask = load_mask(path, like=bold)
    m = np.asarray(mask.dataobj)
    assert m.shape == SHAPE and m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    assert m.sum() == (SHAPE[0] - 1) * SHAPE[1] * SHAPE[2]

    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), other)
    with pytest.raises(InputError, match="different affine") as e:
        load_mask(other, like=bold)
    assert "resample_to_img" in _msg(e, other)

    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.float32), AFFINE), small)
    with pytest.raises(InputError, match="does not match") as e:
        load_mask(small, like=bold)
    _msg(e, small)

    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE), empty)
    with pytest.raises(InputError, match="empty") as e:
        load_mask(empty)
    _msg(e, empty)

    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 3), np.float32), AFFINE), four)
    with pytest.raises(InputError, match="must be 3D") as e:
        load_mask(four)
    _msg(e, four)


def test_apply_mask_with_a_damaged_mask_image(tmp_path):
    """A mask opened by hand (nibabel, lazily) from a cut file: its read error is one line."""
    mask_path = tmp_path / "mask.nii.gz"
    noise = np.random.default_rng(0).integers(0, 2, (40, 40, 40), dtype=np.uint8)  # big
    nib.save(nib.Nifti1Image(noise, AFFINE), mask_path)  # enough that the header survives
    data = mask_path.read_bytes()
    mask_path.write_bytes(data[: len(data) // 2])
    img = load_bold(_bold(tmp_path / "run.nii.gz"))
    with pytest.raises(InputError, match="mask data are truncated or corrupt") as e:
        apply_mask(img, nib.load(mask_path))
    _msg(e, mask_path)
