"""The run folder: every path of a run, and the rule by which a stage changes it.

A run folder is written by stages (``features``, ``fit``, ``evaluate``, ``report``,
``train``, ``lesion-<name>``). This module is the only place that knows its layout::

    config.yaml                       resolved configuration (absolute paths)
    stages/<stage>.json               manifest of the last finished stage: its id, the
                                      ids of the stages it read, a hash of its config,
                                      and every file it wrote (size, mtime)
    features/                         feature spaces in stimulus time
    cache/                            extractor cache (keyed by every input)
    mask.nii.gz                       the voxel mask every per-voxel array refers to
    models/<subject>/<name>.npy       coef, intercept, alpha, deltas, feature_mean, feature_std
    models/<subject>/bands.json       bands, sizes, split
    predictions/<subject>/<name>.npy  test_true, test_pred, test_split, test_run_index,
                                      repeats, subset_r2__<bands>
    metrics/<subject>/<name>.npy      r, r2, p, q_fdr, ceiling, r_normalised, alpha,
                                      split_r2_<band>, unique_<band>, best_band
    metrics/roi_summary.csv           per region and subject
    metrics/ground_truth.json         recovery of a simulated study's ground truth
    summary.json                      the evaluation's headline numbers
    maps/, figures/, report.html      the report
    autoencoder/...                   the multimodal autoencoder (see :class:`AutoencoderFolder`)
    videogpt/...                      the video models and their features (see :class:`VideoGPTFolder`)

**A stage either finishes or leaves the folder as it was.** :meth:`RunFolder.stage`
gives the stage a folder of its own (``.staging-<pid>-<stage>-<id>/``, the same layout); only
when the stage returns are its files moved into place, the files of its previous run
removed, and its manifest written. A stage that fails leaves nothing behind.

**Outputs that do not belong together are refused.** A reader asks
:meth:`RunFolder.require` for the stage whose outputs it reads; it gets that stage's
manifest after checking that every file the stage wrote is still there, unchanged, and
that the stages it depends on are the current ones (a ``fit`` newer than the
``evaluate`` that scored it is an error, not a mixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cinebrain._files import write_json
from cinebrain.errors import InputError

#: What each stage's next stage is, for messages ("run `cinebrain fit` first").
COMMAND = {
    "features": "cinebrain features",
    "fit": "cinebrain fit",
    "evaluate": "cinebrain evaluate",
    "report": "cinebrain report",
    "train": "cinebrain train",
    "neurons-train": "cinebrain neurons train",
    "neurons-evaluate": "cinebrain neurons evaluate",
    "videogpt-train": "cinebrain videogpt train",
    "videogpt-evaluate": "cinebrain videogpt evaluate",
}

_STAGING_PREFIX = ".staging-"


def link_or_copy(src: str, dst: str) -> None:
    """A hard link to ``src`` at ``dst``, or a copy across file systems (``copy_function``
    of ``shutil.copytree`` when a resumed stage continues the committed checkpoints: the
    engine replaces files, never writes into them)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _npy(name: str) -> str:
    return f"{name}.npy"


