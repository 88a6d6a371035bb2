"""Every feature space of a study's stimulus in one call, and their files on disk.

From a notebook::

    study = load_study("study.yaml")
    spaces = extract_stimulus_features(study, cache_dir="cache")
    spaces["video.motion_energy"].values  # (n_frames, n_filters)

Spaces are named ``<stream>.<space>`` (``video.pixels``, ``audio.mel``,
``annotations.<column>``, ``transcript.words``) and labelled with their band in
``meta["band"]``: ``visual``, ``auditory``, ``text`` (embeddings of annotation text and of
the transcript) or ``annotations`` (categorical and numeric columns).

With a cache folder, every extraction is keyed by everything that changes its output:
the source file's content, every parameter of the extractor (defaults included, so a
changed default is a new key), for annotations how the table is read (onset, offset or
duration column, unit, the TR when the unit is TRs, sheet, TR base and inclusivity, parts
and their starts, row order, the blank policy, the separator, and for per-run events every
run's file and key) and the columns, for text the
identity of the embedding model, and the cache format version.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinebrain._files import write_json
from cinebrain.errors import InputError
from cinebrain.features.annotations import annotation_features
from cinebrain.features.audio import AUDIO_SPACES, extract_audio
from cinebrain.features.base import FeatureSpace
from cinebrain.features.cache import cached, cached_many
from cinebrain.features.text import MIN_WORD_DURATION_S, text_embeddings, transcript_features
from cinebrain.features.text_model import text_model_identity
from cinebrain.features.video import VIDEO_SPACES, MotionEnergyPyramid, extract_video

if TYPE_CHECKING:
    from cinebrain.io.study import Study

TRANSCRIPT_SPACES = ("words", "word_rate")
INDEX_FILE = "index.json"


def _arguments(func: Callable, *args: Any, drop: Sequence[str] = (), **kwargs: Any) -> dict[str, Any]:
    """Every argument ``func`` would be called with, defaults included, minus ``drop``."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in drop}


def _pyramid_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(MotionEnergyPyramid) if f.default is not dataclasses.MISSING}


