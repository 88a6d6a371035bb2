"""Tests of cinebrain.train, the training engine.

This file is also the worker script of the subprocess tests (resume after SIGKILL, DDP
under torchrun): ``python tests/test_train.py OUT_DIR [options]`` trains the tiny model
below and writes ``weights.pt`` and ``metrics.jsonl`` into OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset

from cinebrain.errors import ConfigError
from cinebrain.train import (
    TrainConfig,
    Trainer,
    WarmupCosine,
    build_scheduler,
    load_checkpoint,
    read_metrics,
)
from cinebrain.train import checkpoint as checkpoint_module

torch.set_num_threads(1)
HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------- tiny problem
class Regression(Dataset):
    """``y = x @ w + noise``: ``n`` samples of 4 inputs and 3 outputs, fixed by ``seed``."""

    def __init__(self, n: int, seed: int = 0, noise: float = 0.1):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(4, 3, generator=torch.Generator().manual_seed(123))
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ w + noise * torch.randn(n, 3, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class TinyRegressor(nn.Module):
    """A two-layer MLP following the engine's model protocol."""

    def __init__(self, hidden: int = 16, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = {"hidden": hidden, "dropout": dropout}
        self.net = nn.Sequential(
            nn.Linear(4, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 3)
        )
        self.flops_per_sample = 6 * (4 * hidden + hidden * 3)
        self.seen_dtypes: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch):
        pred = self(batch["x"])
        self.seen_dtypes.append(pred.dtype)
        loss = nn.functional.mse_loss(pred.float(), batch["y"])
        return {"loss": loss, "mae": (pred.float() - batch["y"]).abs().mean()}

    def validation_step(self, batch):
        pred = self(batch["x"]).float()
        return {"loss": nn.functional.mse_loss(pred, batch["y"]), "pred": pred, "y": batch["y"]}

    def validation_epoch_end(self, outputs):
        pred = torch.cat([o["pred"] for o in outputs])
        y = torch.cat([o["y"] for o in outputs])
        pc, yc = pred - pred.mean(0), y - y.mean(0)
        r = (pc * yc).sum(0) / (pc.norm(dim=0) * yc.norm(dim=0))
        return {"r": r.mean().item(), "loss": ((pred - y) ** 2).mean().item()}


def config(**overrides) -> TrainConfig:
    # cpu even where a GPU exists: the exactness tests compare against CPU references
    values = dict(
        epochs=2,
        batch_size=8,
        lr=1e-2,
        warmup_steps=0,
        grad_clip=None,
        progress=False,
        log_every=1,
        seed=0,
        device="cpu",
    )
    values.update(overrides)
    return TrainConfig(**values)


def flat_weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ---------------------------------------------------------------------- learning
def test_loss_decreases_and_validation_r_rises(tmp_path):
    model = TinyRegressor()
    trainer = Trainer(
        model, config(epochs=15, out_dir=str(tmp_path)), Regression(64), Regression(32, seed=1)
    )
    before = trainer.evaluate()
    history = trainer.fit()
    losses = [r["loss"] for r in history.train]
    assert losses[-1] < 0.1 * losses[0]
    assert history.val[-1]["val_r"] > 0.9 > before["val_r"]
    assert history.val[-1]["val_loss"] < 0.1 * before["val_loss"]
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in logged if r["kind"] == "train"] == list(range(1, 121))
    assert all(r["samples_per_s"] > 0 and r["flops_per_s"] > 0 for r in history.train)


