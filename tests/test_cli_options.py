"""Run options on the command line: every nullable option takes ``none``, values that would
not be applied are refused, one stage's options never carry into the next unnoticed, and
``--threads`` sets BLAS and torch threads."""

from __future__ import annotations

import json
import os
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from cinebrain.cli import _SKIP, _leaf_fields, _strip_optional, build_parser, is_nullable, main
from cinebrain.config import NULL, RunConfig, load_config, save_config
from cinebrain.errors import ConfigError
from cinebrain.pipelines.runfolder import RunFolder


def _config(argv: list[str]) -> RunConfig:
    from cinebrain.cli import _config_from_args

    return _config_from_args(build_parser().parse_args(argv))


def _value(config: RunConfig, dotted: str):
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _flag(dotted: str) -> str:
    return "--" + dotted.replace(".", "-").replace("_", "-")


def _error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # a usage error (argparse)
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def _nullable(field) -> bool:
    return is_nullable(field.annotation)


NULLABLE = [d for d, f in _leaf_fields(RunConfig) if d not in _SKIP and _nullable(f)]


def test_there_are_nullable_options_of_every_kind():
    kinds = {typing.get_origin(_strip_optional(f.annotation)) or _strip_optional(f.annotation)
             for d, f in _leaf_fields(RunConfig) if d in NULLABLE}
    assert {float, int, str, list, dict} <= kinds, kinds


def test_an_option_of_several_types_reads_each(tmp_path):
    """evaluate.roi_labels: a mapping, a list or a file; none is null."""
    args = ["fit", "--study", "s.yaml", "--evaluate-rois", str(tmp_path / "rois.nii.gz")]
    assert _config([*args, "--evaluate-roi-labels", '{"1": "V1"}']).evaluate.roi_labels == {1: "V1"}
    assert _config([*args, "--evaluate-roi-labels", '["bg", "V1"]']).evaluate.roi_labels == ["bg", "V1"]
    labels = _config([*args, "--evaluate-roi-labels", "labels.tsv"]).evaluate.roi_labels
    assert isinstance(labels, str) and labels.endswith("labels.tsv")
    assert _config([*args, "--evaluate-roi-labels", "none"]).evaluate.roi_labels is None


@pytest.mark.parametrize("word", ["none", "null", "None"])
@pytest.mark.parametrize("dotted", NULLABLE)
def test_every_nullable_option_takes_none(dotted, word, tmp_path):
    field = dict(_leaf_fields(RunConfig))[dotted]
    assert typing.get_origin(_strip_optional(field.annotation)) is not tuple, \
        f"{dotted}: a nullable pair needs its own way to say none"
    # over a config file that sets it, so that none is seen to replace a value
    default = RunConfig(study="s.yaml")
    cfg = tmp_path / "run.yaml"
    save_config(default, cfg)
    argv = ["fit", str(cfg), _flag(dotted), word]
    assert getattr(build_parser().parse_args(argv), dotted) in (NULL, [NULL])
    try:
        config = _config(argv)
    except ConfigError as e:
        # null accepted, but another option needs this one (patience needs a metric)
        assert f"'{dotted}'" not in str(e) and "Value error" in str(e), str(e)
        return
    assert _value(config, dotted) is None


def test_model_bands_null_replaces_the_file_s_bands(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s.yaml", "alignment": {"high_pass": 0.01},
                                   "model": {"bands": {"v": ["video.pixels"]}}}))
    assert _config(["fit", str(cfg)]).model.bands == {"v": ["video.pixels"]}
    config = _config(["fit", str(cfg), "--model-bands", "null", "--alignment-high-pass", "null"])
    assert config.model.bands is None and config.alignment.high_pass is None
    # a mapping that cannot be null says so instead of dropping the value
    err = _error(capsys, ["fit", str(cfg), "--autoencoder-overrides", "null"])
    assert "--autoencoder-overrides" in err and "null is not allowed" in err
    err = _error(capsys, ["fit", str(cfg), "--model-bands", "{v: 1}"])
    assert "--model-bands" in err and "JSON" in err
    # none in a list is the whole value or an error
    assert _config(["fit", str(cfg), "--subjects", "none"]).subjects is None
    err = _error(capsys, ["fit", str(cfg), "--subjects", "none", "sub-01"])
    assert "--subjects" in err and "alone" in err


