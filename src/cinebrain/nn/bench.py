"""Encoder benchmark (seed 002): time, peak memory and throughput per encoder and fusion.

:func:`benchmark_encoders` builds every encoder type (ViT and conv image encoders, the
video encoder with each temporal aggregation, audio, text) and every fusion method at
one of a few sizes (``scale``), runs each on a random batch and returns one row per
module. :func:`format_table` prints the rows. The CLI ``cinebrain bench-encoders``
wraps both.

Peak memory is that of one step (training step, or forward without backward) above
what was allocated before it; ``memory`` in each row says how it was measured:

- ``"cuda"`` (on CUDA): ``torch.cuda.max_memory_allocated`` minus the allocation at the
  start of the step.
- ``"profiler"`` (CPU default): tracemalloc does not see torch's allocator, so the step
  runs under ``torch.profiler`` with ``profile_memory=True`` and the peak of the running
  sum of its allocation / free events is reported: the same quantity as on CUDA
  (activations, gradients, workspaces). The profiler's first use in a process costs a
  few seconds.
- ``"rss"``: a background thread samples the resident set size (``/proc/self/statm``, or
  psutil where installed) every ~0.5 ms; the peak above the RSS at the start. Cheap, but
  memory that the C allocator kept from earlier steps is reused without growing the RSS,
  so this is a lower bound and often 0 for small modules. Without ``/proc`` or psutil,
  ``ru_maxrss`` growth is used (0 once an earlier step reached a higher peak).
- ``"none"``: not measured (reported as NaN).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from statistics import median

import torch
from torch import nn

from cinebrain.errors import ConfigError
from cinebrain.nn.common import check_choice, count_parameters
from cinebrain.nn.encoders import (
    AGGREGATIONS,
    AudioEncoder,
    AudioEncoderConfig,
    ConvImageConfig,
    ConvImageEncoder,
    TextEncoder,
    TextEncoderConfig,
    VideoEncoder,
    VideoEncoderConfig,
    ViTConfig,
    ViTImageEncoder,
)
from cinebrain.nn.fusion import FUSION_METHODS, FusionConfig, MultimodalCombiner

#: Sizes per scale. "small" is representative of one TR of a movie at seed 000's frame
#: size; "tiny" is for tests; "base" for GPUs.
SCALES: dict[str, dict] = {
    "tiny": dict(
        image=(16, 32),
        patch=8,
        vit_dim=32,
        vit_depth=1,
        vit_heads=2,
        conv_channels=(8, 16),
        frames=3,
        frame_channels=(8, 16),
        frame_dim=32,
        n_mels=32,
        audio_channels=(8, 16),
        text_dim=32,
        text_hidden=(32,),
        fusion_dims={"video": 32, "audio": 16, "text": 16},
        fusion_dim=32,
    ),
    "small": dict(
        image=(90, 160),
        patch=10,
        vit_dim=192,
        vit_depth=4,
        vit_heads=4,
        conv_channels=(32, 64, 128, 256),
        frames=8,
        frame_channels=(16, 32, 64, 128),
        frame_dim=256,
        n_mels=128,
        audio_channels=(32, 64, 128),
        text_dim=384,
        text_hidden=(512,),
        fusion_dims={"video": 1024, "audio": 256, "text": 256},
        fusion_dim=256,
    ),
    "base": dict(
        image=(180, 320),
        patch=20,
        vit_dim=384,
        vit_depth=8,
        vit_heads=6,
        conv_channels=(32, 64, 128, 256, 512),
        frames=16,
        frame_channels=(32, 64, 128, 256),
        frame_dim=512,
        n_mels=128,
        audio_channels=(32, 64, 128),
        text_dim=1024,
        text_hidden=(512,),
        fusion_dims={"video": 1024, "audio": 256, "text": 256},
        fusion_dim=512,
    ),
}

Case = tuple[str, str, Callable[[], nn.Module], Callable[[int], object]]


def _cases(s: dict) -> list[Case]:
    """(name, kind, build module, make input for a batch size) for every benchmarked module."""
    H, W = s["image"]
    vit = ViTConfig(
        image_size=(H, W),
        patch_size=s["patch"],
        dim=s["vit_dim"],
        depth=s["vit_depth"],
        n_heads=s["vit_heads"],
        out_dim=512,
    )
    conv = ConvImageConfig(image_size=(H, W), channels=s["conv_channels"], out_dim=1024)
    frame = ConvImageConfig(image_size=(H, W), channels=s["frame_channels"], out_dim=s["frame_dim"])
    audio = AudioEncoderConfig(n_mels=s["n_mels"], channels=s["audio_channels"])
    text = TextEncoderConfig(in_dim=s["text_dim"], hidden_dims=s["text_hidden"])
    T = s["frames"]
    cases: list[Case] = [
        ("image_vit", "encoder", lambda: ViTImageEncoder(vit), lambda b: torch.randn(b, 3, H, W)),
        (
            "image_conv",
            "encoder",
            lambda: ConvImageEncoder(conv),
            lambda b: torch.randn(b, 3, H, W),
        ),
    ]
    for agg in AGGREGATIONS:
        cfg = VideoEncoderConfig(conv=frame, aggregation=agg, n_frames=T, n_heads=2)
        cases.append(
            (
                f"video_{agg}",
                "encoder",
                lambda cfg=cfg: VideoEncoder(cfg),
                lambda b: torch.randn(b, T, 3, H, W),
            )
        )
    cases += [
        (
            "audio_conv1d",
            "encoder",
            lambda: AudioEncoder(audio),
            lambda b: torch.randn(b, s["n_mels"]),
        ),
        ("text_mlp", "encoder", lambda: TextEncoder(text), lambda b: torch.randn(b, s["text_dim"])),
    ]
    dims = s["fusion_dims"]
    for method in FUSION_METHODS:
        cfg = FusionConfig(
            modalities=dict(dims), method=method, project=True, dim=s["fusion_dim"], n_heads=2
        )
        cases.append(
            (
                f"fusion_{method}",
                "fusion",
                lambda cfg=cfg: MultimodalCombiner(cfg),
                lambda b: {m: torch.randn(b, d) for m, d in dims.items()},
            )
        )
    return cases


# ------------------------------------------------------------------------------ memory


def _rss_bytes() -> int | None:
    """Current resident set size of this process, or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def _profiler_peak(prof) -> int | None:
    """Peak of the running sum of allocations minus frees recorded by ``torch.profiler``."""
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:  # private API moved: report nothing rather than a wrong number
        return None
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