def test_fp32_matches_a_plain_pytorch_loop():
    """Same data order, AdamW groups and schedule as written out by hand: bit-identical."""
    cfg = config(epochs=3, batch_size=8, weight_decay=0.1, schedule="constant")
    data = Regression(36)  # 4 full batches per epoch; the last 4 samples are dropped
    model = TinyRegressor(seed=3)
    Trainer(model, cfg, data).fit()

    reference = TinyRegressor(seed=3)
    params = list(reference.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
    )
    for epoch in range(3):
        order = torch.randperm(36, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        for b in range(4):
            idx = order[8 * b : 8 * (b + 1)]
            loss = nn.functional.mse_loss(reference(data.x[idx]), data.y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert torch.equal(flat_weights(model), flat_weights(reference))


def test_bf16_autocast_runs_on_cpu():
    model = TinyRegressor()
    history = Trainer(model, config(epochs=6, precision="bf16"), Regression(64)).fit()
    assert set(model.seen_dtypes) == {torch.bfloat16}
    losses = [r["loss"] for r in history.train]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ---------------------------------------------------------------------- optimisation
def test_warmup_cosine_schedule_values():
    f = WarmupCosine(warmup_steps=4, total_steps=20, schedule="cosine", min_lr_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert f(19) == pytest.approx(0.1)
    assert f(4 + 15 / 2) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(4 + 15 / 4) == pytest.approx(0.1 + 0.9 * (1 + 2**-0.5) / 2)
    decay = [f(s) for s in range(4, 20)]
    assert decay == sorted(decay, reverse=True)
    constant = WarmupCosine(2, 20, schedule="constant")
    assert [constant(s) for s in (0, 1, 2, 19)] == [0.5, 1.0, 1.0, 1.0]

    # the Trainer applies it per optimizer step; warmup_fraction scales with total steps
    cfg = config(epochs=5, warmup_fraction=0.2, min_lr_ratio=0.1, lr=0.5)
    history = Trainer(TinyRegressor(), cfg, Regression(32)).fit()  # 4 steps x 5 epochs
    expected = WarmupCosine(4, 20, "cosine", 0.1)
    assert [r["lr"] for r in history.train] == pytest.approx([0.5 * expected(s) for s in range(20)])
    scheduler = build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), cfg, 20)
    assert scheduler.get_last_lr() == [0.25]


def test_gradient_clipping_bounds_the_norm():
    data = Regression(32)
    data.y *= 1000.0  # enormous gradients
    trainer = Trainer(TinyRegressor(), config(epochs=1, grad_clip=0.5), data)
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            ).item()
        )

    trainer.optimizer.register_step_pre_hook(record)
    history = trainer.fit()
    assert len(norms) == 4
    assert max(norms) <= 0.5 * (1 + 1e-5)
    assert min(r["grad_norm"] for r in history.train) > 10  # logged before clipping


# ---------------------------------------------------------------------- checkpoints
def test_checkpoints_rotate_and_hold_everything(tmp_path):
    cfg = config(epochs=1, checkpoint_every_steps=1, keep_last=2, out_dir=str(tmp_path))
    model = TinyRegressor()
    Trainer(model, cfg, Regression(40)).fit()
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "last.pt",
        "step-00000004.pt",
        "step-00000005.pt",
    ]
    state = load_checkpoint(folder / "last.pt")  # weights_only: no pickled code
    assert state["step"] == 5 and state["epoch"] == 1 and state["batch_in_epoch"] == 0
    assert state["model_config"] == {"hidden": 16, "dropout": 0.0}
    assert state["train_config"]["keep_last"] == 2
    assert TrainConfig.model_validate(state["train_config"]) == cfg  # plain dict, read back
    assert {"optimizer", "scheduler", "scaler", "rng", "early_stopping"} <= set(state)
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    for key, value in model.state_dict().items():
        assert torch.equal(state["model"][key], value)


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    cfg = config(epochs=1, out_dir=str(tmp_path), keep_last=0)
    model = TinyRegressor()
    trainer = Trainer(model, cfg, Regression(16))
    trainer.fit()
    folder = tmp_path / "checkpoints"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert list(before) == ["last.pt"]

    def broken_state_dict(*args, **kwargs):
        raise RuntimeError("state_dict failed")

    monkeypatch.setattr(model, "state_dict", broken_state_dict)
    with pytest.raises(RuntimeError, match="state_dict failed"):
        trainer.save_checkpoint()
    monkeypatch.undo()

    def torn_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    trainer.step += 1
    monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp files
    assert load_checkpoint(folder / "last.pt")["step"] == 2


