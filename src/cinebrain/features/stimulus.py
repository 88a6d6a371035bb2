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
duration column, unit, the TR when the unit is TRs, sheet) and the columns, for text the
identity of the embedding model, and the cache format version.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
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
) -> dict[str, FeatureSpace]:
    """Extract the feature spaces of a study's stimulus, in stimulus time.

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
        from cinebrain.io.annotations import read_annotations

        path = study.resolve(ann.path)
        reading = {
            "onset": ann.onset, "offset": ann.offset, "duration": ann.duration, "unit": ann.unit,
            # The TR only turns TRs into seconds.
            "tr": float(study.tr) if ann.unit == "tr" else None,
            "sheet": getattr(ann, "sheet", None),
        }
        columns = list(ann.text) + list(ann.categorical) + list(ann.numeric)
        df = read_annotations(path, columns=columns, **reading)
        if annotation_text:
            model = text_model_identity()
            for col in ann.text:
                fs = cached(cache_dir, "annotation-text", [path, reading, col, model],
                            lambda col=col: text_embeddings(df, col))
                tag(fs, f"annotations.{col}", "text")
        if annotation_columns and (ann.categorical or ann.numeric):
            kinds = {"categorical": list(ann.categorical), "numeric": list(ann.numeric)}
            res = cached_many(cache_dir, "annotation-columns", [path, reading, kinds],
                              lambda: annotation_features(df, **kinds))
            for k, fs in res.items():
                tag(fs, f"annotations.{k}", "annotations")
        say(f"  annotation features from {path.name}")

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

    if not spaces:
        raise InputError(
            f"study {study.name!r}", "no feature space could be extracted",
            "give the study a stimulus (video, audio, annotations or transcript) and enable its features",
        )
    return spaces


def save_feature_spaces(spaces: dict[str, FeatureSpace], folder: str | os.PathLike) -> None:
    """Write feature spaces to ``folder``: ``<name>.npz`` each and ``index.json``.

    The index (``name -> {"n_features", "n_samples", "band"}``) is removed first and
    written last, each file atomically, so an interrupted save leaves a folder that
    :func:`load_feature_spaces` refuses rather than a mix of old and new spaces.
    ``band`` is ``meta["band"]``, else the part of the name before the first dot.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_FILE).unlink(missing_ok=True)
    index = {}
    for name, fs in spaces.items():
        fs.save(folder / f"{name}.npz")
        index[name] = {"n_features": fs.n_features, "n_samples": fs.n_samples,
                       "band": fs.meta.get("band") or name.split(".")[0]}
    write_json(folder / INDEX_FILE, index)


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
        path = folder / f"{name}.npz"
        if not path.is_file():
            raise InputError(path, f"missing: the index lists feature space {name!r}", "extract the features again")
        fs = FeatureSpace.load(path)
        fs.meta["band"] = info["band"]
        spaces[name] = fs
    return spaces
