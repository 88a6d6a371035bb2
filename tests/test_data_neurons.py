"""Splits, statistics, windows and device batches of neuron sessions (cinebrain.data.neurons)."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from cinebrain.data.neurons import (
    DeviceBatches,
    NeuronClipDataset,
    SessionStats,
    check_split,
    normalization_stats,
    repeated_test_clips,
    split_trials,
)
from cinebrain.errors import InputError
from cinebrain.io.neurons import NeuronSession

H, W, NB = 6, 8, 2
KEYS = ("video", "behavior", "pupil_center", "responses", "mask", "session")


def make_session(name, n_neurons, trials, *, pupil=True, seed=0):
    """``trials``: list of (clip id, tier, n_frames)."""
    rng = np.random.default_rng(seed)
    lengths = [n for _, _, n in trials]
    return NeuronSession(
        name=name,
        videos=[rng.uniform(0, 255, (n, H, W)).astype(np.float32) for n in lengths],
        responses=[rng.poisson(2.0, (n, n_neurons)).astype(np.float32) for n in lengths],
        behavior=[(rng.normal(size=(n, NB)) * [3.0, 0.5] + [10.0, -1.0]).astype(np.float32)
                  for n in lengths],
        pupil_center=[rng.normal(5.0, 2.0, (n, 2)).astype(np.float32) for n in lengths]
        if pupil else None,
        tiers=np.array([t for _, t, _ in trials]),
        clip_ids=np.array([c for c, _, _ in trials]),
        frame_rate=30.0,
        neuron_ids=np.array([f"{name}-n{i}" for i in range(n_neurons)]),
        behavior_names=["speed", "pupil_size"],
        source=f"{name}.npz",
    ).validate()


def session_a():
    trials = [(f"c{i}", "train", 20 + i) for i in range(6)]
    trials += [("short", "train", 3)]
    trials += [("v0", "validation", 21), ("v1", "validation", 19)]
    trials += [("t0", "test", 18)] * 3 + [("t1", "test", 22)] * 2 + [("t2", "test", 17)]
    return make_session("A", 5, trials, seed=1)


def session_b():
    trials = [(f"d{i}", "train", 16 + 3 * i) for i in range(4)]
    trials += [("w0", "validation", 18), ("u0", "test", 20), ("u0", "test", 20)]
    return make_session("B", 3, trials, pupil=False, seed=2)


@pytest.fixture(scope="module")
def study():
    sessions = [session_a(), session_b()]
    parts = {s.name: split_trials(s) for s in sessions}
    train = {name: p["train"] for name, p in parts.items()}
    stats = normalization_stats(sessions, train)
    return sessions, parts, train, stats


def dataset(study, part="train", **kw):
    sessions, parts, _, stats = study
    kw.setdefault("frames", 8)
    return NeuronClipDataset(sessions, {n: p[part] for n, p in parts.items()}, stats=stats, **kw)


# ---------------------------------------------------------------------------- splits
def test_tier_split_follows_tiers_and_rejects_a_clip_in_two_parts():
    s = session_a()
    parts = split_trials(s)
    for tier in ("train", "validation", "test"):
        assert parts[tier].tolist() == s.trials(tier).tolist()
        assert parts[tier].dtype == np.int64
    s.tiers = s.tiers.copy()
    s.tiers[9] = "train"  # one repeat of t0 moved to training
    with pytest.raises(ValueError, match="clip 't0' is in parts 'train' and 'test'"):
        split_trials(s)


def test_tier_split_redraws_validation_by_whole_clips():
    s = session_a()
    parts = split_trials(s, validation=0.25, seed=3)
    assert parts["test"].tolist() == s.trials("test").tolist()
    pool = np.flatnonzero(s.tiers != "test")
    assert sorted(np.r_[parts["train"], parts["validation"]].tolist()) == pool.tolist()
    assert len(set(s.clip_ids[parts["validation"]])) == round(0.25 * 9)
    assert split_trials(s, validation=0.25, seed=3)["validation"].tolist() \
        == parts["validation"].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_clip_split_keeps_every_repeat_together(seed):
    s = session_a()
    parts = split_trials(s, by="clip", validation=0.2, test=0.2, seed=seed)
    everything = np.sort(np.concatenate(list(parts.values())))
    assert everything.tolist() == list(range(s.n_trials))  # each trial once
    clips = {part: set(s.clip_ids[idx]) for part, idx in parts.items()}
    assert not clips["train"] & clips["test"] and not clips["train"] & clips["validation"]
    assert not clips["validation"] & clips["test"]
    for part, idx in parts.items():  # all repeats of a clip with it
        for c in clips[part]:
            assert set(np.flatnonzero(s.clip_ids == c)) <= set(idx.tolist())
    n_clips = len(set(s.clip_ids))
    assert len(clips["test"]) == round(0.2 * n_clips)
    assert clips["test"] <= {"t0", "t1"}  # repeated clips go to test first
    again = split_trials(s, by="clip", validation=0.2, test=0.2, seed=seed)
    assert all(again[k].tolist() == parts[k].tolist() for k in parts)


def test_check_split_names_the_problem():
    s = session_a()
    with pytest.raises(ValueError, match="trial 2 is in parts 'train' and 'validation'"):
        check_split(s, {"train": [0, 1, 2], "validation": [2]})
    with pytest.raises(ValueError, match="trial 99 .* out of range"):
        check_split(s, {"train": [99]})
    with pytest.raises(ValueError, match="clip 't1'"):
        check_split(s, {"train": [12], "test": [13]})


def test_repeated_test_clips_for_the_oracle():
    s = session_a()
    assert repeated_test_clips(s) == {"t0": [9, 10, 11], "t1": [12, 13]}  # t2 shown once
    assert repeated_test_clips(s, test=[10, 11, 14]) == {"t0": [10, 11]}


def test_split_bad_inputs():
    s = session_a()
    with pytest.raises(InputError, match="by='tier' or by='clip'"):
        split_trials(s, by="frame")
    with pytest.raises(InputError, match="not in \\[0, 1\\)"):
        split_trials(s, by="clip", validation=1.5)
    with pytest.raises(InputError, match="test tier defines"):
        split_trials(s, test=0.1)
    with pytest.raises(InputError, match="leaves no clip"):
        split_trials(s, by="clip", validation=0.5, test=0.5)


# ---------------------------------------------------------------------------- statistics
def test_stats_match_numpy_on_training_trials_only(study):
    sessions, parts, train, stats = study
    a = sessions[0]
    idx = parts["A"]["train"]
    v = np.concatenate([a.videos[t] for t in idx]).astype(np.float64)
    b = np.concatenate([a.behavior[t] for t in idx]).astype(np.float64)
    p = np.concatenate([a.pupil_center[t] for t in idx]).astype(np.float64)
    r = np.concatenate([a.responses[t] for t in idx]).astype(np.float64)
    st = stats["A"]
    assert st.n_frames == len(v)
    np.testing.assert_allclose(st.video_mean, v.mean(), rtol=1e-10)
    np.testing.assert_allclose(st.video_std, v.std(), rtol=1e-10)
    np.testing.assert_allclose(st.behavior_mean, b.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st.behavior_std, b.std(0), rtol=1e-6)
    np.testing.assert_allclose(st.pupil_mean, p.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st.pupil_std, p.std(0), rtol=1e-6)
    np.testing.assert_allclose(st.response_mean, r.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st.response_std, r.std(0), rtol=1e-6)
    assert st.response_mean.shape == (5,) and stats["B"].response_mean.shape == (3,)
    assert stats["B"].pupil_mean.tolist() == [0, 0] and stats["B"].pupil_std.tolist() == [1, 1]
    assert SessionStats.from_dict(st.to_dict()).to_dict() == st.to_dict()


def test_stats_ignore_held_out_trials(study):
    sessions, _, train, stats = study
    changed = [session_a(), session_b()]
    test_trial = int(changed[0].trials("test")[0])
    changed[0].videos[test_trial] += 1000.0
    changed[0].responses[test_trial] *= 50.0
    changed[0].behavior[int(changed[0].trials("validation")[0])] -= 7.0
    again = normalization_stats(changed, train)
    assert again["A"].to_dict() == stats["A"].to_dict()
    changed[0].videos[int(train["A"][0])] += 1.0  # a training trial does change them
    assert normalization_stats(changed, train)["A"].video_mean != stats["A"].video_mean


def test_stats_bad_inputs(study):
    sessions, _, train, _ = study
    with pytest.raises(InputError, match="no training trials given for session 'B'"):
        normalization_stats(sessions, {"A": train["A"]})
    with pytest.raises(InputError, match="B.npz: the session has no training trials"):
        normalization_stats(sessions, {"A": train["A"], "B": []})


# ---------------------------------------------------------------------------- windows
@pytest.mark.parametrize("stride", [None, 3])
def test_windows_stay_inside_one_trial_and_cover_it(study, stride):
    sessions, parts, _, stats = study
    ds = dataset(study, stride=stride)
    T = 8
    assert ds.dropped == [("A", 6, 3)]  # the 3-frame trial is shorter than a window
    covered = {}
    for i in range(len(ds)):
        k, trial, start, _, _ = ds.windows[i]
        s, st = sessions[k], stats[sessions[k].name]
        item = ds[i]
        assert 0 <= start and start + T <= s.videos[trial].shape[0]
        want = (s.videos[trial][start:start + T] - np.float32(st.video_mean)) \
            / np.float32(st.video_std)
        np.testing.assert_allclose(item["video"][0].numpy(), want, rtol=1e-6, atol=1e-6)
        want_b = (s.behavior[trial][start:start + T] - st.behavior_mean) / st.behavior_std
        np.testing.assert_allclose(item["behavior"].numpy(), want_b, rtol=1e-5, atol=1e-5)
        n = s.n_neurons
        np.testing.assert_array_equal(item["responses"][:, :n].numpy(),
                                      s.responses[trial][start:start + T])  # units kept
        covered.setdefault((k, trial), set()).update(range(start, start + T))
    for k, s in enumerate(sessions):
        for trial in parts[s.name]["train"]:
            n = s.videos[trial].shape[0]
            if n >= T:
                assert covered[(k, trial)] == set(range(n))
    if stride is None:  # tiles plus one window aligned to the trial's end
        starts = ds.windows[(ds.windows[:, 0] == 0) & (ds.windows[:, 1] == 1), 2]
        assert starts.tolist() == [0, 8, 13]


def test_items_padding_mask_and_collate_follow_the_contract(study):
    ds = dataset(study, n_max=7)
    assert ds.no_pupil == ["B"]
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    B = len(ds)
    assert set(batch) == set(KEYS)
    assert batch["video"].shape == (B, 1, 8, H, W) and batch["video"].dtype == torch.float32
    assert batch["behavior"].shape == (B, 8, NB) and batch["behavior"].dtype == torch.float32
    assert batch["pupil_center"].shape == (B, 8, 2)
    assert batch["responses"].shape == (B, 8, 7) and batch["responses"].dtype == torch.float32
    assert batch["mask"].shape == (B, 7) and batch["mask"].dtype == torch.bool
    assert batch["session"].shape == (B,) and batch["session"].dtype == torch.int64
    n = torch.tensor([5, 3])[batch["session"]]
    assert (batch["mask"].sum(1) == n).all()
    assert (batch["mask"] == (torch.arange(7)[None] < n[:, None])).all()
    assert (batch["responses"][~batch["mask"][:, None, :].expand(-1, 8, -1)] == 0).all()
    assert set(batch["session"].tolist()) == {0, 1}  # the batch mixes sessions
    b_rows = batch["session"] == 1
    assert (batch["pupil_center"][b_rows] == 0).all()
    assert (batch["pupil_center"][~b_rows] != 0).any()
    # normalised with the training statistics: about zero mean, unit std on training frames
    assert abs(batch["video"].mean().item()) < 0.05
    assert abs(batch["video"].std().item() - 1) < 0.05


def test_held_out_datasets_use_training_statistics(study):
    sessions, parts, _, stats = study
    ds = dataset(study, part="test")
    i = 0
    k, trial, start, _, _ = ds.windows[i]
    s = sessions[k]
    want = (s.videos[trial][start:start + 8] - np.float32(stats[s.name].video_mean)) \
        / np.float32(stats[s.name].video_std)
    np.testing.assert_allclose(ds[i]["video"][0].numpy(), want, rtol=1e-6, atol=1e-6)


def test_random_offsets_are_deterministic_and_stay_in_the_trial(study):
    sessions = study[0]
    ds = dataset(study, stride=4, random_offset=True, seed=5)
    first = [ds[i]["video"].clone() for i in range(len(ds))]
    assert all(torch.equal(first[i], ds[i]["video"]) for i in range(len(ds)))
    rows0 = ds.start_rows().copy()
    ds.set_epoch(1)
    rows1 = ds.start_rows()
    assert (rows0 != rows1).any()
    assert ((rows1 >= ds.windows[:, 3]) & (rows1 <= ds.windows[:, 4])).all()
    # the item is still the frames of its own trial from the shifted start
    i = int(np.flatnonzero(rows1 != ds.windows[:, 3])[0])
    k, trial, _, first_row, _ = ds.windows[i]
    start = int(ds.windows[i, 2] + rows1[i] - first_row)
    s = sessions[k]
    np.testing.assert_array_equal(ds[i]["responses"][:, :s.n_neurons].numpy(),
                                  s.responses[trial][start:start + 8])
    ds.set_epoch(0)
    assert (ds.start_rows() == rows0).all()


def test_dataset_bad_inputs(study):
    sessions, parts, train, stats = study
    with pytest.raises(InputError, match="frames=0"):
        NeuronClipDataset(sessions, train, frames=0, stats=stats)
    with pytest.raises(InputError, match="no statistics for session 'B'"):
        NeuronClipDataset(sessions, train, frames=8, stats={"A": stats["A"]})
    with pytest.raises(InputError, match="n_max=4 is below the largest session's 5"):
        NeuronClipDataset(sessions, train, frames=8, stats=stats, n_max=4)
    with pytest.raises(InputError, match="unknown session"):
        NeuronClipDataset(sessions, {**train, "C": [0]}, frames=8, stats=stats)
    with pytest.raises(InputError, match="no trial list for session 'B'"):
        NeuronClipDataset(sessions, {"A": train["A"]}, frames=8, stats=stats)
    with pytest.raises(InputError, match="no trial has 100 frames or more"):
        NeuronClipDataset(sessions, train, frames=100, stats=stats)
    with pytest.raises(InputError, match="statistics of session 'A' are for 3 neurons, the session has 5"):
        NeuronClipDataset(sessions, train, frames=8, stats={"A": stats["B"], "B": stats["B"]})
    small = make_session("C", 2, [("x", "train", 10)])
    small.videos = [v[:, :3] for v in small.videos]
    with pytest.raises(InputError, match="C.npz: frames of size \\(3, 8\\)"):
        NeuronClipDataset([sessions[0], small], {"A": train["A"], "C": [0]}, frames=8,
                          stats={**stats, **normalization_stats([small], {"C": [0]})})
    ds = dataset(study)
    with pytest.raises(TypeError, match="NeuronClipDataset"):
        DeviceBatches(list(ds), 4)
    with pytest.raises(InputError, match="batch_size=0"):
        DeviceBatches(ds, 0)


# ---------------------------------------------------------------------------- device path
def loader_batches(ds, batch_size, *, shuffle, seed, epoch, start=0, drop_last=False,
                   num_replicas=1, rank=0):
    sampler = DistributedSampler(ds, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                 seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    ds.set_epoch(epoch)
    order = list(sampler)[start:]
    return list(DataLoader(ds, batch_size=batch_size, sampler=order, drop_last=drop_last))


@pytest.mark.parametrize(
    "options",
    [
        dict(shuffle=True, seed=0, epoch=0),
        dict(shuffle=True, seed=3, epoch=2, drop_last=True),
        dict(shuffle=False, seed=0, epoch=0),
        dict(shuffle=True, seed=1, epoch=1, start=5),
        dict(shuffle=True, seed=2, epoch=1, num_replicas=2, rank=1),
        dict(shuffle=True, seed=4, epoch=3, random_offset=True),
    ],
)
def test_device_batches_equal_the_dataloader(study, options):
    options = dict(options)
    ds = dataset(study, stride=5, random_offset=options.pop("random_offset", False), seed=9)
    epoch, start = options.pop("epoch"), options.pop("start", 0)
    want = loader_batches(ds, 6, epoch=epoch, start=start, **options)
    ds.set_epoch(0)
    batches = DeviceBatches(ds, 6, device="cpu", **options)
    batches.set_epoch(epoch)
    batches.start = start
    got = list(batches)
    assert len(got) == len(batches) == len(want) > 1
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(KEYS)
        for key in KEYS:
            assert g[key].dtype == w[key].dtype and g[key].shape == w[key].shape, key
            assert torch.equal(g[key], w[key]), key
    again = list(batches)  # iterating again gives the same epoch
    assert all(torch.equal(a[k], g[k]) for a, g in zip(again, got, strict=True) for k in KEYS)


def test_device_batches_change_order_with_the_epoch(study):
    ds = dataset(study)
    batches = DeviceBatches(ds, len(ds), seed=0)
    first = next(iter(batches))["responses"]
    batches.set_epoch(1)
    second = next(iter(batches))["responses"]
    assert not torch.equal(first, second)
    assert torch.equal(first.sum(0), second.sum(0))  # same windows, another order


def test_device_shards_give_the_whole_set_once_in_order(study):
    ds = dataset(study, stride=3)
    whole = next(iter(DataLoader(ds, batch_size=len(ds))))
    parts = [list(ds.device_batches(4, shuffle=False, shard=True, num_replicas=3, rank=r))
             for r in range(3)]
    assert [sum(len(b["session"]) for b in p) for p in parts] \
        == [len(ds) * (r + 1) // 3 - len(ds) * r // 3 for r in range(3)]
    for key in KEYS:
        joined = torch.cat([b[key] for p in parts for b in p])
        assert torch.equal(joined, whole[key]), key
    assert ds.to_device("cpu") is ds.to_device(torch.device("cpu"))  # one copy per device
    with pytest.raises(InputError, match="shard=True with shuffle=True"):
        DeviceBatches(ds, 4, shard=True)


# ---------------------------------------------------------------------------- with the engine
class TinyNeuronModel(torch.nn.Module):
    """A small model on the batch contract: conv features + behaviour, per-session readout,
    Poisson loss over real neurons."""

    def __init__(self, n_max, n_sessions):
        super().__init__()
        self.core = torch.nn.Conv3d(1, 4, (1, 3, 3))
        self.behavior = torch.nn.Linear(NB, 4)
        self.readout = torch.nn.Parameter(torch.randn(n_sessions, 4, n_max) * 0.1)

    def forward(self, batch):
        f = self.core(batch["video"]).mean((3, 4)).transpose(1, 2)  # (B, T, 4)
        f = f + self.behavior(batch["behavior"])
        w = self.readout[batch["session"]]  # (B, 4, N_max)
        rate = torch.nn.functional.softplus(torch.einsum("btc,bcn->btn", f, w))
        return {"rate": rate * batch["mask"][:, None]}

    def training_step(self, batch):
        rate = self(batch)["rate"]
        nll = torch.nn.functional.poisson_nll_loss(rate + 1e-6, batch["responses"],
                                                   log_input=False, reduction="none")
        mask = batch["mask"][:, None].expand_as(nll)
        return {"loss": nll[mask].mean()}

    def validation_step(self, batch):
        return self.training_step(batch)


def engine_losses(study, tmp_path, *, device_batches, random_offset=False, stop_at=None,
                  resume=False):
    from cinebrain.train.config import TrainConfig
    from cinebrain.train.trainer import Trainer

    class Stop(Exception):
        pass

    def stop(trainer):
        if trainer.step == stop_at:
            raise Stop

    ds = dataset(study, stride=4, random_offset=random_offset)
    torch.manual_seed(0)
    model = TinyNeuronModel(ds.n_max, 2)
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-2, out_dir=str(tmp_path), progress=False,
                         device="cpu", log_every=1, checkpoint_every_steps=1,
                         device_data=device_batches)
    trainer = Trainer(model, config, ds, val_dataset=ds, callbacks=[stop])
    # the engine's loader is the dataset's DeviceBatches exactly when device_data is set
    assert (type(trainer.train_loader).__name__ == "DeviceBatches") == device_batches
    try:
        trainer.fit(resume=resume)
    except Stop:
        pass
    return [record["loss"] for record in trainer.history.train]


def test_engine_trains_the_same_on_device_batches(study, tmp_path):
    loader = engine_losses(study, tmp_path / "loader", device_batches=False)
    device = engine_losses(study, tmp_path / "device", device_batches=True)
    assert len(loader) > 10 and loader == device


def test_engine_resumes_exactly_on_device_batches(study, tmp_path):
    whole = engine_losses(study, tmp_path / "whole", device_batches=True, random_offset=True)
    first = engine_losses(study, tmp_path / "cut", device_batches=True, random_offset=True,
                          stop_at=len(whole) // 2 + 1)  # mid-epoch
    rest = engine_losses(study, tmp_path / "cut", device_batches=True, random_offset=True,
                         resume=True)
    assert first + rest == whole


def test_dataloader_workers_read_the_same_items(study):
    ds = dataset(study)
    ds.to_device("cpu")
    assert "_device_data" not in pickle.loads(pickle.dumps(ds)).__dict__  # nor to workers
    serial = list(DataLoader(ds, batch_size=5))
    parallel = list(DataLoader(ds, batch_size=5, num_workers=2))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(serial, parallel, strict=True) for k in KEYS)


def test_energy_positions_find_the_pixel_that_drives_each_neuron():
    """Neuron n fires with the contrast energy at one known pixel two frames earlier: the
    starting position is that pixel's centre in screen coordinates."""
    from cinebrain.data.neurons import energy_positions

    rng = np.random.default_rng(0)
    h, w, t = 9, 12, 200
    pixels = [(1, 2), (4, 6), (7, 10)]
    videos = [rng.standard_normal((t, h, w)).astype(np.float32) for _ in range(3)]
    responses = []
    for v in videos:
        change = np.diff(v, axis=0, prepend=v[:1]) ** 2
        drive = np.stack([change[:, r, c] for r, c in pixels], axis=1)
        rate = np.zeros_like(drive)
        rate[2:] = drive[:-2]
        responses.append(rng.poisson(0.5 + rate).astype(np.float32))
    session = NeuronSession("s", videos, responses, [np.zeros((t, 1), np.float32)] * 3, None,
                            np.array(["train"] * 3), np.array(["a", "b", "c"]), 30.0,
                            np.array(["n0", "n1", "n2"]))
    xy = energy_positions(session, [0, 1, 2], smooth=0.5)
    want = [((c + 0.5) / w * 2 - 1, (r + 0.5) / h * 2 - 1) for r, c in pixels]
    np.testing.assert_allclose(xy, want, atol=1e-6)
    # a neuron that never varies starts at the centre; a lag longer than every trial fails
    session.responses = [np.concatenate([r[:, :2], np.ones((t, 1), np.float32)], 1)
                         for r in responses]
    assert np.allclose(energy_positions(session, [0, 1, 2])[2], 0.0)
    with pytest.raises(ValueError, match="too few frames"):
        energy_positions(session, [0], lag=t)


def test_energy_positions_place_simulated_cells_near_their_fields():
    """On the simulated V1 study (simple and complex cells, frames pooled 2x to 18 x 32 as
    the neuron pipeline's default run does), the starting positions are about half as far
    from the receptive fields' centres as the screen's centre is (measured: median 0.27
    against 0.50, screen units, the screen 2 wide)."""
    import dataclasses

    from cinebrain.data.neurons import energy_positions
    from cinebrain.data.simulate import simulate_neuron_study

    sessions, truth = simulate_neuron_study(seed=0)
    s = sessions[0]
    pooled = [v.reshape(v.shape[0], 18, 2, 32, 2).mean(axis=(2, 4)) for v in s.videos]
    s = dataclasses.replace(s, videos=pooled)
    xy = energy_positions(s, np.flatnonzero(s.tiers == "train"))
    params = truth["sessions"][s.name]["params"]
    true = np.stack([params.x, params.y], axis=1)
    err = np.linalg.norm(xy - true, axis=1)
    centre = np.linalg.norm(true, axis=1)
    assert np.median(err) < 0.35 and np.median(err) < 0.7 * np.median(centre), (
        np.median(err), np.median(centre))
