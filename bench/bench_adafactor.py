"""Adafactor step time: fusedopt.Adafactor vs transformers' Adafactor, and fusedopt.AdafactorTorch
vs torch.optim.Adafactor (foreach and for-loop), on the GPT-2-small parameter set (benchlib).

    PYTHONPATH=python python bench/bench_adafactor.py [--device cpu|cuda] [--quick] [--timed N]

Prints the median ms per step and the ratios. The machine is shared: numbers taken while others
run are not comparable with a quiet run (see benchlib.load_avg / describe_others).
"""
from __future__ import annotations

import argparse

import benchlib as bl
import torch

import fusedopt


def _setup(shapes, device, make_opt):
    params = [p.requires_grad_() for p in bl.make_tensors(shapes, device, seed=0)]
    grads = bl.make_tensors(shapes, device, seed=1, scale=1.0)
    for p, g in zip(params, grads):
        p.grad = g
    opt = make_opt(params)
    opt.step()  # state creation outside the timing
    return opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a smaller GPT-2-like set (4 layers, vocab 8192)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timed", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    shapes = bl.gpt2_shapes(n_layer=4, vocab=8192) if args.quick else bl.gpt2_shapes()
    numel = sum(torch.Size(s).numel() for _, s in shapes)
    print(f"# Adafactor step, {len(shapes)} tensors, {numel / 1e6:.1f}M params, {dev}, "
          f"threads {torch.get_num_threads()}, load {bl.load_avg()}")
    import transformers.optimization as tfo

    contenders = {
        "fusedopt.Adafactor": lambda ps: fusedopt.Adafactor(ps),
        "transformers.Adafactor": lambda ps: tfo.Adafactor(ps),
        "fusedopt.AdafactorTorch": lambda ps: fusedopt.AdafactorTorch(ps),
        "torch.optim.Adafactor(foreach)": lambda ps: torch.optim.Adafactor(ps, foreach=True),
        "torch.optim.Adafactor(for-loop)": lambda ps: torch.optim.Adafactor(ps, foreach=False),
    }
    ms = {}
    for name, mk in contenders.items():
        opt = _setup(shapes, dev, mk)
        t = bl.time_calls(opt.step, dev, args.warmup, args.timed)
        ms[name] = t.median
        print(f"{name:34s} {t.median:9.2f} ms")
        del opt
        bl.free()
    print(f"ratio transformers / fusedopt.Adafactor:            "
          f"{ms['transformers.Adafactor'] / ms['fusedopt.Adafactor']:.2f}x")
    for k in ("torch.optim.Adafactor(foreach)", "torch.optim.Adafactor(for-loop)"):
        print(f"ratio {k} / fusedopt.AdafactorTorch: {ms[k] / ms['fusedopt.AdafactorTorch']:.2f}x")


if __name__ == "__main__":
    main()
