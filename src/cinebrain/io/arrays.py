"""Response time series stored as arrays: ROI averages, neurons, source-space signals.

One reader, :func:`read_timeseries`, for ``.npy``, ``.npz``, ``.csv``/``.tsv``, ``.mat``
(MATLAB v5 via scipy, v7.3 via h5py) and ``.h5``/``.hdf5``. The result is always
``(n_trs, n_targets)`` float32, validated.

Target names (ROI names) travel with the data, read by :func:`read_target_names`:

- ``.csv`` / ``.tsv``: the header row (optional), one name per column;
- ``.npz`` and ``.mat``: an array / variable ``<key>_names`` next to the data ``<key>``
  (strings, or a MATLAB cell array of strings / char matrix); ``names`` is also accepted
  when the file holds one data array;
- ``.h5`` / ``.hdf5`` (and MATLAB v7.3): an attribute ``names`` on the dataset, or a
  dataset ``<key>_names`` beside it;
- ``.npy``: none.

Names are stripped of surrounding whitespace and must be non-empty, unique and one per
column. Arrays called ``*_names`` (or ``names``) are never taken for the responses.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from cinebrain.errors import InputError

ARRAY_EXTENSIONS = (".npy", ".npz", ".csv", ".tsv", ".txt", ".mat", ".h5", ".hdf5")
_KEY_FIX = "set key: in the run's entry of the study file"
# What numpy, scipy, h5py and zipfile raise on a damaged file.
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _is_names_key(name: str, names: list[str]) -> bool:
    """``<key>_names`` beside ``<key>``, or ``names``: target names, not responses."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "names":
        return True
    return name.endswith("_names") and name[: -len("_names")] in names


def _pick(path: Path, names: list[str], key: str | None, what: str) -> str:
    """The variable to read: ``key``, or the only one (name arrays left out)."""
    if key is None:
        names = [n for n in names if not _is_names_key(n, names)]
    if key is not None:
        if key not in names:
            raise InputError(
                path,
                f"no {what} {key!r} (found: {', '.join(names) or 'none'})",
                f"{_KEY_FIX} to one of these",
            )
        return key
    if len(names) == 1:
        return names[0]
    if not names:
        raise InputError(
            path, f"contains no {what}", "save the responses as a (n_trs, n_targets) array"
        )
    raise InputError(
        path,
        f"holds {len(names)} {what}s ({', '.join(names)}); which one is the responses?",
        _KEY_FIX,
    )


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        name = _pick(path, list(z.files), key, "array")
        return np.asarray(z[name])


def _read_table(path: Path) -> np.ndarray:
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return np.zeros((0, 0), np.float32)
    except Exception as e:
        raise InputError(
            path,
            f"cannot be read as a table ({' '.join(str(e).split())})",
            "save one row per TR, numbers only",
        ) from None
    cells = df.apply(
        lambda col: pd.to_numeric(col.str.strip().replace({"": "nan"}), errors="coerce")
    )
    text_cells = (
        cells.isna().to_numpy()
        & ~df.apply(
            lambda col: col.str.strip().str.lower().isin(["", "nan", "na", "n/a"])
        ).to_numpy()
    )
    if text_cells.shape[0] and text_cells[0].any():
        # The first row holds text: a header.
        cells, text_cells = cells.iloc[1:], text_cells[1:]
    if text_cells.any():
        r, c = np.argwhere(text_cells)[0]
        raise InputError(
            path,
            f"non-numeric value {df.iloc[r + (len(df) - len(cells)), c]!r} in column {c}",
            "a response table holds numbers only (one optional header row)",
        )
    return cells.to_numpy(dtype=np.float64)


def _h5_datasets(group, prefix: str = "") -> list[str]:
    import h5py

    names = []
    for name, item in group.items():
        if isinstance(item, h5py.Dataset):
            if not name.startswith("#"):  # MATLAB v7.3 bookkeeping (#refs#, #subsystem#)
                names.append(prefix + name)
        elif isinstance(item, h5py.Group) and not name.startswith("#"):
            names.extend(_h5_datasets(item, prefix + name + "/"))
    return names


