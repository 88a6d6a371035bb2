"""Training throughput of the multimodal autoencoder against this machine's matmul peak.

    python benchmarks/train.py                   # CPU, float32: the demo and large presets
    python benchmarks/train.py --quick           # seconds: a sanity run, figures not meaningful
    python benchmarks/train.py --device cuda     # GPU, bf16 autocast (the default there)

1. The reference, measured in the same run: square ``torch.matmul`` at several sizes in the
   training precision (float32, or bfloat16 for ``--precision bf16``), best of a few repeats,
   ``2 n^3`` FLOP each, with torch's default thread count. The best size is the peak; it is
   measured again after the presets and the higher of the two is used, so a machine that got
   busier meanwhile does not flatter the fractions.
2. Per preset: the model on synthetic inputs of the preset's shapes (a
   :class:`~cinebrain.data.windows.WindowDataset` of random stimulus features and
   responses, batched by ``collate_windows``), trained by the real engine
   (:class:`cinebrain.train.Trainer`: AdamW, cosine schedule, gradient clipping, no
   validation, no checkpoints, no log files). The engine times every step (data loading
   included) and logs samples/s every ``log_every`` steps; ``log_every`` is the warmup and
   one epoch is one warmup, so the first logged interval is the warmup and the rest are timed.
3. FLOP/s = samples/s x ``model.flops_per_sample()``: FLOPs of one training step per window
   (forward and backward, as ``torch.utils.flop_counter.FlopCounterMode`` counts them on a
   meta-device copy; not a 3x-forward estimate). That counter only counts matmul-like ops
   (mm / addmm / bmm / convolutions / attention), so norms, activations, losses and the
   optimizer are work the ratio does not credit. A window's TRs before a run start are
   padding and skip the encoders, which the count ignores; with one long run per synthetic
   dataset that is at most one window per epoch.

Prints a table and one line per preset. Never asserts; figures depend on what else the
machine is doing (the load average is printed).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from cinebrain.data.windows import WindowDataset, collate_windows
from cinebrain.models.autoencoder.model import AutoencoderConfig, MultimodalAutoencoder, windows_for
from cinebrain.models.autoencoder.presets import get_preset, module_parameters
from cinebrain.train import TrainConfig, Trainer

#: Windows per optimizer step: the engine's default for the demo; for "large" enough rows
#: that each Linear is a big GEMM and AdamW's memory-bound pass over 176 M parameters
#: (about 3 s a step on a 2-core CPU, whatever the batch) is small next to them.
BATCH = {"cpu": {"demo": 32, "large": 1024}, "cuda": {"demo": 32, "large": 4096}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device, precision: str) -> None:
    """Print the device, precision and load; on a GPU, fp32 means fp32 (no TF32 in matmuls
    or cuDNN convolutions, here and in training)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; precision {precision}; torch {torch.__version__}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def matmul_gflops(n: int, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """Best GFLOP/s of ``torch.matmul`` of two ``(n, n)`` matrices over ``repeats`` timings."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    # a GPU matmul takes microseconds: time a batch of them so the launch cost is amortised
    inner = max(1, int(2e11 // (2 * n**3))) if device.type == "cuda" else 1
    torch.matmul(a, b)
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9


def synthetic_windows(config: AutoencoderConfig, n_windows: int, seed: int = 0) -> WindowDataset:
    """A WindowDataset of ``n_windows`` windows over one run of random features and responses."""
    rng = np.random.default_rng(seed)
    stride = int(config.window) - config.history  # scored TRs per window
    n_trs = n_windows * stride
    subject = next(iter(config.n_voxels))
    inputs = {
        m: rng.standard_normal((n_trs, *shape), dtype=np.float32)
        for m, shape in config.input_shapes().items()
    }
    responses = rng.standard_normal((n_trs, config.n_voxels[subject]), dtype=np.float32)
    return windows_for(config, inputs, responses, [n_trs], subject)


def batch_ms(dataset: WindowDataset, batch_size: int) -> float:
    """Milliseconds to build one batch in one process (``__getitems__`` + collation): the
    data path's share of each step the engine times when ``num_workers`` is 0."""
    t0 = time.perf_counter()
    collate_windows(dataset.__getitems__(range(batch_size)))
    return 1e3 * (time.perf_counter() - t0)


def bench_preset(
    name: str, args: argparse.Namespace, device: torch.device, batch_size: int
) -> dict:
    config = get_preset(name)
    torch.manual_seed(0)
    model = MultimodalAutoencoder(config)
    params = module_parameters(model)["total"]
    flops = float(model.flops_per_sample())
    warmup = args.warmup
    timed_steps = warmup * math.ceil(args.steps / warmup)  # whole logged intervals
    dataset = synthetic_windows(config, warmup * batch_size)  # one epoch = one interval
    train_config = TrainConfig(
        max_steps=warmup + timed_steps,
        batch_size=batch_size,
        lr=1e-4,
        precision=args.precision,
        device=device.type,
        log_every=warmup,
        progress=False,
        out_dir=None,
        num_workers=args.num_workers,
        seed=0,
    )
    data_ms = batch_ms(dataset, batch_size)
    trainer = Trainer(model, train_config, dataset, collate_fn=collate_windows)
    history = trainer.fit()
    samples, seconds, last_step = 0, 0.0, 0
    for record in history.train:
        n = (record["step"] - last_step) * batch_size
        last_step = record["step"]
        if record["step"] <= warmup:
            continue
        samples += n
        seconds += n / record["samples_per_s"]
    samples_per_s = samples / seconds
    return {
        "name": name,
        "params": params,
        "batch": batch_size,
        "window": int(config.window),
        "flops_per_sample": flops,
        "steps": timed_steps,
        "samples_per_s": samples_per_s,
        "step_ms": 1e3 * batch_size / samples_per_s,
        "data_ms": data_ms,
        "gflops": samples_per_s * flops / 1e9,
        "loss": history.train[-1]["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), help="default: bf16 on cuda, fp32 on cpu"
    )
    parser.add_argument("--presets", nargs="+", default=["demo", "large"])
    parser.add_argument("--steps", type=int, help="timed steps (default: cpu 3, cuda 50)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: cpu 1, cuda 10)")
    parser.add_argument("--batch-size", type=int, help="windows per step, for every preset")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (cpu 0, cuda 8)")
    parser.add_argument("--sizes", type=int, nargs="+", help="matmul sizes for the peak")
    parser.add_argument("--repeats", type=int, default=3, help="timings per matmul size")
    parser.add_argument("--quick", action="store_true", help="tiny batches and few steps")
    args = parser.parse_args()

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return
    device = torch.device("cuda" if cuda else "cpu")
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    args.steps = args.steps or (2 if args.quick else 50 if cuda else 3)
    args.warmup = args.warmup or (1 if args.quick else 10 if cuda else 1)
    args.num_workers = args.num_workers if args.num_workers is not None else (8 if cuda else 0)
    sizes = args.sizes or (
        [512, 1024]
        if args.quick
        else [2048, 4096, 8192, 16384]
        if cuda
        else [1024, 2048, 3072, 4096]
    )
    describe_device(device, args.precision)

    per_size = {n: matmul_gflops(n, device, dtype, args.repeats) for n in sizes}
    print(
        f"matmul {dtype}: " + ", ".join(f"n={n} {g:,.1f}" for n, g in per_size.items()) + " GFLOP/s"
    )
    best_n = max(per_size, key=per_size.get)

    results = []
    for preset in args.presets:
        batch = args.batch_size or BATCH[device.type].get(preset, 32)
        if args.quick:
            batch = min(batch, 8 if preset == "demo" else 64)
        results.append(bench_preset(preset, args, device, batch))

    again = matmul_gflops(best_n, device, dtype, args.repeats)
    peak = max(per_size[best_n], again)
    print(
        f"matmul peak: {per_size[best_n]:,.1f} GFLOP/s at n={best_n} before the presets, "
        f"{again:,.1f} after; using {peak:,.1f}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    header = (
        f"{'preset':<8} {'params':>8} {'batch':>6} {'W':>3} {'GFLOP/win':>10} {'steps':>6} "
        f"{'ms/step':>9} {'data ms':>8} {'samples/s':>10} {'GFLOP/s':>9} {'% peak':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<8} {r['params'] / 1e6:>7.1f}M {r['batch']:>6} {r['window']:>3} "
            f"{r['flops_per_sample'] / 1e9:>10.3f} {r['steps']:>6} {r['step_ms']:>9.1f} "
            f"{r['data_ms']:>8.1f} {r['samples_per_s']:>10.1f} {r['gflops']:>9.1f} "
            f"{100 * r['gflops'] / peak:>6.0f}%"
        )
    print()
    print("samples are windows of W TRs; GFLOP/win counts matmul/conv FLOPs of forward + backward")
    for r in results:
        print(
            f"{r['name']}: {r['samples_per_s']:,.1f} samples/s, {r['gflops']:,.1f} GFLOP/s = "
            f"{100 * r['gflops'] / peak:.0f}% of matmul peak ({peak:,.1f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
