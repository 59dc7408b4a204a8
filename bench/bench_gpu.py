#!/usr/bin/env python
"""The GPU targets in one run: fusedopt's step time and effective bandwidth on CUDA, beside the peers
present, for the work the speed issue names (GPT-2-small set, a 1B-param set, mixed precision, 8-bit
states, LAMB, Adafactor, many small tensors with and without a CUDA graph, host overhead per tensor).

    python bench/bench_gpu.py [--out bench/results/gpu-<date>-<commit>.md] [--quick] [--sections a,b,...]

Effective GB/s = the rule's byte model x params / median step time (logical bytes: each param, grad and
state read once, each written once); % of copy_ is against dst.copy_(src) (read 4 B + write 4 B per
float) measured in the same run on a buffer of the workload's size. Timing: CUDA events around each
step(), `warmup` untimed steps, then the median of `timed` steps (benchlib.time_calls); the
many-small rows time wall clock (host included) around step() + synchronize. Every row is measured on
fresh params and grads (randn, fixed seeds). A row whose contender is missing (a peer not installed, a
rule the build lacks) says so instead of a number.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402  (also makes `fusedopt` importable from the checkout)
import torch  # noqa: E402

import fusedopt  # noqa: E402
from bench_step import REGISTRY  # noqa: E402  (rules, hyperparameters, byte models)

DEV = "cuda"
STATE8_BYTES = 1 + 4 / 256  # a code per element plus a float32 absmax per 256-element block


def gpu_lines() -> list:
    out = []
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        out.append(f"- nvidia-smi: {q.stdout.strip()}")
    except (OSError, subprocess.SubprocessError) as e:
        out.append(f"- nvidia-smi: not available ({e})")
    return out


def params_for(shapes, dtype=torch.float32, seed=0):
    ps = [t.to(dtype).requires_grad_() for t in B.make_tensors(shapes, DEV, seed=seed)]
    for p, g in zip(ps, B.make_tensors(shapes, DEV, seed=seed + 1, scale=1.0)):
        p.grad = g.to(dtype)
    return ps


def timed(step, warmup, n) -> float:
    return B.time_calls(step, DEV, warmup, n).median


class Table:
    def __init__(self, rep, title, note=""):
        self.rep, self.rows = rep, []
        rep.add(f"\n### {title}\n")
        if note:
            rep.add(note + "\n")

    def row(self, *cells):
        self.rows.append([str(c) for c in cells])

    def flush(self, header):
        self.rep.add(B.md_table(header, self.rows))


def gbs(bytes_per_param, numel, ms):
    return bytes_per_param * numel / (ms * 1e-3) / 1e9


def measure(rep, tab, label, make, shapes, bpp, copy_gbs, args, dtype=torch.float32, ref_ms=None, note=""):
    """One row: build the optimizer on fresh params, time step(); returns the median ms or None."""
    try:
        ps = params_for(shapes, dtype)
        opt = make(ps)
        ms = timed(opt.step, args.warmup, args.timed)
        numel = sum(p.numel() for p in ps)
        g = gbs(bpp, numel, ms)
        ratio = "" if ref_ms is None else f"{ms / ref_ms:.2f}"
        tab.row(label, f"{ms:.3f}", f"{bpp:.2f}", f"{g:.0f}", f"{100 * g / copy_gbs:.1f}", ratio, note)
        del opt, ps
        B.free()
        return ms
    except Exception as e:  # noqa: BLE001 - a missing peer or an unsupported option is a row, not a crash
        tab.row(label, "-", f"{bpp:.2f}", "-", "-", "", f"{type(e).__name__}: {str(e)[:120]}")
        B.free()
        return None


HEADER = ["contender", "ms/step", "B/param", "eff GB/s", "% of copy_", "ms / first row", "note"]


def measure_peer(rep, tab, label, cls, make, shapes, bpp, copy_gbs, args, **kw):
    """measure() of a peer class that may be missing here (cls None): then a row that says so."""
    if cls is None:
        tab.row(label, "-", f"{bpp:.2f}", "-", "-", "", "not installed")
        return None
    return measure(rep, tab, label, lambda ps: make(cls, ps), shapes, bpp, copy_gbs, args, **kw)


def peer(module, cls):
    try:
        mod = __import__(module, fromlist=[cls])
        return getattr(mod, cls)
    except Exception:  # noqa: BLE001
        return None


def section_rules(rep, args, shapes, copy_gbs, dtype=torch.float32):
    """Every per-element rule in the registry, fusedopt, fp32 params, its byte model."""
    tab = Table(rep, "Every per-element rule, fp32 params and states (GPT-2-small set)",
                "Byte model per rule as bench_step.py's registry: read p, g and the states read; write p and the "
                "states written.")
    out = {}
    for r in REGISTRY:
        if not r.available:
            continue
        bpp = B.model_bytes_per_param(r.reads, r.writes)
        out[r.key] = measure(rep, tab, f"fusedopt.{r.cls}", lambda ps, r=r: r.fused_cls(ps, **r.hp), shapes, bpp,
                             copy_gbs, args)
    tab.flush(HEADER)
    return out


def section_adamw(rep, args, shapes, copy_gbs, title):
    tab = Table(rep, title)
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    ref = measure(rep, tab, "fusedopt.AdamW", lambda ps: fusedopt.AdamW(ps, **hp), shapes, 28, copy_gbs, args)
    measure(rep, tab, "torch AdamW fused=True", lambda ps: torch.optim.AdamW(ps, fused=True, **hp), shapes, 28,
            copy_gbs, args, ref_ms=ref)
    measure(rep, tab, "torch AdamW foreach=True", lambda ps: torch.optim.AdamW(ps, foreach=True, **hp), shapes, 28,
            copy_gbs, args, ref_ms=ref)
    measure_peer(rep, tab, "apex FusedAdam (adam_w_mode)", peer("apex.optimizers", "FusedAdam"),
                 lambda c, ps: c(ps, adam_w_mode=True, **hp), shapes, 28, copy_gbs, args, ref_ms=ref)
    tab.flush(HEADER)


def section_mixed(rep, args, shapes, copy_gbs):
    tab = Table(rep, "Mixed precision, AdamW (GPT-2-small set)",
                "bf16 params + fp32 states: read p (2), g (2), m, v (4 each); write p, m, v = 22 B. "
                "bf16 states: 14 B. fp32 master weights (Kahan compensation pair kept in bf16): "
                "p and its compensation 2 + 2 B each way, g 2, m, v fp32 = 26 B.")
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    bf = torch.bfloat16
    ref = measure(rep, tab, "fusedopt.AdamW bf16 params, fp32 states", lambda ps: fusedopt.AdamW(ps, **hp), shapes, 22,
                  copy_gbs, args, dtype=bf)
    measure(rep, tab, "fusedopt.AdamW bf16 params, bf16 states",
            lambda ps: fusedopt.AdamW(ps, state_dtype=torch.bfloat16, **hp), shapes, 14, copy_gbs, args, dtype=bf,
            ref_ms=ref)
    measure(rep, tab, "fusedopt.AdamW bf16 params, stochastic rounding",
            lambda ps: fusedopt.AdamW(ps, param_rounding="stochastic", **hp), shapes, 22, copy_gbs, args, dtype=bf,
            ref_ms=ref)
    measure(rep, tab, "fusedopt.AdamW bf16 params, Kahan compensation",
            lambda ps: fusedopt.AdamW(ps, param_rounding="kahan", **hp), shapes, 26, copy_gbs, args, dtype=bf,
            ref_ms=ref)
    measure(rep, tab, "torch AdamW fused=True, bf16 params (bf16 states)",
            lambda ps: torch.optim.AdamW(ps, fused=True, **hp), shapes, 14, copy_gbs, args, dtype=bf, ref_ms=ref)
    tab.flush(HEADER)


def section_8bit(rep, args, shapes, copy_gbs, fp32_ms):
    tab = Table(rep, "8-bit states (GPT-2-small set, fp32 params)",
                f"Byte model: read p, g (4 each), each state's code and its block's absmax ({STATE8_BYTES:.4f} B), "
                "write p and the states written. 'ms / first row' is against fusedopt's fp32 step of the same rule "
                "in this run (target <= 0.65).")
    for r in REGISTRY:
        if not r.available or r.reads == 0:
            continue
        bpp = 12 + (r.reads + r.writes) * STATE8_BYTES
        ref = fp32_ms.get(r.key)
        measure(rep, tab, f"fusedopt.{r.cls} state_bits=8",
                lambda ps, r=r: r.fused_cls(ps, state_bits=8, **r.hp), shapes, bpp, copy_gbs, args, ref_ms=ref,
                note="vs our fp32 step")
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    measure_peer(rep, tab, "bitsandbytes AdamW8bit", peer("bitsandbytes.optim", "AdamW8bit"), lambda c, ps: c(ps, **hp),
                 shapes, 12 + 4 * STATE8_BYTES, copy_gbs, args, ref_ms=fp32_ms.get("adamw"), note="vs our fp32 AdamW")
    tab.flush(HEADER)


def section_cross(rep, args, shapes, copy_gbs):
    tab = Table(rep, "LAMB and Adafactor (GPT-2-small set, fp32)",
                "LAMB's byte model: pass 1 reads p, g, m, v (16 B), pass 2 reads them and writes p, m, v (28 B) = "
                "44 B. Adafactor (factored, beta1 off): p and g read, p written = 12 B (its row/col statistics are "
                "negligible).")
    lamb = measure(rep, tab, "fusedopt.LAMB", lambda ps: fusedopt.LAMB(ps, lr=1e-3), shapes, 44, copy_gbs, args)
    measure_peer(rep, tab, "pytorch_optimizer Lamb", peer("pytorch_optimizer", "Lamb"), lambda c, ps: c(ps, lr=1e-3),
                 shapes, 44, copy_gbs, args, ref_ms=lamb)
    measure_peer(rep, tab, "apex FusedLAMB", peer("apex.optimizers", "FusedLAMB"), lambda c, ps: c(ps, lr=1e-3), shapes,
                 44, copy_gbs, args, ref_ms=lamb)
    af = measure(rep, tab, "fusedopt.Adafactor (transformers semantics)",
                 lambda ps: fusedopt.Adafactor(ps), shapes, 12, copy_gbs, args)
    measure(rep, tab, "fusedopt.AdafactorTorch", lambda ps: fusedopt.AdafactorTorch(ps), shapes, 12, copy_gbs, args,
            ref_ms=af)
    measure(rep, tab, "torch.optim.Adafactor (foreach)", lambda ps: torch.optim.Adafactor(ps, foreach=True), shapes,
            12, copy_gbs, args, ref_ms=af)
    measure_peer(rep, tab, "transformers Adafactor", peer("transformers.optimization", "Adafactor"),
                 lambda c, ps: c(ps), shapes, 12, copy_gbs, args, ref_ms=af)
    tab.flush(HEADER)
    # where Adafactor's time goes: its reductions alone (one op call each, over every tensor)
    rows = []
    ps = params_for(shapes)
    mats = [p.grad for p in ps if p.dim() >= 2]
    for label, fn in [("multi_tensor_sumsq over every param (Adafactor's pass 0)",
                       lambda: torch.ops.fusedopt.multi_tensor_sumsq(ps)),
                      (f"row_col_sums over the {len(mats)} matrices' grads (the standalone op: two launches per "
                       "matrix; Adafactor's step takes these statistics in one launch)",
                       lambda: torch.ops.fusedopt.row_col_sums(mats, add=1e-30, square=True, mean=True))]:
        try:
            rows.append([label, f"{timed(fn, args.warmup, args.timed):.3f}"])
        except Exception as e:  # noqa: BLE001
            rows.append([label, f"{type(e).__name__}: {str(e)[:100]}"])
    del ps, mats
    B.free()
    rep.add("\nAdafactor's reductions alone (same set):\n")
    rep.add(B.md_table(["op", "ms"], rows))


def wall_ms(step, warmup, n) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def section_many_small(rep, args, copy_gbs):
    shapes = [(f"t{i}", (4096,)) for i in range(2000)]
    tab = Table(rep, "Many small tensors: AdamW on 2,000 tensors of 4,096 elements",
                "Wall clock around step() + torch.cuda.synchronize() (host included); targets: <= 0.3 ms without "
                "a graph, <= 0.1 ms replaying a captured step.")
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    rows = []
    for label, make in [("fusedopt.AdamW", lambda ps: fusedopt.AdamW(ps, **hp)),
                        ("torch AdamW fused=True", lambda ps: torch.optim.AdamW(ps, fused=True, **hp)),
                        ("torch AdamW foreach=True", lambda ps: torch.optim.AdamW(ps, foreach=True, **hp))]:
        try:
            ps = params_for(shapes)
            opt = make(ps)
            ms = wall_ms(opt.step, args.warmup, args.timed)
            rows.append([label, "no", f"{ms:.3f}", f"{1e3 * ms / len(ps):.3f}"])
        except Exception as e:  # noqa: BLE001
            rows.append([label, "no", "-", f"{type(e).__name__}: {str(e)[:100]}"])
        B.free()
    for label, make in [("fusedopt.AdamW capturable", lambda ps: fusedopt.AdamW(ps, capturable=True, **hp)),
                        ("torch AdamW fused, capturable", lambda ps: torch.optim.AdamW(ps, fused=True, capturable=True,
                                                                                         **hp))]:
        try:
            ps = params_for(shapes)
            opt = make(ps)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    opt.step()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                opt.step()
            ms = wall_ms(g.replay, args.warmup, args.timed)
            rows.append([label, "yes (replay)", f"{ms:.3f}", f"{1e3 * ms / len(ps):.3f}"])
        except Exception as e:  # noqa: BLE001
            rows.append([label, "yes", "-", f"{type(e).__name__}: {str(e)[:100]}"])
        B.free()
    rep.add(B.md_table(["contender", "CUDA graph", "ms/step (wall)", "µs per tensor"], rows))


def section_host(rep, args):
    """step() on 1-element tensors: the host cost per tensor (the GPU work is negligible)."""
    rows = []
    for n in (10, 100, 1000, 4000):
        ps = params_for([(f"t{i}", (1,)) for i in range(n)])
        opt = fusedopt.AdamW(ps, lr=1e-3)
        ms = wall_ms(opt.step, 3, args.timed)
        rows.append([str(n), f"{ms:.3f}", f"{1e3 * ms / n:.3f}"])
        B.free()
    rep.add("\n### Host overhead of fusedopt.AdamW.step() (1-element tensors)\n")
    rep.add(B.md_table(["tensors", "ms/step (wall)", "µs per tensor"], rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="small sets, few steps (a smoke run)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timed", type=int, default=9)
    ap.add_argument("--sections", default="adamw,rules,mixed,8bit,cross,many,host,1b")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device")
    if args.quick:
        args.warmup, args.timed = 1, 3
    sections = set(args.sections.split(","))
    rep = B.Report()
    rep.add("# fusedopt on CUDA: step time and effective bandwidth\n")
    for line in B.machine_info(DEV) + gpu_lines():
        rep.add(line)
    shapes = B.make_workload("gpt2s", quick=args.quick).shapes
    numel = sum(math.prod(s) for _, s in shapes)
    # the clocks ramp up under load: ~2 s of copies first, so the first rows are not measured cold
    # (the first run's first AdamW row read 1.20 ms where the same step measured 1.02 ms a minute later)
    src = torch.empty(numel, device=DEV).uniform_()
    dst = torch.empty_like(src)
    t_end = time.time() + 2.0
    while time.time() < t_end:
        dst.copy_(src)
        torch.cuda.synchronize()
    del src, dst
    ceil = B.measure_ceilings(numel, DEV, 3, 9)
    copy_gbs = ceil["copy_"].gbs
    rep.add(f"- ceilings on {numel:,} floats: copy_ {copy_gbs:.0f} GB/s, add_ {ceil['add_'].gbs:.0f} GB/s "
            f"(logical bytes)")
    rep.add(f"- GPT-2-small set: {numel:,} params in {len(shapes)} tensors; timing: {args.warmup} warm-up steps, "
            f"median of {args.timed}")
    t0 = time.time()
    fp32 = {}
    steps = [
        ("adamw", lambda: section_adamw(rep, args, shapes, copy_gbs, "AdamW, fp32 (GPT-2-small set)")),
        ("rules", lambda: fp32.update(section_rules(rep, args, shapes, copy_gbs))),
        ("mixed", lambda: section_mixed(rep, args, shapes, copy_gbs)),
        ("8bit", lambda: section_8bit(rep, args, shapes, copy_gbs, fp32)),
        ("cross", lambda: section_cross(rep, args, shapes, copy_gbs)),
        ("many", lambda: section_many_small(rep, args, copy_gbs)),
        ("host", lambda: section_host(rep, args)),
    ]
    if "1b" in sections and not args.quick:
        big = B.gpt2_shapes(n_layer=30, n_embd=1664, vocab=50257)  # about 1.08e9 params
        steps.append(("1b", lambda: section_adamw(rep, args, big, copy_gbs,
                                                  f"AdamW, fp32, a 1B-param set ({sum(math.prod(s) for _, s in big):,} "
                                                  f"params in {len(big)} tensors)")))
    for name, fn in steps:
        if name not in sections:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001 - keep the rest of the run
            rep.add(f"\n(section {name} failed)\n```\n{traceback.format_exc()[-1500:]}\n```")
        B.free()
    rep.add(f"\n(run took {time.time() - t0:.0f} s)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(rep.text())


if __name__ == "__main__":
    main()
