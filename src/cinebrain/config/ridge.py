"""The ridge pipeline's sections: ``alignment``, ``model``, ``split``, ``evaluate``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cinebrain.config.base import Section, unused_option


class AlignmentConfig(Section):
    """How features meet the TR grid."""

    hrf: Literal["spm", "glover", "fir", "none"] = Field(
        "spm", description="canonical HRF (spm, glover) applied from each volume's acquisition "
        "time, FIR delays (fir), or none: no convolution, each volume gets the stimulus of its "
        "own TR (for responses already shifted for the haemodynamic lag)",
    )
    delays: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4], description="FIR delays in TRs on the "
        "responses' clock (hrf: fir); negative delays (e.g. [-1, 0, 1]) only for runs whose "
        "response_shift makes delay * tr + response_shift >= 0"
    )
    high_pass: float | None = Field(
        1.0 / 128, ge=0, description="cosine high-pass (Hz) of features and responses alike: "
        "a constant, a linear trend and nilearn's cosine drifts regressed out of both, per "
        "run; null: the constant and linear trend only"
    )

    @field_validator("delays")
    @classmethod
    def _delays(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("delays must be a non-empty list of TRs; give e.g. [1, 2, 3, 4]")
        if len(set(v)) != len(v):
            raise ValueError(f"delays {v} repeat a delay; give each delay once")
        return v

    @model_validator(mode="after")
    def _delays_need_fir(self):
        unused_option(self, "delays", self.hrf != "fir", f"hrf is {self.hrf}; FIR delays "
                      "are used only with hrf: fir")
        return self


class ModelConfig(Section):
    """The linear encoding model."""

    kind: Literal["banded", "ridge"] = Field("banded", description="banded ridge or ridge")
    bands: dict[str, list[str]] | None = Field(
        None,
        description="band name -> feature spaces (null: one band per modality: visual, "
        "auditory, text, annotations)",
    )
    alpha_min: float = Field(1e-1, gt=0, description="smallest ridge alpha")
    alpha_max: float = Field(1e7, gt=0, description="largest ridge alpha")
    n_alphas: int = Field(15, ge=1, le=200, description="alphas, log-spaced")
    n_iter: int = Field(20, ge=1, le=1000, description="banded ridge: band-weight candidates")
    cv_folds: int = Field(5, ge=2, le=50, description="contiguous CV folds on training runs")
    backend: Literal["numpy", "torch"] = Field("numpy", description="solver backend")
    device: str = Field("cpu", description="torch device (cpu, cuda)")

    @model_validator(mode="after")
    def _applied(self):
        unused_option(self, "n_iter", self.kind == "ridge", "kind is ridge; band-weight "
                      "candidates are used only with kind: banded")
        unused_option(self, "device", self.backend == "numpy", "backend is numpy; the "
                      "device is used only with backend: torch")
        return self


class SplitConfig(Section):
    """Held-out data."""

    scheme: Literal["held_out", "leave_one_run_out"] = Field(
        "held_out",
        description="held_out: fit on the other runs, score test_runs; leave_one_run_out: "
        "each run predicted by a model fit on the others (every TR scored), the saved "
        "model refit on all runs",
    )
    test_runs: list[str] | None = Field(
        None, description="run names held out (null: last run); with leave_one_run_out only "
        "the autoencoder uses them",
    )


class EvaluateConfig(Section):
    """Scores, ceilings, significance, partitioning."""

    ceiling: Literal["auto", "subjects", "repeats", "none"] = Field(
        "auto", description="noise ceiling from repeats or across subjects"
    )
    null: Literal["phase", "block"] = Field(
        "phase", description="which null the significance test uses: phase-randomised "
        "surrogates of the prediction (keeps its spectrum) or shuffled blocks of block_s",
    )
    runs: Literal["auto", "pooled", "loro_pooled", "separate", "refit"] = Field(
        "auto", description="how held-out runs are tested: pooled (r over all held-out TRs, "
        "null drawn within each run); loro_pooled (the same r and null, its variance "
        "widened to the bound on the pooled r's: valid under leave-one-run-out, whose runs are predicted by models fit on "
        "each other's responses, so their r are dependent and the pooled null is too "
        "narrow; evidence grows with the number of runs); separate (each run on its own, "
        "p-values combined by the Cauchy combination: valid, but many runs give no more "
        "evidence than one); refit (the same r against phase-randomised responses passed "
        "through every fold's fit with its chosen penalties, scored as the data are: "
        "computed by cinebrain fit, n_permutations surrogates; null: phase only); auto: "
        "loro_pooled under leave-one-run-out, pooled otherwise",
    )
    n_permutations: int = Field(
        1000, ge=0, le=100000,
        description="surrogates (null: phase) or block permutations (null: block) of the "
        "prediction (0: no significance test)",
    )
    block_s: float = Field(12.0, gt=0, description="permutation block length (s) for null: block; longer than the noise autocorrelation, short enough for many distinct permutations")
    reselect: bool = Field(
        True, description="runs: refit: re-run the inner-CV penalty choice on every "
        "surrogate before scoring it (the null of the whole procedure: valid, and about "
        "twice as powerful with many runs) or hold each fold's chosen penalties (valid, "
        "conservative, cheaper: no inner folds per surrogate)",
    )
    fdr: float = Field(0.05, gt=0, lt=1, description="false discovery rate")
    variance_partitioning: bool = Field(
        True, description="refit on subsets of bands for unique/shared variance"
    )
    reference: list[Literal["subject", "group_mean", "leave_one_out_mean"]] = Field(
        default_factory=lambda: ["subject"],
        description="what held-out predictions are scored against, one or several: "
        "subject (its own responses), group_mean (the mean of all subjects on the same "
        "held-out TRs), leave_one_out_mean (the mean of the other subjects); per-subject "
        "scores are always reported, the group references beside them with their ceiling",
    )
    rois: str | None = Field(None, description="label NIfTI in the mask's space")
    roi_labels: dict[int, str] | list[str] | str | None = Field(
        None, description="names of the label values of evaluate.rois: a mapping value -> "
        "name, a list naming values 0, 1, 2, ... in order (nilearn's atlas labels; 0, the "
        "background, is ignored), or a TSV/CSV lookup table with columns index and name "
        "(nilearn's format) or one name per line",
    )

    @model_validator(mode="after")
    def _applied(self):
        off = "n_permutations is 0: no significance test"
        for name in ("null", "runs", "block_s", "reselect"):
            unused_option(self, name, self.n_permutations == 0, off)
        unused_option(self, "reselect", self.runs != "refit", f"runs is {self.runs}; "
                      "reselect applies only to runs: refit")
        unused_option(self, "block_s", self.null != "block", f"null is {self.null}; the "
                      "block length is used only with null: block")
        if self.runs == "refit" and self.null != "phase" and self.n_permutations:
            raise ValueError("runs: refit phase-randomises the responses; set null: phase, "
                             "or choose another evaluate.runs")
        return self

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, v):
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and not v:
            raise ValueError("give at least one reference (subject, group_mean, leave_one_out_mean)")
        return list(dict.fromkeys(v)) if isinstance(v, list) else v
