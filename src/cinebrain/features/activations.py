"""Network activations as features: the outputs of named layers of any torch module,
run over sliding clips of a movie.

:func:`extract_activations` takes frames in memory, :func:`extract_movie_activations` a
movie file (decoded frame by frame, so a long film never sits in memory). Both return one
:class:`~cinebrain.features.base.FeatureSpace` per layer.

Time convention (causal)
    The movie is cut into clips of ``window`` frames, one every ``stride`` frames. The
    feature row of the clip whose last frame is frame ``k`` has ``onset`` = the time of
    frame ``k`` and ``duration = stride / fps`` (until the next row). A row therefore only
    uses frames shown at or before its onset: a stimulus at time t can change features at
    or after t, never before (the tests prove it with an impulse). With ``pad="edge"``
    (the default) every ``stride``-th frame from frame 0 ends a clip, the time before the
    movie being filled with copies of its first frame, so the rows cover the whole movie;
    with ``pad="none"`` the first clip ends at frame ``window - 1`` and the first
    ``window - 1`` frames start no row.

Layers
    A layer is the name of a submodule in ``dict(model.named_modules())`` (``""`` is the
    whole model). Its output is read by a forward hook and pooled, per clip, to a vector
    (:func:`pool_activation`). For Hugging Face models these names are the hidden states:
    with transformers 5 the output of block ``i`` of a ViT is ``layers.i`` (older versions
    name it ``encoder.layer.i``), equal to ``hidden_states[i + 1]`` of
    ``model(..., output_hidden_states=True)``.

Hugging Face models
    :func:`load_pretrained` loads a model from a local folder only (nothing is downloaded);
    :class:`PixelValuesInput` turns clips into the ``pixel_values`` such a model takes, and
    is the default ``input_fn`` of any model whose ``main_input_name`` is ``pixel_values``.

Caching
    ``cache_dir=`` stores the spaces with :func:`cinebrain.features.cache.cached_many`,
    keyed by :func:`model_fingerprint` (class, architecture and every weight's bytes), the
    frames (array bytes, or the movie file's content) and every parameter.

This module imports no ``cinebrain.models``: the extractor runs any callable torch module.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cinebrain.errors import InputError
from cinebrain.features.base import FeatureSpace
from cinebrain.features.cache import cached_many

POOLS = ("mean", "first", "last", "flatten")
PADS = ("edge", "none")
#: Image-processor files of a Hugging Face model folder, in the order they are looked for.
PREPROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
# ITU-R BT.601 luma weights (FFmpeg's gray conversion), for RGB frames fed to 1-channel models.
_LUMA = (0.299, 0.587, 0.114)

Pool = str | Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- pooling
def _first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer's output stands for: itself, ``last_hidden_state`` of a Hugging
    Face ``ModelOutput`` (or any mapping), else the first tensor of a tuple / list /
    mapping (searched depth first); None if there is none."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, Mapping):
        if torch.is_tensor(output.get("last_hidden_state")):
            return output["last_hidden_state"]
        items: Iterable[Any] = output.values()
    elif isinstance(output, (tuple, list)):
        items = output
    else:
        return None
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def default_feature_axis(ndim: int) -> int:
    """The feature (channel) axis of a layer output of rank ``ndim`` (batch first).

    ``(B, F)``: 1; ``(B, N, D)`` (tokens: transformers, linear layers on sequences): 2,
    the last; ``(B, C, ...)`` of rank 4 and more (convolutions: ``(B, C, H, W)``,
    ``(B, C, T, H, W)``): 1, the channels. A Conv1d output ``(B, C, L)`` needs
    ``feature_axis=1``.
    """
    return 2 if ndim == 3 else 1


def pool_activation(output: Any, pool: Pool = "mean", feature_axis: int | None = None) -> torch.Tensor:
    """Pool one layer's output for a batch of clips to ``(B, n_features)``.

    Parameters
    ----------
    output : tensor ``(B, ...)``, or a tuple / list / mapping / Hugging Face ``ModelOutput``
        holding one (``last_hidden_state`` if present, else the first tensor).
    pool : {"mean", "first", "last", "flatten"} or callable
        ``"mean"``: average over every axis but the batch and the feature axis.
        ``"first"`` / ``"last"``: the first / last element along the first axis after the
        batch that is not the feature axis (time in ``(B, C, T, H, W)``, the token in
        ``(B, N, D)``: ``"first"`` is a ViT's CLS token, ``"last"`` a causal model's newest
        token), then the mean over the remaining axes; a ``(B, F)`` output is kept as it is.
        ``"flatten"``: every value, ``(B, prod(rest))``. A callable maps the tensor to
        ``(B, F)`` or ``(B,)``.
    feature_axis : int or None
        Axis of the features; None: :func:`default_feature_axis`.

    Returns
    -------
    tensor, shape (B, n_features), the input's dtype (float32 for half precision)
    """
    x = _first_tensor(output)
    if x is None:
        raise InputError("layer output", f"holds no tensor (got {type(output).__name__})",
                         "choose a layer whose output is a tensor, or pass pool= a callable")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if callable(pool):
        y = _first_tensor(pool(x))
        if y is None:
            raise InputError("pool", "the pooling callable returned no tensor", "return a (batch, features) tensor")
        return y.reshape(y.shape[0], -1) if y.ndim != 1 else y[:, None]
    if x.ndim == 0:
        raise InputError("layer output", "is a scalar, with no batch axis", "choose a layer that keeps the batch axis")
    if x.ndim == 1:
        return x[:, None]
    if pool == "flatten":
        return x.reshape(x.shape[0], -1)
    axis = default_feature_axis(x.ndim) if feature_axis is None else int(feature_axis)
    if not -x.ndim <= axis < x.ndim or axis % x.ndim == 0:
        raise InputError("feature_axis", f"{axis} is not a non-batch axis of an output of shape {tuple(x.shape)}",
                         f"give an axis in 1..{x.ndim - 1}")
    x = x.movedim(axis, -1)  # (B, ..., F), the other axes in their order
    if pool in ("first", "last") and x.ndim > 2:
        x = x[:, 0] if pool == "first" else x[:, -1]
    elif pool not in POOLS:
        raise InputError("pool", f"unknown pooling {pool!r}", f"use one of {list(POOLS)}, a callable or a dict per layer")
    return x.mean(dim=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x


# ---------------------------------------------------------------------------- inputs
def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device, torch.float32
    return torch.device("cpu"), torch.float32


def clip_tensor(clip: np.ndarray) -> torch.Tensor:
    """The default model input of a clip: ``(window, H, W)`` or ``(window, H, W, C)``
    float32 -> a ``(1, C, window, H, W)`` tensor (C = 1 for grey frames), the layout of
    ``torch.nn.Conv3d``."""
    x = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
    x = x[None] if x.ndim == 3 else x.permute(3, 0, 1, 2)  # (C, T, H, W)
    return x[None]


class PixelValuesInput:
    """``input_fn`` for Hugging Face vision models that take ``pixel_values``.

    Image models (a ViT: ``(B, C, H, W)``) see the clip's last frame, the newest one, so
    features stay causal; video models (a config with ``num_frames``, e.g. VideoMAE or
    TimeSformer: ``(B, T, C, H, W)``) see the whole clip, whose length must then equal
    ``num_frames``. Each frame is resized to ``config.image_size`` (bilinear, antialiased,
    ``torch.nn.functional.interpolate``), grey frames are repeated to 3 channels when
    ``config.num_channels`` is 3 (RGB frames are turned to luminance for a 1-channel model),
    and values in [0, 1] are normalised with the image processor's ``image_mean`` /
    ``image_std`` when the folder holds a ``preprocessor_config.json`` (or
    ``video_preprocessor_config.json``; ``do_normalize: false`` is honoured), else with
    0.5 / 0.5.

    Parameters
    ----------
    model : a transformers ``PreTrainedModel`` (only its ``config`` is read)
    folder : the model's local folder, for its preprocessor config; None: the folder the
        model was loaded from (``model.name_or_path``) when that is a local folder.

    Calling it on a clip ``(window, H, W[, C])`` float32 returns
    ``{"pixel_values": tensor}`` with a batch axis of 1.
    """

    def __init__(self, model: Any, folder: str | os.PathLike | None = None):
        config = getattr(model, "config", model)
        size = getattr(config, "image_size", None)
        if isinstance(size, Mapping):
            size = (size.get("height"), size.get("width"))
        self.size = None if size is None else ((int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size))
        self.num_channels = int(getattr(config, "num_channels", 3))
        frames = getattr(config, "num_frames", None)
        self.num_frames = int(frames) if frames else None
        if folder is None:
            guess = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
            folder = guess if guess and Path(guess).is_dir() else None
        self.mean = [0.5] * self.num_channels
        self.std = [0.5] * self.num_channels
        self.source = "default 0.5/0.5"
        for name in PREPROCESSOR_FILES if folder is not None else ():
            path = Path(folder) / name
            if path.is_file():
                self._read_preprocessor(path)
                break

    def _read_preprocessor(self, path: Path) -> None:
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot be read as JSON ({' '.join(str(e).split())})",
                             "fix or remove the image processor's config") from None
        self.source = str(path)
        if cfg.get("do_normalize", True) is False:
            self.mean, self.std = [0.0] * self.num_channels, [1.0] * self.num_channels
            return
        mean = cfg.get("image_mean", self.mean)
        std = cfg.get("image_std", self.std)
        mean, std = [mean] if np.isscalar(mean) else list(mean), [std] if np.isscalar(std) else list(std)
        for key, v in (("image_mean", mean), ("image_std", std)):
            if len(v) not in (1, self.num_channels):
                raise InputError(path, f"{key} has {len(v)} values for a model of {self.num_channels} channels",
                                 f"give 1 or {self.num_channels} values")
        self.mean = [float(m) for m in mean] * (self.num_channels // len(mean))
        self.std = [float(s) for s in std] * (self.num_channels // len(std))

    @property
    def cache_token(self) -> str:
        """Everything that sets the input, for cache keys."""
        return (f"PixelValuesInput(size={self.size}, channels={self.num_channels}, frames={self.num_frames}, "
                f"mean={self.mean}, std={self.std})")

    def __call__(self, clip: np.ndarray) -> dict[str, torch.Tensor]:
        if self.num_frames is not None and clip.shape[0] != self.num_frames:
            raise InputError("window", f"clips of {clip.shape[0]} frames for a video model of "
                             f"num_frames {self.num_frames}", f"use window={self.num_frames}")
        x = torch.from_numpy(np.ascontiguousarray(clip if self.num_frames else clip[-1:], dtype=np.float32))
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (T, C, H, W)
        if x.shape[1] == 1 and self.num_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.num_channels == 1:
            x = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        elif x.shape[1] != self.num_channels:
            raise InputError("frames", f"have {x.shape[1]} channels; the model takes {self.num_channels}",
                             "give grey or RGB frames")
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (x - mean) / std
        return {"pixel_values": x[None] if self.num_frames else x}  # (1, T, C, H, W) or (1, C, H, W)


def _default_input_fn(model: torch.nn.Module) -> Callable[[np.ndarray], Any]:
    if getattr(model, "main_input_name", None) == "pixel_values" and hasattr(model, "config"):
        return PixelValuesInput(model)
    return clip_tensor


def _collate(items: list[Any]) -> Any:
    first = items[0]
    if torch.is_tensor(first):
        return torch.cat(items, dim=0)
    if isinstance(first, Mapping):
        return {k: _collate([it[k] for it in items]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(_collate([it[i] for it in items]) for i in range(len(first)))
    if isinstance(first, np.ndarray):
        return torch.cat([torch.from_numpy(np.ascontiguousarray(it)) for it in items], dim=0)
    return first  # a flag or option shared by every clip


def _to(x: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if torch.is_tensor(x):
        return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
    if isinstance(x, Mapping):
        return {k: _to(v, device, dtype) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to(v, device, dtype) for v in x)
    return x


def _call(model: torch.nn.Module, x: Any) -> Any:
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple):
        return model(*x)
    return model(x)


# ---------------------------------------------------------------------------- clips
def _as_float(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) * np.float32(1 / 255)
    return frame.astype(np.float32, copy=False)


def _clips(frames: Iterable[tuple[float, np.ndarray]], window: int, stride: int, pad: str,
           where: str) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time of the clip's last frame, clip (window, H, W[, C]) float32)``."""
    first_end = 0 if pad == "edge" else window - 1
    buf: deque[np.ndarray] = deque(maxlen=window)
    shape = None
    n = 0
    for k, (t, frame) in enumerate(frames):
        f = _as_float(frame)
        if shape is None:
            shape = f.shape
            if f.ndim not in (2, 3):
                raise InputError(where, f"frames must be (height, width) or (height, width, channels), got {f.shape}",
                                 "give frames as (n_frames, height, width[, channels])")
            if pad == "edge":
                buf.extend([f] * (window - 1))
        elif f.shape != shape:
            raise InputError(where, f"frame {k} has shape {f.shape}, frame 0 {shape}", "give frames of one size")
        buf.append(f)
        n = k + 1
        if k >= first_end and (k - first_end) % stride == 0:
            yield float(t), np.stack(buf)
    if n < window:
        raise InputError(where, f"the movie has {n} frames, fewer than the window of {window}",
                         f"give a window of at most {n} frames or a longer movie")


