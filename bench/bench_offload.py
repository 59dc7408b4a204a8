"""GPU check of fusedopt.CPUOffloadOptimizer: step time against no offload, GPU memory saved, and
that the offloaded AdamW follows the on-GPU one.

    PYTHONPATH=python python bench/bench_offload.py [--params-m 124] [--bucket-mb 32] [--steps 10]

Needs a CUDA device (exits with a message otherwise). The model is a GPT-2-small-like set of
tensors (148 tensors, 124M params by default) in fp32, or bf16 params with fp32 host masters
(--bf16). Per configuration it prints the median step time (forward/backward excluded: the grads
are filled once), torch.cuda.max_memory_allocated during the steps, and the largest parameter
difference to the baseline after --steps steps. The baseline is fusedopt.AdamW on the GPU when the
build has CUDA kernels, else torch.optim.AdamW(fused=True). torchao's CPUOffloadOptimizer is timed
too when torchao is installed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, "python")
import fusedopt  # noqa: E402


def shapes(total_m: float):
    """GPT-2 small's tensor list (12 blocks), scaled in width so the total is about total_m M params."""
    d, v, n = 768, 50257, 1024
    s = [(v, d), (n, d)]
    for _ in range(12):
        s += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    s += [(d,), (d,)]
    scale = (total_m * 1e6 / sum(torch.Size(x).numel() for x in s)) ** 0.5
    return [tuple(max(1, int(round(k * scale))) for k in x) for x in s]


def make(shp, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(x, device="cuda", generator=g).mul_(0.02).to(dtype)) for x in shp]
    for p in ps:
        p.grad = torch.randn(p.shape, device="cuda", generator=g).mul_(1e-3).to(dtype)
    return ps


def run(name, build, shp, dtype, steps):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base_mem = torch.cuda.memory_allocated()
    ps = make(shp, dtype)
    opt = build(ps)
    times = []
    for _ in range(steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - base_mem
    ms = statistics.median(times[2:]) * 1e3
    print(f"{name:<44} {ms:9.2f} ms/step   peak GPU {peak / 2**30:7.3f} GiB", flush=True)
    return ps, ms, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params-m", type=float, default=124.0)
    ap.add_argument("--bucket-mb", type=float, default=32.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--bf16", action="store_true", help="bf16 params (offload keeps fp32 host masters)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_offload.py needs a CUDA device; none is available here")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    shp = shapes(a.params_m)
    n = sum(torch.Size(x).numel() for x in shp)
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, fusedopt {fusedopt.build_info()}")
    print(f"{len(shp)} tensors, {n / 1e6:.1f} M params, {dtype}, {torch.get_num_threads()} CPU threads, "
          f"bucket {a.bucket_mb} MB, {a.steps} timed steps (median)")
    on_gpu = "cuda" in fusedopt.build_info().get("backends", ())
    if on_gpu:
        base = ("fusedopt.AdamW on the GPU", lambda ps: fusedopt.AdamW(ps, lr=1e-3, weight_decay=0.1))
    else:
        base = ("torch.optim.AdamW(fused=True) on the GPU",
                lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, fused=True))
    ref, ms0, mem0 = run(base[0], base[1], shp, dtype, a.steps)
    off, ms1, mem1 = run("fusedopt.CPUOffloadOptimizer(AdamW)", lambda ps: fusedopt.CPUOffloadOptimizer(
        ps, fusedopt.AdamW, master_weights=a.bf16, bucket_mb=a.bucket_mb, lr=1e-3, weight_decay=0.1),
        shp, dtype, a.steps)
    diff = max(float((p.float() - q.float()).abs().max()) for p, q in zip(ref, off))
    print(f"offload / baseline step time: {ms1 / ms0:.2f}x; GPU memory saved: {(mem0 - mem1) / 2**30:.3f} GiB "
          f"({(mem0 - mem1) / n:.2f} B/param); max |param difference| after {a.steps + 2} steps: {diff:.3e}")
    try:
        from torchao.optim import CPUOffloadOptimizer as AoOffload
    except ImportError:
        print("(torchao not installed: no torchao row)")
    else:
        run("torchao CPUOffloadOptimizer(torch AdamW fused)", lambda ps: AoOffload(
            ps, torch.optim.AdamW, lr=1e-3, weight_decay=0.1, fused=True), shp, dtype, a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
