"""Text features: sentence embeddings of annotation text and of a word transcript.

Embeddings come from the offline sentence-transformers model in
:mod:`cinebrain.features.text_model` (384 dimensions, unit norm, zero for empty text).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.features.text_model import embed_texts

# Words whose offset equals their onset still take this long (s), so they are counted.
MIN_WORD_DURATION_S = 0.01


def _intervals(df: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and durations (s) from a table with ``onset`` and ``offset`` columns."""
    missing = [c for c in ("onset", "offset") if c not in df.columns]
    if missing:
        raise InputError(where, f"has no column(s) {missing}", "read it with cinebrain.io.annotations")
    onsets = pd.to_numeric(df["onset"], errors="coerce").to_numpy(np.float64)
    offsets = pd.to_numeric(df["offset"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(onsets) | ~np.isfinite(offsets) | (offsets < onsets)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            where, f"row {i} has onset {onsets[i]} and offset {offsets[i]} (missing, or ending before it starts)",
            "give every row a numeric onset <= offset in seconds",
        )
    return onsets, offsets - onsets


def text_embeddings(df: pd.DataFrame, column: str, name: str | None = None) -> FeatureSpace:
    """Sentence embedding of a text column, one sample per row.

    Parameters
    ----------
    df : DataFrame with ``onset``, ``offset`` (seconds) and ``column``
        As returned by :func:`cinebrain.io.annotations.read_annotations`.
    column : str
        Text column to embed (missing or empty text embeds to zeros).
    name : str, optional
        Name of the space (default: ``column``).

    Returns
    -------
    FeatureSpace, values (n_rows, 384) float32, ``method="mean"``
        On a TR grid, a TR's value is the overlap-weighted average of the embeddings of the
        rows shown during it (zero where there is no text): an embedding is a direction in
        meaning space, so two half-TR sentences average rather than add.
    """
    if column not in df.columns:
        raise InputError("annotations", f"has no column {column!r}", f"available: {', '.join(map(str, df.columns))}")
    onsets, durations = _intervals(df, f"annotations column {column!r}")
    texts = ["" if pd.isna(t) else str(t) for t in df[column].tolist()]
    values = embed_texts(texts)
    return FeatureSpace(
        name or column, values, onsets, durations,
        feature_names=[f"{column}_emb{i}" for i in range(values.shape[1])],
        method="mean", meta={"column": column},
    )


def transcript_features(df: pd.DataFrame) -> dict[str, FeatureSpace]:
    """Word-level features from a transcript.

    Parameters
    ----------
    df : DataFrame with ``word``, ``onset``, ``offset`` (seconds)
        As returned by :func:`cinebrain.io.annotations.read_transcript`.

    Returns
    -------
    dict with
    ``"words"`` : FeatureSpace (n_words, 384), ``method="mean"``
        Embedding of each word over its span; a TR gets the overlap-weighted average of
        the words spoken in it (zero in silence).
    ``"word_rate"`` : FeatureSpace (n_words, 1), ``method="overlap"``
        Each word is an event of value ``1 / duration`` over its span, so a TR's value is
        the number of words spoken in it (fractions at the edges) divided by the TR: words
        per second. Words with zero duration last ``MIN_WORD_DURATION_S``.
    """
    if "word" not in df.columns:
        raise InputError("transcript", "has no column 'word'", "give columns word, onset, offset (seconds)")
    onsets, durations = _intervals(df, "transcript")
    durations = np.maximum(durations, MIN_WORD_DURATION_S)
    words = ["" if pd.isna(w) else str(w) for w in df["word"].tolist()]
    emb = embed_texts(words)
    return {
        "words": FeatureSpace("words", emb, onsets, durations,
                              feature_names=[f"word_emb{i}" for i in range(emb.shape[1])], method="mean"),
        "word_rate": FeatureSpace("word_rate", 1.0 / durations, onsets, durations,
                                  feature_names=["words_per_s"], method="overlap"),
    }