def test_none_is_refused_where_null_is_not_allowed(capsys):
    for dotted, field in _leaf_fields(RunConfig):
        ann = _strip_optional(field.annotation)
        if dotted in _SKIP or _nullable(field) or ann in (str, bool):
            continue  # a string may be "none"; a switch is --x / --no-x
        if typing.get_origin(ann) is typing.Literal and "none" in typing.get_args(ann):
            continue  # evaluate.ceiling: none is one of its values
        nargs = len(typing.get_args(ann)) if typing.get_origin(ann) is tuple else 1
        err = _error(capsys, ["fit", "--study", "s.yaml", _flag(dotted), *["none"] * nargs])
        assert _flag(dotted) in err, dotted


@pytest.mark.parametrize("flags, key, why", [
    (["--alignment-delays", "0", "2"], "alignment.delays", "hrf: fir"),
    (["--model-kind", "ridge", "--model-n-iter", "50"], "model.n_iter", "kind: banded"),
    (["--model-device", "cuda"], "model.device", "backend: torch"),
    (["--evaluate-block-s", "30"], "evaluate.block_s", "null: block"),
    (["--evaluate-n-permutations", "0", "--evaluate-runs", "pooled"], "evaluate.runs",
     "no significance test"),
])
def test_values_that_are_not_applied_are_refused(flags, key, why, capsys, tmp_path):
    err = _error(capsys, ["fit", "--study", "s.yaml", "--out", str(tmp_path / "r"), *flags])
    assert key in err and why in err and "would not be applied" in err
    assert not (tmp_path / "r").exists()