class _Layout:
    """Paths below one base folder (the run folder, or a stage's staging folder)."""

    def __init__(self, base: Path):
        self.base = Path(base)

    # -- top level ---------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.base / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.base / "summary.json"

    @property
    def report(self) -> Path:
        return self.base / "report.html"

    @property
    def mask(self) -> Path:
        return self.base / "mask.nii.gz"

    @property
    def features_dir(self) -> Path:
        return self.base / "features"

    @property
    def cache_dir(self) -> Path:
        return self.base / "cache"

    @property
    def maps_dir(self) -> Path:
        return self.base / "maps"

    @property
    def figures_dir(self) -> Path:
        return self.base / "figures"

    def map(self, name: str) -> Path:
        """A brain map of the report, ``maps/<name>.nii.gz``."""
        return self.maps_dir / f"{name}.nii.gz"

    def figure(self, name: str) -> Path:
        """A figure of the report, ``figures/<name>.png``."""
        return self.figures_dir / f"{name}.png"

    # -- linear encoding models ----------------------------------------------------
    def model(self, subject: str, name: str) -> Path:
        """An array of a subject's fitted model (coef, intercept, alpha, ...)."""
        return self.base / "models" / subject / _npy(name)

    def bands(self, subject: str) -> Path:
        """Bands, band sizes and split of a subject's model."""
        return self.base / "models" / subject / "bands.json"

    def prediction(self, subject: str, name: str) -> Path:
        """A held-out array of a subject (test_true, test_pred, ...)."""
        return self.base / "predictions" / subject / _npy(name)

    def subset_r2(self, subject: str, bands: Iterable[str]) -> Path:
        """Held-out R2 of the model refit on a subset of bands."""
        return self.prediction(subject, "subset_r2__" + "+".join(bands))

    def subset_r2_files(self, subject: str) -> dict[frozenset[str], Path]:
        """Every band subset's held-out R2 file of a subject."""
        d = self.base / "predictions" / subject
        return {frozenset(p.stem.split("__", 1)[1].split("+")): p
                for p in sorted(d.glob("subset_r2__*.npy"))}

    def metric(self, subject: str, name: str) -> Path:
        """A per-target score of a subject (r, r2, p, q_fdr, ceiling, ...)."""
        return self.base / "metrics" / subject / _npy(name)

    def metric_names(self, subject: str, prefix: str = "") -> list[str]:
        """Names of a subject's metrics that start with ``prefix``."""
        d = self.base / "metrics" / subject
        return sorted(p.stem for p in d.glob(f"{prefix}*.npy"))

    @property
    def roi_summary(self) -> Path:
        return self.base / "metrics" / "roi_summary.csv"

    @property
    def ground_truth(self) -> Path:
        return self.base / "metrics" / "ground_truth.json"

    # -- families -------------------------------------------------------------------
    @property
    def autoencoder(self) -> AutoencoderFolder:
        return AutoencoderFolder(self.base / "autoencoder")

    @property
    def sweep(self) -> SweepFolder:
        return SweepFolder(self.base / "sweep")

    @property
    def neurons(self) -> NeuronFolder:
        return NeuronFolder(self.base)

    @property
    def videogpt(self) -> VideoGPTFolder:
        return VideoGPTFolder(self.base / "videogpt")


class NeuronFolder:
    """Paths of the neuron family inside a run folder (or a stage's staging folder)."""

    def __init__(self, base: str | os.PathLike):
        self.base = Path(base) / "neurons"

    @property
    def train_dir(self) -> Path:
        """The training engine's folder (checkpoints/, metrics.jsonl)."""
        return self.base

    @property
    def model_json(self) -> Path:
        return self.base / "model.json"

    @property
    def stats_json(self) -> Path:
        return self.base / "stats.json"

    def prediction(self, session: str, name: str) -> Path:
        return self.base / "predictions" / session / f"{name}.npy"

    def metric(self, session: str, name: str) -> Path:
        return self.base / "metrics" / session / f"{name}.npy"


class AutoencoderFolder:
    """Paths of the multimodal autoencoder inside a run folder::

        autoencoder/model.json              model config, data settings, split, training
        autoencoder/input_stats.npz         training mean / std of every modality's inputs
        autoencoder/checkpoints/            best.pt, last.pt, step-*.pt (cinebrain.train)
        autoencoder/metrics.jsonl, tensorboard/
        autoencoder/predictions/<subject>/test_pred.npy
        autoencoder/metrics/<subject>/<name>.npy   r, r2, r_normalised, ridge_r
        autoencoder/comparison.json         autoencoder vs ridge per region, reconstruction
        autoencoder/lesions/<name>/         <subject>_<map>.nii.gz, mean_<map>.nii.gz, lesion.json
        autoencoder/reconstruction/         video.mp4, audio.wav, text.tsv
    """

    def __init__(self, base: Path):
        self.base = Path(base)

    @property
    def model_json(self) -> Path:
        return self.base / "model.json"

    @property
    def input_stats(self) -> Path:
        return self.base / "input_stats.npz"

    @property
    def train_dir(self) -> Path:
        """The training engine's folder (checkpoints/, metrics.jsonl, tensorboard/)."""
        return self.base

    def group_dir(self, group: str | None) -> Path:
        """Training folder of a per-subject model group (None: the one shared model)."""
        return self.base if not group else self.base / "per_subject" / group

    def prediction(self, subject: str, name: str = "test_pred") -> Path:
        return self.base / "predictions" / subject / _npy(name)

    def metric(self, subject: str, name: str) -> Path:
        return self.base / "metrics" / subject / _npy(name)

    @property
    def comparison(self) -> Path:
        return self.base / "comparison.json"

    def lesion_dir(self, name: str) -> Path:
        return self.base / "lesions" / name

    def lesion_names(self) -> list[str]:
        return sorted(p.name for p in (self.base / "lesions").glob("*") if p.is_dir())

    def lesion_map(self, name: str, subject: str | None, key: str, nifti: bool = True) -> Path:
        """A lesion's per-voxel map of ``subject`` (None: the subject mean)."""
        stem = f"{subject}_{key}" if subject else f"mean_{key}"
        return self.lesion_dir(name) / (f"{stem}.nii.gz" if nifti else f"{stem}.npy")

    def lesion_json(self, name: str) -> Path:
        return self.lesion_dir(name) / "lesion.json"

    @property
    def reconstruction_dir(self) -> Path:
        return self.base / "reconstruction"

    def reconstruction(self, modality: str) -> Path:
        """The reconstructed stimulus of a modality (video.mp4, audio.wav, text.tsv)."""
        ext = {"video": "mp4", "audio": "wav", "text": "tsv"}[modality]
        return self.reconstruction_dir / f"{modality}.{ext}"


