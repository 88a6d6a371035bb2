"""A shared-design ROI study fitted once, against the same subjects fitted one by one.

    python benchmarks/shared_design.py                  # 17 subjects x 6 ROIs, 4 runs, ridge
    python benchmarks/shared_design.py --kind banded    # banded ridge over the two bands

Every subject watched the same movie in the same runs, so they share one design: an
annotation table of the movie's shots (objects in view, several per shot; the place; the
characters; a slow numeric "arousal" rating) becomes indicator and slow features
(:func:`cinebrain.features.annotations.annotation_features`), put on each run's TR grid
with FIR delays and drift-filtered as ``cinebrain fit`` does
(:func:`cinebrain.data.design.design_matrix`, :func:`~cinebrain.data.design.remove_drifts`):
1000 features in two bands (objects; place + characters + arousal). Each subject's six ROI
responses are a subject-specific mixture of the features plus noise, cleaned per run
(:func:`~cinebrain.data.design.clean_responses`).

Leave-one-run-out, penalties per ROI by inner CV (ridge; ``--kind banded``: banded ridge), in one run of
this script: :func:`cinebrain.linear.encoding.fit_shared_encoding_models` (every
decomposition once, the subjects' targets stacked) and
:func:`~cinebrain.linear.encoding.fit_encoding_model` per subject. Prints both times, their
ratio, and how far the two agree (alphas, predictions). Never asserts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from cinebrain.data.design import clean_responses, design_matrix, remove_drifts
from cinebrain.data.splits import gap_trs, run_index_from_lengths
from cinebrain.data.study import RunTiming
from cinebrain.features.annotations import annotation_features
from cinebrain.linear.encoding import (
    alpha_grid,
    fit_encoding_model,
    fit_shared_encoding_models,
)
from cinebrain.metrics import pearson_r

TR = 1.5
DELAYS = (1, 2, 3, 4)


def movie_annotations(seed: int, seconds: float, n_objects: int = 200, n_places: int = 40,
                      n_characters: int = 9) -> pd.DataFrame:
    """Shots of 1.5 to 6 s, each with 1 to 4 objects, a place (scenes of a few shots), 0
    to 3 characters and a slowly drifting arousal rating."""
    rng = np.random.default_rng(seed)
    rows, t, scene = [], 0.0, 0
    places = rng.permutation(n_places)  # scenes visit every place, then revisit
    arousal = 0.0
    while t < seconds:
        d = float(rng.uniform(1.5, 6.0))
        scene += rng.random() < 0.2
        place = int(places[scene % n_places])
        arousal = 0.95 * arousal + rng.normal(0, 0.3)
        # every object seen at least once (shot k shows object k mod n_objects)
        objects = {len(rows) % n_objects, *rng.choice(n_objects, size=int(rng.integers(0, 4)))}
        chars = rng.choice(n_characters, size=int(rng.integers(0, 4)), replace=False)
        rows.append({"onset": t, "offset": min(t + d, seconds),
                     "object": ",".join(f"obj{o:03d}" for o in sorted(objects)),
                     "place": f"place{place:02d}",
                     "character": ",".join(f"char{c}" for c in chars),
                     "arousal": arousal})
        t += d
    return pd.DataFrame(rows)


def shared_design(n_runs: int, n_trs: int, seed: int = 0):
    """The design every subject shares: X (n_trs_total, 1000), run index, band sizes."""
    seconds = n_runs * n_trs * TR
    df = movie_annotations(seed, seconds)
    # objects and characters are multi-valued cells; places one per shot
    spaces = annotation_features(df, categorical=["object", "character"], separator=",")
    spaces.update(annotation_features(df, categorical=["place"], numeric=["arousal"]))
    run_len = n_trs * TR
    timings = [RunTiming("shared", f"run-{i + 1}", n_trs, (i * run_len, (i + 1) * run_len), 0.0)
               for i in range(n_runs)]
    bands = {"objects": ["object"], "context": ["place", "character", "arousal"]}
    X, sizes = design_matrix(spaces, bands, timings, TR, hrf="fir", delays=DELAYS)
    run_index = run_index_from_lengths([n_trs] * n_runs)
    return remove_drifts(X, run_index, TR), run_index, sizes, list(bands)


def subject_responses(X, run_index, n_subjects: int, n_rois: int, seed: int = 1):
    """Each subject's cleaned ROI responses: a group mixture of the features, perturbed
    per subject, plus noise (signal amplitude varying over ROIs)."""
    rng = np.random.default_rng(seed)
    Z = (X - X.mean(0)) / (X.std(0) + 1e-6)
    sparse = rng.random((X.shape[1], n_rois)) < 0.05
    group = rng.standard_normal((X.shape[1], n_rois)) * sparse
    Ys = []
    for _ in range(n_subjects):
        W = group + 0.3 * rng.standard_normal(group.shape) * sparse
        signal = Z @ W
        signal /= signal.std(0)
        snr = np.linspace(0.2, 1.0, n_rois)
        Y = signal * snr + rng.standard_normal(signal.shape)
        Ys.append(clean_responses(Y.astype(np.float32), run_index, TR))
    return Ys


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subjects", type=int, default=17)
    p.add_argument("--rois", type=int, default=6)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--trs", type=int, default=300, help="TRs per run")
    p.add_argument("--kind", choices=["ridge", "banded"], default="ridge")
    p.add_argument("--n-iter", type=int, default=20, help="band-weight candidates")
    p.add_argument("--cv-folds", type=int, default=5)
    p.add_argument("--no-one-by-one", action="store_true", help="skip the one-by-one fits")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    X, run_index, sizes, names = shared_design(args.runs, args.trs)
    Ys = subject_responses(X, run_index, args.subjects, args.rois)
    t_data = time.perf_counter() - t0
    print(f"design: {X.shape[0]} TRs ({args.runs} runs) x {X.shape[1]} features "
          f"(bands {dict(zip(names, sizes, strict=True))}, FIR delays {list(DELAYS)}); "
          f"{args.subjects} subjects x {args.rois} ROIs ({t_data:.1f} s to build)")
    kw = dict(scheme="leave_one_run_out", kind=args.kind, alphas=alpha_grid(), n_iter=args.n_iter,
              cv_folds=args.cv_folds, gap=gap_trs(TR), variance_partitioning=False)

    t0 = time.perf_counter()
    shared = fit_shared_encoding_models(X, Ys, run_index, sizes, names, **kw)
    t_shared = time.perf_counter() - t0
    r = np.stack([pearson_r(Y[res.test_rows], res.pred) for Y, res in zip(Ys, shared, strict=True)])
    print(f"shared design, fitted once:   {t_shared:6.1f} s  (leave-one-run-out, {args.kind}; "
          f"median held-out r {np.median(r):.3f})")
    if args.no_one_by_one:
        return
    t0 = time.perf_counter()
    alone = [fit_encoding_model(X, Y, run_index, sizes, names, **kw) for Y in Ys]
    t_alone = time.perf_counter() - t0
    print(f"one subject at a time:        {t_alone:6.1f} s")
    print(f"speed-up: {t_alone / t_shared:.1f}x")
    same_alpha = np.mean([np.mean(a.model.alphas == s.model.alphas) for a, s in zip(alone, shared, strict=True)])
    diff = max(float(np.abs(a.pred - s.pred).max()) for a, s in zip(alone, shared, strict=True))
    print(f"agreement: {100 * same_alpha:.1f} % of alphas equal, predictions within {diff:.1e}")


if __name__ == "__main__":
    main()
