"""8-bit AdamW: fusedopt (state_bits=8) vs bitsandbytes AdamW8bit, torchao AdamW8bit, and
fusedopt's 32-bit AdamW, on the GPT-2-small parameter set (124M params, 148 tensors).

Prints ms per step (median), ratios (peer ms / fusedopt 8-bit ms; and 8-bit / 32-bit time), the
effective bandwidth by the 8-bit byte model, and the measured optimizer-state bytes per param.

8-bit byte model per param per step (fp32 params): read p, g (8 B) + write p (4 B) + read and
write 2 codes (4 B) + the absmax (2 x 2 x 4 / block_size B) = 16.0625 B at block 256.
32-bit AdamW: 28 B.

  python bench/bench_8bit.py [--quick] [--device cpu|cuda] [--timed 5] [--warmup 2]
      [--skip bnb,torchao]     (bitsandbytes on CPU takes seconds per step: fewer timed calls)

Targets (for a quiet machine): >= 20x bitsandbytes on the CPU, <= 1.3x our 32-bit.
Timings are not committed: the development machine is shared.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

import fusedopt  # noqa: E402


def bytes_8bit(block=256):
    return 12 + 4 + 2 * 2 * 4 / block


def _nbytes(v) -> int:
    """Storage bytes of a state tensor; torchao's OptimState8bit reports fp32 sizes, so count its
    codes and scales."""
    if hasattr(v, "codes") and hasattr(v, "scale"):
        return v.codes.numel() * v.codes.element_size() + v.scale.numel() * v.scale.element_size()
    return v.numel() * v.element_size()


def make(kind, params):
    if kind == "fusedopt-8bit":
        return fusedopt.AdamW(params, lr=1e-4, weight_decay=0.01, state_bits=8)
    if kind == "fusedopt-32bit":
        return fusedopt.AdamW(params, lr=1e-4, weight_decay=0.01)
    if kind == "bitsandbytes AdamW8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(params, lr=1e-4, weight_decay=0.01)
    if kind == "torchao AdamW8bit":
        from torchao.optim import AdamW8bit
        return AdamW8bit(params, lr=1e-4, weight_decay=0.01)
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 layers, vocab 8192 (smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timed", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list: bnb, torchao")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time budget of a slow contender")
    args = ap.parse_args()
    wl = bl.make_workload("gpt2s", quick=args.quick)
    n = sum(int(torch.Size(s).numel()) for _, s in wl.shapes)
    print(f"# 8-bit AdamW on {wl.desc}: {n:,} params, {len(wl.shapes)} tensors, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    if args.device == "cpu":
        info = fusedopt.build_info()
        print(f"# CPU code path: {info['cpu_isa']} kernels, 8-bit decoder {info['cpu_q8_decoder']}")
    kinds = ["fusedopt-8bit", "fusedopt-32bit"]
    if "bnb" not in args.skip:
        kinds.append("bitsandbytes AdamW8bit")
    if "torchao" not in args.skip:
        kinds.append("torchao AdamW8bit")
    res = {}
    for kind in kinds:
        params = [t.requires_grad_() for t in bl.make_tensors(wl.shapes, args.device)]
        grads = bl.make_tensors(wl.shapes, args.device, seed=1, scale=1e-3)
        for p, g in zip(params, grads):
            p.grad = g
        try:
            opt = make(kind, params)
            opt.step()  # state creation outside the timing
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            print(f"{kind}: skipped ({type(e).__name__}: {str(e)[:120]})")
            continue
        t = bl.time_calls(opt.step, args.device, args.warmup, args.timed, max_seconds=args.max_seconds, min_timed=1)
        nbytes = fusedopt.state_nbytes(opt) if kind.startswith("fusedopt") else sum(
            _nbytes(v) for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
        res[kind] = (t.median, nbytes / n)
        del opt, params, grads
        bl.free()
    ours = res.get("fusedopt-8bit")
    print(f"{'optimizer':<26}{'ms/step':>10}{'state B/param':>15}{'ratio vs fusedopt-8bit':>24}")
    for kind, (ms, bpp) in res.items():
        ratio = f"{ms / ours[0]:.2f}x" if ours else "-"
        print(f"{kind:<26}{ms:>10.2f}{bpp:>15.3f}{ratio:>24}")
    if ours:
        gbs = bytes_8bit() * n / (ours[0] * 1e-3) / 1e9
        print(f"fusedopt-8bit effective bandwidth ({bytes_8bit():.4f} B/param model): {gbs:.1f} GB/s")
        if "fusedopt-32bit" in res:
            print(f"fusedopt 8-bit / 32-bit time: {ours[0] / res['fusedopt-32bit'][0]:.2f} (target <= 1.3)")
        if "bitsandbytes AdamW8bit" in res:
            print(f"bitsandbytes / fusedopt-8bit: {res['bitsandbytes AdamW8bit'][0] / ours[0]:.1f}x (target >= 20)")


if __name__ == "__main__":
    main()
