"""cinebrain.features: text embeddings, transcripts, annotation columns, the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cinebrain.errors import InputError
from cinebrain.features.annotations import annotation_features
from cinebrain.features.base import FeatureSpace
from cinebrain.features.cache import cached, cached_many
from cinebrain.features.text import text_embeddings, transcript_features
from cinebrain.timing import resample

ANN = pd.DataFrame(
    {
        "onset": [0.0, 3.0, 4.0],
        "offset": [3.0, 4.0, 8.0],
        "description": ["a man walks", "", "two women talk"],
        "location": ["street", None, "kitchen"],
        "n_characters": [1, 0, 2],
    }
)


def test_text_embeddings_average_within_a_tr(fake_embed):
    fs = text_embeddings(ANN, "description")
    assert fs.name == "description" and fs.method == "mean" and fs.n_samples == 3
    np.testing.assert_allclose(fs.durations, [3, 1, 4])
    Y = resample(fs, 2.0, 5)
    a, c = fake_embed(["a man walks"])[0], fake_embed(["two women talk"])[0]
    np.testing.assert_allclose(Y[0], a)
    np.testing.assert_allclose(Y[1], (a + 0 * c) / 2)  # [2, 4): 1 s of "a man walks", 1 s of empty text
    np.testing.assert_allclose(Y[2], c)
    np.testing.assert_allclose(Y[4], 0)  # no annotation after 8 s


def test_annotation_columns(fake_embed):
    res = annotation_features(ANN, categorical=["location"], numeric=["n_characters"], text=["description"])
    loc = res["location"]
    assert loc.feature_names == ["location=kitchen", "location=street"] and loc.method == "overlap"
    np.testing.assert_array_equal(loc.values, [[0, 1], [0, 0], [1, 0]])
    # TR [2, 4): street for 1 s of 2 -> 0.5; nothing labelled in [3, 4).
    np.testing.assert_allclose(resample(loc, 2.0, 4)[1], [0.0, 0.5])
    num = res["n_characters"]
    assert num.method == "mean"
    np.testing.assert_allclose(resample(num, 2.0, 4)[:, 0], [1.0, 0.5, 2.0, 2.0])
    assert res["description"].n_features == 8


def test_annotation_errors():
    with pytest.raises(InputError, match="no column"):
        annotation_features(ANN, categorical=["mood"])
    with pytest.raises(InputError, match="more than one kind"):
        annotation_features(ANN, categorical=["location"], numeric=["location"])
    bad = ANN.assign(n_characters=[1, None, 2])
    with pytest.raises(InputError, match="row 1"):
        annotation_features(bad, numeric=["n_characters"])
    with pytest.raises(InputError, match="ending before"):
        annotation_features(ANN.assign(offset=[3.0, 2.0, 8.0]), numeric=["n_characters"])


def test_transcript_word_rate_is_words_per_second(fake_embed):
    words = pd.DataFrame({"word": ["hello", "there", "my", "friend"], "onset": [0.1, 0.5, 1.0, 2.2],
                          "offset": [0.4, 0.9, 1.0, 2.6]})
    res = transcript_features(words)
    assert set(res) == {"words", "word_rate"}
    assert res["word_rate"].method == "overlap" and res["words"].method == "mean"
    rate = resample(res["word_rate"], 2.0, 2)[:, 0]
    np.testing.assert_allclose(rate, [3 / 2.0, 1 / 2.0], rtol=1e-6)  # 3 words in TR0, 1 in TR1 (2 s TRs)


@pytest.mark.slow
def test_text_embeddings_with_the_real_model():
    texts = ["A dog runs in the park.", "A puppy is running on the grass.", "", "Interest rates rose again."]
    df = pd.DataFrame({"onset": [0.0, 2.0, 4.0, 6.0], "offset": [2.0, 4.0, 6.0, 8.0], "text": texts})
    fs = text_embeddings(df, "text")
    assert fs.values.shape == (4, 384) and fs.values.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fs.values[[0, 1, 3]], axis=1), 1.0, rtol=1e-4)
    assert np.all(fs.values[2] == 0)
    similar, unrelated = float(fs.values[0] @ fs.values[1]), float(fs.values[0] @ fs.values[3])
    assert similar > unrelated + 0.2


# ----------------------------------------------------------------------------- cache


def _space(name="s"):
    return FeatureSpace(name, np.arange(6.0).reshape(3, 2), [0.0, 1.0, 2.0], 1.0, feature_names=["a", "b"])


def test_cached_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return _space()

    src = tmp_path / "movie.bin"
    src.write_bytes(b"x")
    first = cached(tmp_path / "cache", "video", [src, 3], compute)
    second = cached(tmp_path / "cache", "video", [src, 3], compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.values, second.values)
    assert second.feature_names == ["a", "b"]
    cached(tmp_path / "cache", "video", [src, 4], compute)  # other parameters -> recompute
    assert len(calls) == 2
    src.write_bytes(b"changed")  # input file changed (size) -> recompute
    cached(tmp_path / "cache", "video", [src, 3], compute)
    assert len(calls) == 3


def test_cached_many_computes_once_and_ignores_incomplete_entries(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"pixels": _space("pixels"), "motion": _space("motion")}

    res = cached_many(tmp_path, "video", ["p"], compute)
    again = cached_many(tmp_path, "video", ["p"], compute)
    assert len(calls) == 1 and list(again) == ["pixels", "motion"]
    assert again["motion"].name == "motion"
    np.testing.assert_array_equal(again["pixels"].values, res["pixels"].values)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (folder / "01.npz").unlink()  # an interrupted write: recompute
    cached_many(tmp_path, "video", ["p"], compute)
    assert len(calls) == 2
