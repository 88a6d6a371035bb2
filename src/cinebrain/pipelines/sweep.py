"""Scaling studies (``cinebrain sweep CONFIG``): a grid of video-model cells, each trained
(or resumed), featurised, fitted by ridge and scored on the held-out runs.

``sweep.grid`` maps dotted keys of the ``videogpt`` section to values; every combination
is a cell, a run folder of its own (``<sweep>/cells/<name>/``) whose config is the run's
with those keys changed. A cell whose ``result.json`` exists and was made from the same
options is never redone; a cell interrupted in training resumes from its checkpoints.

Cells that differ only in GPT options (and ``video.data_fraction``) share one VQ-VAE,
trained once per distinct ``videogpt.video`` (without its data fraction) and
``videogpt.vqvae`` and kept in ``<sweep>/vqvae/<key>/``: the data fraction scales the
GPT's training data. Each cell's scores are the median held-out r per region of its best
GPT layer; ``results.csv`` holds one row per cell and region, with the GPT's trainable
parameters, the training frames it saw, its training FLOPs (FLOPs per pair x pairs seen)
and its held-out next-clip cross-entropy. ``scaling.json`` holds the log-linear fits
(:func:`cinebrain.evaluate.scaling.loglinear_fit`) of r against each of the three, per
region, and ``plots/`` the figures.

Under ``torchrun`` the cells are dealt to the ranks (cell i to rank i mod world); each
rank trains its cells on its own (:func:`cinebrain.train.distributed.single_process`),
and rank 0 writes the table once every rank is done.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cinebrain._files import write_json, write_text
from cinebrain.config import RunConfig
from cinebrain.config.base import set_dotted
from cinebrain.errors import ConfigError
from cinebrain.pipelines import videogpt
from cinebrain.pipelines.runfolder import RunFolder

Log = Callable[[str], None]

#: The plots' x axes: results.csv column -> axis label.
AXES = {"parameters": "GPT trainable parameters", "training_frames": "training frames seen",
        "training_flops": "training FLOPs"}


def _quiet(message: str) -> None:
    """A cell's own log lines are not shown (its summary line is)."""


def sweep_dir(config: RunConfig) -> Path:
    return Path(config.sweep.out) if config.sweep.out else Path(config.out) / "sweep"


def cells(config: RunConfig) -> list[dict[str, Any]]:
    """Every combination of the grid: dotted key -> value, in the grid's order."""
    grid = config.sweep.grid
    keys = list(grid)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[k] for k in keys))]


def n_cells(config: RunConfig) -> int:
    return len(cells(config))


def cell_config(config: RunConfig, cell: dict[str, Any], out: Path) -> RunConfig:
    """The run config of one cell: the ``videogpt`` keys of the cell set, its own folder."""
    from pydantic import ValidationError

    from cinebrain.config import config_error

    data = config.model_dump(mode="json")
    for key, value in cell.items():
        set_dotted(data["videogpt"], key, value, "sweep.grid")
    data["out"] = str(out)
    data["sweep"] = {}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise config_error("sweep.grid", e, RunConfig) from None


def cell_name(cell: dict[str, Any]) -> str:
    """A readable, unique folder name of a cell, e.g. ``hidden_dim-64_layers-2_<hash>``."""
    short = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in cell.items())
    digest = hashlib.sha1(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in short)[:80]
    return f"{safe}_{digest}" if safe else digest


def _options_hash(config: RunConfig) -> str:
    d = config.model_dump(mode="json")
    keep = {k: d[k] for k in ("study", "subjects", "alignment", "model", "split", "videogpt")}
    for section in ("vqvae", "gpt"):  # progress and output folders do not change results
        keep["videogpt"][section]["train"].pop("progress", None)
        keep["videogpt"][section]["train"].pop("out_dir", None)
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _vqvae_key(config: RunConfig) -> str:
    d = config.videogpt.model_dump(mode="json")
    video = {k: v for k, v in d["video"].items() if k != "data_fraction"}
    vq = d["vqvae"]
    vq["train"].pop("progress", None)
    return hashlib.sha1(json.dumps({"study": config.study, "split": config.split.model_dump(
        mode="json"), "subjects": config.subjects, "video": video, "vqvae": vq},
        sort_keys=True).encode()).hexdigest()[:12]


def check(config: RunConfig) -> None:
    """Refuse an empty grid, and a grid key or value the videogpt section refuses, before
    any work."""
    if not config.sweep.grid:
        raise ConfigError("sweep.grid", "the grid is empty",
                          "give at least one axis, e.g. {\"gpt.overrides.hidden_dim\": [32, 64]}")
    for cell in cells(config):
        c = cell_config(config, cell, sweep_dir(config) / "cells" / cell_name(cell))
        videogpt.check(c)


def _shared_vqvae(config: RunConfig, root: Path, log: Log) -> Path:
    """The sweep's VQ-VAE for this cell's video and VQ-VAE options, trained on first use:
    the path of its checkpoint."""
    from cinebrain.pipelines.runfolder import VideoGPTFolder

    folder = root / "vqvae" / _vqvae_key(config)
    done = folder / "done.json"
    if done.is_file():
        return folder / json.loads(done.read_text())["checkpoint"]
    c = config.model_copy(deep=True, update={"out": str(folder)})
    c.videogpt.video.data_fraction = 1.0  # the shared VQ-VAE learns from every training clip
    log(f"  training the shared VQ-VAE in {folder}")
    ckpt = videogpt.train_vqvae_only(c, VideoGPTFolder(folder), log)
    write_json(done, {"checkpoint": ckpt.relative_to(folder).as_posix()})
    return ckpt