class _PeakMemory:
    """Context manager: peak memory (bytes) of a block above its start; see module doc."""

    def __init__(self, device: torch.device, method: str):
        if method == "auto":
            method = "cuda" if device.type == "cuda" else "profiler"
        self.device, self.method, self.peak = device, method, float("nan")

    def __enter__(self):
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.method == "profiler":
            activities = [torch.profiler.ProfilerActivity.CPU]
            self._prof = torch.profiler.profile(activities=activities, profile_memory=True)
            self._prof.__enter__()
        elif self.method == "rss":
            self.base = _rss_bytes()
            if self.base is None:
                self.base, self.method = _maxrss_bytes(), "ru_maxrss"
            else:
                self._top, self._stop = self.base, threading.Event()
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._top = max(self._top, _rss_bytes() or 0)
            time.sleep(0.0005)

    def __exit__(self, *exc):
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif self.method == "profiler":
            self._prof.__exit__(None, None, None)
            peak = _profiler_peak(self._prof)
            self.peak = float("nan") if peak is None else peak
        elif self.method == "rss":
            self._stop.set()
            self._thread.join()
            self.peak = max(self._top, _rss_bytes() or 0) - self.base
        elif self.method == "ru_maxrss":
            self.peak = _maxrss_bytes() - self.base
        return False


# ------------------------------------------------------------------------------ timing


def _to(x, device: torch.device):
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Step:
    """One forward (eval, no grad) or training step (forward + backward) of a module."""

    def __init__(self, module: nn.Module, x, autocast, device: torch.device):
        self.module, self.x, self.autocast, self.device = module, x, autocast, device

    def __call__(self, train: bool) -> None:
        self.module.train(train)
        with self.autocast, torch.set_grad_enabled(train):
            loss = self.module(self.x).float().pow(2).mean()
        if train:
            loss.backward()
            self.module.zero_grad(set_to_none=True)
        _sync(self.device)


