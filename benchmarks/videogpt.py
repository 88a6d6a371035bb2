"""Training throughput of the video models (VQ-VAE, VideoGPT) against this machine's matmul
peak.

    python benchmarks/videogpt.py                 # CPU, float32
    python benchmarks/videogpt.py --quick         # seconds: a sanity run, figures not meaningful
    python benchmarks/videogpt.py --device cuda   # GPU: fp32, bf16 and fp16 (the seed's precision study)

1. The reference, measured in the same run: square ``torch.matmul`` in each precision
   (``benchmarks/train.py``'s ``matmul_gflops``: best size, measured again after the
   models, the higher of the two used).
2. Per stage and preset, AdamW training steps on random clips (VQ-VAE: clips; GPT: the
   codes of (previous, next) clip pairs, as ``cinebrain videogpt train`` feeds it, the
   frozen VQ-VAE having encoded every clip once), timed after ``--warmup`` untimed steps.
   Stages: ``vqvae`` / ``gpt`` of ``pipeline`` (the defaults of ``cinebrain videogpt``:
   16 x 16 x 32 grey clips), ``gpt-wide`` (the seed's GPT width and depth, hidden 576 x 8
   layers, on the pipeline's 4 x 4 x 8 code grid) and ``seed-004`` (the seed's models:
   16 x 128 x 128 RGB clips, a 4 x 8 x 8 grid).
3. FLOP/s = samples/s x the FLOPs of one training step per sample, forward and backward,
   counted by ``torch.utils.flop_counter.FlopCounterMode`` on one real step (matmul-like
   ops: linear layers, convolutions, attention).

Prints a table. Never asserts; figures depend on what else the machine is doing (the load
average is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import describe_device, matmul_gflops, sync  # noqa: E402  (benchmarks/train.py: the same peak)

from cinebrain.models import videogpt as vg  # noqa: E402
from cinebrain.models import vqvae as vq  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def configs(name: str):
    """(VQ-VAE config, GPT config or None) of a benchmark row."""
    pipeline_vq = vq.get_preset("vqvae-tiny", input_shape=(16, 16, 32))
    if name == "vqvae":
        return pipeline_vq, None
    if name == "gpt":
        return pipeline_vq, vg.get_preset("videogpt-tiny", pipeline_vq)
    if name == "gpt-wide":
        return pipeline_vq, vg.get_preset("videogpt-tiny", pipeline_vq, hidden_dim=576,
                                          layers=8, heads=4, cond_hiddens=240)
    if name == "vqvae-seed-004":
        return vq.get_preset("seed-004"), None
    if name == "gpt-seed-004":
        v = vq.get_preset("seed-004")
        return v, vg.get_preset("seed-004", v)
    raise SystemExit(f"unknown stage {name}")


STAGES = ("vqvae", "gpt", "gpt-wide", "vqvae-seed-004", "gpt-seed-004")


def bench(name: str, args, device: torch.device, precision: str) -> dict:
    vq_cfg, gpt_cfg = configs(name)
    torch.manual_seed(0)
    vqvae = vq.VQVAE(vq_cfg)
    model = vqvae if gpt_cfg is None else vg.VideoGPT(gpt_cfg, vqvae)
    model = model.to(device).train()
    b = args.batch_size or (2 if "seed" in name else 16)
    g = torch.Generator(device=device).manual_seed(0)
    if gpt_cfg is None:
        batch = {"video": torch.rand(b, vq_cfg.in_channels, *vq_cfg.input_shape, device=device,
                                     generator=g) - 0.5}
    else:
        grid = tuple(vq_cfg.latent_shape)
        batch = {k: torch.randint(0, vq_cfg.n_codes, (b, *grid), device=device, generator=g)
                 for k in ("previous_codes", "next_codes")}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    dtype = DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast = torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")

    def step() -> None:
        with autocast:
            loss = model.training_step(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops() / b
    for _ in range(args.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    return {"stage": name, "precision": precision, "params": sum(p.numel() for p in params),
            "flops": flops, "batch": b, "step_s": seconds, "samples_per_s": b / seconds,
            "gflops": flops * b / seconds / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precisions", nargs="+", choices=list(DTYPES),
                    help="default: fp32 on cpu; fp32 bf16 fp16 on cuda")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--batch-size", type=int, help="samples per step (default 16; seed-004 rows 2)")
    ap.add_argument("--steps", type=int, help="timed steps (default cpu 3, cuda 20)")
    ap.add_argument("--warmup", type=int, help="untimed steps (default cpu 1, cuda 5)")
    ap.add_argument("--quick", action="store_true", help="the small rows only, few steps")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return
    device = torch.device(args.device)
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if cuda else ["fp32"])
    args.steps = args.steps or (1 if args.quick else 20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 5 if cuda else 1)
    if args.quick:
        args.stages = [s for s in args.stages if "seed" not in s]
    sizes = [512, 1024] if args.quick else ([4096, 8192, 16384] if cuda else [1024, 2048, 3072])
    describe_device(device, "/".join(precisions))
    peaks = {}
    results = []
    for precision in precisions:
        per_size = {n: matmul_gflops(n, device, DTYPES[precision], 3) for n in sizes}
        best = max(per_size, key=per_size.get)
        results += [bench(stage, args, device, precision) for stage in args.stages]
        peaks[precision] = (max(per_size[best], matmul_gflops(best, device, DTYPES[precision], 3)),
                            best)
    for precision, (peak, n) in peaks.items():
        print(f"matmul peak {precision} {peak:,.1f} GFLOP/s (n={n})")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = (f"{'stage':<16} {'prec':<5} {'params':>8} {'GFLOP/sample':>13} {'batch':>5} "
              f"{'s/step':>7} {'samples/s':>10} {'GFLOP/s':>8} {'% peak':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        peak = peaks[r["precision"]][0]
        print(f"{r['stage']:<16} {r['precision']:<5} {r['params'] / 1e6:>7.2f}M "
              f"{r['flops'] / 1e9:>13.2f} {r['batch']:>5} {r['step_s']:>7.3f} "
              f"{r['samples_per_s']:>10.1f} {r['gflops']:>8.1f} {100 * r['gflops'] / peak:>6.0f}%")
    if cuda and {"fp32", "bf16"} <= set(precisions):
        for stage in args.stages:
            t = {r["precision"]: r["samples_per_s"] for r in results if r["stage"] == stage}
            print(f"{stage}: " + ", ".join(f"{p} {t[p] / t['fp32']:.2f}x fp32"
                                          for p in precisions if p != "fp32"))


if __name__ == "__main__":
    main()
