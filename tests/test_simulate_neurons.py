"""The simulated V1 study: determinism, the files it writes, and that its ground truth is
what an analysis recovers (receptive fields by ridge regression, behaviour gains, repeats)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from cinebrain.cli import main
from cinebrain.data.simulate.neurons import (
    _texture_spectrum,
    noiseless_rates,
    simulate_behaviour,
    simulate_movie,
    simulate_neuron_study,
    write_neuron_study,
)
from cinebrain.errors import InputError
from cinebrain.evaluate.neurons import rf_centre_error
from cinebrain.io.neurons import read_sensorium
from cinebrain.linear.frames import fit_frame_ridge

#: A small study for the file tests: one clip per tier, short clips.
SMALL = dict(n_sessions=2, neurons=(5, 7), n_train=2, n_validation=1, n_test=1, n_repeats=2,
             train_frames=(20, 30), test_frames=20)


@pytest.fixture(scope="module")
def study():
    """One session of 60 neurons with the default clips (about 1.5 s)."""
    sessions, truth = simulate_neuron_study(seed=0, n_sessions=1, neurons=60)
    return sessions[0], truth["sessions"][sessions[0].name], truth


def _assert_sessions_equal(a, b):
    assert a.name == b.name and a.n_trials == b.n_trials
    assert list(a.tiers) == list(b.tiers) and list(a.clip_ids) == list(b.clip_ids)
    assert list(a.neuron_ids) == list(b.neuron_ids) and a.behavior_names == b.behavior_names
    for key in ("videos", "responses", "behavior", "pupil_center"):
        for x, y in zip(getattr(a, key), getattr(b, key), strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.neuron_positions, b.neuron_positions)


# ------------------------------------------------------------------ determinism, layout
def test_same_seed_same_study_other_seed_other_study():
    a, ta = simulate_neuron_study(seed=3, **SMALL)
    b, tb = simulate_neuron_study(seed=3, **SMALL)
    for x, y in zip(a, b, strict=True):
        _assert_sessions_equal(x, y)
    for name in ta["sessions"]:
        for r1, r2 in zip(ta["sessions"][name]["rate"], tb["sessions"][name]["rate"], strict=True):
            np.testing.assert_array_equal(r1, r2)
    c, _ = simulate_neuron_study(seed=4, **SMALL)
    assert not np.array_equal(a[0].videos[0][:5], c[0].videos[0][:5])
    assert not np.array_equal(a[0].responses[0], c[0].responses[0])


def test_study_shape(study):
    s, t, truth = study
    assert s.frame_shape == (36, 64) and s.frame_rate == 30.0
    assert s.behavior_names == ["pupil_dilation", "running_speed"]
    counts = {tier: len(s.trials(tier)) for tier in ("train", "validation", "test")}
    assert counts == {"train": 24, "validation": 4, "test": 30}
    test_clips, n = np.unique(s.clip_ids[s.trials("test")], return_counts=True)
    assert len(test_clips) == 3 and set(n) == {10}
    assert all(150 <= len(s.videos[i]) <= 300 for i in s.trials("train"))
    v = np.concatenate(s.videos)
    assert v.dtype == np.float32 and v.min() >= 0 and v.max() <= 255 and 30 < v.std() < 80
    r = np.concatenate(s.responses)
    assert np.all(r == np.round(r)) and 0.1 < r.mean() < 1.0  # Poisson counts, 3-30 Hz
    p = t["params"]
    assert 0.15 < np.mean(~p.modulated) < 0.45 and 0.2 < np.mean(p.kind == "complex") < 0.5
    assert set(truth["clips"]) == set(s.clip_ids)


def test_sensorium_folders_read_back_equal_and_truth_files(tmp_path):
    out = write_neuron_study(tmp_path / "study", seed=1, **SMALL)
    sessions, truth = simulate_neuron_study(seed=1, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == ["mouse-01", "mouse-02", "truth.json",
                                                     "truth.npz"]
    for s in sessions:
        back = read_sensorium(out / s.name)
        _assert_sessions_equal(s, back)
    with np.load(out / "truth.npz") as z:
        np.testing.assert_array_equal(z["mouse-02__rate_3"], truth["sessions"]["mouse-02"]["rate"][3])
        np.testing.assert_array_equal(z["mouse-01__x"], truth["sessions"]["mouse-01"]["params"].x)
        assert list(z["mouse-01__kind"]) == list(truth["sessions"]["mouse-01"]["params"].kind)
    meta = json.loads((out / "truth.json").read_text())
    neurons = meta["sessions"]["mouse-02"]["neurons"]
    assert len(neurons) == 7 and {"x", "y", "sigma", "kind", "running_gain"} <= set(neurons[0])
    with pytest.raises(InputError, match="not empty"):
        write_neuron_study(out, seed=1, **SMALL)


# ------------------------------------------------------------------ the model
def test_rates_are_causal_in_frames_behaviour_and_eye(study):
    s, t, _ = study
    p = t["params"]
    i = int(s.trials("train")[0])
    video, beh, eye = s.videos[i].copy(), s.behavior[i].copy(), s.pupil_center[i].copy()
    base = noiseless_rates(p, video, beh, eye)
    # the single-trial path gives the study's own noiseless rates
    np.testing.assert_allclose(base, t["rate"][i], rtol=1e-4, atol=1e-5)
    cut = 60
    rng = np.random.default_rng(0)
    video[cut + 1:] = rng.uniform(0, 255, video[cut + 1:].shape)
    beh[cut + 1:] += 5.0
    eye[cut + 1:] += 3.0
    changed = noiseless_rates(p, video, beh, eye)
    np.testing.assert_array_equal(changed[: cut + 1], base[: cut + 1])
    assert np.abs(changed[cut + 1:] - base[cut + 1:]).max() > 0.1
    # a kernel reaches back K frames only: frames before t - K + 1 do not count at t
    k = p.temporal_kernel.shape[1]
    early = s.videos[i].copy()
    early[:cut] = 128.0
    late = noiseless_rates(p, early, s.behavior[i], None)
    np.testing.assert_allclose(late[cut + k - 1:],
                               noiseless_rates(p, s.videos[i], s.behavior[i], None)[cut + k - 1:],
                               rtol=1e-5, atol=1e-6)


def test_repeats_share_the_rate_up_to_the_behaviour_gain():
    kw = dict(SMALL, n_sessions=1, neurons=12, n_repeats=4)
    for eye_gain, same in ((0.0, True), (0.3, False)):
        sessions, truth = simulate_neuron_study(seed=2, eye_gain=eye_gain, **kw)
        s, t = sessions[0], truth["sessions"]["mouse-01"]
        reps = s.trials("test")
        assert len(reps) == 4 and len(set(s.clip_ids[reps])) == 1
        drive = [t["rate"][i] / t["gain"][i] for i in reps]
        assert not np.allclose(t["gain"][reps[0]], t["gain"][reps[1]])  # behaviour differs
        if same:
            for d in drive[1:]:
                np.testing.assert_allclose(d, drive[0], rtol=1e-4)
        else:  # eye movements move the fields, so repeats differ beyond the gain
            assert max(np.abs(d - drive[0]).max() for d in drive[1:]) > 1e-2


def test_ridge_on_pixels_recovers_simple_cell_receptive_fields(study):
    s, t, _ = study
    p = t["params"]
    train = s.trials("train")
    factor, delays = 4, (2, 3, 4)
    model = fit_frame_ridge([s.videos[i] for i in train], [s.responses[i] for i in train],
                            delays=delays, factor=factor, alphas=np.logspace(1, 6, 6), n_folds=3)
    h, w = 36 // factor, 64 // factor
    coef = np.asarray(model.model.coef_)
    assert coef.shape == (len(delays) * h * w, s.n_neurons)  # features (delay-major) x neurons
    weights = coef.T.reshape(s.n_neurons, len(delays), h, w)
    energy = (weights**2).sum(axis=1)
    # block centres in the simulator's coordinates: x = (col + .5) / W * 2 - 1
    xs, ys = np.meshgrid((np.arange(w) + 0.5) / w * 2 - 1, (np.arange(h) + 0.5) / h * 2 - 1)
    est = []
    for e in energy:
        e = np.clip(e - np.median(e), 0, None)
        r, c = np.unravel_index(np.argmax(e), e.shape)
        win = np.zeros_like(e)
        win[max(r - 2, 0):r + 3, max(c - 3, 0):c + 4] = 1
        e = e * win
        est.append([(e * xs).sum() / e.sum(), (e * ys).sum() / e.sum()])
    err = rf_centre_error(np.asarray(est), np.stack([p.x, p.y], axis=1))
    simple = p.kind == "simple"
    # measured (seed 0): median 0.046, 89% within 0.1, of a screen 2 units wide
    assert np.median(err[simple]) < 0.08
    assert np.mean(err[simple] < 0.15) >= 0.8
    # a linear model cannot see a complex cell's phase-invariant energy: much worse there
    assert np.median(err[~simple]) > 3 * np.median(err[simple])


def test_running_modulation_is_visible_where_the_truth_puts_it(study):
    s, t, _ = study
    p = t["params"]
    running = np.concatenate([b[:, 1] for b in s.behavior])
    r = np.concatenate(s.responses)
    corr = np.array([stats.pearsonr(r[:, j], running)[0] for j in range(s.n_neurons)])
    mod = p.modulated
    assert np.median(corr[mod]) > np.quantile(corr[~mod], 0.9)
    assert np.abs(np.median(corr[~mod])) < 0.03
    rho = stats.spearmanr(p.running_gain[mod], corr[mod])[0]
    assert rho > 0.3


def test_behaviour_is_plausible():
    rng = np.random.default_rng(0)
    beh, eye = simulate_behaviour(rng, 3000, np.array([150.0, 100.0]))
    pupil, running = beh[:, 0], beh[:, 1]
    assert running.min() >= 0 and 0.2 < np.mean(running > 2) < 0.8
    assert np.corrcoef(pupil, running)[0, 1] > 0.3
    step = np.abs(np.diff(eye, axis=0)).max(axis=1)
    assert np.sum(step > 1.0) >= 10 and np.median(step) < 0.2  # saccades on a slow drift


def test_movie_has_a_one_over_f_spectrum_and_scene_cuts():
    rng = np.random.default_rng(0)
    img = np.fft.irfft2(_texture_spectrum(rng, (64, 64)), s=(64, 64))
    power = np.abs(np.fft.fft2(img)) ** 2
    f = np.sqrt(np.add.outer(np.fft.fftfreq(64) ** 2, np.fft.fftfreq(64) ** 2))
    keep = (f > 0.02) & (f < 0.4)
    slope = np.polyfit(np.log(f[keep]), np.log(power[keep]), 1)[0]
    assert -2.3 < slope < -1.7  # amplitude 1/f: power 1/f^2
    frames, cuts = simulate_movie(rng, 400)
    assert frames.shape == (400, 36, 64) and cuts[0] == 0
    assert all(30 <= b - a <= 90 for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    d = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
    inside = np.setdiff1d(np.arange(399), np.asarray(cuts[1:]) - 1)
    assert d[np.asarray(cuts[1:]) - 1].min() > np.median(d[inside])  # cuts change the scene


def test_calcium_responses(tmp_path):
    kw = dict(SMALL, n_sessions=1, neurons=20, train_frames=(200, 200))
    sessions, truth = simulate_neuron_study(seed=5, response="calcium", **kw)
    s, t = sessions[0], truth["sessions"]["mouse-01"]
    c, spikes = np.concatenate(s.responses), np.concatenate(t["spikes"])
    assert c.min() >= 0 and not np.all(c == np.round(c))
    # undoing the exponential decay gives back the spikes (up to the noise and clipping)
    a = np.exp(-1.0 / (0.5 * 30.0))
    i = int(s.trials("train")[0])
    trace = s.responses[i].astype(float)
    innovation = trace[1:] - a * trace[:-1]
    r = [np.corrcoef(innovation[:, j], t["spikes"][i][1:, j])[0, 1] for j in range(20)
         if t["spikes"][i][:, j].std() > 0]
    assert np.median(r) > 0.5
    out = write_neuron_study(tmp_path / "calcium", seed=5, response="calcium", **kw)
    with np.load(out / "truth.npz") as z:
        np.testing.assert_array_equal(z["mouse-01__spikes_0"], t["spikes"][0])
    lag1 = lambda x: np.mean([np.corrcoef(x[1:, j], x[:-1, j])[0, 1] for j in range(20)])  # noqa: E731
    assert lag1(c) > lag1(spikes) + 0.3


def test_bad_arguments():
    with pytest.raises(InputError, match="one per session"):
        simulate_neuron_study(n_sessions=3, neurons=(5, 6))
    with pytest.raises(InputError, match="response kind"):
        simulate_neuron_study(response="voltage")
    with pytest.raises(InputError, match="training clips"):
        simulate_neuron_study(n_train=1)


# ------------------------------------------------------------------ the CLI
def test_cli_simulate_neurons_and_refusing_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "neurons"
    argv = ["simulate-neurons", str(out), "--sessions", "1", "--neurons", "6",
            "--train-clips", "2", "--validation-clips", "1", "--test-clips", "1", "--repeats",
            "2", "--seed", "4"]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    s = read_sensorium(out / "mouse-01")
    assert s.n_neurons == 6 and len(s.trials("test")) == 2
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cinebrain: error:") and "not empty" in err and "\n" not in err
    assert main([*argv[:-1], "5", "--overwrite"]) == 0
    capsys.readouterr()
    assert [p.name for p in tmp_path.iterdir()] == ["neurons"]  # nothing left beside it


def test_nwb_files_hold_the_same_session(tmp_path):
    pytest.importorskip("pynwb")
    from cinebrain.io.nwb import read_nwb_session

    kw = dict(SMALL, n_sessions=1, neurons=5)
    out = write_neuron_study(tmp_path / "study", nwb=True, seed=1, **kw)
    assert (out / "mouse-01.nwb").is_file()
    a = read_sensorium(out / "mouse-01")
    b = read_nwb_session(out / "mouse-01.nwb")
    assert list(b.tiers) == list(a.tiers) and list(b.clip_ids) == list(a.clip_ids)
    for x, y in zip(a.responses, b.responses, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.videos, b.videos, strict=True):
        np.testing.assert_array_equal(x, y)
    for name in a.behavior_names:
        i, j = a.behavior_names.index(name), b.behavior_names.index(name)
        for x, y in zip(a.behavior, b.behavior, strict=True):
            np.testing.assert_array_equal(x[:, i], y[:, j])