class SweepFolder:
    """A scaling sweep's folder (``<run>/sweep`` by default): ``cells/<name>/`` (run folders),
    ``vqvae/<key>/`` (shared VQ-VAEs), ``results.csv``, ``scaling.json``, ``plots/``."""

    def __init__(self, base: Path):
        self.base = Path(base)

    @property
    def results(self) -> Path:
        return self.base / "results.csv"

    @property
    def scaling(self) -> Path:
        return self.base / "scaling.json"

    def cell(self, name: str) -> Path:
        return self.base / "cells" / name

    def plot(self, axis: str) -> Path:
        return self.base / "plots" / f"r_vs_{axis}.png"


class VideoGPTFolder:
    """Paths of the video-model family inside a run folder::

        videogpt/model.json                 both models' configs, the clips, training summaries
        videogpt/vqvae/                     the VQ-VAE stage's engine folder (checkpoints/, metrics.jsonl)
        videogpt/gpt/                       the GPT stage's
        videogpt/samples/<k>_real.mp4, <k>_predicted.mp4, <k>_reconstructed.mp4
        videogpt/features/<weights>/        feature spaces of every layer (trained, random)
        videogpt/metrics/<subject>/<weights>__<layer>.npy   held-out r per voxel
        videogpt/evaluation.json            layer-wise r per region, trained vs random,
                                            PSNR, codebook usage, next-clip cross-entropy
    """

    def __init__(self, base: Path):
        self.base = Path(base)

    @property
    def model_json(self) -> Path:
        return self.base / "model.json"

    @property
    def vqvae_dir(self) -> Path:
        return self.base / "vqvae"

    @property
    def gpt_dir(self) -> Path:
        return self.base / "gpt"

    @property
    def samples_dir(self) -> Path:
        return self.base / "samples"

    def sample(self, k: int, kind: str) -> Path:
        """A held-out clip as mp4 (kind: real, predicted, reconstructed)."""
        return self.samples_dir / f"{k:02d}_{kind}.mp4"

    def features_dir(self, weights: str) -> Path:
        return self.base / "features" / weights

    def metric(self, subject: str, weights: str, layer: str) -> Path:
        return self.base / "metrics" / subject / _npy(f"{weights}__{layer}")

    @property
    def evaluation(self) -> Path:
        return self.base / "evaluation.json"


@dataclass
class Manifest:
    """What a finished stage wrote and read."""

    stage: str
    id: str
    config_hash: str | None = None
    depends: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[int]] = field(default_factory=dict)  # relpath -> [size, mtime_ns]
    info: dict[str, Any] = field(default_factory=dict)
    finished: float = 0.0
    #: the options the stage ran with (the config.yaml it wrote; None: it wrote none)
    config: dict[str, Any] | None = None
    #: dotted key -> [value before, value after]: what it changed in the run's config.yaml
    config_changes: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "id": self.id, "config_hash": self.config_hash,
                "depends": self.depends, "files": self.files, "info": self.info,
                "finished": self.finished, "config": self.config,
                "config_changes": self.config_changes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        return cls(stage=d["stage"], id=d["id"], config_hash=d.get("config_hash"),
                   depends=dict(d.get("depends", {})), files=dict(d.get("files", {})),
                   info=dict(d.get("info", {})), finished=float(d.get("finished", 0.0)),
                   config=d.get("config"), config_changes=dict(d.get("config_changes") or {}))


