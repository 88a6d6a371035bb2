"""The report of the multimodal autoencoder: against ridge, lesions, reconstructions.

Reads (through ``run.autoencoder``, see :mod:`cinebrain.report.layout`)::

    comparison           autoencoder vs ridge per region, reconstruction of the held-out
                         stimulus against the training mean, training summary per model
    metric(s, name)      r (the autoencoder's held-out r), ridge_r (ridge on the same rows)
    lesion_json(name)    per subject and region: relative change of the predicted
                         response, delta r, reconstruction loss intact and lesioned
    lesion_map(...)      the lesion's per-voxel maps (mean over subjects, or a subject's)
    reconstruction(m)    video.mp4, audio.wav (linked from the page), text.tsv (shown)

and writes ``map("autoencoder_mean_r")`` and the figures ``autoencoder_vs_ridge``,
``autoencoder_mean_r_glass``, ``lesion_<name>_relative_change_slices``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from cinebrain.report import plots
from cinebrain.report import tables as t
from cinebrain.report.maps import plot_glass_brain, plot_slices, save_map, view_map_html
from cinebrain.report.page import ReportInputs, Section, image, note, read_json, viewer
from cinebrain.report.ridge import map_style


def region_table(comparison: dict) -> str:
    rows = [r for r in comparison.get("regions") or [] if isinstance(r, dict)]
    columns = [
        t.Column("region", "Region", "all: every voxel of the mask"),
        t.Column("n_voxels", "Voxels", "voxels in the region", t.count),
        t.Column("autoencoder_median_r", "Autoencoder r", "median held-out r of the "
                 "autoencoder", t.r),
        t.Column("ridge_median_r", "Ridge r", "median held-out r of banded ridge on the same "
                 "held-out responses", t.r),
        t.Column("ratio", "Ratio", "autoencoder r / ridge r", t.ratio),
        t.Column("median_ceiling", "Median ceiling", "median noise ceiling", t.r),
        t.Column("fraction_voxels_autoencoder_better", "Autoencoder better",
                 "share of voxels where the autoencoder's r is the higher", t.percent),
    ]
    return t.table(rows, columns, "Autoencoder against ridge per region, mean over subjects.")


def reconstruction_table(comparison: dict) -> str:
    recon = comparison.get("reconstruction") or {}
    rows = [{"modality": m, **v} for m, v in recon.items() if isinstance(v, dict)]
    columns = [
        t.Column("modality", "Modality"),
        t.Column("loss", "Loss", "how reconstruction is scored"),
        t.Column("autoencoder", "Autoencoder", "loss of the reconstruction", t.value),
        t.Column("mean_baseline", "Training mean", "loss of predicting the training mean",
                 t.value),
        t.Column("ratio", "Ratio", "autoencoder / training mean (below 1: better than the "
                 "mean)", t.ratio),
    ]
    return t.table(rows, columns, "Reconstruction of the held-out stimulus.")


def training_table(comparison: dict) -> str:
    training = comparison.get("training") or {}
    rows = [{"model": k, **v} for k, v in training.items() if isinstance(v, dict)]
    columns = [
        t.Column("model", "Model", "all: one model shared by the subjects; else the subject "
                 "group of a per-subject model"),
        t.Column("steps", "Steps", "optimiser steps", t.count),
        t.Column("epochs", "Epochs", "passes over the training data", t.count),
        t.Column("train_seconds", "Time", "training wall time", t.seconds),
        t.Column("best_val_r", "Best validation r", "median r on the validation data at the "
                 "kept checkpoint", t.r),
        t.Column("stopped_early", "Stopped early", "training ended by early stopping", t.yes_no),
    ]
    return t.table(rows, columns, "Training.")


def _lesion_words(info: dict) -> str:
    """What a lesion removed, in words."""
    parts = []
    if info.get("modalities"):
        parts.append("inputs removed: " + ", ".join(map(str, info["modalities"])))
    units = info.get("units") or []
    if units:
        to = "their training mean" if info.get("mode") == "mean" else "zero"
        shown = ", ".join(map(str, units[:16])) + (", …" if len(units) > 16 else "")
        parts.append(f"{len(units):,} bottleneck unit{'s' if len(units) != 1 else ''} set to "
                     f"{to}: {shown}")
    words = "; ".join(parts)
    return words[:1].upper() + words[1:] + "." if words else ""


def lesion_part(inputs: ReportInputs, name: str) -> str:
    ae, out = inputs.run.autoencoder, inputs.out
    info = read_json(ae.lesion_json(name))
    if not isinstance(info, dict):
        return ""
    part = f"<h3>{t.esc(info.get('name', name))}</h3>"
    words = _lesion_words(info)
    part += f"<p>{t.esc(words)}</p>" if words else ""
    img = ae.lesion_map(name, None, "relative_change")
    if not img.is_file():
        img = next((p for s in inputs.subjects
                    if (p := ae.lesion_map(name, s, "relative_change")).is_file()), img)
    if img.is_file():
        fig = f"lesion_{name}_relative_change_slices"
        png = inputs.produce(
            inputs.run.figure(fig), out.figure(fig), [img],
            lambda p: plot_slices(img, f"lesion {name}: relative change of the predicted "
                                  "response", p, vmax=1.0, cmap="inferno", symmetric=False))
        part += image(png, "Standard deviation over the held-out run of the change in "
                      "predicted response, relative to the intact prediction's (0: unaffected).")
    subjects = {s: v for s, v in (info.get("subjects") or {}).items() if isinstance(v, dict)}
    region_rows = [{"region": region, "subject": s, **vals}
                   for s, entry in subjects.items()
                   for region, vals in (entry.get("regions") or {}).items()]
    part += t.table(
        t.mean_over(region_rows, "region", ("mean_relative_change", "median_delta_r"),
                    first=("n_voxels",)),
        [t.Column("region", "Region"),
         t.Column("n_voxels", "Voxels", "voxels in the region", t.count),
         t.Column("mean_relative_change", "Relative change", "mean over the region's voxels "
                  "of the change of the predicted response relative to the intact one", t.r),
         t.Column("median_delta_r", "Δr", "median change of held-out r (lesioned - intact)",
                  t.signed)],
        f"Effect of the lesion per region, mean over {len(subjects)} subject"
        f"{'s' if len(subjects) != 1 else ''}.")
    part += t.table(
        [{"subject": s, **e} for s, e in subjects.items()],
        [t.Column("subject", "Subject"),
         t.Column("median_relative_change", "Relative change", "median over voxels", t.r),
         t.Column("median_r_intact", "r intact", "median held-out r of the intact model", t.r),
         t.Column("median_r_lesioned", "r lesioned", "the same with the lesion", t.r)],
        "Effect of the lesion per subject.")
    recon_rows = [{"modality": m, "subject": s, **v}
                  for s, e in subjects.items() for m, v in (e.get("recon") or {}).items()
                  if isinstance(v, dict)]
    merged = t.mean_over(recon_rows, "modality", ("intact", "lesioned"))
    for row in merged:
        a, b = t.number(row["intact"]), t.number(row["lesioned"])
        row["rise"] = b / a if a and b is not None else None
    part += t.table(
        merged,
        [t.Column("modality", "Modality"),
         t.Column("intact", "Intact", "reconstruction loss of the intact model", t.value),
         t.Column("lesioned", "Lesioned", "the same with the lesion", t.value),
         t.Column("rise", "Ratio", "lesioned / intact (above 1: the lesion hurts)", t.ratio)],
        "Reconstruction of the held-out stimulus, mean over subjects.")
    return part


def _link(inputs: ReportInputs, path: Path) -> str:
    """``path`` relative to where ``report.html`` goes in the committed run folder."""
    return Path(os.path.relpath(path, inputs.run.report.parent)).as_posix()


def reconstruction_parts(inputs: ReportInputs) -> str:
    ae = inputs.run.autoencoder
    parts = []
    video, audio, text = (ae.reconstruction(m) for m in ("video", "audio", "text"))
    if video.is_file():
        href = t.esc(_link(inputs, video))
        parts.append(
            "<h3>Frames</h3>" + note("Reconstructed (top) and presented (bottom) luminance "
                                     "per TR of the held-out run.")
            + f"<video controls width='512' src='{href}'></video>"
            f"<p><a href='{href}'>{t.esc(video.name)}</a></p>")
    if audio.is_file():
        href = t.esc(_link(inputs, audio))
        parts.append(
            "<h3>Sound</h3>" + note("Griffin-Lim from the reconstructed mel spectrum (one "
                                    "frame per TR: the spectral colour, not the words).")
            + f"<audio controls src='{href}'></audio>"
            f"<p><a href='{href}'>{t.esc(audio.name)}</a></p>")
    if text.is_file():
        with open(text, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        shown = 40
        columns = [
            t.Column("tr", "TR", "index of the held-out TR", t.count),
            t.Column("onset", "Onset", "time from the start of the held-out run", t.time_s),
            t.Column("reconstructed", "Reconstructed", "the annotation sentence nearest to the "
                     "reconstructed text embedding"),
            t.Column("cosine", "Cosine", "cosine similarity of that sentence's embedding", t.r),
            t.Column("presented", "Presented", "the text shown at that TR"),
        ]
        more = f" First {shown} of {len(rows):,} TRs." if len(rows) > shown else ""
        parts.append("<h3>Text</h3>" + t.table(rows[:shown], columns,
                                              "Reconstructed text per TR." + more))
    return "".join(parts)


def autoencoder_sections(inputs: ReportInputs) -> list[Section]:
    """The autoencoder's sections: against ridge (tables, voxel scatter, its mean r map
    with an interactive viewer), lesions, stimulus reconstruction. [] without its files."""
    run, out = inputs.run, inputs.out
    ae = run.autoencoder
    comparison = read_json(ae.comparison)
    comparison = comparison if isinstance(comparison, dict) else {}
    r_files = {s: ae.metric(s, "r") for s in inputs.subjects if ae.metric(s, "r").is_file()}
    ae_r = {s: np.load(f) for s, f in r_files.items()}
    ridge_r = {s: np.load(ae.metric(s, "ridge_r")) for s in inputs.subjects
               if ae.metric(s, "ridge_r").is_file()}
    sections = []
    body = [
        region_table(comparison),
        reconstruction_table(comparison),
        training_table(comparison),
    ]
    both = [s for s in ae_r if s in ridge_r and ae_r[s].shape == ridge_r[s].shape]
    if both:
        n = ae_r[both[0]].size
        groups = {k: v for k, v in inputs.regions.items() if np.shape(v) == (n,)}
        png = plots.model_scatter_plot({s: ridge_r[s] for s in both}, {s: ae_r[s] for s in both},
                                       out.figure("autoencoder_vs_ridge"), groups=groups or None)
        body.append(image(png, "Each dot a voxel of a subject: held-out r of banded ridge (x) "
                               "and of the autoencoder (y)."))
    values = [v for v in ae_r.values() if v.shape == (inputs.n_voxels,)]
    if values:
        mean_map = inputs.produce(
            run.map("autoencoder_mean_r"), out.map("autoencoder_mean_r"), r_files.values(),
            lambda p: save_map(plots.nanmean(np.stack(values), axis=0), inputs.mask_img, p))
        style = map_style("r", values)
        title = "autoencoder: Pearson r, held out"
        png = inputs.produce(run.figure("autoencoder_mean_r_glass"),
                             out.figure("autoencoder_mean_r_glass"), [mean_map],
                             lambda p: plot_glass_brain(mean_map, title, p, **style))
        body.append(image(png, "Autoencoder held-out r (mean over subjects)."))
        body.append(viewer(view_map_html(mean_map, title, **style),
                           "Interactive slices of the autoencoder's mean r: click to move the "
                           "cut; the value under the cursor is shown."))
    if any(body):
        sections.append(Section("Autoencoder vs ridge", "".join(body)))
    lesions = "".join(lesion_part(inputs, name) for name in ae.lesion_names())
    if lesions:
        sections.append(Section("Autoencoder lesions", lesions))
    recon = reconstruction_parts(inputs)
    if recon:
        sections.append(Section("Stimulus reconstruction", recon))
    return sections
