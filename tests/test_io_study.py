"""Tests for cinebrain.io.study: the study YAML, its validation messages, writing it back."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cinebrain.errors import InputError
from cinebrain.io.study import Run, Study, format_validation_error, load_study, write_study


def _base() -> dict:
    return {
        "name": "tiny",
        "tr": 1.5,
        "length_policy": "error",
        "stimulus": {
            "video": "stimulus/movie.mp4",
            "annotations": {
                "path": "stimulus/annotations.tsv",
                "onset": "onset",
                "duration": "duration",
                "unit": "tr",
                "text": ["description"],
            },
            "transcript": "stimulus/transcript.tsv",
        },
        "mask": "mask.nii.gz",
        "subjects": {
            "sub-01": {
                "runs": [
                    {
                        "name": "run-1",
                        "bold": "sub-01/run-1_bold.nii.gz",
                        "segment": [0, 30.0],
                        "offset": 1.5,
                    },
                    {
                        "name": "run-2",
                        "responses": "sub-01/run-2.npz",
                        "key": "roi",
                        "segment": [30, 60],
                    },
                ]
            }
        },
    }


@pytest.fixture
def study_dir(tmp_path) -> Path:
    """A study folder with every referenced file present (contents not read here)."""
    d = tmp_path / "study"
    for rel in (
        "stimulus/movie.mp4",
        "stimulus/annotations.tsv",
        "stimulus/transcript.tsv",
        "mask.nii.gz",
        "sub-01/run-1_bold.nii.gz",
        "sub-01/run-2.npz",
    ):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(b"")
    return d


def _write(d: Path, data: dict) -> Path:
    path = d / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _error(d: Path, edit) -> str:
    data = _base()
    edit(data)
    path = _write(d, data)
    with pytest.raises(InputError) as e:
        load_study(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg[len(str(path)) + 2 :]


def _run(data: dict, i: int = 0) -> dict:
    return data["subjects"]["sub-01"]["runs"][i]


def test_load_valid(study_dir):
    path = _write(study_dir, _base())
    study = load_study(path)
    assert study.root == study_dir
    assert study.tr == 1.5 and study.length_policy == "error"
    assert study.resolve(study.stimulus.video) == study_dir / "stimulus/movie.mp4"
    ann = study.stimulus.annotations
    assert ann.duration == "duration" and ann.offset is None and ann.unit == "tr"
    assert study.stimulus.audio is None
    runs = study.subjects["sub-01"].runs
    assert runs[0].segment == (0.0, 30.0) and runs[0].offset == 1.5
    assert runs[1].offset == 0.0 and runs[1].key == "roi" and runs[1].bold is None
    assert "root" not in study.model_dump()


def test_defaults_and_number_names(study_dir):
    data = _base()
    del data["length_policy"], data["mask"], data["stimulus"]
    data["subjects"] = {
        1: {"runs": [{"name": 1, "responses": "sub-01/run-2.npz", "segment": [0, 5]}]}
    }
    study = load_study(_write(study_dir, data))
    assert study.length_policy == "error" and study.mask is None
    assert study.stimulus.video is None
    assert list(study.subjects) == ["1"] and study.subjects["1"].runs[0].name == "1"


def test_unknown_key_top_level(study_dir):
    msg = _error(study_dir, lambda d: d.update(subjets=d.pop("subjects")))
    assert msg.startswith("unknown key 'subjets' at top level; allowed: name, tr, length_policy")
    assert msg.endswith("(did you mean 'subjects'?)")


def test_unknown_key_nested(study_dir):
    msg = _error(study_dir, lambda d: _run(d).update(bolt="x"))
    assert msg.startswith(
        "unknown key 'bolt' in subjects.sub-01.runs[0]; allowed: name, bold, responses, key, segment, "
        "offset"
    )  # later keys (events, ...) follow
    assert msg.endswith("(did you mean 'bold'?)")
    msg = _error(study_dir, lambda d: d["stimulus"]["annotations"].update(colour="x"))
    assert "in stimulus.annotations" in msg and "onset, offset, duration" in msg


def test_tr_must_be_positive(study_dir):
    msg = _error(study_dir, lambda d: d.update(tr=-1.5))
    assert msg == "tr must be > 0 (got -1.5); set tr to the repetition time in seconds"
    assert "tr must be a valid number" in _error(study_dir, lambda d: d.update(tr="fast"))
    assert "missing key 'tr' at top level" in _error(study_dir, lambda d: d.pop("tr"))


def test_bad_choice_lists_allowed_values(study_dir):
    msg = _error(study_dir, lambda d: d.update(length_policy="pad"))
    assert "length_policy must be one of 'error' or 'truncate' (got 'pad')" in msg
    msg = _error(study_dir, lambda d: d["stimulus"]["annotations"].update(unit="ms"))
    assert "stimulus.annotations.unit must be one of 's' or 'tr'" in msg


def test_run_needs_exactly_one_source(study_dir):
    msg = _error(study_dir, lambda d: _run(d).update(responses="sub-01/run-2.npz"))
    assert (
        "subjects.sub-01.runs[0]: a run needs exactly one of bold and responses (got both)" in msg
    )
    msg = _error(study_dir, lambda d: _run(d).pop("bold"))
    assert "(got neither)" in msg


def test_segment_and_offset(study_dir):
    msg = _error(study_dir, lambda d: _run(d).update(segment=[30, 10]))
    assert "subjects.sub-01.runs[0].segment" in msg and "0 <= start < end" in msg
    assert "0 <= start" in _error(study_dir, lambda d: _run(d).update(segment=[-1, 10]))
    assert "too few values" in _error(study_dir, lambda d: _run(d).update(segment=[5]))
    msg = _error(study_dir, lambda d: _run(d).update(offset=-2))
    assert msg.startswith("subjects.sub-01.runs[0].offset must be >= 0 (got -2)")


def test_annotations_offset_or_duration(study_dir):
    msg = _error(study_dir, lambda d: d["stimulus"]["annotations"].update(offset="offset"))
    assert "stimulus.annotations: give exactly one of offset and duration (got both)" in msg


def test_subjects_and_runs_non_empty(study_dir):
    assert "subjects must have at least 1 item" in _error(
        study_dir, lambda d: d.update(subjects={})
    )
    assert "runs must have at least 1 item" in _error(
        study_dir, lambda d: d["subjects"]["sub-01"].update(runs=[])
    )
    msg = _error(study_dir, lambda d: _run(d, 1).update(name="run-1"))
    assert "run names must be unique (repeated: run-1)" in msg


def test_referenced_files_must_exist(study_dir):
    (study_dir / "sub-01/run-1_bold.nii.gz").unlink()
    msg = _error(study_dir, lambda d: None)
    assert msg.startswith("subjects.sub-01.runs[0].bold: file not found: sub-01/run-1_bold.nii.gz")
    (study_dir / "stimulus/transcript.tsv").unlink()
    assert _error(study_dir, lambda d: None).startswith("stimulus.transcript: file not found")
    study = load_study(study_dir / "study.yaml", check_files=False)
    assert study.name == "tiny"


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntr: [1\n")
    with pytest.raises(InputError, match="not valid YAML at line") as e:
        load_study(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="must be a mapping"):
        load_study(bad)


def test_write_study_round_trip_and_rebase(study_dir, tmp_path):
    study = load_study(_write(study_dir, _base()))
    same = write_study(study, study_dir / "copy.yaml")
    again = load_study(same)
    assert again.model_dump() == study.model_dump()
    moved = write_study(study, tmp_path / "elsewhere" / "study.yaml")
    text = moved.read_text()
    assert "../study/stimulus/movie.mp4" in text
    other = load_study(moved)
    assert (
        other.resolve(other.stimulus.video).resolve()
        == (study_dir / "stimulus/movie.mp4").resolve()
    )
    assert other.subjects["sub-01"].runs[0].segment == (0.0, 30.0)
    assert not [p for p in moved.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_study_built_in_code(tmp_path):
    run = Run(name="run-1", responses="sub-01/r.npy", segment=(0.0, 10.0))
    study = Study(name="sim", tr=2.0, subjects={"sub-01": {"runs": [run]}})
    path = write_study(study, tmp_path / "study.yaml")
    assert "sub-01/r.npy" in path.read_text()
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01/r.npy").write_bytes(b"")
    assert load_study(path).resolve("sub-01/r.npy") == tmp_path / "sub-01/r.npy"


def test_format_validation_error_reusable():
    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        alpha: float = Field(1.0, gt=0, description="the ridge penalty")

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: Inner = Field(default_factory=Inner)

    with pytest.raises(ValidationError) as e:
        Outer.model_validate({"model": {"alpah": 1}})
    err = format_validation_error("config.yaml", e.value, Outer)
    assert isinstance(err, InputError)
    assert (
        str(err)
        == "config.yaml: unknown key 'alpah' in model; allowed: alpha (did you mean 'alpha'?)"
    )
    with pytest.raises(ValidationError) as e:
        Outer.model_validate({"model": {"alpha": 0}})
    assert str(format_validation_error("config.yaml", e.value, Outer)) == (
        "config.yaml: model.alpha must be > 0 (got 0); set model.alpha to the ridge penalty"
    )


def test_validation_in_code_uses_same_models():
    with pytest.raises(ValidationError):
        Run(name="r", bold="a.nii.gz", responses="b.npy", segment=(0, 1))
    data = copy.deepcopy(_base())
    data["tr"] = 0
    with pytest.raises(ValidationError) as e:
        Study.model_validate(data)
    assert "tr must be > 0" in str(format_validation_error("x", e.value))
