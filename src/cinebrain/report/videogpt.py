"""The report of the video models (VQ-VAE + VideoGPT) and of a scaling sweep.

Reads (through ``run.videogpt``, see :class:`cinebrain.pipelines.runfolder.VideoGPTFolder`)::

    model_json            both models' configs and parameters, training summaries, the
                          held-out PSNR, code usage and next-clip cross-entropy
    sample(k, kind)       held-out clips as mp4: real, predicted (GPT), reconstructed
    evaluation            layer-wise median r per region (trained and random weights),
                          the best layer per region, trained against random per layer
    metric(s, w, layer)   a subject's held-out r per voxel of one layer's ridge
    <run>/sweep/          a sweep's results.csv, scaling.json and plots (if one ran here)

and writes ``map("videogpt_best_layer_r")``, the figures ``videogpt_layers`` and
``videogpt_best_layer_glass``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np

from cinebrain.report import plots
from cinebrain.report import tables as t
from cinebrain.report.maps import plot_glass_brain, save_map, view_map_html
from cinebrain.report.page import ReportInputs, Section, image, note, read_json, viewer
from cinebrain.report.ridge import map_style


def _video(path: Path, width: int = 256) -> str:
    """An mp4 embedded in the page (the page stays self-contained)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<video controls loop muted width='{width}' "
            f"src='data:video/mp4;base64,{data}'></video>")