class RunFolder(_Layout):
    """A run folder: its paths (as :class:`_Layout`), its stages and their manifests."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(Path(root))

    @property
    def root(self) -> Path:
        return self.base

    def manifest_path(self, stage: str) -> Path:
        return self.base / "stages" / f"{stage}.json"

    # -- checks -----------------------------------------------------------------------
    def check_writable(self) -> None:
        """:class:`InputError` unless the run folder can be created and written."""
        root = self.base
        if root.exists() and not root.is_dir():
            raise InputError(root, "the run folder is an existing file",
                             "give --out a folder (new or a run folder)")
        probe = root
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise InputError(root, f"{probe} is a file, not a folder", "give --out a folder path")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise InputError(root, f"{probe} is not writable", "choose a folder you can write to")

    def manifest(self, stage: str) -> Manifest | None:
        """The manifest of ``stage``'s last finished run (None: never finished)."""
        path = self.manifest_path(stage)
        if not path.is_file():
            return None
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            raise InputError(path, "unreadable stage manifest",
                             f"run `{COMMAND.get(stage, 'the stage')}` again") from None

    def require(self, stage: str, *, hint: str | None = None) -> Manifest:
        """The current manifest of ``stage``, after checking that its files are intact and
        that every stage it read is still the current one."""
        m = self.manifest(stage)
        fix = hint or f"run `{COMMAND.get(stage, stage)}` first"
        if m is None:
            raise InputError(self.base, f"no finished {stage} stage in this run folder", fix)
        for rel, (size, mtime) in m.files.items():
            path = self.base / rel
            try:
                st = path.stat()
            except OSError:
                raise InputError(path, f"missing: the {stage} stage wrote it but it is gone",
                                 f"run `{COMMAND.get(stage, stage)}` again") from None
            if st.st_size != size or st.st_mtime_ns != mtime:
                raise InputError(path, f"changed since the {stage} stage wrote it",
                                 f"run `{COMMAND.get(stage, stage)}` again") from None
        for dep, dep_id in m.depends.items():
            current = self.manifest(dep)
            if current is None or current.id != dep_id:
                raise InputError(
                    self.base,
                    f"the {stage} outputs were made from an earlier {dep} stage than the "
                    "current one",
                    f"run `{COMMAND.get(stage, stage)}` again",
                )
        return m

    def stages(self, prefix: str = "") -> list[str]:
        """Names of the finished stages (those starting with ``prefix``)."""
        return sorted(p.stem for p in (self.base / "stages").glob(f"{prefix}*.json"))

    def forget(self, stage: str) -> None:
        """Remove a finished stage's outputs and manifest (e.g. lesions of a model that
        was retrained)."""
        m = self.manifest(stage)
        if m is None:
            return
        self.manifest_path(stage).unlink()
        for rel in m.files:
            with contextlib.suppress(FileNotFoundError):
                (self.base / rel).unlink()
        _remove_empty_dirs(self.base, {Path(r).parent for r in m.files})

    # -- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, stage: str, *, depends: Iterable[str] = (), config_hash: str | None = None,
              owns: Iterable[str] = ()) -> Iterator[StagedFolder]:
        """Run a stage: yield a :class:`StagedFolder` to write into; commit on success.

        ``depends``: stages whose current outputs this stage reads (their ids are
        recorded; :meth:`require` refuses the outputs once one of them changes).
        ``owns``: folders (relative) whose old files belong to this stage and are removed
        on commit even if an earlier version wrote them without a manifest.
        Nothing in the run folder changes until the ``with`` block ends without error.
        """
        self.check_writable()
        dep_ids = {}
        for dep in depends:
            m = self.manifest(dep)
            if m is not None:
                dep_ids[dep] = m.id
        sid = uuid.uuid4().hex[:12]
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            clean_stale_staging(self.base)
            staging = Path(self.base / f"{_STAGING_PREFIX}{os.getpid()}-{stage}-{sid}")
            staging.mkdir()
        except OSError as e:
            raise InputError(self.base, f"cannot write the run folder ({e.strerror})",
                             "choose a folder you can write to") from None
        staged = StagedFolder(staging, self, stage, sid, dep_ids, config_hash)
        try:
            yield staged
            self._commit(staged, tuple(owns))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, staged: StagedFolder, owns: tuple[str, ...]) -> None:
        new = sorted(p for p in staged.base.rglob("*") if p.is_file() or p.is_symlink())
        rels = [p.relative_to(staged.base).as_posix() for p in new]
        old = self.manifest(staged.stage)
        old_files = set(old.files) if old else set()
        # A stage that ran before manifests existed: its folders are its own.
        for d in owns:
            folder = self.base / d
            if folder.is_dir():
                old_files |= {p.relative_to(self.base).as_posix()
                              for p in folder.rglob("*") if p.is_file()}
        manifest_path = self.manifest_path(staged.stage)
        config, changes = _config_change(self.config, staged.config)
        # Invalidate first: a crash between here and the new manifest leaves the stage
        # "not finished" rather than a mixture that claims to be one.
        with contextlib.suppress(FileNotFoundError):
            manifest_path.unlink()
        for rel in sorted(old_files - set(rels)):
            with contextlib.suppress(FileNotFoundError):
                (self.base / rel).unlink()
        files: dict[str, list[int]] = {}
        for src, rel in zip(new, rels, strict=True):
            dst = self.base / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not src.is_dir():
                shutil.rmtree(dst)
            os.replace(src, dst)
            if rel == "config.yaml":
                continue  # shared by every stage; the config hash records what mattered
            st = dst.stat()
            files[rel] = [st.st_size, st.st_mtime_ns]
        _remove_empty_dirs(self.base, {Path(r).parent for r in old_files})
        m = Manifest(staged.stage, staged.id, staged.config_hash, staged.depends, files,
                     staged.info, time.time(), config, changes)
        write_json(manifest_path, m.to_dict())


