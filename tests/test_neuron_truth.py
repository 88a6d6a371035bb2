"""Ground-truth recovery of the neuron family: the simulator's truth file read back, the
model probes (learned behaviour gain, reading centres) against direct computations, and
evaluate.neurons.truth_recovery against its definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from cinebrain.data.neurons import normalization_stats, split_trials
from cinebrain.data.simulate.neurons import (
    find_neuron_truth,
    read_neuron_truth,
    simulate_neuron_study,
    write_neuron_study,
)
from cinebrain.evaluate.neurons import rf_centre_error, truth_recovery
from cinebrain.models.neurons import (
    behavior_gain,
    make_neuron_model,
    predict_trials,
    readout_centres,
    session_specs,
)

torch.set_num_threads(1)
SMALL = dict(n_sessions=1, neurons=12, n_train=3, n_validation=1, n_test=1, n_repeats=2,
             train_frames=(40, 50), test_frames=40)


def test_the_truth_file_reads_back_as_simulated(tmp_path):
    out = write_neuron_study(tmp_path / "study", seed=3, **SMALL)
    sessions, truth = simulate_neuron_study(seed=3, **SMALL)
    assert find_neuron_truth(out / "mouse-01") == out / "truth.npz"
    assert find_neuron_truth(tmp_path) is None
    back = read_neuron_truth(out / "truth.npz")["mouse-01"]
    t = truth["sessions"]["mouse-01"]
    assert len(back["rate"]) == sessions[0].n_trials
    for a, b in zip(back["rate"], t["rate"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back["params"]["running_gain"], t["params"].running_gain)
    np.testing.assert_array_equal(back["params"]["x"], t["params"].x)


@pytest.fixture(scope="module")
def model_and_data():
    sessions, _ = simulate_neuron_study(seed=1, **SMALL)
    s = sessions[0]
    split = split_trials(s)
    trials = {s.name: split["test"]}
    st = {s.name: normalization_stats([s], {s.name: split["train"]})[s.name]}
    torch.manual_seed(0)
    model = make_neuron_model("conv", session_specs(sessions), modulator="gru", shifter=True,
                              core_options={"channels": [4], "spatial_kernel": [5],
                                            "temporal_kernel": [3]}).eval()
    with torch.no_grad():  # an untrained modulator may start without effect (zero output)
        for p in model.modulators.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model, sessions, trials, st


def test_behavior_gain_is_the_central_difference_of_log_rates(model_and_data):
    model, sessions, trials, st = model_and_data
    s = sessions[0]
    j = s.behavior_names.index("running_speed")
    got = behavior_gain(model, sessions, trials, st, "running_speed", delta=0.5)[s.name]
    off = np.zeros(len(s.behavior_names), np.float32)
    off[j] = 0.5
    up = np.concatenate(predict_trials(model, sessions, trials, st,
                                       behavior_offset={s.name: off})[s.name])
    down = np.concatenate(predict_trials(model, sessions, trials, st,
                                         behavior_offset={s.name: -off})[s.name])
    want = (np.log(up) - np.log(down)).mean(0) / (2 * 0.5 * st[s.name].behavior_std[j])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.abs(got).max() > 0  # the GRU modulator does use running
    assert np.isnan(behavior_gain(model, sessions, trials, st, "whisking")[s.name]).all()


def test_reading_centres_are_the_readout_means_plus_the_mean_shift(model_and_data):
    model, sessions, trials, st = model_and_data
    s = sessions[0]
    got = readout_centres(model, sessions, trials, st)[s.name]
    p = st[s.name]
    pupil = np.concatenate([s.pupil_center[t] for t in trials[s.name]])
    pupil = (pupil - p.pupil_mean) / np.where(p.pupil_std > 0, p.pupil_std, 1)
    with torch.no_grad():
        shift = model.shifters[s.name](torch.as_tensor(pupil, dtype=torch.float32)[None])
    want = model.readouts[s.name].mu.detach().numpy() + shift.mean((0, 1)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_truth_recovery_matches_its_definitions():
    rng = np.random.default_rng(0)
    n = 200
    oracle = rng.uniform(0, 1, n)
    true_c = rng.uniform(-1, 1, (n, 2))
    est_c = true_c + rng.normal(0, 0.06, (n, 2))
    true_g = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.1, 0.4, n))
    learned = true_g + rng.normal(0, 0.05, n)
    modulated = true_g != 0
    drop = np.where(modulated, rng.normal(0.1, 0.03, n), rng.normal(0, 0.01, n))
    out = truth_recovery(model_cta=oracle * 0.8, truth_cta=oracle, oracle=oracle,
                         centres=est_c, true_centres=true_c, learned_gain=learned,
                         true_gain=true_g, shuffle_drop=drop, modulated=modulated)
    reliable = oracle > np.median(oracle)
    err = rf_centre_error(est_c, true_c)
    assert out["ratio_to_truth"] == pytest.approx(np.median(oracle * 0.8) / np.median(oracle))
    assert out["n_reliable"] == reliable.sum()
    assert out["centres_within_tol"] == pytest.approx(np.mean(err[reliable] < 0.1))
    assert out["gain_r"] == pytest.approx(stats.pearsonr(learned, true_g)[0])
    assert out["shuffle_drop_modulated"] == pytest.approx(np.median(drop[modulated]))
    assert out["shuffle_p_modulated"] < 1e-6 and out["shuffle_p_unmodulated"] > 1e-3