def run_cell(config: RunConfig, cell: dict[str, Any], root: Path, log: Log) -> dict:
    """Train (or resume), evaluate and score one cell; its result (cached in the cell)."""
    out = root / "cells" / cell_name(cell)
    c = cell_config(config, cell, out)
    c = c.model_copy(deep=True, update={"progress": False})
    result_path = out / "result.json"
    key = _options_hash(c)
    if result_path.is_file():
        old = json.loads(result_path.read_text())
        if old.get("options_hash") == key:
            log(f"  {out.name}: done before, skipped")
            return old
    t0 = time.perf_counter()
    run = RunFolder(out)
    m = run.manifest("videogpt-train")
    if m is not None and m.config_hash == videogpt.train_hash(c):
        # trained before (its evaluation did not finish): the models are kept
        info = json.loads(run.videogpt.model_json.read_text())
        log(f"  {out.name}: trained before, evaluating")
    else:
        vq_ckpt = _shared_vqvae(c, root, log)
        info = videogpt.train(c, _quiet, vqvae_checkpoint=vq_ckpt)
    ev = videogpt.evaluate(c.model_copy(deep=True, update={"videogpt": c.videogpt.model_copy(
        deep=True, update={"features": c.videogpt.features.model_copy(
            update={"random_baseline": False})})}), _quiet)
    gpt = info["gpt"]
    frames = gpt["steps"] * c.videogpt.gpt.train.batch_size * 2 * c.videogpt.video.clip_frames
    result = {"cell": cell, "name": out.name, "options_hash": key,
              "parameters": info["trainable_parameters"],
              "training_frames": frames,
              "training_flops": gpt["flops_per_sample"] * gpt["steps"] * c.videogpt.gpt.train.batch_size,
              "cross_entropy": info["held_out"]["cross_entropy"],
              "frequency_baseline": info["held_out"]["frequency_baseline"],
              "best_layer": ev["best_layer"], "seconds": round(time.perf_counter() - t0, 1)}
    write_json(result_path, result)
    log(f"  {out.name}: {result['parameters'] / 1e6:.3f} M parameters, "
        + ", ".join(f"{reg} r {b['median_r']:.3f}" for reg, b in ev["best_layer"].items())
        + f" ({result['seconds']:.0f} s)")
    return result


def run(config: RunConfig, log: Log = print) -> dict:
    """Every cell of the grid (this rank's, under torchrun), then the table and plots."""
    import os

    from cinebrain.train.distributed import (
        barrier,
        cleanup_distributed,
        launched_by_torchrun,
        setup_distributed,
        single_process,
    )

    root = sweep_dir(config)
    root.mkdir(parents=True, exist_ok=True)
    all_cells = cells(config)
    rank = int(os.environ.get("RANK", 0)) if launched_by_torchrun() else 0
    world = int(os.environ.get("WORLD_SIZE", 1)) if launched_by_torchrun() else 1
    mine = [c for i, c in enumerate(all_cells) if i % world == rank]
    say = log if rank == 0 else (lambda m: None)
    with single_process():
        for cell in mine:
            run_cell(config, cell, root, log if world == 1 else
                     (lambda m, r=rank: print(f"[rank {r}]{m}", flush=True)))
    if world > 1:
        setup_distributed("gloo")
        barrier()
    try:
        if rank != 0:
            return {}
        results = [json.loads((root / "cells" / cell_name(c) / "result.json").read_text())
                   for c in all_cells]
        summary = write_results(results, root, config.sweep.region)
        say(f"  {len(results)} cells: {root / 'results.csv'}, {root / 'scaling.json'}, "
            f"{root / 'plots'}")
        for region, fits in summary["fits"].items():
            f = fits["parameters"]
            say(f"  {region}: r against log10 parameters, slope {f['slope']:.3f} "
                f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]")
        return summary
    finally:
        if world > 1:
            barrier()
            cleanup_distributed()


def results_rows(results: list[dict]) -> list[dict]:
    """One row per cell and region: the cell's options, sizes and best-layer r."""
    rows = []
    for res in results:
        for region, best in res["best_layer"].items():
            rows.append({"cell": res["name"], **{k: v for k, v in res["cell"].items()},
                         "region": region, "r": best["median_r"], "best_layer": best["layer"],
                         "parameters": res["parameters"],
                         "training_frames": res["training_frames"],
                         "training_flops": res["training_flops"],
                         "cross_entropy": res["cross_entropy"],
                         "frequency_baseline": res["frequency_baseline"],
                         "seconds": res["seconds"]})
    return rows


def write_results(results: list[dict], root: Path, region: str | None = None) -> dict:
    """``results.csv``, ``scaling.json`` (log-linear fits per region and axis) and the
    plots (``plots/r_vs_<axis>.png``)."""
    from cinebrain.evaluate.scaling import loglinear_fit
    from cinebrain.report.plots import scaling_plot

    rows = results_rows(results)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    write_text(root / "results.csv", buf.getvalue())
    regions = list(dict.fromkeys(r["region"] for r in rows))
    if region is not None and region in regions:
        regions = [region] + [r for r in regions if r != region]
    fits = {reg: {axis: loglinear_fit([r[axis] for r in rows if r["region"] == reg],
                                      [r["r"] for r in rows if r["region"] == reg]).to_dict()
                  for axis in AXES} for reg in regions}
    plots = {}
    for axis, label in AXES.items():
        path = root / "plots" / f"r_vs_{axis}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        scaling_plot([r for reg in regions for r in rows if r["region"] == reg], axis, label,
                     {reg: fits[reg][axis] for reg in regions}, path)
        plots[axis] = path.relative_to(root).as_posix()
    summary = {"cells": len(results), "regions": regions, "fits": fits, "plots": plots}
    write_json(root / "scaling.json", summary)
    return summary