def test_applied_values_and_saved_configs_pass(tmp_path):
    config = _config(["fit", "--study", "s.yaml", "--alignment-hrf", "fir", "--alignment-delays",
                      "0", "2", "--model-backend", "torch", "--model-device", "cuda",
                      "--evaluate-null", "block", "--evaluate-block-s", "30"])
    assert config.alignment.delays == [0, 2] and config.evaluate.block_s == 30
    # a saved config holds every key at its value: defaults never count as "given"
    save_config(RunConfig(study="s.yaml", model={"kind": "ridge"}), tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").model.kind == "ridge"


# --------------------------------------------------------------------------- stages
#: Quick features; the fit and evaluate options are left at their defaults but few.
FEATURES = ["--no-progress", "--features-video", "pixels", "--features-audio", "mel",
            "--no-features-annotation-text", "--no-features-annotation-columns",
            "--features-transcript"]
QUICK = ["--model-n-alphas", "4", "--model-cv-folds", "2", "--evaluate-n-permutations", "0",
         "--no-evaluate-variance-partitioning"]


@pytest.fixture(scope="module")
def featured(tiny_study, tmp_path_factory):
    """The tiny study with its features stage done, the fit's options given to it."""
    base = tmp_path_factory.mktemp("options")
    shutil.copytree(Path(tiny_study).parent, base / "study")
    out = base / "run"
    assert main(["features", "--study", str(base / "study" / "study.yaml"), "--out", str(out),
                 *FEATURES, *QUICK]) == 0
    return base


@pytest.fixture
def run(featured, tmp_path):
    """A copy of the featured run; ``at`` points a command at it (its config.yaml names the
    original's folders)."""
    shutil.copytree(featured, tmp_path / "c")
    study, out = tmp_path / "c" / "study" / "study.yaml", tmp_path / "c" / "run"
    return study, out, ["--study", str(study), "--out", str(out), "--no-progress"]


def test_options_for_later_stages_are_named(tiny_study, tmp_path, capsys):
    shutil.copytree(Path(tiny_study).parent, tmp_path / "study")
    out = tmp_path / "run"
    assert main(["features", "--study", str(tmp_path / "study" / "study.yaml"), "--out",
                 str(out), *FEATURES, "--model-n-alphas", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    said = [x for x in lines if "not applied by features" in x]
    assert len(said) == 1 and "model.n_alphas 4" in said[0] and "fit" in said[0]
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["n_alphas"] == 4


def test_a_changed_option_is_said_saved_and_recorded(run, capsys):
    study, out, at = run
    folder = RunFolder(out)
    before = yaml.safe_load(folder.config.read_text())["alignment"]["high_pass"]
    assert before == pytest.approx(1 / 128)
    assert main(["fit", str(folder.config), *at, "--alignment-high-pass", "none"]) == 0
    said = [x for x in capsys.readouterr().out.splitlines() if "options changed" in x]
    assert len(said) == 1
    assert "alignment.high_pass 0.0078125 -> null" in said[0] and "evaluate" in said[0]
    fit = folder.require("fit")
    changes = {k: v for k, v in fit.config_changes.items() if k != "study"}  # (a copy)
    assert changes == {"alignment.high_pass": [before, None]}
    assert fit.config["alignment"]["high_pass"] is None
    assert yaml.safe_load(folder.config.read_text())["alignment"]["high_pass"] is None
    # the features stage's manifest still says what the features were made with
    assert folder.require("features").config["alignment"]["high_pass"] == before


def test_a_later_stage_takes_the_options_its_inputs_were_made_with(run, capsys):
    study, out, at = run
    folder = RunFolder(out)
    assert main(["fit", str(folder.config), *at, "--alignment-high-pass", "none"]) == 0
    capsys.readouterr()
    # evaluate from the study alone (defaults): the fit's options are taken, and said
    assert main(["evaluate", "--study", str(study), "--out", str(out), "--no-progress",
                 "--evaluate-n-permutations", "0"]) == 0
    said = [x for x in capsys.readouterr().out.splitlines() if "taken from" in x]
    assert len(said) == 1 and "alignment.high_pass null" in said[0]
    assert "features.video" in said[0] and "model.n_alphas 4" in said[0]
    ev = folder.require("evaluate")
    assert ev.config["alignment"]["high_pass"] is None and ev.config["model"]["n_alphas"] == 4
    assert yaml.safe_load(folder.config.read_text())["alignment"]["high_pass"] is None


def test_a_later_stage_refuses_other_options_for_its_inputs(run, capsys):
    study, out, at = run
    folder = RunFolder(out)
    assert main(["fit", str(folder.config), *at]) == 0
    capsys.readouterr()
    listing = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    err = _error(capsys, ["evaluate", str(folder.config), *at, "--alignment-high-pass", "0.01"])
    assert "fit outputs" in err and "alignment.high_pass" in err and "cinebrain fit" in err
    err = _error(capsys, ["fit", str(folder.config), *at, "--features-video", "pixels", "motion"])
    assert "features outputs" in err and "features.video" in err and "cinebrain features" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == listing


# --------------------------------------------------------------------------- threads
@pytest.fixture
def restore_threads(monkeypatch):
    from cinebrain.cli import _THREAD_VARIABLES, set_threads

    for var in _THREAD_VARIABLES:  # put back whatever the test's commands set
        monkeypatch.setenv(var, os.environ.get(var, ""))
    yield
    set_threads(None)


def _blas_threads() -> set[int]:
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_threads_flag_sets_blas_and_torch_threads(tmp_path, capsys, restore_threads):
    import torch

    from cinebrain.cli import available_cores

    # a global option of every command (this one fails at once: not a run folder)
    assert main(["--threads", "1", "report", str(tmp_path)]) == 2
    assert _blas_threads() == {1} and torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # for libraries loaded later, and children
    # a run option (config key `threads`); the stage fails on the missing study after
    assert main(["fit", "--study", str(tmp_path / "no.yaml"), "--out", str(tmp_path / "r"),
                 "--threads", "2"]) == 2
    assert _blas_threads() == {2} and torch.get_num_threads() == 2
    cfg = tmp_path / "run.yaml"
    cfg.write_text("study: no.yaml\nthreads: 1\n")
    assert _config(["fit", str(cfg)]).threads == 1
    assert _config(["--threads", "2", "fit", str(cfg)]).threads == 2  # the command line wins
    assert _config(["--threads", "2", "fit", str(cfg), "--threads", "1"]).threads == 1
    # the default: the cores this process may use
    assert main(["report", str(tmp_path)]) == 2
    assert available_cores() == len(os.sched_getaffinity(0))
    if not any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        assert _blas_threads() == {available_cores()}
    capsys.readouterr()
    err = _error(capsys, ["--threads", "0", "report", str(tmp_path)])
    assert "--threads" in err
    capsys.readouterr()


def test_manifest_config_matches_the_stage_hash(run):
    """The config a stage's manifest records is the one its config hash was made from."""
    from cinebrain.config import section_hash

    folder = RunFolder(run[1])
    assert folder.require("features").config["out"] != str(run[1])  # the original's
    m = folder.require("features")
    assert section_hash(RunConfig.model_validate(m.config), "study", "features",
                        "subjects") == m.config_hash
    assert json.loads(folder.manifest_path("features").read_text())["config_changes"] == {}
