"""cinebrain.features.stimulus: a study's feature spaces, their cache keys, their files."""

from __future__ import annotations

import functools
import os
from collections import Counter

import numpy as np
import pytest

import cinebrain.features.stimulus as stimulus
from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.features.cache import file_digest
from cinebrain.features.stimulus import (
    extract_stimulus_features,
    load_feature_spaces,
    save_feature_spaces,
)
from cinebrain.io.study import load_study
from cinebrain.io.video import write_video

FPS, W, H, SR = 24, 32, 18, 16000
SMALL = {"video_size": (W, H), "pixel_size": (8, 6), "n_mels": 16}

ANNOTATIONS = (
    "onset\tstart2\toffset\tdur\tdescription\tplace\tcount\n"
    "0\t0.5\t1\t0.5\ta man walks\tstreet\t1\n"
    "1\t1.5\t2\t0.25\ttwo women talk\tkitchen\t2\n"
)
TRANSCRIPT = "word\tonset\toffset\nhello\t0.1\t0.4\nthere\t0.5\t0.9\nfriend\t1.2\t1.6\n"
STUDY = """\
name: small
tr: {tr}
stimulus:
  video: movie.mp4
  annotations: {{path: annotations.tsv, onset: {onset}, {end}, unit: {unit},
                 text: [description], categorical: [place], numeric: [count]}}
  transcript: transcript.tsv
subjects:
  sub-01:
    runs:
      - {{name: run-1, responses: responses.npy, segment: [0.0, 2.0]}}
"""


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """2 s of a drifting grating with a 440 Hz tone, 32 x 18 pixels."""
    x = np.arange(W)
    frames = [np.repeat((127 + 100 * np.cos(2 * np.pi * (x / 8 - 2 * i / FPS)))[None, :, None], H, 0)
              .repeat(3, 2).astype(np.uint8) for i in range(2 * FPS)]
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)
    return write_video(tmp_path_factory.mktemp("movie") / "movie.mp4", frames, FPS, (W, H), audio=tone, sr=SR)


@pytest.fixture
def study_dir(tmp_path, movie):
    folder = tmp_path / "study"
    folder.mkdir()
    os.link(movie, folder / "movie.mp4")
    (folder / "annotations.tsv").write_text(ANNOTATIONS)
    (folder / "transcript.tsv").write_text(TRANSCRIPT)
    np.save(folder / "responses.npy", np.zeros((2, 3), np.float32))
    write_study_file(folder)
    return folder


def write_study_file(folder, tr=1.5, onset="onset", end="offset: offset", unit="s"):
    (folder / "study.yaml").write_text(STUDY.format(tr=tr, onset=onset, end=end, unit=unit))
    return load_study(folder / "study.yaml")


