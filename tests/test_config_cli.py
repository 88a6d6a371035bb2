import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cinebrain.cli import main
from cinebrain.config import RunConfig, load_config
from cinebrain.errors import ConfigError


def test_unknown_key_names_allowed_keys(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s.yaml", "model": {"kind": "banded", "alphass": [1]}}))
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert str(cfg) in msg and "alphass" in msg and "alpha_min" in msg and "\n" not in msg


def test_bad_value_names_key(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s.yaml", "model": {"kind": "lasso"}}))
    with pytest.raises(ConfigError, match="model.kind"):
        load_config(cfg)


def test_overrides_beat_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s.yaml", "model": {"n_alphas": 5}}))
    c = load_config(cfg, {"model.n_alphas": 9, "model.kind": None})
    assert c.model.n_alphas == 9 and c.model.kind == "banded"
    assert Path(c.study).is_absolute()  # relative to the config file


def test_every_config_key_is_a_flag():
    from cinebrain.cli import _SKIP, _leaf_fields, build_parser

    # the training engine's folder and progress bars are set by the pipeline, not flags
    set_by_pipeline = {"autoencoder.train.out_dir", "autoencoder.train.progress",
                       "videogpt.vqvae.train.out_dir", "videogpt.vqvae.train.progress",
                       "videogpt.gpt.train.out_dir", "videogpt.gpt.train.progress"}
    assert _SKIP - {"study", "out"} == set_by_pipeline
    parser = build_parser()
    fit = parser._subparsers._group_actions[0].choices["fit"]
    dests = {a.dest for a in fit._actions}
    for dotted, _ in _leaf_fields(RunConfig):
        assert dotted in dests or dotted in set_by_pipeline
    assert "autoencoder.train.epochs" in dests and "autoencoder.train.lr" in dests


def test_cli_unknown_config_key_exits_2(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("study: s.yaml\nbogus: 1\n")
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bogus" in err and "Traceback" not in err


def test_console_script_exit_status(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("study: s.yaml\nmodel: {n_alphas: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "cinebrain.cli", "fit", str(cfg)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "model.n_alphas" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cinebrain-runs").exists()  # nothing written on a config error


def test_training_settings_are_the_train_section(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s.yaml", "autoencoder": {"train": {"epochs": 3}}}))
    c = load_config(cfg, {"autoencoder.train.lr": 0.01})
    assert c.autoencoder.train.epochs == 3 and c.autoencoder.train.lr == 0.01
    cfg.write_text(yaml.safe_dump({"study": "s.yaml", "autoencoder": {"epochs": 3}}))
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "epochs" in str(e.value) and "train" in str(e.value)
