"""Cache feature spaces on disk, keyed by a hash of their inputs.

A rerun with the same inputs (files by path, size and modification time; parameters by
value) loads the saved spaces instead of recomputing them. Files are written atomically,
and a multi-space entry is marked complete only after all its spaces are written, so an
interrupted run never leaves a cache entry that looks finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cinebrain._files import hash_inputs, write_json
from cinebrain.features.base import FeatureSpace

# Bump when an extractor's output changes meaning, so old caches are not reused.
CACHE_VERSION = 1


def cache_key(name: str, key_parts: Sequence[Any]) -> str:
    """Hash of ``name``, the cache version and ``key_parts`` (see ``hash_inputs``)."""
    return hash_inputs(f"cinebrain-features-v{CACHE_VERSION}", name, *key_parts)


def cached(
    cache_dir: str | os.PathLike,
    name: str,
    key_parts: Sequence[Any],
    compute: Callable[[], FeatureSpace],
) -> FeatureSpace:
    """Load ``cache_dir/{name}-{key}.npz`` if present, else ``compute()`` and save it.

    Parameters
    ----------
    cache_dir : folder of the cache (created if needed)
    name : str, a readable prefix of the file name
    key_parts : sequence
        Everything the result depends on: input files as ``Path`` objects, parameters.
    compute : callable returning a FeatureSpace

    Returns
    -------
    FeatureSpace (``meta`` is not stored: a loaded space has an empty ``meta``)
    """
    path = Path(cache_dir) / f"{name}-{cache_key(name, key_parts)}.npz"
    if path.is_file():
        return FeatureSpace.load(path)
    fs = compute()
    fs.save(path)
    return fs


def cached_many(
    cache_dir: str | os.PathLike,
    name: str,
    key_parts: Sequence[Any],
    compute: Callable[[], dict[str, FeatureSpace]],
) -> dict[str, FeatureSpace]:
    """Like :func:`cached` for extractors returning several spaces (``dict name -> space``).

    The entry is the folder ``cache_dir/{name}-{key}/`` with one ``.npz`` per space and an
    ``index.json`` (the space names, in order) written last.
    """
    folder = Path(cache_dir) / f"{name}-{cache_key(name, key_parts)}"
    index = folder / "index.json"
    if index.is_file():
        names = json.loads(index.read_text())["spaces"]
        files = {k: folder / f"{i:02d}.npz" for i, k in enumerate(names)}
        if all(f.is_file() for f in files.values()):
            return {k: FeatureSpace.load(f) for k, f in files.items()}
    result = compute()
    names = list(result)
    for i, k in enumerate(names):
        result[k].save(folder / f"{i:02d}.npz")
    write_json(index, {"spaces": names})
    return result