@pytest.fixture
def calls(monkeypatch, fake_embed):
    """Count the extractors' computations (with a stand-in for the sentence model)."""
    counter: Counter = Counter()
    for name in ("extract_video", "extract_audio", "text_embeddings", "annotation_features", "transcript_features"):
        original = getattr(stimulus, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            counter[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(stimulus, name, functools.wraps(original)(counting))
    return counter


ALL = {"extract_video", "extract_audio", "text_embeddings", "annotation_features", "transcript_features"}
ANN = {"text_embeddings", "annotation_features"}


def test_names_bands_and_an_unchanged_call_hits_the_cache(study_dir, calls, tmp_path):
    study = load_study(study_dir / "study.yaml")
    cache = tmp_path / "cache"
    first = extract_stimulus_features(study, cache_dir=cache, **SMALL)
    assert set(calls) == ALL and all(v == 1 for v in calls.values())
    bands = {name: fs.meta["band"] for name, fs in first.items()}
    assert bands == {
        "video.pixels": "visual", "video.motion_energy": "visual",
        "audio.envelope": "auditory", "audio.mel": "auditory",
        "annotations.description": "text", "annotations.place": "annotations", "annotations.count": "annotations",
        "transcript.words": "text", "transcript.word_rate": "text",
    }
    assert first["video.pixels"].n_features == 8 * 6 and first["audio.mel"].n_features == 16
    calls.clear()
    again = extract_stimulus_features(load_study(study_dir / "study.yaml"), cache_dir=cache, **SMALL)
    assert not calls, "an unchanged call recomputed"
    assert list(again) == list(first)
    for name, fs in first.items():
        np.testing.assert_array_equal(again[name].values, fs.values)
        np.testing.assert_array_equal(again[name].onsets, fs.onsets)
        assert again[name].name == name and again[name].meta == fs.meta


def _annotation_onsets(spaces):
    return spaces["annotations.place"].onsets, spaces["annotations.place"].durations


@pytest.mark.parametrize(
    ("change", "recomputed"),
    [
        ({"onset": "start2"}, ANN),
        ({"end": "duration: dur"}, ANN),
        ({"unit": "tr"}, ANN),
        ({"video_size": (36, 20)}, {"extract_video"}),
        ({"pixel_size": (4, 3)}, {"extract_video"}),
        ({"video": ("pixels",)}, {"extract_video"}),
        ({"n_mels": 8}, {"extract_audio"}),
        ({"audio_sr": 8000}, {"extract_audio"}),
        ({"audio": ("mel",)}, {"extract_audio"}),
    ],
)
def test_every_key_input_recomputes_only_its_stream(study_dir, calls, tmp_path, change, recomputed):
    cache = tmp_path / "cache"
    before = extract_stimulus_features(load_study(study_dir / "study.yaml"), cache_dir=cache, **SMALL)
    calls.clear()
    reading = {k: v for k, v in change.items() if k in ("onset", "end", "unit")}
    params = {**SMALL, **{k: v for k, v in change.items() if k not in reading}}
    study = write_study_file(study_dir, **reading)
    after = extract_stimulus_features(study, cache_dir=cache, **params)
    assert set(calls) == recomputed and all(v == 1 for v in calls.values())
    if reading:  # the timings the table now says, not the cached ones
        assert not np.array_equal(np.stack(_annotation_onsets(after)), np.stack(_annotation_onsets(before)))


def test_annotation_times_follow_unit_and_tr(study_dir, calls, tmp_path):
    cache = tmp_path / "cache"
    secs = extract_stimulus_features(write_study_file(study_dir, tr=2.0), cache_dir=cache, **SMALL)
    np.testing.assert_allclose(_annotation_onsets(secs)[0], [0.0, 1.0])
    calls.clear()
    trs = extract_stimulus_features(write_study_file(study_dir, tr=2.0, unit="tr"), cache_dir=cache, **SMALL)
    assert set(calls) == ANN
    np.testing.assert_allclose(_annotation_onsets(trs)[0], [0.0, 2.0])
    calls.clear()
    trs3 = extract_stimulus_features(write_study_file(study_dir, tr=3.0, unit="tr"), cache_dir=cache, **SMALL)
    assert set(calls) == ANN, "a new TR must re-time annotations given in TRs"
    np.testing.assert_allclose(_annotation_onsets(trs3)[0], [0.0, 3.0])
    calls.clear()
    extract_stimulus_features(write_study_file(study_dir, tr=3.0), cache_dir=cache, **SMALL)
    assert not calls, "annotations in seconds do not depend on the TR"


def _replace_keeping_size_and_mtime(path, old, new):
    text = path.read_text()
    assert len(old) == len(new) and old in text
    st = path.stat()
    path.write_text(text.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize(
    ("name", "old", "new", "recomputed"),
    [
        ("annotations.tsv", "two women talk", "two women walk", ANN),
        ("annotations.tsv", "kitchen", "bedroom", ANN),
        ("transcript.tsv", "friend", "fiends", {"transcript_features"}),
    ],
)
def test_a_file_replaced_with_the_same_size_and_mtime_recomputes(study_dir, calls, tmp_path, name, old, new,
                                                                  recomputed):
    cache = tmp_path / "cache"
    extract_stimulus_features(load_study(study_dir / "study.yaml"), cache_dir=cache, **SMALL)
    calls.clear()
    _replace_keeping_size_and_mtime(study_dir / name, old, new)
    extract_stimulus_features(load_study(study_dir / "study.yaml"), cache_dir=cache, **SMALL)
    assert set(calls) == recomputed


def test_the_text_model_and_column_lists_are_in_the_keys(study_dir, calls, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    extract_stimulus_features(load_study(study_dir / "study.yaml"), cache_dir=cache, **SMALL)
    calls.clear()
    monkeypatch.setattr(stimulus, "text_model_identity", lambda: "another-model")
    extract_stimulus_features(load_study(study_dir / "study.yaml"), cache_dir=cache, **SMALL)
    assert set(calls) == {"text_embeddings", "transcript_features"}
    calls.clear()
    study = load_study(study_dir / "study.yaml")
    study.stimulus.annotations.categorical = []
    study.stimulus.annotations.numeric = ["count"]
    spaces = extract_stimulus_features(study, cache_dir=cache, **SMALL)
    assert set(calls) == {"annotation_features"} and "annotations.place" not in spaces


def test_file_digest_is_by_content_and_remembered(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("onset\t1\n")
    memo = tmp_path / "memo"
    first = file_digest(path, memo)
    assert first == file_digest(path) and len(list((memo / "digests").iterdir())) == 1
    assert file_digest(path, memo) == first
    _replace_keeping_size_and_mtime(path, "1", "2")
    assert file_digest(path, memo) != first
    copy = tmp_path / "b.tsv"
    copy.write_text("onset\t1\n")
    assert file_digest(copy, memo) == first  # the same content elsewhere: the same identity


def test_without_a_cache_dir_nothing_is_written_and_everything_computed(study_dir, calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    for _ in range(2):
        extract_stimulus_features(load_study(study_dir / "study.yaml"), **SMALL)
    assert all(v == 2 for v in calls.values())
    assert set(tmp_path.rglob("*")) == before


def test_nothing_to_extract_and_unknown_spaces_are_input_errors(study_dir, calls):
    study = load_study(study_dir / "study.yaml")
    with pytest.raises(InputError, match="no feature space could be extracted"):
        extract_stimulus_features(study, video=(), audio=(), annotation_text=False, annotation_columns=False,
                                  transcript=())
    with pytest.raises(InputError, match="unknown transcript feature space"):
        extract_stimulus_features(study, transcript=("sentences",))
    with pytest.raises(InputError, match="unknown video feature space"):
        extract_stimulus_features(study, video=("colour",))
    assert not calls


def test_save_and_load_feature_spaces(tmp_path):
    spaces = {
        "video.pixels": FeatureSpace("video.pixels", np.arange(6.0).reshape(3, 2), [0.0, 1.0, 2.0], 1.0,
                                     feature_names=["a", "b"], meta={"band": "visual", "fps": 24.0}),
        "custom.thing": FeatureSpace("custom.thing", np.ones((2, 1)), [0.0, 1.0], 1.0, method="overlap"),
    }
    folder = tmp_path / "features"
    save_feature_spaces(spaces, folder)
    loaded = load_feature_spaces(folder)
    assert list(loaded) == list(spaces)
    assert loaded["video.pixels"].meta == {"band": "visual", "fps": 24.0}
    assert loaded["custom.thing"].meta["band"] == "custom" and loaded["custom.thing"].method == "overlap"
    np.testing.assert_array_equal(loaded["video.pixels"].values, spaces["video.pixels"].values)
    assert loaded["video.pixels"].feature_names == ["a", "b"]
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_load_feature_spaces_refuses_a_folder_without_features(tmp_path):
    with pytest.raises(InputError, match="holds no extracted features") as e:
        load_feature_spaces(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(e.value)
    folder = tmp_path / "features"
    save_feature_spaces({"a.b": FeatureSpace("a.b", np.ones((2, 1)), [0.0, 1.0], 1.0)}, folder)
    (folder / "a.b.npz").unlink()
    with pytest.raises(InputError, match="missing"):
        load_feature_spaces(folder)
    (folder / "index.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        load_feature_spaces(folder)
