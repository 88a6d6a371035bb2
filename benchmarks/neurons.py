"""Training throughput of the neuron models against this machine's matmul peak.

    python benchmarks/neurons.py                 # CPU, float32: conv, vivit-small, vivit-baseline
    python benchmarks/neurons.py --quick         # seconds: a sanity run, figures not meaningful
    python benchmarks/neurons.py --device cuda   # GPU, bf16 autocast, SDPA's flash kernel

1. The reference, measured in the same run: square ``torch.matmul`` in the training
   precision (``benchmarks/train.py``'s ``matmul_gflops``: best size, measured again after
   the models, the higher of the two used).
2. Per core: a :class:`cinebrain.models.NeuronModel` (GRU modulator, shifter, softplus,
   Poisson loss) on two synthetic sessions of Sensorium's shape (36 x 64 frames at 30 Hz,
   ``--neurons`` per session, running + pupil, eye position), clips of ``--frames``
   frames, batches gathered on the device (:class:`cinebrain.data.neurons.DeviceBatches`,
   as the engine does with ``device_data``), AdamW steps timed after ``--warmup`` untimed
   ones (the time includes the batch gather).
3. FLOP/s = samples/s x the FLOPs of one training step per clip, forward and backward, as
   ``torch.utils.flop_counter.FlopCounterMode`` counts them on one real step (matmul-like
   ops only: linear layers, convolutions, attention; norms, activations, the readout's
   ``grid_sample``, the loss and the optimizer are work the ratio does not credit).

Prints one line per core and a table. Never asserts; figures depend on what else the
machine is doing (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import describe_device, matmul_gflops, sync  # noqa: E402  (benchmarks/train.py: the same peak)

from cinebrain.data.neurons import NeuronClipDataset, normalization_stats  # noqa: E402
from cinebrain.io.neurons import NeuronSession  # noqa: E402
from cinebrain.models.neurons import make_neuron_model, session_specs  # noqa: E402

CORES = ("conv", "vivit-small", "vivit-baseline")


def synthetic_sessions(n_neurons: int, n_trials: int, frames: int, seed: int = 0):
    """Two sessions of random movies (36 x 64), Poisson counts, behaviour and eye position."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(2):
        n = n_neurons + 17 * s  # different neuron counts, as real sessions have
        out.append(NeuronSession(
            name=f"mouse-{s + 1}",
            videos=[rng.uniform(0, 255, (frames, 36, 64)).astype(np.float32)
                    for _ in range(n_trials)],
            responses=[rng.poisson(0.3, (frames, n)).astype(np.float32) for _ in range(n_trials)],
            behavior=[rng.random((frames, 2), dtype=np.float32) for _ in range(n_trials)],
            pupil_center=[rng.normal(size=(frames, 2)).astype(np.float32)
                          for _ in range(n_trials)],
            tiers=np.array(["train"] * n_trials), clip_ids=np.arange(n_trials).astype(str),
            frame_rate=30.0, neuron_ids=np.arange(n).astype(str),
            behavior_names=["pupil", "running"]))
    return out


def bench_core(core: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    sessions = synthetic_sessions(args.neurons, args.trials, args.frames)
    trials = {s.name: list(range(s.n_trials)) for s in sessions}
    stats = normalization_stats(sessions, trials)
    ds = NeuronClipDataset(sessions, trials, frames=args.frames, stats=stats)
    torch.manual_seed(0)
    model = make_neuron_model(core, session_specs(sessions), modulator="gru", shifter=True,
                              frame_shape=(args.frames, 36, 64)).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = ds.device_batches(args.batch_size, shuffle=True, seed=0, device=device,
                                drop_last=True)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step(batch) -> None:
        with autocast:
            loss = model.training_step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def stream():
        epoch = 0
        while True:
            batches.set_epoch(epoch)
            yield from batches
            epoch += 1

    it = stream()
    counter = FlopCounterMode(display=False)
    first = next(it)
    with counter:
        step(first)
    flops = counter.get_total_flops() / args.batch_size
    for _ in range(args.warmup):
        step(next(it))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(next(it))
    sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    params = sum(p.numel() for p in model.core.parameters())
    return {"core": core, "params": params, "flops": flops, "step_s": seconds,
            "samples_per_s": args.batch_size / seconds,
            "gflops": flops * args.batch_size / seconds / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"),
                    help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--cores", nargs="+", default=list(CORES))
    ap.add_argument("--frames", type=int, default=32, help="frames per clip")
    ap.add_argument("--batch-size", type=int, help="clips per step (default cpu 8, cuda 64)")
    ap.add_argument("--neurons", type=int, default=500, help="neurons per session")
    ap.add_argument("--trials", type=int, default=8, help="trials per session")
    ap.add_argument("--steps", type=int, help="timed steps (default cpu 3, cuda 30)")
    ap.add_argument("--warmup", type=int, help="untimed steps (default cpu 1, cuda 5)")
    ap.add_argument("--quick", action="store_true", help="tiny batches and few steps")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return
    device = torch.device(args.device)
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    args.batch_size = args.batch_size or (2 if args.quick else 64 if cuda else 8)
    args.steps = args.steps or (1 if args.quick else 30 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 5 if cuda else 1)
    if args.quick:
        args.frames, args.neurons, args.trials = 16, 50, 4
    args.trials = max(args.trials, -(-args.batch_size // 2))  # one batch per epoch at least
    sizes = [512, 1024] if args.quick else ([4096, 8192, 16384] if cuda else [1024, 2048, 3072])
    describe_device(device, args.precision)
    per_size = {n: matmul_gflops(n, device, dtype, 3) for n in sizes}
    best = max(per_size, key=per_size.get)
    results = [bench_core(core, args, device, dtype) for core in args.cores]
    peak = max(per_size[best], matmul_gflops(best, device, dtype, 3))
    print(f"matmul peak {peak:,.1f} GFLOP/s (n={best}); clips of {args.frames} x 36 x 64, "
          f"batch {args.batch_size}, 2 sessions of {args.neurons}+ neurons")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = (f"{'core':<15} {'params':>8} {'GFLOP/clip':>11} {'s/step':>8} {'clips/s':>8} "
              f"{'GFLOP/s':>8} {'% peak':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['core']:<15} {r['params'] / 1e6:>7.2f}M {r['flops'] / 1e9:>11.2f} "
              f"{r['step_s']:>8.2f} {r['samples_per_s']:>8.2f} {r['gflops']:>8.1f} "
              f"{100 * r['gflops'] / peak:>6.0f}%")


if __name__ == "__main__":
    main()