def _check_spaces(kind: str, given: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    given = tuple(given or ())
    unknown = [s for s in given if s not in allowed]
    if unknown:
        raise InputError(f"features.{kind}", f"unknown {kind} feature space(s) {unknown}",
                         f"use some of {list(allowed)}")
    return given


def extract_stimulus_features(
    study: Study,
    *,
    video: Sequence[str] = ("pixels", "motion_energy"),
    audio: Sequence[str] = ("envelope", "mel"),
    annotation_text: bool = True,
    annotation_columns: bool = True,
    transcript: Sequence[str] = ("words", "word_rate"),
    video_size: tuple[int, int] = (160, 90),
    pixel_size: tuple[int, int] = (32, 18),
    n_mels: int = 64,
    audio_sr: int = 16000,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    allow_empty: bool = False,
) -> dict[str, FeatureSpace]:
    """Extract the feature spaces of a study's stimulus, in stimulus time.

    ``allow_empty``: return {} rather than refuse a study left with no space (its caller
    adds spaces of its own, e.g. a network's activations).

    Parameters
    ----------
    study : cinebrain.io.study.Study
        Its ``stimulus`` says which files exist; paths are resolved against ``study.root``.
    video : spaces of :func:`cinebrain.features.video.extract_video` (empty: none)
    audio : spaces of :func:`cinebrain.features.audio.extract_audio`, from the audio file
        or else the video's soundtrack (empty: none)
    annotation_text : embed the annotation table's ``text`` columns
    annotation_columns : its ``categorical`` and ``numeric`` columns
    transcript : spaces of :func:`cinebrain.features.text.transcript_features` (empty: none)
    video_size : (width, height) frames are decoded at, pixels
    pixel_size : (width, height) of the ``pixels`` space
    n_mels : mel bands
    audio_sr : sampling rate the audio is analysed at, Hz
    cache_dir : folder or None
        Cache of extracted spaces (see the module notes); ``None``: no cache.
    progress : show a progress bar over video frames
    log : callable or None, given one line per stream extracted

    Returns
    -------
    dict name -> FeatureSpace, each with ``meta["band"]``

    Raises
    ------
    InputError
        An unknown space name, an unreadable stimulus file, or nothing to extract.
    """
    video = _check_spaces("video", video, VIDEO_SPACES)
    audio = _check_spaces("audio", audio, AUDIO_SPACES)
    transcript = _check_spaces("transcript", transcript, TRANSCRIPT_SPACES)
    say = log or (lambda msg: None)
    stim = study.stimulus
    spaces: dict[str, FeatureSpace] = {}

    def tag(fs: FeatureSpace, name: str, band: str) -> None:
        fs.name = name
        fs.meta["band"] = band
        spaces[name] = fs

    if stim.video and video:
        path = study.resolve(stim.video)
        args = _arguments(extract_video, path, spaces=video, size=tuple(video_size),
                          pixel_size=tuple(pixel_size), drop=("path", "progress"))
        key = [path, args, _pyramid_defaults() if "motion_energy" in video else None]
        t0 = time.perf_counter()
        res = cached_many(cache_dir, "video", key, lambda: extract_video(path, **args, progress=progress))
        for k, fs in res.items():
            tag(fs, f"video.{k}", "visual")
        say(f"  video features: {', '.join(res)} ({time.perf_counter() - t0:.1f} s)")

    audio_src = stim.audio or stim.video
    if audio_src and audio:
        path = study.resolve(audio_src)
        args = _arguments(extract_audio, path, spaces=audio, n_mels=n_mels, sr=audio_sr, drop=("source",))
        t0 = time.perf_counter()
        res = cached_many(cache_dir, "audio", [path, args], lambda: extract_audio(path, **args))
        for k, fs in res.items():
            tag(fs, f"audio.{k}", "auditory")
        say(f"  audio features: {', '.join(res)} ({time.perf_counter() - t0:.1f} s)")

    ann = stim.annotations
    if ann and (annotation_text or annotation_columns):
        from cinebrain.features.annotations import mark_per_run, per_run_events, run_key
        from cinebrain.io.annotations import read_annotations

        reading = ann.reading(study.tr)
        columns = list(ann.text) + list(ann.categorical)
        numeric = list(ann.numeric)
        ranges = None
        # With a log, skipped rows are said there; without one, the reader warns.
        quiet = {"warn": log is None}
        if ann.path is not None:
            path = study.resolve(ann.path)
            files: list[Any] = [path]
            df = read_annotations(path, columns=columns, numeric=numeric, **reading, **quiet)
            skipped = int(df.attrs.get("skipped_rows", 0))
            what = path.name
        else:
            # Each run's own events, on its own clock; rows in any order (no parts).
            tables, files, skipped = {}, [], 0
            for sub, subject in study.subjects.items():
                for run in subject.runs:
                    p = study.resolve(run.events)
                    d = read_annotations(p, columns=columns, numeric=numeric,
                                         **{**reading, "order": "any"}, **quiet)
                    skipped += int(d.attrs.get("skipped_rows", 0))
                    tables[run_key(sub, run.name)] = d
                    files += [run_key(sub, run.name), p]
            df, ranges = per_run_events(tables)
            what = f"the events of {len(tables)} run(s)"

        def per_run(res: dict[str, FeatureSpace]) -> dict[str, FeatureSpace]:
            return res if ranges is None else {k: mark_per_run(v, ranges) for k, v in res.items()}

        key_reading = {**reading, "numeric": numeric, "per_run": ranges is not None}
        if annotation_text:
            model = text_model_identity()
            for col in ann.text:
                fs = cached(cache_dir, "annotation-text", [*files, key_reading, col, model],
                            lambda col=col: per_run({col: text_embeddings(df, col)})[col])
                tag(fs, f"annotations.{col}", "text")
        if annotation_columns and (ann.categorical or ann.numeric):
            kinds = {"categorical": list(ann.categorical), "numeric": numeric,
                     "separator": ann.separator}
            res = cached_many(cache_dir, "annotation-columns", [*files, key_reading, kinds],
                              lambda: per_run(annotation_features(df, **kinds)))
            for k, fs in res.items():
                tag(fs, f"annotations.{k}", "annotations")
        if not (stim.video or stim.audio):
            # Annotations alone: the stimulus may end before the scan does (rest).
            for name, fs in spaces.items():
                if name.startswith("annotations."):
                    fs.meta.setdefault("coverage", "events")
        say(f"  annotation features from {what}"
            + (f" ({skipped} empty row(s) skipped)" if skipped else ""))

    if stim.transcript and transcript:
        from cinebrain.io.annotations import read_transcript

        path = study.resolve(stim.transcript)
        reading = _arguments(read_transcript, path, drop=("path",))
        df = read_transcript(path, **reading)
        key = [path, reading, text_model_identity(), MIN_WORD_DURATION_S]
        res = cached_many(cache_dir, "transcript", key, lambda: transcript_features(df))
        for k in transcript:
            tag(res[k], f"transcript.{k}", "text")
        say(f"  transcript features: {', '.join(transcript)}")

    if not spaces and not allow_empty:
        raise InputError(
            f"study {study.name!r}", "no feature space could be extracted",
            "give the study a stimulus (video, audio, annotations or transcript) and enable its features",
        )
    return spaces


def save_feature_spaces(spaces: dict[str, FeatureSpace], folder: str | os.PathLike) -> None:
    """Write feature spaces to ``folder``: one ``.npz`` each and ``index.json``.

    Each file is named by :func:`space_file_name` (the space's name made safe as a file
    name, unique). The index (``name -> {"n_features", "n_samples", "band", "file"}``) is removed first and
    written last, each file atomically, so an interrupted save leaves a folder that
    :func:`load_feature_spaces` refuses rather than a mix of old and new spaces.
    ``band`` is ``meta["band"]``, else the part of the name before the first dot.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_FILE).unlink(missing_ok=True)
    index = {}
    taken: set[str] = set()
    for name, fs in spaces.items():
        file = space_file_name(name, taken)
        taken.add(file.casefold())
        fs.save(folder / file)
        index[name] = {"n_features": fs.n_features, "n_samples": fs.n_samples,
                       "band": fs.meta.get("band") or name.split(".")[0], "file": file}
    write_json(folder / INDEX_FILE, index)


def space_file_name(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A file name (``.npz``) for feature space ``name``, safe on every file system.

    Characters other than letters, digits, ``.``, ``-``, ``_`` and ``=`` (a ``/`` in an
    annotation column's name, spaces, ``:``...) become ``_``; a name that then collides
    with one in ``taken`` (compared case-blind, as macOS and Windows do) gets ``-2``,
    ``-3``... The index written beside the files maps each space to its file.
    """
    stem = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(name)).strip("._") or "space"
    stem = stem[:150]
    file, k = f"{stem}.npz", 1
    while file.casefold() in taken or file == INDEX_FILE:
        k += 1
        file = f"{stem}-{k}.npz"
    return file


def load_feature_spaces(folder: str | os.PathLike) -> dict[str, FeatureSpace]:
    """Feature spaces written by :func:`save_feature_spaces`, in their saved order.

    Raises
    ------
    InputError
        ``folder`` holds no extracted features (no index), or the index is unreadable or
        names a space whose file is missing.
    """
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise InputError(folder, "holds no extracted features",
                         "extract them first (`cinebrain features`, or save_feature_spaces)")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(index_path, f"unreadable feature index ({e})", "extract the features again") from None
    if not isinstance(index, dict) or not index:
        raise InputError(index_path, "lists no feature spaces", "extract the features again")
    spaces = {}
    for name, info in index.items():
        path = folder / str(info.get("file") or f"{name}.npz")
        if path.parent != folder or not path.is_file():
            raise InputError(path, f"missing: the index lists feature space {name!r}", "extract the features again")
        fs = FeatureSpace.load(path)
        fs.meta["band"] = info["band"]
        spaces[name] = fs
    return spaces