def _median_time(step: _Step, train: bool, warmup: int, repeats: int) -> float:
    """Median seconds per step over ``repeats`` after ``warmup`` untimed steps."""
    for _ in range(warmup):
        step(train)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(train)
        times.append(time.perf_counter() - t0)
    return median(times)


def benchmark_encoders(
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    repeats: int = 5,
    warmup: int = 1,
    backward: bool = True,
    scale: str = "small",
    only: list[str] | None = None,
    memory: str = "auto",
) -> list[dict]:
    """Time forward (and forward+backward) of every encoder type and fusion method.

    dtype: float32 runs as is; bfloat16 / float16 run under autocast (mixed precision,
    weights stay float32), the way training runs them. scale: "tiny" | "small" | "base"
    (see :data:`SCALES`). only: names (or name prefixes) of modules to run.
    memory: "auto" ("cuda" on CUDA, else "profiler") | "profiler" | "rss" | "none"
    (see the module docstring).

    Returns one dict per module: name, kind, params, input (shape), batch_size, device,
    dtype, forward_ms (eval, no grad; median over ``repeats``), forward_backward_ms
    (train mode; None when ``backward=False``), peak_memory_mb (of one training step, or
    one forward step without backward), memory (how it was measured), samples_per_s
    (batch_size / the slower of the two timed steps).
    """
    check_choice("scale", scale, tuple(SCALES))
    check_choice("memory", memory, ("auto", "cuda", "profiler", "rss", "none"))
    device = torch.device(device)
    if memory == "cuda" and device.type != "cuda":
        raise ConfigError("memory", f"'cuda' needs a CUDA device, got {device}")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    amp = dtype != torch.float32
    rows = []
    for name, kind, build, make_input in _cases(SCALES[scale]):
        if only and not any(name.startswith(o) for o in only):
            continue
        module = build().to(device)
        x = _to(make_input(batch_size), device)
        autocast = torch.autocast(device.type, dtype=dtype) if amp else contextlib.nullcontext()
        step = _Step(module, x, autocast, device)
        fwd = _median_time(step, False, warmup, repeats)
        fwd_bwd = _median_time(step, True, warmup, repeats) if backward else None
        with _PeakMemory(device, memory) as mem:
            step(train=backward)
        shape = {k: tuple(v.shape) for k, v in x.items()} if isinstance(x, dict) else tuple(x.shape)
        rows.append(
            dict(
                name=name,
                kind=kind,
                params=count_parameters(module),
                input=str(shape),
                batch_size=batch_size,
                device=str(device),
                dtype=str(dtype).replace("torch.", ""),
                forward_ms=1e3 * fwd,
                forward_backward_ms=None if fwd_bwd is None else 1e3 * fwd_bwd,
                peak_memory_mb=mem.peak / 2**20,
                memory=mem.method,
                samples_per_s=batch_size / max(fwd, fwd_bwd or 0.0),
            )
        )
        del module, x
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table of :func:`benchmark_encoders` rows."""
    cols = [
        ("module", lambda r: r["name"]),
        ("params", lambda r: f"{r['params'] / 1e6:.2f}M"),
        ("fwd ms", lambda r: f"{r['forward_ms']:.2f}"),
        (
            "fwd+bwd ms",
            lambda r: (
                "-" if r["forward_backward_ms"] is None else f"{r['forward_backward_ms']:.2f}"
            ),
        ),
        (
            "peak MB",
            lambda r: "-" if math.isnan(r["peak_memory_mb"]) else f"{r['peak_memory_mb']:.1f}",
        ),
        ("samples/s", lambda r: f"{r['samples_per_s']:.1f}"),
    ]
    cells = [[h for h, _ in cols]] + [[f(r) for _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if rows:
        r = rows[0]
        lines.append(
            f"device {r['device']}, dtype {r['dtype']}, batch {r['batch_size']}, "
            f"memory: {r['memory']}"
        )
    return "\n".join(lines)