def test_fresh_run_clears_an_earlier_runs_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    early = config(epochs=4, early_stopping_metric="val_r", out_dir=str(tmp_path))
    Trainer(TinyRegressor(), early, Regression(16), Regression(8, seed=1)).fit()
    assert (folder / "best.pt").exists() and (folder / "step-00000008.pt").exists()
    # a shorter fresh run without a metric: nothing of the earlier run survives or is named
    history = Trainer(TinyRegressor(), config(epochs=1, out_dir=str(tmp_path)), Regression(16)).fit()
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step-00000002.pt"]
    assert history.best_checkpoint is None and history.last_checkpoint == folder / "last.pt"
    assert load_checkpoint(folder / "last.pt")["step"] == 2


def test_resume_from_an_earlier_checkpoint_keeps_what_it_writes(tmp_path):
    """After resuming from an older checkpoint, rotation never deletes the file just written
    (the abandoned continuation's later step files are replaced as the run reaches them)."""
    folder = tmp_path / "checkpoints"
    val = Regression(8, seed=1)
    cfg = config(epochs=4, early_stopping_metric="val_r", keep_last=2, out_dir=str(tmp_path))
    Trainer(ScriptedMetric([0.9, 0.1, 0.5, 0.2]), cfg, Regression(16), val).fit()
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.pt", "last.pt", "step-00000006.pt", "step-00000008.pt"
    ]
    present = {}

    def record(trainer):
        present[trainer.step] = sorted(p.name for p in folder.glob("step-*.pt"))

    resumed = Trainer(ScriptedMetric([0.3, 0.4, 0.2]), cfg, Regression(16), val, callbacks=[record])
    resumed.fit(resume=folder / "best.pt")  # step 2
    assert "step-00000004.pt" in present[4]
    assert present[8] == ["step-00000006.pt", "step-00000008.pt"]
    assert load_checkpoint(folder / "best.pt")["step"] == 2  # 0.9 is still the best
    assert resumed.history.best_step == 2
    assert resumed.history.best_checkpoint == folder / "best.pt"


def test_resume_makes_best_the_resumed_states_best(tmp_path):
    folder = tmp_path / "checkpoints"
    val = Regression(8, seed=1)
    cfg = config(epochs=4, early_stopping_metric="val_r", keep_last=4, out_dir=str(tmp_path))
    Trainer(ScriptedMetric([0.5, 0.1, 0.9, 0.2]), cfg, Regression(16), val).fit()
    assert load_checkpoint(folder / "best.pt")["step"] == 6
    resumed = Trainer(ScriptedMetric([0.3, 0.4]), cfg, Regression(16), val)
    resumed.fit(resume=folder / "step-00000004.pt")  # its best so far: step 2
    # the resumed run's best is step 2 (0.5 beats 0.3 and 0.4), not the abandoned step 6
    assert load_checkpoint(folder / "best.pt")["step"] == 2
    assert resumed.history.best_step == 2
    assert resumed.history.best_checkpoint == folder / "best.pt"


