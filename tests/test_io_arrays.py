"""Tests for cinebrain.io.arrays: response arrays in every supported format."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from cinebrain.errors import InputError
from cinebrain.io.arrays import read_timeseries


@pytest.fixture
def Y() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)


def _fails(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as e:
        read_timeseries(path, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_npy(tmp_path, Y):
    np.save(tmp_path / "y.npy", Y.astype(np.float64))
    out = read_timeseries(tmp_path / "y.npy")
    assert out.dtype == np.float32 and out.shape == (12, 3)
    np.testing.assert_allclose(out, Y)


def test_one_dimensional_is_one_column(tmp_path, Y):
    np.save(tmp_path / "y.npy", Y[:, 0])
    assert read_timeseries(tmp_path / "y.npy").shape == (12, 1)


def test_npz(tmp_path, Y):
    np.savez(tmp_path / "one.npz", roi=Y)
    np.testing.assert_allclose(read_timeseries(tmp_path / "one.npz"), Y)
    np.savez(tmp_path / "two.npz", roi=Y, other=Y * 2)
    np.testing.assert_allclose(read_timeseries(tmp_path / "two.npz", key="other"), Y * 2)
    msg = _fails(tmp_path / "two.npz", "2 arrays")
    assert "roi" in msg and "key:" in msg
    _fails(tmp_path / "two.npz", "no array 'x'", key="x")


@pytest.mark.parametrize("sep,ext", [(",", ".csv"), ("\t", ".tsv")])
@pytest.mark.parametrize("header", [True, False])
def test_text_tables(tmp_path, Y, sep, ext, header):
    path = tmp_path / f"y{ext}"
    lines = [sep.join(["roi_a", "roi_b", "roi_c"])] if header else []
    lines += [sep.join(f"{v:.6f}" for v in row) for row in Y]
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(read_timeseries(path), Y, atol=1e-6)


def test_text_table_non_numeric(tmp_path, Y):
    path = tmp_path / "y.csv"
    rows = [",".join(f"{v:.3f}" for v in row) for row in Y]
    rows[4] = "1.0,oops,2.0"
    path.write_text("a,b,c\n" + "\n".join(rows) + "\n")
    assert "'oops' in column 1" in _fails(path, "non-numeric")


def test_mat(tmp_path, Y):
    scipy.io.savemat(tmp_path / "y.mat", {"bold": Y})
    np.testing.assert_allclose(read_timeseries(tmp_path / "y.mat"), Y)
    scipy.io.savemat(tmp_path / "two.mat", {"bold": Y, "tr": np.array([[1.5]])})
    np.testing.assert_allclose(read_timeseries(tmp_path / "two.mat", key="bold"), Y)
    _fails(tmp_path / "two.mat", "2 variables")


def test_mat_v73_is_hdf5(tmp_path, Y):
    path = tmp_path / "y.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["bold"] = Y.T  # MATLAB is column-major: HDF5 sees the transpose
    with open(path, "r+b") as f:  # the text header MATLAB writes in the user block
        f.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        )
    np.testing.assert_allclose(read_timeseries(path), Y)


def test_h5(tmp_path, Y):
    path = tmp_path / "y.h5"
    with h5py.File(path, "w") as f:
        f.create_group("data")["roi"] = Y
    np.testing.assert_allclose(read_timeseries(path), Y)
    with h5py.File(path, "a") as f:
        f["meta"] = np.arange(3.0)
    np.testing.assert_allclose(read_timeseries(path, key="data/roi"), Y)
    assert "data/roi" in _fails(path, "2 datasets")


def test_nan_column(tmp_path, Y):
    Y[5, 2] = np.nan
    np.save(tmp_path / "y.npy", Y)
    msg = _fails(tmp_path / "y.npy", "NaN or infinite")
    assert "column 2" in msg and "row 5" in msg and "interpolate" in msg


def test_constant_column(tmp_path, Y):
    Y[:, 1] = 3.0
    np.save(tmp_path / "y.npy", Y)
    assert "column 1" in _fails(tmp_path / "y.npy", "constant")


def test_shape_errors(tmp_path, Y):
    np.save(tmp_path / "row.npy", Y[:1])
    assert "transpose" in _fails(tmp_path / "row.npy", "need at least 2 TRs")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    _fails(tmp_path / "cube.npy", "2D")
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    _fails(tmp_path / "text.npy", "not real numbers")


def test_file_errors(tmp_path):
    _fails(tmp_path / "nope.npy", "not found")
    (tmp_path / "y.json").write_text("[]")
    _fails(tmp_path / "y.json", "unknown responses format")
    (tmp_path / "bad.npy").write_text("not numpy")
    _fails(tmp_path / "bad.npy", "cannot be read")
    (tmp_path / "bad.h5").write_text("not hdf5")
    _fails(tmp_path / "bad.h5", "cannot be read as HDF5")


@pytest.mark.parametrize("ext", [".npy", ".npz", ".csv", ".tsv", ".mat", ".h5"])
def test_empty_file_and_folder(tmp_path, ext):
    empty = tmp_path / f"empty{ext}"
    empty.write_bytes(b"")
    _fails(empty, r"empty \(0 bytes\)")
    folder = tmp_path / f"folder{ext}"
    folder.mkdir()
    _fails(folder, "is a folder")


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_npz(tmp_path, Y, compressed):
    path = tmp_path / "y.npz"
    (np.savez_compressed if compressed else np.savez)(path, y=np.tile(Y, (20, 1)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "re-export" in _fails(path, "cannot be read, truncated or corrupt")


def test_truncated_mat(tmp_path, Y):
    path = tmp_path / "y.mat"
    scipy.io.savemat(path, {"y": np.tile(Y, (20, 1))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _fails(path, "cannot be read as a MATLAB file")


def test_mat_without_variables(tmp_path):
    path = tmp_path / "none.mat"
    scipy.io.savemat(path, {})
    _fails(path, "contains no variable")


def test_corrupt_hdf5_chunk(tmp_path):
    path = tmp_path / "y.h5"
    values = np.random.default_rng(0).random((200, 30))
    with h5py.File(path, "w") as f:
        f.create_dataset("y", data=values, chunks=(20, 30), compression="gzip")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 200] = bytes(200)
    path.write_bytes(bytes(data))
    _fails(path, "cannot be read")
