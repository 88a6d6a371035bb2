"""Annotation sheets as published (spaces, parts, TR columns, blank rows, multi-valued
cells, blanks in numbers, odd column names) and per-run event files with rest at the end.

Every test writes real CSV / TSV / XLSX files (XLSX through openpyxl) and reads them the
way a study does.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from cinebrain.data.coverage import stimulus_end
from cinebrain.data.design import align_features
from cinebrain.data.study import run_timings
from cinebrain.errors import InputError
from cinebrain.features.annotations import annotation_features
from cinebrain.features.base import FeatureSpace
from cinebrain.features.stimulus import (
    extract_stimulus_features,
    load_feature_spaces,
    save_feature_spaces,
)
from cinebrain.io.annotations import read_annotations
from cinebrain.io.study import load_study

TR = 1.5
NO_MEDIA = {"video": (), "audio": (), "transcript": (), "annotation_text": False}


def _xlsx(path: Path, rows: list[list]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _one_line(e: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# --------------------------------------------------------------------------- 1. spaces
def test_header_with_trailing_spaces_named_as_written_or_stripped(tmp_path):
    path = _xlsx(tmp_path / "sheet.xlsx", [
        ["Start Time (s) ", " End Time (s)", "Location "],
        [0, 4, "Baker Street"],
        [4, 9, "Baker Street "],
    ])
    as_written = read_annotations(path, onset="Start Time (s) ", offset=" End Time (s)",
                                  columns=["Location "])
    stripped = read_annotations(path, onset="Start Time (s)", offset="End Time (s)",
                                columns=["Location"])
    assert list(as_written.columns) == ["onset", "offset", "Location"]
    np.testing.assert_array_equal(as_written["offset"], stripped["offset"])
    np.testing.assert_array_equal(as_written["offset"], [4.0, 9.0])


def test_missing_name_says_it_differs_only_by_spaces_or_case(tmp_path):
    path = _csv(tmp_path / "sheet.csv", "Start Time (s) ,End,x\n0,1,a\n")
    with pytest.raises(InputError, match=re.escape("differs from 'start time(s)' only in spaces or case")) as e:
        read_annotations(path, onset="start time(s)", offset="End")
    assert "'Start Time (s)'" in _one_line(e, path)


def test_categorical_cells_stripped(tmp_path):
    path = _csv(tmp_path / "sheet.csv", "onset,offset,place\n0,1,Baker Street\n1,2,Baker Street \n2,3, Pub\n")
    df = read_annotations(path, onset="onset", offset="offset", columns=["place"])
    fs = annotation_features(df, categorical=["place"])["place"]
    assert fs.feature_names == ["place=Baker Street", "place=Pub"]
    np.testing.assert_array_equal(fs.values, [[1, 0], [1, 0], [0, 1]])


def test_study_file_names_with_spaces(tmp_path):
    _xlsx(tmp_path / "sheet.xlsx", [
        ["Start Time (s) ", "End Time (s) ", "Location "],
        [0, 30, "Baker Street "], [30, 60, "Baker Street"],
    ])
    np.save(tmp_path / "resp.npy", np.zeros((40, 2), np.float32))
    (tmp_path / "study.yaml").write_text(
        "name: s\ntr: 1.5\nstimulus:\n  annotations: {path: sheet.xlsx, onset: 'Start Time (s) ',"
        " offset: 'End Time (s) ', categorical: ['Location ']}\n"
        "subjects:\n  a:\n    runs:\n      - {name: r1, responses: resp.npy, segment: [0, 60]}\n")
    spaces = extract_stimulus_features(load_study(tmp_path / "study.yaml"), **NO_MEDIA)
    assert spaces["annotations.Location"].feature_names == ["Location=Baker Street"]


# --------------------------------------------------------------------------- 2. parts
PARTS = "part,start,end,scene\n1,0,10,a\n1,10,20,b\n2,0,5,c\n2,5,15,d\n"


def test_times_restarting_per_part(tmp_path):
    path = _csv(tmp_path / "sheet.csv", PARTS)
    df = read_annotations(path, onset="start", offset="end", columns=["scene"], part="part",
                          part_start={"1": 0.0, "2": 1419.0})
    np.testing.assert_allclose(df["onset"], [0, 10, 1419, 1424])
    np.testing.assert_allclose(df["offset"], [10, 20, 1424, 1434])
    assert list(df["scene"]) == ["a", "b", "c", "d"]


def test_onsets_going_back_without_a_part_name_the_sheet_row(tmp_path):
    path = _csv(tmp_path / "sheet.csv", PARTS)
    with pytest.raises(InputError, match="onsets go backwards at sheet row 4") as e:
        read_annotations(path, onset="start", offset="end")
    msg = _one_line(e, path)
    assert "stimulus.annotations.part" in msg and "part_start" in msg and "order: any" in msg
    # Declared unordered: sorted, no error.
    df = read_annotations(path, onset="start", offset="end", order="any")
    np.testing.assert_allclose(df["onset"], [0, 0, 5, 10])


def test_part_missing_from_part_start(tmp_path):
    path = _csv(tmp_path / "sheet.csv", PARTS)
    with pytest.raises(InputError, match=r"part '2' \(sheet row 4\) is not in") as e:
        read_annotations(path, onset="start", offset="end", part="part", part_start={1: 0.0})
    _one_line(e, path)


# --------------------------------------------------------------------------- 3. TR units
def test_tr_columns_one_based_inclusive_with_single_tr_rows(tmp_path):
    path = _xlsx(tmp_path / "sheet.xlsx", [["Start TR", "End TR"], [1, 3], [4, 4], [5, 9]])
    df = read_annotations(path, onset="Start TR", offset="End TR", unit="tr", tr=TR,
                          tr_base=1, inclusive=True)
    np.testing.assert_allclose(df["onset"], [0.0, 3 * TR, 4 * TR])
    np.testing.assert_allclose(df["offset"], [3 * TR, 4 * TR, 9 * TR])  # row 2: one TR
    # The defaults (base 0, end exclusive) read the same sheet one TR late, ends exclusive.
    late = read_annotations(path, onset="Start TR", offset="End TR", unit="tr", tr=TR)
    np.testing.assert_allclose(late["onset"], [TR, 4 * TR, 5 * TR])
    np.testing.assert_allclose(late["offset"], [3 * TR, 4 * TR, 9 * TR])


def test_tr_options_refused_with_seconds(tmp_path):
    path = _csv(tmp_path / "sheet.csv", "a,b\n0,1\n")
    with pytest.raises(InputError, match="only apply to times in TRs") as e:
        read_annotations(path, onset="a", offset="b", tr_base=1)
    _one_line(e, path)
    with pytest.raises(InputError, match="negative time.*tr_base: 1 the first TR is 1"):
        _csv(tmp_path / "zero.csv", "a,b\n0,1\n")
        read_annotations(tmp_path / "zero.csv", onset="a", offset="b", unit="tr", tr=TR, tr_base=1)


# --------------------------------------------------------------------------- 4. blank rows
def test_empty_rows_skipped_with_a_count(tmp_path):
    path = _xlsx(tmp_path / "sheet.xlsx", [
        ["Start TR", "End TR", "note"],
        [1, 2, "a"], [None, None, None], [3, 4, "b"], [None, None, "interval"], ["  ", None, None],
        [5, 6, "c"],
    ])
    with pytest.warns(UserWarning, match="skipped 3 empty row"):
        df = read_annotations(path, onset="Start TR", offset="End TR", unit="tr", tr=TR,
                              tr_base=1, inclusive=True, columns=["note"])
    assert list(df["note"]) == ["a", "b", "c"] and df.attrs["skipped_rows"] == 3
    # Half a time is not a blank row: still an error, naming the sheet row.
    _xlsx(path, [["s", "e"], [1, 2], [3, None]])
    with pytest.raises(InputError, match="sheet row 3"):
        read_annotations(path, onset="s", offset="e")
    # A blank line of a CSV counts as a row, as a spreadsheet shows it.
    csv = _csv(tmp_path / "sheet.csv", "s,e\n1,2\n\n,\n3,x\n")
    with pytest.raises(InputError, match="sheet row 5: 'x'"):
        read_annotations(csv, onset="s", offset="e", warn=False)


# --------------------------------------------------------------------------- 5. multi-valued
def test_multi_valued_cells_split_into_indicators(tmp_path):
    path = _csv(tmp_path / "sheet.csv",
                'onset,offset,speaking\n0,1,"Sherlock, John"\n1,2,John \n2,3,\n3,4,"John,Mrs Hudson"\n')
    df = read_annotations(path, onset="onset", offset="offset", columns=["speaking"])
    fs = annotation_features(df, categorical=["speaking"], separator=",")["speaking"]
    assert fs.feature_names == ["speaking=John", "speaking=Mrs Hudson", "speaking=Sherlock"]
    np.testing.assert_array_equal(fs.values, [[1, 0, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    single = annotation_features(df, categorical=["speaking"])["speaking"]
    assert "speaking=Sherlock, John" in single.feature_names  # without a separator: one value


# --------------------------------------------------------------------------- 6. numeric blanks
def test_numeric_blank_policy(tmp_path):
    path = _csv(tmp_path / "sheet.csv", "onset,offset,arousal\n0,1,2\n1,2,\n2,3,5\n")
    with pytest.raises(InputError, match="blank cell.*sheet row 3") as e:
        read_annotations(path, onset="onset", offset="offset", numeric=["arousal"])
    assert "numeric_blank" in _one_line(e, path)
    zero = read_annotations(path, onset="onset", offset="offset", numeric=["arousal"],
                            numeric_blank="zero")
    prev = read_annotations(path, onset="onset", offset="offset", numeric=["arousal"],
                            numeric_blank="previous")
    np.testing.assert_array_equal(zero["arousal"], [2, 0, 5])
    np.testing.assert_array_equal(prev["arousal"], [2, 2, 5])
    fs = annotation_features(prev, numeric=["arousal"])["arousal"]
    np.testing.assert_array_equal(fs.values[:, 0], [2, 2, 5])


# --------------------------------------------------------------------------- 7. file names
def test_any_column_name_is_a_safe_unique_file_name(tmp_path):
    names = ["annotations.Indoor/Outdoor", "annotations.Indoor_Outdoor", "annotations.a:b c",
             "annotations.../x"]
    spaces = {n: FeatureSpace(n, np.full((2, 1), i), [0.0, 1.0], 1.0) for i, n in enumerate(names)}
    folder = tmp_path / "features"
    save_feature_spaces(spaces, folder)
    files = sorted(p.name for p in folder.iterdir())
    assert all(p.is_file() for p in folder.iterdir())  # nothing nested
    assert len(files) == len(names) + 1  # + index.json: no two spaces share a file
    loaded = load_feature_spaces(folder)
    assert list(loaded) == names
    for i, n in enumerate(names):
        assert float(loaded[n].values[0, 0]) == i


# --------------------------------------------------------------------------- 8. per-run events
EVENTS = {
    "run-1": "onset\tduration\ttrial_type\n0\t15\tfaces\n30\t15\thouses\n",
    "run-2": "trial_type\tonset\tduration\nchairs\t15\t15\nfaces\t0\t7.5\n",  # unsorted, own clock
}
N_TRS = 40  # 60 s per run; both runs end in rest


def _events_study(folder: Path, extra: str = "", run_extra: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    runs = ""
    for name, table in EVENTS.items():
        (folder / f"{name}_events.tsv").write_text(table)
        np.save(folder / f"{name}.npy", np.random.default_rng(0).standard_normal((N_TRS, 2)).astype(np.float32))
        runs += f"      - {{name: {name}, responses: {name}.npy, events: {name}_events.tsv{run_extra}}}\n"
    (folder / "study.yaml").write_text(
        f"name: blocks\ntr: {TR}\nstimulus:\n  annotations: {{onset: onset, duration: duration, "
        f"categorical: [trial_type]{extra}}}\nsubjects:\n  sub-01:\n    runs:\n{runs}")
    return folder / "study.yaml"


def test_per_run_events_give_each_run_its_own_events(tmp_path):
    study = load_study(_events_study(tmp_path / "s"))
    spaces = extract_stimulus_features(study, **NO_MEDIA)
    fs = spaces["annotations.trial_type"]
    assert fs.feature_names == ["trial_type=chairs", "trial_type=faces", "trial_type=houses"]
    timings = run_timings(study, "sub-01", spaces)
    assert [t.segment for t in timings] == [(0.0, N_TRS * TR)] * 2  # the whole run, own clock
    aligned, run_index = align_features(spaces, timings, TR, hrf_model=None)
    X = aligned["annotations.trial_type"]
    r1, r2 = X[run_index == 0], X[run_index == 1]
    # run-1: faces TRs 0-9, houses TRs 20-29, rest after; run-2: faces 0-4, chairs 10-19.
    want1 = np.zeros((N_TRS, 3))
    want1[0:10, 1] = 1
    want1[20:30, 2] = 1
    want2 = np.zeros((N_TRS, 3))
    want2[0:5, 1] = 1
    want2[10:20, 0] = 1
    np.testing.assert_allclose(r1, want1, atol=1e-6)
    np.testing.assert_allclose(r2, want2, atol=1e-6)


def test_per_run_events_through_saved_features_and_cache(tmp_path):
    path = _events_study(tmp_path / "s")
    cache = tmp_path / "cache"
    first = extract_stimulus_features(load_study(path), cache_dir=cache, **NO_MEDIA)
    save_feature_spaces(first, tmp_path / "f")
    loaded = load_feature_spaces(tmp_path / "f")
    study = load_study(path)
    a, _ = align_features(loaded, run_timings(study, "sub-01", loaded), TR, hrf_model=None)
    b, _ = align_features(first, run_timings(study, "sub-01", first), TR, hrf_model=None)
    np.testing.assert_array_equal(a["annotations.trial_type"], b["annotations.trial_type"])
    # A changed events file is a new cache key.
    (tmp_path / "s" / "run-2_events.tsv").write_text("onset\tduration\ttrial_type\n0\t3\tcats\n")
    again = extract_stimulus_features(load_study(path), cache_dir=cache, **NO_MEDIA)
    assert "trial_type=cats" in again["annotations.trial_type"].feature_names


def test_every_reading_option_is_in_the_cache_key(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "sheet.csv").write_text('s,e,who\n1,2,"A, B"\n3,3,A\n')
    np.save(folder / "r.npy", np.zeros((10, 1), np.float32))
    cache = tmp_path / "cache"

    def extract(ann: str) -> FeatureSpace:
        (folder / "study.yaml").write_text(
            f"name: s\ntr: 1.5\nstimulus:\n  annotations: {{path: sheet.csv, onset: s, offset: e, "
            f"unit: tr, categorical: [who]{ann}}}\nsubjects:\n  a:\n    runs:\n"
            "      - {name: r, responses: r.npy, segment: [0, 15]}\n")
        return extract_stimulus_features(load_study(folder / "study.yaml"), cache_dir=cache,
                                         **NO_MEDIA)["annotations.who"]

    base = extract("")
    split = extract(", separator: ','")
    assert base.feature_names != split.feature_names
    one = extract(", tr_base: 1")
    np.testing.assert_allclose(one.onsets, base.onsets - 1.5)
    incl = extract(", tr_base: 1, inclusive: true")
    np.testing.assert_allclose(incl.durations, one.durations + 1.5)


def test_rest_at_the_end_of_an_annotation_only_study(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    # Regular rows with a numeric column would look like a 40 s stream: annotations alone
    # are events, so the run may go on in rest.
    (folder / "sheet.csv").write_text(
        "onset,offset,place,loud\n0,10,park,1\n10,20,park,2\n20,30,street,3\n30,40,street,1\n")
    np.save(folder / "r.npy", np.random.default_rng(0).standard_normal((60, 1)).astype(np.float32))  # 90 s scanned, 40 s annotated
    (folder / "study.yaml").write_text(
        "name: s\ntr: 1.5\nstimulus:\n  annotations: {path: sheet.csv, onset: onset, offset: offset,"
        " categorical: [place], numeric: [loud]}\nsubjects:\n  a:\n    runs:\n"
        "      - {name: r, responses: r.npy, segment: [0, 90]}\n")
    study = load_study(folder / "study.yaml")
    spaces = extract_stimulus_features(study, **NO_MEDIA)
    assert stimulus_end(spaces) == np.inf
    timings = run_timings(study, "a", spaces)
    assert timings[0].segment == (0.0, 90.0) and timings[0].n_trs == 60
    X = align_features(spaces, timings, 1.5, hrf_model=None)[0]["annotations.place"]
    assert X[:26].sum(axis=1).min() > 0.99 and not X[27:].any()  # rest: zeros


def test_a_movie_shorter_than_its_segment_is_still_an_error(tmp_path):
    folder = tmp_path / "s"
    _events_study(folder)
    (folder / "movie.mp4").write_bytes(b"")
    frames = FeatureSpace("video.pixels", np.ones((40, 1)), np.arange(40) * 1.0, 1.0,
                          meta={"band": "visual"})  # a 40 s stream
    study = load_study(folder / "study.yaml")
    study.stimulus.video = "movie.mp4"  # segments are required with a movie...
    for run in study.subjects["sub-01"].runs:
        run.segment = (0.0, 60.0)
    assert stimulus_end({"video.pixels": frames}) == 40.0
    with pytest.raises(InputError, match="the stimulus is only 40.00 s long"):
        run_timings(study, "sub-01", {"video.pixels": frames})


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda y: y.replace("{onset: onset,", "{path: sheet.csv, onset: onset,"),
         r"both an annotation sheet \(stimulus.annotations.path\) and per-run events "
         r"\(subjects.sub-01.runs\[0\].events\)"),
        (lambda y: y.replace(", events: run-2_events.tsv", ", segment: [0, 60]"),
         r"subjects.sub-01.runs\[0\] has events but subjects.sub-01.runs\[1\] has none"),
        (lambda y: y.replace("  annotations: {onset: onset, duration: duration, categorical: "
                             "[trial_type]}\n", "  {}\n").replace("stimulus:\n  {}", "stimulus: {}"),
         "has events but stimulus.annotations is missing"),
        (lambda y: y.replace(", events: run-1_events.tsv", ", segment: [0, 60]")
         .replace(", events: run-2_events.tsv", ", segment: [0, 60]"),
         "stimulus.annotations has no path and no run has events"),
        (lambda y: y.replace("events: run-1_events.tsv", "events: run-1_events.tsv, offset: 3"),
         "own scan clock already"),
    ],
)
def test_sheet_or_per_run_events_validated(tmp_path, edit, match):
    path = _events_study(tmp_path / "s")
    (tmp_path / "s" / "sheet.csv").write_text("onset,duration\n0,1\n")
    path.write_text(edit(path.read_text()))
    with pytest.raises(InputError, match=match) as e:
        load_study(path)
    _one_line(e, path)


def test_per_run_events_file_errors_name_the_file(tmp_path):
    path = _events_study(tmp_path / "s")
    bad = tmp_path / "s" / "run-2_events.tsv"
    bad.write_text("onset\tdur\ttrial_type\n0\t1\tfaces\n")
    with pytest.raises(InputError, match="no column 'duration'") as e:
        extract_stimulus_features(load_study(path), **NO_MEDIA)
    _one_line(e, bad)


def test_skipped_rows_reported_in_the_log(tmp_path):
    path = _events_study(tmp_path / "s")
    (tmp_path / "s" / "run-1_events.tsv").write_text(
        "onset\tduration\ttrial_type\n0\t15\tfaces\n\t\t\n30\t15\thouses\n")
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with a log, nothing is warned
        extract_stimulus_features(load_study(path), log=lines.append, **NO_MEDIA)
    assert any("1 empty row(s) skipped" in line for line in lines)


def test_events_paths_checked_and_rebased(tmp_path):
    from cinebrain.io.study import write_study

    path = _events_study(tmp_path / "s")
    study = load_study(path)
    (tmp_path / "elsewhere").mkdir()
    out = write_study(study, tmp_path / "elsewhere" / "study.yaml")
    again = load_study(out)  # every events path found from the new folder
    assert again.subjects["sub-01"].runs[1].events == "../s/run-2_events.tsv"
    assert again.stimulus.annotations.path is None
    (tmp_path / "s" / "run-2_events.tsv").unlink()
    with pytest.raises(InputError, match=r"subjects.sub-01.runs\[1\].events: file not found") as e:
        load_study(path)
    _one_line(e, path)


def test_runs_with_different_events_are_not_repeats(tmp_path):
    from cinebrain.data.study import repeated_runs

    path = _events_study(tmp_path / "s")
    study = load_study(path)
    spaces = extract_stimulus_features(study, **NO_MEDIA)
    assert repeated_runs(run_timings(study, "sub-01", spaces)) == []  # same clock, other events
    (tmp_path / "s" / "run-2_events.tsv").write_text(EVENTS["run-1"])
    assert repeated_runs(run_timings(study, "sub-01", spaces)) == [0, 1]  # the same events