def _read_h5(path: Path, key: str | None, matlab: bool = False) -> np.ndarray:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(
            path, f"cannot be read as HDF5 ({' '.join(str(e).split())})", "re-export the file"
        ) from None
    with f:
        name = _pick(path, _h5_datasets(f), key, "dataset")
        data = np.asarray(f[name])
    # MATLAB v7.3 writes column-major arrays: h5py sees them transposed.
    return data.T if matlab else data


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):  # MATLAB v7.3 files are HDF5
        return _read_h5(path, key, matlab=True)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:
        raise InputError(
            path,
            f"cannot be read as a MATLAB file ({' '.join(str(e).split())})",
            "save it with MATLAB's save or scipy.io.savemat",
        ) from None
    names = [k for k in mat if not k.startswith("__")]
    return np.asarray(mat[_pick(path, names, key, "variable")])


def read_timeseries(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Read responses stored as an array, one row per TR.

    Parameters
    ----------
    path : str or PathLike
        ``.npy``, ``.npz``, ``.csv``/``.tsv`` (numbers, optional header row), ``.mat``,
        ``.h5``/``.hdf5``.
    key : str, optional
        Array / variable / dataset name inside ``.npz``, ``.mat`` or ``.h5`` files; may be
        omitted when the file holds exactly one.

    Returns
    -------
    ndarray, shape (n_trs, n_targets), float32
        A 1D array becomes one column.

    Raises
    ------
    InputError
        Missing, empty or folder path, unknown extension, a damaged file, ambiguous or
        missing key, non-numeric data, not 2D, fewer than 2 rows, a column with NaN/inf,
        or a constant column.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(
            path, "is a folder, not a responses file", "give the path of the responses file"
        )
    if not path.is_file():
        raise InputError(
            path,
            "responses file not found",
            "check the path (paths in a study file are relative to its folder)",
        )
    if path.stat().st_size == 0:
        raise InputError(
            path, "the responses file is empty (0 bytes)", "re-export or re-download the file"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            data = _read_npz(path, key)
        elif suffix in (".csv", ".tsv", ".txt"):
            data = _read_table(path)
        elif suffix == ".mat":
            data = _read_mat(path, key)
        elif suffix in (".h5", ".hdf5"):
            data = _read_h5(path, key)
        else:
            raise InputError(
                path,
                f"unknown responses format {path.suffix!r}",
                f"save the responses as one of {', '.join(ARRAY_EXTENSIONS)}",
            )
    except InputError:
        raise
    except _READ_ERRORS as e:
        raise InputError(
            path,
            f"cannot be read, truncated or corrupt? ({type(e).__name__}: "
            f"{' '.join(str(e).split())})",
            "re-export the file",
        ) from None
    return validate_timeseries(data, path)


def validate_timeseries(data: np.ndarray, where: str | os.PathLike) -> np.ndarray:
    """Check and convert an array of responses to ``(n_trs, n_targets)`` float32.

    Raises
    ------
    InputError
        Non-numeric, not 1D/2D, fewer than 2 rows, NaN/inf in a column, constant column.
    """
    data = np.asarray(data)
    if data.dtype.kind not in "biuf":
        raise InputError(
            where,
            f"holds {data.dtype} values, not real numbers",
            "save the responses as a float array",
        )
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise InputError(
            where,
            f"expected a 2D array (n_trs, n_targets), got shape {data.shape}",
            "reshape it to one row per TR and one column per voxel / ROI / neuron",
        )
    if data.shape[0] < 2 or data.shape[1] < 1:
        hint = " (if it is (n_targets, n_trs), transpose it)" if data.shape[1] >= 2 else ""
        raise InputError(
            where,
            f"has {data.shape[0]} row(s) and {data.shape[1]} column(s); need at least 2 TRs{hint}",
            "save one row per TR and one column per target",
        )
    data = data.astype(np.float32, copy=False)
    bad = ~np.isfinite(data).all(axis=0)
    if bad.any():
        cols = np.flatnonzero(bad)
        first = int(cols[0])
        row = int(np.flatnonzero(~np.isfinite(data[:, first]))[0])
        raise InputError(
            where,
            f"{cols.size} column(s) have NaN or infinite values (first: column {first}, row {row})",
            "drop these columns or fill the gaps (e.g. interpolate) before cinebrain",
        )
    flat = (data.max(axis=0) - data.min(axis=0)) == 0
    if flat.any():
        cols = np.flatnonzero(flat)
        raise InputError(
            where,
            f"{cols.size} column(s) are constant over time (first: column {int(cols[0])})",
            "drop them; a constant target can be neither predicted nor scored",
        )
    return np.ascontiguousarray(data)


# --------------------------------------------------------------------------- target names
def _n_columns(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) < 2 else int(shape[1])


def _decode_names(raw) -> list[str]:
    """Strings from what numpy, scipy or h5py give for a list of names: str / bytes
    arrays, object arrays of those, a MATLAB cell array (object array of char arrays) or
    char matrix (one name per row)."""
    arr = np.asarray(raw)
    if arr.dtype.kind in "US" and arr.ndim == 2 and arr.dtype.itemsize in (1, 4) and (
            arr.dtype.kind == "S" or arr.dtype.itemsize == 4) and arr.shape[1] > 1 and all(
            len(x) <= 1 for x in arr.ravel()[:50]):
        arr = np.array(["".join(row) for row in arr])  # a char matrix, one character a cell
    out = []
    for item in arr.ravel():
        if isinstance(item, np.ndarray):
            parts = _decode_names(item)
            out.append("".join(parts) if item.dtype.kind in "US" and item.ndim == 2
                       else " ".join(parts) if len(parts) != 1 else parts[0])
        elif isinstance(item, bytes | np.bytes_):
            out.append(item.decode("utf-8", "replace"))
        else:
            out.append(str(item))
    return out


def _check_names(path: Path, names: list[str], n_columns: int, where: str) -> list[str]:
    names = [" ".join(str(n).split()) for n in names]
    if len(names) != n_columns:
        raise InputError(path, f"{where} holds {len(names)} name(s) for {n_columns} column(s)",
                         "give exactly one name per column")
    blank = [i for i, n in enumerate(names) if not n]
    if blank:
        raise InputError(path, f"column {blank[0]} has no name in {where}",
                         "name every column, or leave the names out altogether")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(path, f"{where} names {n!r} twice",
                             "give every column a name of its own")
        seen.add(n)
    return names


def _table_names(path: Path) -> list[str] | None:
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        first = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False, nrows=1)
    except Exception:  # the full read reports what is wrong
        return None
    cells = [str(c) for c in first.iloc[0]] if len(first) else []
    text = [c for c in cells if c.strip().lower() not in ("", "nan", "na", "n/a")
            and pd.isna(pd.to_numeric(c.strip(), errors="coerce"))]
    if not text:
        return None  # no header row
    return _check_names(path, cells, len(cells), "the header row")


def _h5_names(path: Path, key: str | None, matlab: bool) -> list[str] | None:
    import h5py

    with h5py.File(path, "r") as f:
        datasets = _h5_datasets(f)
        name = _pick(path, datasets, key, "dataset")
        ds = f[name]
        shape = tuple(ds.shape)[::-1] if matlab else tuple(ds.shape)
        n = _n_columns(shape)
        if "names" in ds.attrs:
            return _check_names(path, _decode_names(ds.attrs["names"]), n,
                                f"the 'names' attribute of {name!r}")
        for other in (f"{name}_names", *(["names"] if len(
                [d for d in datasets if not _is_names_key(d, datasets)]) == 1 else [])):
            if other in datasets:
                return _check_names(path, _h5_decode(f, f[other]), n, f"dataset {other!r}")
    return None


def _h5_decode(f, ds) -> list[str]:
    """Names stored in an HDF5 dataset: strings, or MATLAB v7.3 char / cellstr data."""
    import h5py

    data = ds[()]
    if h5py.check_dtype(ref=ds.dtype) is not None:  # a MATLAB cell array: references
        return ["".join(chr(c) for c in np.asarray(f[ref]).ravel() if c) for ref in
                np.asarray(data).ravel()]
    if np.asarray(data).dtype.kind in "ui":  # a MATLAB char matrix, column-major
        chars = np.atleast_2d(np.asarray(data)).T
        return ["".join(chr(c) for c in row if c) for row in chars]
    return _decode_names(data)


def read_target_names(path: str | os.PathLike, key: str | None = None) -> list[str] | None:
    """The names of the columns (targets, e.g. ROIs) of a responses file, or None.

    Conventions (see the module docstring): a CSV/TSV header row; ``<key>_names`` (or
    ``names``) beside the data in ``.npz`` / ``.mat``; an attribute ``names`` on the HDF5
    dataset, or a dataset ``<key>_names``. ``.npy`` files carry no names.

    Raises
    ------
    InputError
        Names that are blank, repeated, or not one per column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return _table_names(path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                name = _pick(path, list(z.files), key, "array")
                n = _n_columns(z[name].shape)
                single = len([k for k in z.files if not _is_names_key(k, list(z.files))]) == 1
                for other in (f"{name}_names", *(["names"] if single else [])):
                    if other in z.files:
                        return _check_names(path, _decode_names(z[other]), n, f"array {other!r}")
            return None
        if suffix in (".h5", ".hdf5"):
            return _h5_names(path, key, matlab=False)
        if suffix == ".mat":
            import h5py
            import scipy.io

            if h5py.is_hdf5(path):
                return _h5_names(path, key, matlab=True)
            variables = [v[0] for v in scipy.io.whosmat(path)]
            name = _pick(path, variables, key, "variable")
            single = len([v for v in variables if not _is_names_key(v, variables)]) == 1
            for other in (f"{name}_names", *(["names"] if single else [])):
                if other in variables:
                    mat = scipy.io.loadmat(path, variable_names=[name, other])
                    return _check_names(path, _decode_names(mat[other]),
                                        _n_columns(np.shape(mat[name])), f"variable {other!r}")
            return None
    except InputError:
        raise
    except _READ_ERRORS as e:
        raise InputError(path, f"cannot read its target names ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})", "re-export the file") from None
    return None


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Names of an atlas's label values from a lookup table.

    A TSV / CSV with columns ``index`` and ``name`` (nilearn's lookup-table format;
    ``value`` / ``label`` also accepted), or a text file of one name per line, line ``i``
    (from 0) naming value ``i`` (value 0, the background, is dropped).

    Raises
    ------
    InputError
        Missing file, non-integer indices, repeated indices.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "label table not found", "check evaluate.roi_labels")
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, header=None)
    except Exception as e:
        raise InputError(path, f"cannot be read as a table ({' '.join(str(e).split())})",
                         "save columns index and name, one row per label") from None
    head = [str(c).strip().lower() for c in df.iloc[0]] if len(df) else []
    idx = next((head.index(c) for c in ("index", "value") if c in head), None)
    name = next((head.index(c) for c in ("name", "label") if c in head), None)
    if idx is None or name is None:
        if df.shape[1] != 1:
            raise InputError(path, "has no columns 'index' and 'name'",
                             "add the header row index<TAB>name, or give one name per line")
        return {i: n.strip() for i, n in enumerate(df.iloc[:, 0]) if i != 0}
    out: dict[int, str] = {}
    for row, (i, n) in enumerate(zip(df.iloc[1:, idx], df.iloc[1:, name], strict=True), start=2):
        try:
            value = int(float(i))
        except ValueError:
            raise InputError(path, f"row {row}: index {i!r} is not an integer",
                             "give every label an integer index") from None
        if value in out:
            raise InputError(path, f"row {row}: index {value} is listed twice",
                             "give every label value one row")
        if value != 0:
            out[value] = n.strip()
    return out
