"""The report of a neuron run (``cinebrain neurons train``): scores per neuron against the
oracle, the model against the frame-ridge baseline, and for a simulated study its ground
truth: reading centres on the screen against the true receptive fields, learned against
true behaviour gains, the behaviour shuffle on modulated and unmodulated neurons.

Reads ``summary.json`` and ``neurons/metrics/<session>/<name>.npy``
(:class:`cinebrain.pipelines.runfolder.NeuronFolder`); writes the figures
``neurons_scores``, ``neurons_centres``, ``neurons_gains``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cinebrain.report import plots
from cinebrain.report import tables as t
from cinebrain.report.page import ReportInputs, Section, image, note, read_json


def _metric(run, session: str, name: str) -> np.ndarray | None:
    path = run.neurons.metric(session, name)
    return np.load(path) if path.is_file() else None


def _scores_plot(per: dict, path: Path) -> bytes:
    fig = Figure(figsize=(8.4, 3.4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (name, d) in enumerate(per.items()):
        if d["oracle"] is not None and d["model"] is not None:
            ax1.plot(d["oracle"], d["model"], "o", ms=3, alpha=0.7, color=f"C{i}", label=name)
        if d["baseline"] is not None and d["model"] is not None:
            ax2.plot(d["baseline"], d["model"], "o", ms=3, alpha=0.7, color=f"C{i}", label=name)
    for ax, xl in ((ax1, "oracle r"), (ax2, "frame ridge: correlation to average")):
        lo, hi = ax.get_xlim()
        ax.plot([min(lo, 0), hi], [min(lo, 0), hi], "k--", lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel("model: correlation to average")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return plots._png(fig, path)


def _centres_plot(per: dict, path: Path) -> bytes:
    fig = Figure(figsize=(7.2, 4.0))
    ax = fig.add_subplot()
    for i, (name, d) in enumerate(per.items()):
        est, true = d["reading_centre"], d["true_centre"]
        ax.plot(true[:, 0], true[:, 1], "o", ms=4, mfc="none", color=f"C{i}",
                label=f"{name}: true RF centre")
        ax.plot(est[:, 0], est[:, 1], ".", ms=4, color=f"C{i}", label=f"{name}: readout")
        for a, b in zip(true, est, strict=True):
            ax.plot([a[0], b[0]], [a[1], b[1]], color=f"C{i}", lw=0.5, alpha=0.6)
    ax.set_xlim(-1, 1)
    ax.set_ylim(1, -1)  # screen rows grow downwards
    ax.set_xlabel("screen x")
    ax.set_ylabel("screen y")
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.tight_layout()
    return plots._png(fig, path)


def _gains_plot(per: dict, path: Path) -> bytes:
    fig = Figure(figsize=(8.4, 3.4))
    for j, (key, label) in enumerate((("running", "running (per cm/s)"),
                                      ("pupil", "pupil (per unit)"))):
        ax = fig.add_subplot(1, 2, j + 1)
        for i, (name, d) in enumerate(per.items()):
            x, y = d[f"true_{key}_gain"], d[f"learned_{key}_gain"]
            mod = d["modulated"].astype(bool)
            ax.plot(x[mod], y[mod], "o", ms=3, color=f"C{i}", label=f"{name} modulated")
            ax.plot(x[~mod], y[~mod], "x", ms=3, color=f"C{i}", label=f"{name} unmodulated")
        ax.set_xlabel(f"true gain, {label}")
        ax.set_ylabel("learned gain (d log rate)")
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return plots._png(fig, path)


def _score_rows(summary: dict) -> list[dict]:
    rows = []
    for name, entry in summary.get("sessions", {}).items():
        for who in ("model", "baseline"):
            sc = entry.get(who, {})
            if sc:
                rows.append({"session": name, "who": who, "n": entry.get("n_neurons"),
                             **{k: v.get("median") for k, v in sc.items()}})
    return rows


def neuron_sections(inputs: ReportInputs) -> list[Section]:
    """A neuron run's sections; [] for a run without neuron scores."""
    base = inputs.run
    summary = read_json(base.summary)
    if not isinstance(summary, dict) or "sessions" not in summary or not any(
            _metric(base, n, m) is not None for n in summary["sessions"]
            for m in summary.get("metrics", [])):
        return []
    names = list(summary["sessions"])
    rows = _score_rows(summary)
    metric_names = [m for m in ("single_trial_r", "correlation_to_average", "oracle_r", "feve",
                                "ccnorm", "bits_per_spike", "behavior_shuffle_drop")
                    if any(m in r for r in rows)]
    columns = [t.Column("session", "Session", ""), t.Column("who", "Model", ""),
               t.Column("n", "Neurons", "", t.count)] + [
        t.Column(m, m.replace("_", " "), "median over neurons", t.r) for m in metric_names]
    body = [t.table(rows, columns, "Held-out scores per session (medians over neurons): the "
                    "model and the frame-ridge baseline on the same test frames.")]
    per = {n: {"model": _metric(base, n, "correlation_to_average"),
               "baseline": _metric(base, n, "baseline_correlation_to_average"),
               "oracle": _metric(base, n, "oracle_r")} for n in names}
    body.append(image(_scores_plot(per, inputs.out.figure("neurons_scores")),
                      "Each dot a neuron. Left: the model's correlation to the average over "
                      "repeats against the oracle (how well the other repeats predict one). "
                      "Right: the model against the frame-ridge baseline."))
    sections = [Section("Neurons: scores", "".join(body))]
    gt = summary.get("ground_truth")
    truth = {n: {k: _metric(base, n, k) for k in (
        "reading_centre", "true_centre", "learned_running_gain", "true_running_gain",
        "learned_pupil_gain", "true_pupil_gain", "modulated")} for n in names}
    if gt and all(v is not None for d in truth.values() for v in d.values()):
        rows = [
            {"what": "correlation to average, model / noiseless ground truth",
             "value": f"{gt['model_median_cta']:.3f} / {gt['truth_median_cta']:.3f}"
                      + (f" ({gt['ratio_to_truth']:.2f}x)" if gt.get("ratio_to_truth") else "")},
            {"what": f"reading centres within {gt['centre_tol']} of the true RF (neurons above "
                     "median reliability)",
             "value": f"{100 * gt['centres_within_tol']:.0f} % of {gt['n_reliable']} "
                      f"(median error {gt['median_centre_error']:.3f})"},
            {"what": "learned vs true running gain, r over neurons",
             "value": f"{gt['running_gain_r']:.3f}" if gt.get("running_gain_r") is not None else ""},
            {"what": "learned vs true pupil gain, r over neurons",
             "value": f"{gt['pupil_gain_r']:.3f}" if gt.get("pupil_gain_r") is not None else ""},
        ]
        if gt.get("shuffle_drop_modulated") is not None:
            rows.append({"what": "behaviour shuffle: drop of single-trial r, modulated / "
                                 "unmodulated neurons (median)",
                         "value": f"{gt['shuffle_drop_modulated']:.3f} / "
                                  f"{gt['shuffle_drop_unmodulated']:.3f}"})
        parts = [t.table(rows, [t.Column("what", "Ground truth", ""),
                                t.Column("value", "Recovered", "")],
                         "The simulated study's truth against what the model learned."),
                 image(_centres_plot(truth, inputs.out.figure("neurons_centres")),
                       "Reading centres of the readouts (dots, with the eye shifter's mean "
                       "shift) against the true receptive-field centres (circles), joined by "
                       "a line per neuron."),
                 image(_gains_plot(truth, inputs.out.figure("neurons_gains")),
                       "Learned behaviour gain (the mean change in log rate per unit of "
                       "running or pupil size) against the simulator's gain, per neuron.")]
        sections.append(Section("Neurons: ground truth", "".join(parts)))
    else:
        sections[0] = Section(sections[0].title, sections[0].body + note(
            "No ground truth: real recordings (a simulated study keeps truth.npz beside its "
            "sessions)."))
    return sections
