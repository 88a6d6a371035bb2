"""Bad neuron recordings through `cinebrain neurons train`: one line naming the file, the
problem and the fix, exit status 2, nothing written.

Each case is a plain ``.npz`` session in the layout documented in :mod:`cinebrain.io.neurons`
(written here with numpy, not with cinebrain's writer, which refuses to write them), with
one thing wrong: responses and video of different lengths, NaN counts, negative counts with
the Poisson loss, behaviour shorter than the responses, a session without neurons; and a
config naming an unknown ViViT preset.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cinebrain.cli import main

T, H, W, N = 20, 8, 12, 5


def _arrays(n_trials: int = 3) -> dict:
    rng = np.random.default_rng(0)
    items = {}
    for i in range(n_trials):
        items[f"videos_{i}"] = rng.random((T, H, W), dtype=np.float32)
        items[f"responses_{i}"] = rng.poisson(1.0, (T, N)).astype(np.float32)
        items[f"behavior_{i}"] = rng.random((T, 2), dtype=np.float32)
        items[f"pupil_center_{i}"] = rng.normal(size=(T, 2)).astype(np.float32)
    items.update(tiers=np.array(["train", "validation", "test"][:n_trials]),
                 clip_ids=np.array([f"c{i}" for i in range(n_trials)]),
                 neuron_ids=np.array([f"n{j}" for j in range(N)]),
                 behavior_names=np.array(["pupil", "running"]), frame_rate=np.array(30.0))
    return items


def _broken(what: str) -> dict:
    items = _arrays()
    if what == "lengths":
        items["responses_1"] = items["responses_1"][:-3]
    elif what == "nan":
        items["responses_0"][4, 2] = np.nan
    elif what == "negative":
        items["responses_2"][7, 1] = -2.0
    elif what == "behaviour":
        items["behavior_1"] = items["behavior_1"][:-1]
    elif what == "no neurons":
        for i in range(3):
            items[f"responses_{i}"] = np.zeros((T, 0), np.float32)
        items["neuron_ids"] = np.zeros(0, dtype="<U1")
    return items


@pytest.mark.parametrize("what, expected", [
    ("lengths", "response frames"),
    ("nan", "NaN"),
    ("negative", "Poisson"),
    ("behaviour", "behaviour"),
    ("no neurons", "no neurons"),
])
def test_a_bad_session_is_one_line_and_writes_nothing(what, expected, tmp_path, capsys):
    path = tmp_path / "session.npz"
    np.savez(path, **_broken(what))
    out = tmp_path / "run"
    config = tmp_path / "neurons.yaml"
    config.write_text(yaml.safe_dump({"sessions": [str(path)], "out": str(out),
                                      "data": {"frames": 10}, "model": {"core": "conv", "burn_in": 2}}))
    assert main(["--threads", "1", "neurons", "train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "\n" not in err, err
    assert "Traceback" not in err and "session.npz" in err and expected in err, err
    assert not out.exists()


def test_the_good_session_is_accepted(tmp_path):
    """The same layout without the fault reads (so each case above fails for its fault)."""
    from cinebrain.io.neurons import read_neuron_session

    np.savez(tmp_path / "session.npz", **_arrays())
    session = read_neuron_session(tmp_path / "session.npz")
    assert session.n_neurons == N and session.n_trials == 3


def test_an_unknown_preset_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "session.npz", **_arrays())
    config = tmp_path / "neurons.yaml"
    config.write_text(yaml.safe_dump({"sessions": [str(tmp_path / "session.npz")],
                                      "out": str(tmp_path / "run"),
                                      "model": {"core": "vivit-huge"}}))
    assert main(["--threads", "1", "neurons", "train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "\n" not in err
    assert "vivit-huge" in err and "model.core" in err
    assert not (tmp_path / "run").exists()
