"""The report stage: every family's sections of a run folder in one ``report.html``.

Reads the current outputs of every stage that ran (refusing outputs of an earlier fit or
training than the current one) and writes maps, figures and the page as one stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cinebrain.config import RunConfig, section_hash
from cinebrain.errors import InputError
from cinebrain.pipelines import ridge
from cinebrain.pipelines.runfolder import RunFolder

Log = Callable[[str], None]


def build(config: RunConfig, log: Log = ridge._print) -> Path:
    """Build ``report.html`` of the run folder of ``config``; returns its path."""
    from cinebrain.evaluate import comparison_regions
    from cinebrain.report import build_report

    run = RunFolder(config.out)
    depends = [s for s in ("features", "fit", "evaluate", "train", "videogpt-train",
                           "videogpt-evaluate") if run.manifest(s)]
    if not {"evaluate", "train", "videogpt-train"} & set(depends):
        raise InputError(run.root, "nothing to report yet",
                         "run `cinebrain evaluate` (or `cinebrain train`, `cinebrain videogpt "
                         "train`) first")
    subjects: list[str] = []
    for stage in depends:
        m = run.require(stage)
        for s in m.info.get("subjects", []):
            if stage in ("evaluate", "train", "videogpt-evaluate") and s not in subjects:
                subjects.append(s)
    lesions = run.stages("lesion-")
    for stage in lesions:
        run.require(stage)
    study = ridge.load(config)
    if "features" in depends:
        _, _, mask = ridge.read_features(run)
    else:  # a video-model run: the study's mask
        from cinebrain.data.study import study_mask

        mask = study_mask(study, subjects or None)
    modality, rois = ridge.regions_of(config, study, mask)
    regions = comparison_regions(modality, rois) if mask is not None else None
    with run.stage("report", depends=depends + lesions,
                   config_hash=section_hash(config, "evaluate"),
                   owns=("maps", "figures")) as st:
        build_report(run, st, subjects=subjects, mask_img=mask, regions=regions,
                     fdr=config.evaluate.fdr)
    return run.report
