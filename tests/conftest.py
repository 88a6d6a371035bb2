"""Shared fixtures: a tiny simulated study written once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def fake_embed(monkeypatch):
    """A deterministic stand-in for the sentence model: one-hot of the text's length."""
    import numpy as np

    import cinebrain.features.text as text_mod

    def embed(texts):
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            if t.strip():
                out[i, len(t.strip()) % 8] = 1.0
        return out

    monkeypatch.setattr(text_mod, "embed_texts", embed)
    return embed


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A small but complete simulated study (2 subjects x 2 runs, 8 mm voxels).

    Returns the path of its ``study.yaml``. Tests must not modify it: copy it first.
    """
    from cinebrain.data.simulate import simulate_study

    out = tmp_path_factory.mktemp("tiny") / "study"
    return simulate_study(
        out, n_subjects=2, n_runs=2, run_duration=60.0, tr=1.5, fps=12, size=(160, 90),
        voxel_size=8, seed=1, progress=False,
    )