# ---------------------------------------------------------------------------- checks
def _check_layers(model: torch.nn.Module, layers: str | Sequence[str]) -> tuple[list[str], dict[str, torch.nn.Module]]:
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise InputError("layers", "no layer given", "name one or more submodules from dict(model.named_modules())")
    modules = dict(model.named_modules())
    for layer in layers:
        if not isinstance(layer, str):
            raise InputError("layers", f"{layer!r} is not a module name", "give names from dict(model.named_modules())")
        if layer not in modules:
            names = [n for n in modules if n]
            close = difflib.get_close_matches(layer, names, n=4, cutoff=0.5)
            shown = close + [n for n in names if n not in close][: max(0, 6 - len(close))]
            raise InputError(f"layer {layer!r}", f"the model ({type(model).__name__}) has no submodule of that name",
                             f"use a name from dict(model.named_modules()) ({len(names)} in all), e.g. "
                             + ", ".join(repr(n) for n in shown))
    dup = sorted({x for x in layers if layers.count(x) > 1})
    if dup:
        raise InputError("layers", f"{dup} given more than once", "name each layer once")
    return layers, {layer: modules[layer] for layer in layers}


def _per_layer(value: Any, layers: list[str], key: str, default: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in layers]
        if unknown:
            raise InputError(key, f"names layer(s) {unknown} that are not in layers {layers}",
                             "key the dict by the names in layers")
        return {layer: value.get(layer, default) for layer in layers}
    return dict.fromkeys(layers, value)


