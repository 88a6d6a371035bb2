"""``cinebrain demo``: the whole pipeline on the embedded simulated study.

Simulates the study if it is not there yet, then extracts features, fits banded ridge
(one band per modality) per subject with leave-one-run-out cross-validation (every run
predicted by a model fit on the others), evaluates the held-out predictions against the
across-subject noise ceiling and checks the recovery of the simulator's ground truth.
Then it trains the small multimodal autoencoder (preset ``demo``) on the same features and
responses, holding out the last run, scores it and banded ridge on that run against the
same ceiling, lesions
each modality, writes the stimulus reconstructions, and builds the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from cinebrain.config import RunConfig
from cinebrain.pipelines.runfolder import RunFolder

#: Demo bands: one per modality of the simulated study.
DEMO_BANDS = {
    "visual": ["video.pixels", "video.motion_energy"],
    "auditory": ["audio.mel", "audio.envelope"],
    "text": ["annotations.description"],
}


#: The demo's autoencoder training (preset "demo"; about 2-3 minutes on 2 CPU cores).
DEMO_AUTOENCODER = {"preset": "demo"}


def demo_config(study: Path, out: Path) -> RunConfig:
    """The run config the demo uses (also a good starting point for real studies)."""
    study, out = Path(study).resolve(), Path(out).resolve()
    return RunConfig.model_validate(
        {
            "study": str(study),
            "out": str(out),
            "features": {"annotation_columns": False, "transcript": []},
            "model": {"kind": "banded", "bands": DEMO_BANDS, "n_iter": 10},
            "split": {"scheme": "leave_one_run_out"},
            "evaluate": {
                "rois": str(study.parent / "ground_truth" / "modality.nii.gz"),
                "roi_labels": {1: "visual", 2: "auditory", 3: "language"},
            },
            "autoencoder": DEMO_AUTOENCODER,
        }
    )


def run_demo(data: str | Path = "cinebrain-demo/study", out: str | Path = "cinebrain-demo/run",
             quick: bool = False) -> dict:
    from cinebrain.data.simulate import simulate_study
    from cinebrain.pipelines import autoencoder, ridge

    t0 = time.perf_counter()
    data, out = Path(data), Path(out)
    study = data / "study.yaml"
    if not study.is_file():
        print(f"[simulate] writing the simulated study to {data}")
        kwargs = dict(n_subjects=2, n_runs=2, run_duration=90.0) if quick else {}
        simulate_study(data, **kwargs)
    else:
        print(f"[simulate] using the existing study {study}")
    config = demo_config(study, out)
    summary = ridge.run_all(config.model_copy(update={"report": False}))
    _verdict(summary)
    t1 = time.perf_counter()
    print("[autoencoder]")
    data = autoencoder.prepare(config)
    ae = autoencoder.train(config, data=data)
    for modality in config.autoencoder.lesion_modalities:
        autoencoder.lesion(config, modalities=[modality], data=data)
    summary["autoencoder"] = ae
    summary["stage_seconds"]["autoencoder"] = round(time.perf_counter() - t1, 1)
    if config.report:
        print("[report]")
        ridge.report(config)
    print(f"done in {time.perf_counter() - t0:.0f} s; open {RunFolder(out).report}")
    return summary


def _verdict(summary: dict) -> None:
    """Print whether the simulated ground truth was recovered."""
    rows = summary.get("ground_truth", {}).get("rows", [])
    if not rows:
        return
    import numpy as np

    def mean(region: str, key: str) -> float:
        vals = [r[key] for r in rows if r["region"] == region and key in r]
        return float(np.mean(vals)) if vals else float("nan")

    print("ground truth:")
    for region in ("visual", "auditory", "language"):
        r, c = mean(region, "median_r"), mean(region, "median_ceiling")
        print(f"  {region:<9} median r {r:.2f} of ceiling {c:.2f} ({r / c:.0%}); "
              f"{mean(region, 'fraction_significant'):.0%} significant; "
              f"{mean(region, 'fraction_assigned_true_band'):.0%} assigned to their true band "
              f"({mean(region, 'fraction_assigned_true_band_significant'):.0%} of the significant ones)")
    print(f"  undriven  median r {mean('undriven', 'median_r'):.3f}; "
          f"{mean('undriven', 'fraction_significant'):.1%} significant at FDR 5%")


#: The neuron demo's run (the README's neurons.yaml): the conv core on frames pooled to
#: 18 x 32, 40-frame windows, early stopping on validation r.
NEURON_DEMO = {"data": {"frames": 40, "downsample": 2},
               "model": {"core": "conv", "burn_in": 10},
               "train": {"epochs": 40, "device": "auto"}}
#: ``--quick``: a small study and a few epochs (a check that everything runs, in a minute).
NEURON_QUICK_STUDY = dict(neurons=(20, 24), n_train=8, n_validation=2, n_test=2, n_repeats=4,
                          train_frames=(60, 90), test_frames=60)


def run_neuron_demo(data: str | Path = "cinebrain-demo/neurons-demo",
                    out: str | Path = "cinebrain-demo/neurons-run", quick: bool = False) -> dict:
    """The neuron family end to end: simulate two sessions of model V1 neurons (if absent),
    train the conv core with readouts, shifter and behaviour modulator, score the test
    trials beside the frame-ridge baseline and against the simulator's ground truth, and
    build the report."""
    import json

    from cinebrain.config.neurons import validate_neuron_config
    from cinebrain.data.simulate.neurons import write_neuron_study
    from cinebrain.pipelines import neurons

    t0 = time.perf_counter()
    data, out = Path(data).resolve(), Path(out).resolve()
    if not (data / "truth.json").is_file():
        print(f"[simulate-neurons] writing the simulated study to {data}")
        write_neuron_study(data, **(NEURON_QUICK_STUDY if quick else {}))
    else:
        print(f"[simulate-neurons] using the existing study {data}")
    sessions = sorted(p for p in data.iterdir() if p.is_dir() and (p / "meta").is_dir())
    settings = json.loads(json.dumps(NEURON_DEMO))
    if quick:
        settings["data"]["frames"] = 20
        settings["model"]["burn_in"] = 4
        settings["train"]["epochs"] = 3
    config = validate_neuron_config({"sessions": [str(p) for p in sessions], "out": str(out),
                                     **settings}, "cinebrain demo --neurons")
    print(f"[neurons train] {len(sessions)} sessions, run folder {out}")
    summary = neurons.train(config)
    neurons.report(config)
    gt = summary.get("evaluation", {}).get("ground_truth")
    if gt:
        print(f"ground truth: correlation to average {gt['model_median_cta']:.3f}, "
              f"{gt['ratio_to_truth']:.2f}x the noiseless rates'; reading centres within "
              f"{gt['centre_tol']} for {gt['centres_within_tol']:.0%} of reliable neurons")
    print(f"done in {time.perf_counter() - t0:.0f} s; open {RunFolder(out).report}")
    return summary
