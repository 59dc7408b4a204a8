"""Benchmark of the cross-tensor rules (reduction engine) against their peers, in one run:

  clip_grad_norm_ : fusedopt.clip_grad_norm_ vs torch.nn.utils.clip_grad_norm_ (foreach=True, and False)
  LAMB            : fusedopt.LAMB vs pytorch_optimizer.Lamb (foreach and per-param loop) and timm's Lamb
                    (when timm is installed: `bash run.sh bench` installs it)
  LARS            : fusedopt.LARS vs pytorch_optimizer.LARS
  KOALA-M / -V    : one iteration (predict() + step(loss=, loss_sq_mean=)) of fusedopt.MomentumKOALA /
                    VanillaKOALA vs the same iteration of the authors' classes (a pure-PyTorch
                    transcription of Araachie/koala's koala.py, tests/koala_authors.py)
  Adafactor       : fusedopt.Adafactor vs transformers' Adafactor (default arguments: relative step)
  AdafactorTorch  : fusedopt.AdafactorTorch vs torch.optim.Adafactor (foreach and for-loop)

on the workloads of bench_step.py (many_small: 2,000 x 4,096; gpt2s: GPT-2 small). Prints ms per
call (median of --timed after --warmup) and the ratio best peer / fusedopt. Targets for a quiet
run: LAMB >= 4x the best CPU peer; clip_grad_norm_ >= 2x torch's foreach on many_small; Adafactor
>= 8x transformers on the CPU, >= 5x on a GPU (--device cuda).

  PYTHONPATH=python python bench/bench_cross.py [--workloads many_small,gpt2s] [--quick] [--device cpu]

No numbers are committed from a loaded machine.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib as bl  # noqa: E402
from tests.koala_authors import AuthorsMomentumKOALA, AuthorsVanillaKOALA  # noqa: E402

import fusedopt  # noqa: E402


def _params(wl, device):
    ps = [t.requires_grad_() for t in bl.make_tensors(wl.shapes, device, seed=0)]
    gs = bl.make_tensors(wl.shapes, device, seed=1)
    for p, g in zip(ps, gs):
        p.grad = g
    return ps


def bench_clip(wl, device, warmup, timed):
    ps = _params(wl, device)
    grads0 = [p.grad.clone() for p in ps]

    def reset():
        for p, g in zip(ps, grads0):
            p.grad.copy_(g)

    rows = []
    for name, fn in [
        ("fusedopt", lambda: fusedopt.clip_grad_norm_(ps, 1.0)),
        ("torch foreach", lambda: torch.nn.utils.clip_grad_norm_(ps, 1.0, foreach=True)),
        ("torch for-loop", lambda: torch.nn.utils.clip_grad_norm_(ps, 1.0, foreach=False)),
    ]:
        reset()
        t = bl.time_calls(fn, device, warmup, timed)
        rows.append((name, t.median))
    return rows


def bench_opt(wl, device, warmup, timed, contenders):
    rows = []
    for name, make in contenders:
        ps = _params(wl, device)
        try:
            opt = make(ps)
        except Exception as e:  # a peer that cannot run here
            rows.append((name + f" (failed: {type(e).__name__})", None))
            continue
        t = bl.time_calls(opt.step, device, warmup, timed)
        rows.append((name, t.median))
        del opt, ps
        bl.free()
    return rows


def bench_koala(wl, device, warmup, timed, momentum):
    """One KOALA iteration without the forward/backward: predict, then the update with a given loss."""
    L = torch.tensor(0.7, device=device)
    S = torch.tensor(0.9, device=device)
    ours_cls = fusedopt.MomentumKOALA if momentum else fusedopt.VanillaKOALA
    theirs_cls = AuthorsMomentumKOALA if momentum else AuthorsVanillaKOALA
    kw = dict(weight_decay=5e-4, lr=1e-3)
    rows = []
    for name, make, call in [
        ("fusedopt", lambda ps: ours_cls(ps, **kw), lambda o: (o.predict(), o.step(loss=L, loss_sq_mean=S))),
        ("authors' code", lambda ps: theirs_cls(ps, **kw), lambda o: (o.predict(), o.update(L, S))),
    ]:
        ps = _params(wl, device)
        opt = make(ps)
        t = bl.time_calls(lambda: call(opt), device, warmup, timed)
        rows.append((name, t.median))
        del opt, ps
        bl.free()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="many_small,gpt2s")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timed", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="small GPT-2, fewer steps (a smoke run)")
    args = ap.parse_args()
    device = torch.device(args.device)
    warmup, timed = (1, 3) if args.quick else (args.warmup, args.timed)
    import pytorch_optimizer as po
    import transformers.optimization as tfo

    try:
        from timm.optim import Lamb as TimmLamb
    except Exception as e:  # noqa: BLE001 - an optional peer
        TimmLamb = None
        print(f"(timm not importable: {type(e).__name__}; no timm LAMB row)")

    print(f"threads {torch.get_num_threads()}, fusedopt {fusedopt.build_info()['cpu_isa']}, load {bl.load_avg()}")
    for wname in args.workloads.split(","):
        wl = bl.make_workload(wname, quick=args.quick)
        print(f"\n## {wl.name}: {wl.desc if hasattr(wl, 'desc') else ''}")
        sections = [
            ("clip_grad_norm_", bench_clip(wl, device, warmup, timed)),
            ("LAMB", bench_opt(wl, device, warmup, timed, [
                ("fusedopt", lambda ps: fusedopt.LAMB(ps, lr=1e-3)),
                ("pytorch_optimizer foreach", lambda ps: po.Lamb(ps, lr=1e-3, pre_norm=True, foreach=True)),
                ("pytorch_optimizer for-loop", lambda ps: po.Lamb(ps, lr=1e-3, pre_norm=True, foreach=False)),
            ] + ([("timm", lambda ps: TimmLamb(ps, lr=1e-3))] if TimmLamb else []))),
            ("LARS", bench_opt(wl, device, warmup, timed, [
                ("fusedopt", lambda ps: fusedopt.LARS(ps, lr=1e-3, weight_decay=1e-4)),
                ("pytorch_optimizer foreach", lambda ps: po.LARS(ps, lr=1e-3, weight_decay=1e-4, foreach=True)),
                ("pytorch_optimizer for-loop", lambda ps: po.LARS(ps, lr=1e-3, weight_decay=1e-4, foreach=False)),
            ])),
            ("KOALA-M", bench_koala(wl, device, warmup, timed, momentum=True)),
            ("KOALA-V", bench_koala(wl, device, warmup, timed, momentum=False)),
            ("Adafactor", bench_opt(wl, device, warmup, timed, [
                ("fusedopt", lambda ps: fusedopt.Adafactor(ps)),
                ("transformers", lambda ps: tfo.Adafactor(ps)),
            ])),
            ("AdafactorTorch", bench_opt(wl, device, warmup, timed, [
                ("fusedopt", lambda ps: fusedopt.AdafactorTorch(ps)),
                ("torch foreach", lambda ps: torch.optim.Adafactor(ps, foreach=True)),
                ("torch for-loop", lambda ps: torch.optim.Adafactor(ps, foreach=False)),
            ])),
        ]
        for title, rows in sections:
            ours = rows[0][1]
            peers = [ms for _, ms in rows[1:] if ms is not None]
            best = min(peers) if peers else None
            ratio = f"{best / ours:.2f}x" if best and ours else "-"
            print(f"{title:16s} " + "  ".join(f"{n}: {bl.fmt_ms(ms)}" for n, ms in rows) + f"  | best peer / ours {ratio}")


if __name__ == "__main__":
    main()