def _check_pool(pool: Any) -> None:
    if not (callable(pool) or pool in POOLS):
        raise InputError("pool", f"unknown pooling {pool!r}", f"use one of {list(POOLS)}, a callable or a dict per layer")


def _describe(fn: Any) -> str:
    """A callable or value as it counts in a cache key (callables by ``cache_token`` or
    their qualified name)."""
    if fn is None or isinstance(fn, (str, int, float)):
        return str(fn)
    token = getattr(fn, "cache_token", None)
    if isinstance(token, str):
        return token
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of a model: its class, its ``repr`` (the architecture and the settings of
    every submodule) and the name, dtype, shape and bytes of every entry of its
    ``state_dict`` (weights and buffers). Two models with equal fingerprints compute the
    same function; changing any weight changes it.

    Returns
    -------
    str, 32 hex digits
    """
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\x00{model!r}\x00".encode())
    config = getattr(model, "config", None)
    if hasattr(config, "to_json_string"):
        h.update(config.to_json_string().encode())
    for name, t in model.state_dict().items():
        if not torch.is_tensor(t):
            continue
        t = t.detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\x00".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------- extraction
def _run(
    model: torch.nn.Module,
    clips: Iterator[tuple[float, np.ndarray]],
    fps: float,
    layers: list[str],
    modules: dict[str, torch.nn.Module],
    *,
    window: int,
    stride: int,
    pool: dict[str, Pool],
    feature_axis: dict[str, int | None],
    pad: str,
    input_fn: Callable[[np.ndarray], Any],
    batch_size: int,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    name_prefix: str,
    progress: bool,
    meta: dict,
) -> dict[str, FeatureSpace]:
    from tqdm.auto import tqdm

    captured: dict[str, torch.Tensor] = {}

    def hook_for(layer: str) -> Callable:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            # A module called several times in one forward pass: its last call counts.
            captured[layer] = pool_activation(output, pool[layer], feature_axis[layer]).detach().to("cpu", torch.float32)

        return hook

    modes = [(m, m.training) for m in model.modules()]
    home, model_dtype = _model_device_dtype(model)
    run_device = home if device is None else torch.device(device)
    autocast = dtype is not None and dtype != model_dtype
    rows: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    times: list[float] = []
    handles = []
    try:
        if run_device != home:
            model.to(run_device)
        model.eval()
        handles = [modules[layer].register_forward_hook(hook_for(layer)) for layer in layers]
        batch: list[Any] = []

        def flush() -> None:
            n = len(batch)
            x = _to(_collate(batch), run_device, model_dtype)
            captured.clear()
            with torch.no_grad(), torch.autocast(run_device.type, dtype=dtype, enabled=autocast):
                _call(model, x)
            for layer in layers:
                if layer not in captured:
                    raise InputError(f"layer {layer!r}", "did not run during the model's forward pass",
                                     "choose a submodule that the forward pass calls")
                y = captured[layer]
                if y.ndim != 2 or y.shape[0] != n:
                    raise InputError(f"layer {layer!r}", f"pooled to shape {tuple(y.shape)} for a batch of {n} clips",
                                     "its output must keep the batch first: pass feature_axis= or pool= a callable "
                                     "returning (batch, features)")
                if rows[layer] and y.shape[1] != rows[layer][0].shape[1]:
                    raise InputError(f"layer {layer!r}", f"gave {y.shape[1]} features, earlier clips "
                                     f"{rows[layer][0].shape[1]}", "give frames of one size")
                rows[layer].append(y.numpy())
            batch.clear()

        with tqdm(disable=not progress, unit="clip", desc="activations") as bar:
            for t, clip in clips:
                batch.append(input_fn(clip))
                times.append(t)
                if len(batch) == batch_size:
                    flush()
                    bar.update(batch_size)
            if batch:
                bar.update(len(batch))
                flush()
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
        if run_device != home:
            model.to(home)

    onsets = np.asarray(times, dtype=np.float64)
    out = {}
    for layer in layers:
        name = f"{name_prefix}{layer or 'output'}"
        values = np.concatenate(rows[layer], axis=0)
        space_meta = {**meta, "band": name, "layer": layer, "window": window, "stride": stride,
                      "pool": _describe(pool[layer]), "pad": pad, "fps": float(fps)}
        out[name] = FeatureSpace(name, values, onsets, stride / float(fps),
                                 feature_names=[f"{name}_{i}" for i in range(values.shape[1])],
                                 method="mean", meta=space_meta)
    return out


def _prepare(model, layers, window, stride, pool, feature_axis, pad, batch_size, fps, input_fn):
    if not isinstance(model, torch.nn.Module):
        raise InputError("model", f"is a {type(model).__name__}, not a torch.nn.Module",
                         "give a torch module (any callable network)")
    for key, v in (("window", window), ("stride", stride), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(key, f"must be an integer >= 1, got {v!r}",
                             "give the clip length in frames" if key == "window" else f"give {key} >= 1")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise InputError("fps", f"must be > 0 frames per second, got {fps}", "give the movie's frame rate")
    if pad not in PADS:
        raise InputError("pad", f"unknown padding {pad!r}", f"use one of {list(PADS)}")
    layers, modules = _check_layers(model, layers)
    pools = _per_layer(pool, layers, "pool", "mean")
    for p in pools.values():
        _check_pool(p)
    axes = _per_layer(feature_axis, layers, "feature_axis", None)
    return layers, modules, pools, axes, input_fn if input_fn is not None else _default_input_fn(model)


def _key_parts(model, source, fps, layers, window, stride, pools, axes, pad, input_fn, dtype, name_prefix) -> list:
    return [model_fingerprint(model), source, float(fps), layers, int(window), int(stride),
            {k: _describe(v) for k, v in pools.items()}, axes, pad, _describe(input_fn), str(dtype), name_prefix]


def extract_activations(
    model: torch.nn.Module,
    frames: np.ndarray,
    fps: float,
    layers: str | Sequence[str],
    *,
    window: int,
    stride: int = 1,
    pool: Pool | Mapping[str, Pool] = "mean",
    feature_axis: int | Mapping[str, int] | None = None,
    pad: str = "edge",
    input_fn: Callable[[np.ndarray], Any] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    name_prefix: str = "",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> list[FeatureSpace]:
    """Activations of named layers of a network run over sliding clips of a movie.

    Parameters
    ----------
    model : torch.nn.Module
        Any network. It runs in eval mode under ``torch.no_grad``; the training mode of
        every submodule is restored afterwards and the hooks are removed, also on error.
    frames : ndarray, shape (n_frames, H, W) or (n_frames, H, W, C)
        uint8 frames are scaled to [0, 1]; other dtypes are cast to float32 unchanged.
    fps : float
        Frame rate; frame ``k`` is shown at ``k / fps`` seconds.
    layers : str or sequence of str
        Names of submodules, keys of ``dict(model.named_modules())`` (``""``: the model's
        own output, a space named ``"output"``).
    window : int
        Frames per clip (>= 1; the movie must have at least this many).
    stride : int
        Frames between the ends of consecutive clips (the hop).
    pool : "mean", "first", "last", "flatten", callable, or dict layer -> one of those
        How each layer's output becomes one vector per clip (:func:`pool_activation`);
        layers missing from a dict use ``"mean"``.
    feature_axis : int, dict layer -> int, or None
        The features' axis in a layer's output (None: :func:`default_feature_axis`, the
        channels of a convolution, the last axis of ``(B, N, D)`` tokens).
    pad : {"edge", "none"}
        ``"edge"``: a clip ends at every ``stride``-th frame from frame 0, the frames before
        the movie being copies of its first frame; ``"none"``: the first clip ends at frame
        ``window - 1``.
    input_fn : callable or None
        Maps a clip ``(window, H, W[, C])`` float32 to the model's input for one clip, with
        a leading batch axis of 1: a tensor (called as ``model(x)``), a tuple (``model(*x)``)
        or a dict (``model(**x)``). Clips are concatenated along that axis into batches;
        tensors are moved to the device and floating ones cast to the model's dtype.
        None: :class:`PixelValuesInput` for a model whose ``main_input_name`` is
        ``pixel_values`` (Hugging Face vision models), else :func:`clip_tensor`, a
        ``(1, C, window, H, W)`` tensor.
    batch_size : int
        Clips per forward pass (results do not depend on it for models without batch
        interactions).
    device : where to run; None: the model's device. Another device moves the model there
        for the call and back afterwards.
    dtype : None: the model's dtype; another (e.g. ``torch.bfloat16``) runs the model under
        ``torch.autocast`` in it (the weights are left untouched).
    name_prefix : str
        Prefix of the spaces' names (``"vit."`` gives ``"vit.layers.0"``).
    cache_dir : folder or None
        Cache the spaces there (:func:`~cinebrain.features.cache.cached_many`), keyed by
        :func:`model_fingerprint`, the frames' bytes and every parameter; a callable
        ``pool`` or ``input_fn`` counts by its ``cache_token`` attribute, else its qualified
        name (rename it, or clear the cache, when its code changes).
    progress : bool
        Show a progress bar over clips.

    Returns
    -------
    list of FeatureSpace, one per layer, in the order of ``layers``
        ``name_prefix + layer``; values (n_clips, n_features) float32; ``onsets`` = the time
        of each clip's last frame, ``durations`` = ``stride / fps`` (causal: a row uses only
        frames shown at or before its onset); ``method="mean"``; ``meta``: ``band`` (the
        space's name), ``layer``, ``window``, ``stride``, ``pool``, ``pad``, ``fps``,
        ``model`` (class name). ``n_clips = ceil(n_frames / stride)`` with ``pad="edge"``,
        ``(n_frames - window) // stride + 1`` with ``pad="none"``.

    Raises
    ------
    InputError
        Fewer frames than ``window``, ``window``/``stride``/``batch_size`` < 1, no layers,
        a layer the model lacks (a few of its names are suggested), a layer that does not
        run or loses the batch axis.
    """
    layers, modules, pools, axes, input_fn = _prepare(model, layers, window, stride, pool, feature_axis, pad,
                                                      batch_size, fps, input_fn)
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise InputError("frames", f"must be (n_frames, height, width) or (n_frames, height, width, channels), "
                         f"got shape {frames.shape}", "stack the frames along the first axis")
    if frames.shape[0] < window:
        raise InputError("frames", f"the movie has {frames.shape[0]} frames, fewer than the window of {window}",
                         f"give a window of at most {frames.shape[0]} frames or a longer movie")
    meta = {"model": type(model).__name__, "n_frames": int(frames.shape[0])}

    def compute() -> dict[str, FeatureSpace]:
        timed = ((k / float(fps), f) for k, f in enumerate(frames))
        return _run(model, _clips(timed, window, stride, pad, "frames"), fps, layers, modules, window=window,
                    stride=stride, pool=pools, feature_axis=axes, pad=pad, input_fn=input_fn,
                    batch_size=batch_size, device=device, dtype=dtype, name_prefix=name_prefix,
                    progress=progress, meta=meta)

    parts = _key_parts(model, np.ascontiguousarray(frames), fps, layers, window, stride, pools, axes, pad,
                       input_fn, dtype, name_prefix) if cache_dir is not None else []
    return list(cached_many(cache_dir, "activations", parts, compute).values())


def extract_movie_activations(
    path: str | os.PathLike,
    model: torch.nn.Module,
    layers: str | Sequence[str],
    *,
    window: int,
    size: tuple[int, int] | None = (224, 224),
    gray: bool = False,
    stride: int = 1,
    pool: Pool | Mapping[str, Pool] = "mean",
    feature_axis: int | Mapping[str, int] | None = None,
    pad: str = "edge",
    input_fn: Callable[[np.ndarray], Any] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    name_prefix: str = "",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> list[FeatureSpace]:
    """:func:`extract_activations` on a movie file, decoded frame by frame.

    Parameters
    ----------
    path : movie file (anything :class:`cinebrain.io.video.VideoReader` opens)
    size : (width, height) or None
        Size frames are decoded at (None: native); a :class:`PixelValuesInput` resizes
        them again to the model's ``image_size``.
    gray : bool
        Decode grey frames ``(H, W)`` instead of RGB ``(H, W, 3)``.
    others : as :func:`extract_activations`; the frame rate is the movie's, and onsets are
        the decoded frames' times. A cache key counts the file by its content.

    Returns
    -------
    list of FeatureSpace, one per layer (``meta["source"]``: the file)

    Raises
    ------
    InputError
        As :func:`extract_activations`, naming the file; and every error of the reader
        (missing, not a video, truncated).
    """
    from cinebrain.io.video import VideoReader

    reader = VideoReader(path)
    layers, modules, pools, axes, input_fn = _prepare(model, layers, window, stride, pool, feature_axis, pad,
                                                      batch_size, reader.fps, input_fn)
    meta = {"model": type(model).__name__, "source": str(path)}

    def compute() -> dict[str, FeatureSpace]:
        clips = _clips(reader.iter_frames(size=size, gray=gray), window, stride, pad, str(path))
        return _run(model, clips, reader.fps, layers, modules, window=window, stride=stride, pool=pools,
                    feature_axis=axes, pad=pad, input_fn=input_fn, batch_size=batch_size, device=device,
                    dtype=dtype, name_prefix=name_prefix, progress=progress, meta=meta)

    parts = _key_parts(model, Path(path), reader.fps, layers, window, stride, pools, axes, pad, input_fn, dtype,
                       name_prefix) + [list(size) if size is not None else None, bool(gray)] if cache_dir is not None else []
    return list(cached_many(cache_dir, "activations", parts, compute).values())


# ---------------------------------------------------------------------------- Hugging Face
def _summary(e: BaseException) -> str:
    """The first sentence of an error, on one line, at most 200 characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    for sep in (". ", " | "):
        if sep in text:
            text = text.split(sep)[0]
    return text if len(text) <= 200 else text[:197] + "..."


def load_pretrained(path: str | os.PathLike, kind: str = "auto") -> torch.nn.Module:
    """Load a Hugging Face ``transformers`` model from a local folder, in eval mode.

    Nothing is downloaded (``local_files_only=True``).

    Parameters
    ----------
    path : folder written by ``save_pretrained`` (``config.json`` and the weights)
    kind : "auto" (``transformers.AutoModel``: the bare model, whose submodules give the
        hidden states) or the name of a transformers class with ``from_pretrained``
        (``"ViTForImageClassification"``, ``"AutoModelForVideoClassification"``...).

    Returns
    -------
    torch.nn.Module, in eval mode; its ``name_or_path`` is the folder, where
    :class:`PixelValuesInput` finds its ``preprocessor_config.json``.

    Raises
    ------
    InputError
        The folder is missing or is a file, has no ``config.json``, ``kind`` is not a
        transformers class, or transformers cannot load the model (its error summarised).
    """
    path = Path(path)
    fix = "give a local folder written by save_pretrained (config.json and model.safetensors)"
    if not path.exists():
        raise InputError(path, "model folder not found", fix)
    if not path.is_dir():
        raise InputError(path, "is a file, not a model folder", fix)
    if not (path / "config.json").is_file():
        raise InputError(path, "not a model folder: no config.json", fix)
    import transformers
    from transformers.utils import logging as hf_logging

    cls = transformers.AutoModel if kind == "auto" else getattr(transformers, str(kind), None)
    if not hasattr(cls, "from_pretrained"):
        raise InputError("kind", f"{kind!r} is not a transformers model class",
                         "use 'auto' or a class name such as 'ViTModel' or 'AutoModelForImageClassification'")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its loading bar would interleave with ours
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, ImportError) as e:
        raise InputError(path, f"transformers cannot load the model ({_summary(e)})",
                         f"{fix}, with a kind that fits the model") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not isinstance(model, torch.nn.Module):
        raise InputError(path, f"{kind} gave a {type(model).__name__}, not a torch model", "use a PyTorch model class")
    return model.eval()


__all__ = [
    "PADS",
    "POOLS",
    "PixelValuesInput",
    "clip_tensor",
    "default_feature_axis",
    "extract_activations",
    "extract_movie_activations",
    "load_pretrained",
    "model_fingerprint",
    "pool_activation",
]
