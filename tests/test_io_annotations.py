"""Tests for cinebrain.io.annotations: TSV/CSV/XLSX tables, seconds, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cinebrain.errors import InputError
from cinebrain.io.annotations import read_annotations, read_transcript


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start": [4.0, 0.0, 10.0],
            "end": [10.0, 4.0, 12.5],
            "dur": [6.0, 4.0, 2.5],
            "description": ["a dog runs", "a car", "people talk"],
            "location": ["park", "street", "park"],
            "n_characters": [1, 0, 3],
        }
    )


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".xlsx":
        df.to_excel(path, index=False, sheet_name="events")
    else:
        df.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def _fails(path: Path, match: str, **kwargs) -> str:
    kwargs.setdefault("onset", "start")
    kwargs.setdefault("order", "any")  # the fixture's rows are not in time order
    if "duration" not in kwargs:
        kwargs.setdefault("offset", "end")
    with pytest.raises(InputError, match=match) as e:
        read_annotations(path, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".xlsx"])
def test_read_all_formats(tmp_path, table, ext):
    path = _write(table, tmp_path / f"ann{ext}")
    df = read_annotations(
        path, onset="start", offset="end", columns=["description", "location", "n_characters"],
        order="any",
    )
    assert list(df.columns) == ["onset", "offset", "description", "location", "n_characters"]
    np.testing.assert_allclose(df["onset"], [0.0, 4.0, 10.0])  # sorted by onset
    np.testing.assert_allclose(df["offset"], [4.0, 10.0, 12.5])
    assert list(df["description"]) == ["a car", "a dog runs", "people talk"]
    assert df["onset"].dtype == np.float64


def test_duration_column(tmp_path, table):
    path = _write(table, tmp_path / "ann.tsv")
    df = read_annotations(path, onset="start", duration="dur", order="any")
    np.testing.assert_allclose(df["offset"], [4.0, 10.0, 12.5])
    assert list(df.columns) == ["onset", "offset"]


def test_unit_tr(tmp_path, table):
    path = _write(table, tmp_path / "ann.csv")
    df = read_annotations(path, onset="start", offset="end", unit="tr", tr=1.5, order="any")
    np.testing.assert_allclose(df["onset"], [0.0, 6.0, 15.0])
    np.testing.assert_allclose(df["offset"], [6.0, 15.0, 18.75])


def test_unit_tr_needs_tr(tmp_path, table):
    path = _write(table, tmp_path / "ann.tsv")
    _fails(path, "repetition time", unit="tr")
    _fails(path, "repetition time", unit="tr", tr=-1.0)
    _fails(path, "unknown time unit", unit="ms")


def test_exactly_one_of_offset_duration(tmp_path, table):
    path = _write(table, tmp_path / "ann.tsv")
    _fails(path, "exactly one", offset="end", duration="dur")
    with pytest.raises(InputError, match="exactly one"):
        read_annotations(path, onset="start")


def test_sheet(tmp_path, table):
    path = tmp_path / "ann.xlsx"
    with pd.ExcelWriter(path) as w:
        pd.DataFrame({"x": [1]}).to_excel(w, index=False, sheet_name="notes")
        table.to_excel(w, index=False, sheet_name="events")
    df = read_annotations(path, onset="start", offset="end", sheet="events", order="any")
    assert len(df) == 3
    msg = _fails(path, "no sheet 'evnts'", sheet="evnts")
    assert "notes, events" in msg


def test_empty_sheet(tmp_path):
    path = tmp_path / "ann.xlsx"
    pd.DataFrame({"start": [], "end": []}).to_excel(path, index=False)
    _fails(path, "has no rows")


def test_empty_tsv(tmp_path):
    path = tmp_path / "ann.tsv"
    path.write_text("")
    _fails(path, "has no rows")


def test_missing_column(tmp_path, table):
    path = _write(table, tmp_path / "ann.tsv")
    msg = _fails(path, "no column 'onset'", onset="onset")
    assert "start, end, dur" in msg and "stimulus.annotations.onset" in msg
    msg = _fails(path, "no column 'scene'", columns=["scene"])
    assert "stimulus.annotations" in msg


def test_non_numeric_onset(tmp_path, table):
    table["start"] = table["start"].astype(object)
    table.loc[1, "start"] = "soon"
    path = _write(table, tmp_path / "ann.tsv")
    msg = _fails(path, "non-numeric")
    assert "sheet row 3" in msg and "'soon'" in msg


def test_empty_onset_cell(tmp_path, table):
    table["start"] = table["start"].astype(object)
    table.loc[0, "start"] = None
    path = _write(table, tmp_path / "ann.csv")
    _fails(path, "non-numeric or empty")


def test_offset_before_onset(tmp_path, table):
    table.loc[2, "end"] = 9.0
    path = _write(table, tmp_path / "ann.tsv")
    msg = _fails(path, "end before they start")
    assert "sheet row 4" in msg  # the header is row 1


def test_negative_times(tmp_path, table):
    table.loc[1, "start"] = -1.0
    path = _write(table, tmp_path / "ann.tsv")
    _fails(path, "negative")
    table.loc[1, "start"] = 0.0
    table.loc[1, "dur"] = -2.0
    path = _write(table, tmp_path / "ann2.tsv")
    _fails(path, "negative duration", duration="dur")


def test_unknown_extension_and_missing_file(tmp_path, table):
    path = tmp_path / "ann.json"
    path.write_text("{}")
    _fails(path, "unknown table extension")
    _fails(tmp_path / "nope.tsv", "not found")


def test_transcript(tmp_path):
    df = pd.DataFrame(
        {"word": ["world", "hello", None], "onset": [0.5, 0.0, 1.0], "offset": [0.9, 0.4, 1.2]}
    )
    path = _write(df, tmp_path / "transcript.tsv")
    out = read_transcript(path)
    assert list(out.columns) == ["word", "onset", "offset"]
    assert list(out["word"]) == ["hello", "world", ""]
    np.testing.assert_allclose(out["onset"], [0.0, 0.5, 1.0])


def test_transcript_errors(tmp_path):
    df = pd.DataFrame({"token": ["a"], "onset": [0.0], "offset": [0.2]})
    path = _write(df, tmp_path / "t.tsv")
    with pytest.raises(InputError, match="no column 'word'") as e:
        read_transcript(path)
    assert str(path) in str(e.value) and "token" in str(e.value)
    df = pd.DataFrame({"word": ["a", "b"], "onset": [0.0, 0.5], "offset": [0.2, 0.1]})
    path = _write(df, tmp_path / "t2.tsv")
    with pytest.raises(InputError, match="end before they start"):
        read_transcript(path)
