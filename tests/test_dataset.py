import numpy as np
import pytest
import torch

from cinebrain.data.design import clean_responses, standardize_features
from cinebrain.data.study import check_run_timing
from cinebrain.data.windows import WindowDataset, collate_windows
from cinebrain.errors import InputError


def _check(n_trs, segment=(0.0, 60.0), offset=0.0, stim=60.0, policy="error"):
    return check_run_timing("bold.nii.gz", "sub-01", "run-1", n_trs, 1.5, segment, offset, stim, policy)


def test_matching_lengths_pass():
    t = _check(42)  # 63 s of scan for 60 s of movie
    assert t.n_trs == 42 and t.segment == (0.0, 60.0)


def test_responses_shorter_than_stimulus_is_an_error_naming_the_file():
    with pytest.raises(InputError) as e:
        _check(20)
    msg = str(e.value)
    assert msg.startswith("bold.nii.gz:") and "20 volumes" in msg and "truncate" in msg
    assert "\n" not in msg


def test_truncate_policy_cuts_never_warps():
    t = _check(20, policy="truncate")
    assert t.n_trs == 20
    assert t.segment == (0.0, 30.0)  # only the scanned 30 s of movie are used


def test_segment_past_stimulus_end():
    with pytest.raises(InputError, match="only 50.00 s long"):
        _check(42, stim=50.0)
    t = _check(42, stim=50.0, policy="truncate")
    assert t.segment[1] == 50.0


def test_too_many_volumes():
    with pytest.raises(InputError, match="have no stimulus"):
        _check(200)
    t = _check(200, policy="truncate")
    assert t.n_trs < 200


def test_clean_responses_is_per_run():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((100, 3)).astype(np.float32)
    Y[50:] += 100.0  # run 2 has a different baseline
    run_index = np.repeat([0, 1], 50)
    out = clean_responses(Y, run_index, tr=1.5, high_pass=None)
    for r in (0, 1):
        np.testing.assert_allclose(out[run_index == r].mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(out[run_index == r].std(0, ddof=1), 1, atol=1e-3)
    # the test run's statistics are its own: cleaning run 1 alone gives the same values
    alone = clean_responses(Y[50:], run_index[50:], tr=1.5, high_pass=None)
    np.testing.assert_allclose(alone, out[50:], atol=1e-4)


def test_standardize_uses_training_rows_only():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    X[:, 1] = 3.0  # constant column stays finite
    Z, mean, std = standardize_features(X, np.arange(5))
    np.testing.assert_allclose(mean[0], X[:5, 0].mean())
    np.testing.assert_allclose(Z[:5, 0].mean(), 0, atol=1e-6)
    assert np.isfinite(Z).all()


# --------------------------------------------------------------------------- windows (cinebrain.data.windows)


def test_window_dataset_covers_each_tr_once_within_runs():
    runs = [7, 5]
    n = sum(runs)
    X = np.arange(n, dtype=np.float32)[:, None] + 1  # row i holds i + 1
    Y = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    ds = WindowDataset({"text": X}, Y, runs, window=4, history=2, subject="s")
    scored_rows = []
    run_of = np.repeat([0, 1], runs)
    for i in range(len(ds)):
        it = ds[i]
        rows = it["tr_index"][it["valid"]].numpy()
        assert len(set(run_of[rows])) == 1  # never across a run boundary
        assert np.all(it["text"][~it["valid"]].numpy() == 0)  # padding is zeros
        torch.testing.assert_close(
            it["text"][it["valid"], 0], torch.as_tensor(rows + 1.0, dtype=torch.float32)
        )
        # A scored TR has its full history in the window, or the window reaches the run start.
        scored_rows += it["tr_index"][it["scored"]].tolist()
    assert sorted(scored_rows) == list(range(n))
    with pytest.raises(Exception, match="TRs"):
        WindowDataset({"text": X[:-1]}, Y, runs, window=4, history=2)


def test_batched_windows_equal_single_windows_and_collate_without_copying():
    from torch.utils.data import DataLoader, default_collate

    runs = [7, 5, 9]
    n = sum(runs)
    rng = np.random.default_rng(0)
    inputs = {"text": rng.standard_normal((n, 3)).astype(np.float32),
              "video": rng.standard_normal((n, 2, 4, 5)).astype(np.float32)}
    Y = rng.standard_normal((n, 6)).astype(np.float32)
    ds = WindowDataset(inputs, Y, runs, window=5, history=3, subject="s")
    order = [4, 0, len(ds) - 1, 2, 2, -1]
    items = ds.__getitems__(order)
    for i, item in zip(order, items, strict=True):
        single = ds[i]
        assert item.keys() == single.keys() and item["subject"] == "s"
        for key, value in single.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(item[key], value), key
    batch = collate_windows(items)
    reference = collate_windows([ds[i] for i in order])
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[key], value), key
            # the batch is the gathered array itself: item i is row i of it, no second copy
            assert batch[key].data_ptr() == items[0][key].data_ptr()
        else:
            assert batch[key] == value
    # collating items that are not consecutive rows of one array copies them, correctly
    shuffled = collate_windows([items[1], items[0]])
    assert torch.equal(shuffled["text"], torch.stack([items[1]["text"], items[0]["text"]]))
    assert shuffled["text"].data_ptr() != items[0]["text"].data_ptr()
    # any collate function sees ordinary items
    assert torch.equal(default_collate(items)["responses"], reference["responses"])
    # a DataLoader asks for whole batches and gets the same batches as item by item
    loader = DataLoader(ds, batch_size=3, shuffle=False, collate_fn=collate_windows)
    for b, got in enumerate(loader):
        want = collate_windows([ds[i] for i in range(3 * b, min(3 * b + 3, len(ds)))])
        assert torch.equal(got["video"], want["video"]) and torch.equal(got["valid"], want["valid"])
    with pytest.raises(IndexError):
        ds.__getitems__([0, len(ds)])