def test_resume_repairs_best_after_a_crash_between_last_and_best(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    cfg = config(epochs=2, early_stopping_metric="val_r", out_dir=str(tmp_path))
    trainer = Trainer(ScriptedMetric([0.1, 0.5]), cfg, Regression(16), Regression(8, seed=1))
    real_link = checkpoint_module._link

    def dies_at_second_best(source, target):
        if target.name == "best.pt" and (folder / "best.pt").exists():
            raise Crash
        real_link(source, target)

    monkeypatch.setattr(checkpoint_module, "_link", dies_at_second_best)
    with pytest.raises(Crash):
        trainer.fit()
    monkeypatch.undo()
    assert load_checkpoint(folder / "last.pt")["early_stopping"]["best_step"] == 4
    assert load_checkpoint(folder / "best.pt")["step"] == 2  # behind: the crash came between
    history = Trainer(ScriptedMetric([]), cfg, Regression(16), Regression(8, seed=1)).fit(
        resume=True
    )
    assert load_checkpoint(folder / "best.pt")["step"] == 4
    assert history.best_step == 4 and history.best_checkpoint == folder / "best.pt"


class Crash(Exception):
    """A training process dying mid-run."""


def crash_at_step_6(trainer):
    """Callback: the process dies after optimizer step 6."""
    if trainer.step == 6:
        raise Crash


def test_resume_in_process_continues_and_trims_the_log(tmp_path):
    """A run that dies after its last checkpoint resumes from it; the log reads as one run."""
    data, val = Regression(32), Regression(12, seed=1)
    cfg = config(epochs=3, out_dir=str(tmp_path / "a"))  # checkpoints at epoch ends
    uninterrupted = TinyRegressor(dropout=0.2)
    Trainer(uninterrupted, cfg, data, val).fit()

    cfg_b = config(epochs=3, out_dir=str(tmp_path / "b"))
    with pytest.raises(Crash):
        Trainer(TinyRegressor(dropout=0.2), cfg_b, data, val, callbacks=[crash_at_step_6]).fit()
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")][-1] == 6
    resumed = TinyRegressor(dropout=0.2, seed=99)  # weights come from the checkpoint
    Trainer(resumed, cfg_b, data, val).fit(resume=True)
    assert torch.equal(flat_weights(resumed), flat_weights(uninterrupted))
    log_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    log_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    strip = [
        {k: v for k, v in r.items() if k not in ("samples_per_s", "flops_per_s", "elapsed_s")}
        for r in log_a
    ]
    assert [{k: r[k] for k in s} for r, s in zip(log_b, strip, strict=True)] == strip


# ---------------------------------------------------------------------- early stopping
class ScriptedMetric(TinyRegressor):
    """Reports a fixed sequence of validation r values, one per evaluation."""

    def __init__(self, values):
        super().__init__()
        self.values = list(values)
        self.evals = 0

    def validation_epoch_end(self, outputs):
        value = self.values[self.evals]
        self.evals += 1
        return {"r": value}


def test_early_stopping_stops_and_keeps_the_best(tmp_path):
    # 2 steps per epoch, evaluated every step: the best (step 3) falls mid-epoch, where
    # no regular checkpoint is due; a new best is written as one all the same
    model = ScriptedMetric([0.1, 0.2, 0.5, 0.3, 0.2, 0.9, 0.9])
    cfg = config(
        epochs=6,
        early_stopping_metric="val_r",
        patience=2,
        eval_every_steps=1,
        out_dir=str(tmp_path),
    )
    weights_at = {}
    history = Trainer(
        model,
        cfg,
        Regression(16),
        Regression(8, seed=1),
        callbacks=[lambda t: weights_at.setdefault(t.step, flat_weights(t.model).clone())],
    ).fit()
    assert history.stopped_early
    assert [r["val_r"] for r in history.val] == [0.1, 0.2, 0.5, 0.3, 0.2]
    assert history.best_metric == 0.5 and history.best_step == 3
    folder = tmp_path / "checkpoints"
    best = load_checkpoint(folder / "best.pt")
    assert best["step"] == 3 and best["early_stopping"]["best"] == 0.5
    restored = TinyRegressor()
    restored.load_state_dict(best["model"])
    assert torch.equal(flat_weights(restored), weights_at[3])
    assert not torch.equal(weights_at[3], weights_at[5])
    assert load_checkpoint(folder / "last.pt")["step"] == 5
    assert history.best_checkpoint == folder / "best.pt"

    with pytest.raises(ConfigError, match="val_nope"):
        Trainer(
            TinyRegressor(),
            config(epochs=1, early_stopping_metric="val_nope"),
            Regression(16),
            Regression(8),
        ).fit()


def test_family_defaults_survive_a_partial_section():
    family = TrainConfig.with_defaults(
        "FamilyTrainConfig", epochs=60, lr=2e-3, early_stopping_metric="val_r", patience=15
    )
    assert issubclass(family, TrainConfig)
    assert family.model_fields["lr"].description == TrainConfig.model_fields["lr"].description
    partial = family.model_validate({"lr": 1e-3})  # a YAML section naming one key
    assert (partial.epochs, partial.patience, partial.lr, partial.batch_size) == (60, 15, 1e-3, 32)
    assert TrainConfig.model_validate(partial.model_dump()) == TrainConfig(**partial.model_dump())
    with pytest.raises(ValidationError, match="greater than 0"):
        family(lr=-1.0)  # the same rules
    with pytest.raises(ValidationError, match="early_stopping_metric"):
        TrainConfig.with_defaults("Broken", patience=3)  # a bad default fails at once
    with pytest.raises(ConfigError, match="train.epoch: unknown key"):
        TrainConfig.with_defaults("Typo", epoch=3)


class Checkpointable(TinyRegressor):
    def set_grad_checkpointing(self, enabled: bool) -> None:
        self.grad_checkpointing = enabled


def test_grad_checkpointing_tensorboard_and_progress(tmp_path, capsys):
    model = Checkpointable()
    cfg = config(
        epochs=1, grad_checkpointing=True, tensorboard=True, progress=True, out_dir=str(tmp_path)
    )
    Trainer(model, cfg, Regression(16), Regression(8)).fit()
    assert model.grad_checkpointing
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "train" in capsys.readouterr().err  # the tqdm bar


def _first_error(**values) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as e:
        TrainConfig(**values)
    err = e.value.errors()[0]
    return err["loc"], err["msg"]


def test_bad_configuration_names_the_key():
    assert _first_error(schedule="linear") == (("schedule",), "Input should be 'cosine' or 'constant'")
    assert _first_error(batchsize=8)[0] == ("batchsize",)  # extra keys are rejected
    for key, value, allowed in [
        ("epochs", 0, "greater than or equal to 1"),
        ("max_steps", 0, "greater than or equal to 1"),
        ("keep_last", -1, "greater than or equal to 0"),
        ("lr", 0.0, "greater than 0"),
        ("lr", float("inf"), "finite"),
        ("weight_decay", -0.1, "greater than or equal to 0"),
        ("betas", (0.9, 1.0), "[0, 1)"),
        ("warmup_fraction", 1.0, "less than 1"),
        ("min_lr_ratio", 1.5, "less than or equal to 1"),
        ("grad_clip", 0.0, "greater than 0"),
        ("precision", "fp8", "'fp32', 'bf16' or 'fp16'"),
        ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("patience", 3, "early_stopping_metric"),
    ]:
        loc, msg = _first_error(**{key: value})
        assert loc == (key,) and allowed in msg, (key, msg)
    cfg = TrainConfig(early_stopping_metric="val_r", patience=3, betas=[0.5, 0.6])  # YAML lists
    assert cfg.betas == (0.5, 0.6)
    with pytest.raises(ValidationError, match="early_stopping_metric"):
        cfg.early_stopping_metric = None  # checked on assignment too, and left as it was
    assert cfg.early_stopping_metric == "val_r"
    with pytest.raises(ConfigError, match="train.precision.*CUDA"):
        Trainer(TinyRegressor(), config(precision="fp16", device="cpu"), Regression(16))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        Trainer(TinyRegressor(), config(batch_size=32), Regression(16))
    with pytest.raises(ConfigError, match="grad_checkpointing"):
        Trainer(TinyRegressor(), config(grad_checkpointing=True), Regression(16))


# ---------------------------------------------------------------------- subprocesses
def _worker_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_losses(out: Path) -> dict[int, float]:
    return {
        r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"
    }


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_losses(tmp_path):
    args = [
        "--n-train",
        "40",
        "--batch-size",
        "4",
        "--max-steps",
        "25",
        "--dropout",
        "0.2",
        "--checkpoint-every-steps",
        "1",
    ]  # 10 steps per epoch
    worker = [sys.executable, str(HERE)]
    full = subprocess.Popen(worker + [str(tmp_path / "full")] + args, env=_worker_env())
    killed = subprocess.run(
        worker + [str(tmp_path / "cut"), "--kill-after", "13"] + args,
        env=_worker_env(),
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "weights.pt").exists()
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (13, 1, 3)
    subprocess.run(
        worker + [str(tmp_path / "cut"), "--resume"] + args,
        env=_worker_env(),
        timeout=120,
        check=True,
    )
    assert full.wait(timeout=120) == 0

    full_losses, cut_losses = _train_losses(tmp_path / "full"), _train_losses(tmp_path / "cut")
    assert sorted(cut_losses) == list(range(1, 26)) == sorted(full_losses)
    assert [cut_losses[s] for s in range(14, 26)] == [full_losses[s] for s in range(14, 26)]
    a = torch.load(tmp_path / "full" / "weights.pt")
    b = torch.load(tmp_path / "cut" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(tmp_path):
    args = [
        "--n-train",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        "16",
        "--n-val",
        "13",
        "--grad-clip",
        "1.0",
    ]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(HERE),
        str(tmp_path / "ddp"),
    ]
    ddp = subprocess.Popen(torchrun + args, env=_worker_env())
    subprocess.run(
        [sys.executable, str(HERE), str(tmp_path / "single")] + args,
        env=_worker_env(),
        timeout=120,
        check=True,
    )
    assert ddp.wait(timeout=180) == 0

    single = torch.load(tmp_path / "single" / "weights.pt")
    multi = torch.load(tmp_path / "ddp" / "weights.pt")
    for key in single:
        torch.testing.assert_close(multi[key], single[key], rtol=0, atol=1e-5)
    assert not torch.equal(single["net.0.weight"], TinyRegressor().net[0].weight)
    info = json.loads((tmp_path / "ddp" / "info.json").read_text())
    assert info == {"world_size": 2, "per_rank_batch": 4}
    log_single = read_metrics(tmp_path / "single" / "metrics.jsonl")
    log_ddp = read_metrics(tmp_path / "ddp" / "metrics.jsonl")  # rank 0 only: no duplicates
    assert [(r["kind"], r["step"]) for r in log_ddp] == [(r["kind"], r["step"]) for r in log_single]
    for r_ddp, r_single in zip(log_ddp, log_single, strict=True):
        for key in ("loss", "val_r", "val_loss"):
            if key in r_single:  # losses: mean over ranks; val: gathered over ranks
                assert r_ddp[key] == pytest.approx(r_single[key], abs=1e-5)


def main(argv: list[str] | None = None) -> None:
    """Worker for the subprocess tests (also runs under torchrun)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-val", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--grad-clip", type=float, default=None)
    parser.add_argument("--checkpoint-every-steps", type=int, default=None)
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    from cinebrain.train import cleanup_distributed, is_main_process

    cfg = TrainConfig(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=1e-2,
        warmup_steps=3,
        min_lr_ratio=0.1,
        grad_clip=args.grad_clip,
        checkpoint_every_steps=args.checkpoint_every_steps,
        keep_last=1,
        log_every=1,
        progress=False,
        out_dir=args.out_dir,
        device="cpu",
    )
    callbacks = []
    if args.kill_after is not None:

        def kill(trainer):
            if trainer.step == args.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(kill)
    model = TinyRegressor(dropout=args.dropout)
    trainer = Trainer(
        model, cfg, Regression(args.n_train), Regression(args.n_val, seed=1), callbacks=callbacks
    )
    trainer.fit(resume=args.resume)
    if is_main_process():
        torch.save(model.state_dict(), Path(args.out_dir) / "weights.pt")
        (Path(args.out_dir) / "info.json").write_text(
            json.dumps(
                {"world_size": trainer.dist.world_size, "per_rank_batch": trainer.per_rank_batch}
            )
        )
    cleanup_distributed()


if __name__ == "__main__":
    main()