def _f(x, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def training_part(info: dict) -> str:
    h = info.get("held_out", {})
    vq, gpt = info.get("vqvae", {}), info.get("gpt", {})
    rows = [
        {"what": "VQ-VAE", "parameters": sum(vq.get("parameters", {}).values()),
         "steps": vq.get("steps"), "seconds": vq.get("train_seconds"),
         "held_out": f"PSNR {_f(h.get('psnr'), 2)} dB, {_f(100 * h.get('usage', np.nan), 0)} % "
                     "of codes used" + (f" (from {vq['from']})" if vq.get("from") else "")},
        {"what": "GPT", "parameters": info.get("trainable_parameters"),
         "steps": gpt.get("steps"), "seconds": gpt.get("train_seconds"),
         "held_out": f"next-clip cross-entropy {_f(h.get('cross_entropy'))} nats/code "
                     f"(code frequencies: {_f(h.get('frequency_baseline'))})"},
    ]
    columns = [t.Column("what", "Model", "stage"),
               t.Column("parameters", "Trainable parameters", "", t.count),
               t.Column("steps", "Steps", "optimizer steps", t.count),
               t.Column("seconds", "Training", "wall-clock time of training", t.time_s),
               t.Column("held_out", "Held out", "on clips of the held-out runs' movie")]
    return t.table(rows, columns, "The two stages, trained on the training runs' movie only; "
                   "scored on the held-out runs' clips.")


def samples_part(inputs: ReportInputs) -> str:
    v = inputs.run.videogpt
    cells = []
    for k in range(32):
        files = {kind: v.sample(k, kind) for kind in ("real", "predicted", "reconstructed")}
        if not files["real"].is_file():
            break
        cells.append("<tr>" + "".join(
            f"<td>{_video(p)}</td>" if p.is_file() else "<td></td>" for p in files.values())
            + "</tr>")
    if not cells:
        return ""
    return ("<h3>Held-out clips</h3>" + note(
        "Left: the real next clip. Middle: the GPT's sample of it from the previous clip's "
        "codes. Right: the VQ-VAE's reconstruction of the real clip (the ceiling of what the "
        "codes can show).")
        + "<table><tr><th>Real</th><th>Predicted</th><th>Reconstructed</th></tr>"
        + "".join(cells) + "</table>")


def layers_part(inputs: ReportInputs, ev: dict) -> str:
    table = ev.get("table", [])
    if not table:
        return ""
    shown = [r for r in table if r["region"] not in ("driven", "undriven")]
    png = plots.layer_profile_plot(shown, inputs.out.figure("videogpt_layers"))
    best = [{"region": k, "layer": b["layer"], "r": b["median_r"]}
            for k, b in ev.get("best_layer", {}).items()]
    parts = [image(png, "Median held-out r of ridge on each GPT layer alone, per region: the "
                        "trained model (solid) and the same architecture with random weights "
                        "(dashed)."),
             t.table(best, [t.Column("region", "Region", ""), t.Column("layer", "Best layer", ""),
                            t.Column("r", "Median r", "held out", t.r)],
                     "The layer that predicts each region best.")]
    comp = [c for c in ev.get("trained_vs_random", [])
            if any(c["region"] == b["region"] and c["layer"] == b["layer"] for b in best)]
    if comp:
        parts.append(t.table(comp, [
            t.Column("region", "Region", ""), t.Column("layer", "Layer", ""),
            t.Column("median_a", "Trained r", "median held-out r", t.r),
            t.Column("median_b", "Random r", "the same layer with random weights", t.r),
            t.Column("fraction_a_better", "Voxels trained better", "", t.percent),
            t.Column("wilcoxon_p", "Wilcoxon p", "one-sided signed-rank, paired across voxels",
                     t.value),
            t.Column("n", "Voxels", "", t.count)],
            "Trained against random weights at each region's best layer."))
    return "".join(parts)


def best_map_part(inputs: ReportInputs, ev: dict) -> str:
    best = ev.get("best_layer", {}).get("visual") or ev.get("best_layer", {}).get("all")
    if best is None or inputs.mask_img is None:
        return ""
    v = inputs.run.videogpt
    files = [v.metric(s, "trained", best["layer"]) for s in inputs.subjects]
    values = [np.load(f) for f in files if f.is_file()]
    values = [x for x in values if x.shape == (inputs.n_voxels,)]
    if not values:
        return ""
    mean_map = inputs.produce(inputs.run.map("videogpt_best_layer_r"),
                              inputs.out.map("videogpt_best_layer_r"), files,
                              lambda p: save_map(plots.nanmean(np.stack(values), axis=0),
                                                 inputs.mask_img, p))
    style = map_style("r", values)
    title = f"VideoGPT {best['layer']}: held-out r"
    png = inputs.produce(inputs.run.figure("videogpt_best_layer_glass"),
                         inputs.out.figure("videogpt_best_layer_glass"), [mean_map],
                         lambda p: plot_glass_brain(mean_map, title, p, **style))
    return (image(png, f"Held-out r of ridge on {best['layer']} (mean over subjects).")
            + viewer(view_map_html(mean_map, title, **style),
                     "Interactive slices of the best layer's mean r."))


def sweep_part(inputs: ReportInputs) -> str:
    folder = inputs.run.sweep
    root = folder.base
    summary = read_json(folder.scaling)
    if not isinstance(summary, dict):
        return ""
    parts = [note(f"{summary.get('cells', 0)} cells; held-out r of each cell's best layer per "
                  "region, with log-linear fits r = a + b log10(x) (slope per decade and its 95 % "
                  "interval).")]
    for axis, rel in summary.get("plots", {}).items():
        path = root / rel
        if path.is_file():
            parts.append(image(path.read_bytes(), f"Held-out r against {axis.replace('_', ' ')}."))
    rows = [{"region": reg, "axis": axis, "slope": f["slope"], "lo": f["ci"][0], "hi": f["ci"][1],
             "n": f["n"]} for reg, per in summary.get("fits", {}).items() for axis, f in per.items()]
    parts.append(t.table(rows, [
        t.Column("region", "Region", ""), t.Column("axis", "Against", ""),
        t.Column("slope", "Slope", "r per decade", t.r), t.Column("lo", "95 % low", "", t.r),
        t.Column("hi", "95 % high", "", t.r), t.Column("n", "Cells", "", t.count)],
        "Log-linear fits of the scaling study."))
    csv_path = folder.results
    if csv_path.is_file():
        href = Path(os.path.relpath(csv_path, Path(inputs.run.report).parent)).as_posix()
        parts.append(f"<p><a href='{t.esc(href)}'>results.csv</a></p>")
    return "".join(parts)


def videogpt_sections(inputs: ReportInputs) -> list[Section]:
    """The video models' sections: training, held-out clips, layer-wise r, the best
    layer's map; the scaling sweep. [] without their files."""
    v = inputs.run.videogpt
    info = read_json(v.model_json)
    sections = []
    if isinstance(info, dict):
        ev = read_json(v.evaluation)
        ev = ev if isinstance(ev, dict) else {}
        body = training_part(info) + samples_part(inputs) + layers_part(inputs, ev) \
            + best_map_part(inputs, ev)
        sections.append(Section("Video model (VQ-VAE + VideoGPT)", body))
    sweep = sweep_part(inputs)
    if sweep:
        sections.append(Section("Scaling study", sweep))
    return sections