class StagedFolder(_Layout):
    """Where a running stage writes: the run folder's layout below its staging folder.

    ``run`` is the committed run folder, to read the outputs of earlier stages from;
    ``info`` is stored in the stage's manifest.
    """

    def __init__(self, base: Path, run: RunFolder, stage: str, id: str,
                 depends: dict[str, str], config_hash: str | None):
        super().__init__(base)
        self.run = run
        self.stage = stage
        self.id = id
        self.depends = depends
        self.config_hash = config_hash
        self.info: dict[str, Any] = {}


def _config_change(old: Path, new: Path) -> tuple[dict | None, dict[str, list[Any]]]:
    """The config a stage wrote (``new``), and what it changed of the run's (``old``)."""
    import yaml

    from cinebrain.config import config_leaves

    if not new.is_file():
        return None, {}
    config = yaml.safe_load(new.read_text()) or {}
    if not old.is_file():
        return config, {}
    try:
        before = config_leaves(yaml.safe_load(old.read_text()) or {})
    except (yaml.YAMLError, AttributeError):
        return config, {}
    after = config_leaves(config)
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    changes.update({k: [v, None] for k, v in before.items() if k not in after})
    for k in _NOT_RESULTS:  # where the folder is, bars, threads: no result depends on them
        changes.pop(k, None)
    return config, changes


#: Options that change no result.
_NOT_RESULTS = ("out", "progress", "threads")


def _remove_empty_dirs(root: Path, dirs: Iterable[Path]) -> None:
    """Remove folders (relative to ``root``) left empty, and their empty parents."""
    for d in sorted({root / d for d in dirs}, key=lambda p: len(p.parts), reverse=True):
        p = d
        while p != root and p.is_dir() and root in p.parents:
            try:
                p.rmdir()
            except OSError:
                break
            p = p.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(root: str | os.PathLike) -> None:
    """Remove staging folders left by processes that were killed mid-stage (a running
    stage's folder, named after its process, is left alone)."""
    for p in Path(root).glob(f"{_STAGING_PREFIX}*"):
        pid = p.name[len(_STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
