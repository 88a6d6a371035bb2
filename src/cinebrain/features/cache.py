"""Cache feature spaces on disk, keyed by a hash of every input that changes them.

A rerun with the same inputs loads the saved spaces instead of recomputing them. Input
files count by their content (SHA-256), not by their name or modification time, so a
file replaced by another of the same size and time is still seen as changed; parameters
count by value. Files are written atomically, and a multi-space entry is marked complete
only after all its spaces are written, so an interrupted run never leaves a cache entry
that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cinebrain._files import hash_inputs, write_json, write_text
from cinebrain.features.base import FeatureSpace

# Bump when an extractor's output changes meaning, so old caches are not reused.
# 2: files keyed by content; every extraction and reading parameter in the keys.
CACHE_VERSION = 2


def file_digest(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """SHA-256 (hex) of a file's content.

    Parameters
    ----------
    path : the file
    memo_dir : folder or None
        Where digests are remembered, keyed by the file's absolute path, size,
        modification and status-change times (ns), inode and device. Any write, rename
        or copy onto the file changes its status-change time, which no user tool can
        set back, so a remembered digest is only reused for the very same file; ``None``
        hashes the content every time.
    """
    path = Path(path)
    st = path.stat()
    memo = None
    if memo_dir is not None:
        stat_key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"
        memo = Path(memo_dir) / "digests" / f"{hashlib.sha256(stat_key.encode()).hexdigest()[:32]}.txt"
        if memo.is_file():
            digest = memo.read_text().strip()
            if len(digest) == 64:
                return digest
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if memo is not None:
        write_text(memo, digest + "\n")
    return digest


def cache_key(name: str, key_parts: Sequence[Any], memo_dir: str | os.PathLike | None = None) -> str:
    """Hash of ``name``, the cache version and ``key_parts``.

    ``Path`` parts count by their content (:func:`file_digest`); other parts as
    :func:`cinebrain._files.hash_inputs` hashes them (arrays by bytes, the rest by JSON).
    """
    parts = [f"file-sha256:{file_digest(p, memo_dir)}" if isinstance(p, Path) else p for p in key_parts]
    return hash_inputs(f"cinebrain-features-v{CACHE_VERSION}", name, *parts)


def cached(
    cache_dir: str | os.PathLike | None,
    name: str,
    key_parts: Sequence[Any],
    compute: Callable[[], FeatureSpace],
) -> FeatureSpace:
    """Load ``cache_dir/{name}-{key}.npz`` if present, else ``compute()`` and save it.

    Parameters
    ----------
    cache_dir : folder of the cache (created if needed), or None: no cache, just compute
    name : str, a readable prefix of the file name
    key_parts : sequence
        Everything the result depends on: input files as ``Path`` objects (hashed by
        content), parameters by value.
    compute : callable returning a FeatureSpace

    Returns
    -------
    FeatureSpace (a loaded space has the saved ``meta``)
    """
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{name}-{cache_key(name, key_parts, cache_dir)}.npz"
    if path.is_file():
        return FeatureSpace.load(path)
    fs = compute()
    fs.save(path)
    return fs


def cached_many(
    cache_dir: str | os.PathLike | None,
    name: str,
    key_parts: Sequence[Any],
    compute: Callable[[], dict[str, FeatureSpace]],
) -> dict[str, FeatureSpace]:
    """Like :func:`cached` for extractors returning several spaces (``dict name -> space``).

    The entry is the folder ``cache_dir/{name}-{key}/`` with one ``.npz`` per space and an
    ``index.json`` (the space names, in order) written last.
    """
    if cache_dir is None:
        return compute()
    folder = Path(cache_dir) / f"{name}-{cache_key(name, key_parts, cache_dir)}"
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
