"""LanczosLR and the Hessian spectrum on scikit-learn's digits (no claim from the brief's list;
a demonstration of fusedopt.hessian and fusedopt.LanczosLR, measured).

1. Batch size vs the batch Hessian's extremal eigenvalue at initialisation (Granziol et al.: the
   largest eigenvalue of a sub-sampled Hessian shrinks towards the full-data one as the batch grows).
2. Training an MLP (64-64-64-10, ReLU) with fusedopt.SGD under LanczosLR policies (gd, heavy_ball,
   line_search; re-estimated every 10 or 50 steps on a fixed curvature batch of 256 images, k = 20)
   against a fixed lr.
3. The SLQ spectral density of the full-training-set Hessian at init and after the
   "gd, every 10, safety 1" run.

Run: PYTHONPATH=python python examples/lanczos_lr_digits.py
Writes examples/results/lanczos_lr_digits.md and .png.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _hess_common as C  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt.hessian import HessianOperator, lanczos, slq_density  # noqa: E402


def make(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def lam_max(model, x, y, k=20, seed=0):
    op = HessianOperator(lambda: nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    return float(lanczos(op, k, seed=seed).ritz_values[-1])


CONFIGS = [  # (label, policy, interval, safety, max_lr)
    ("fixed lr", "fixed", 0, 1.0, None),
    ("gd, every 50, safety 1", "gd", 50, 1.0, None),
    ("gd, every 10, safety 1", "gd", 10, 1.0, None),
    ("gd, every 10, safety 0.5", "gd", 10, 0.5, None),
    ("heavy_ball, every 10, safety 0.5", "heavy_ball", 10, 0.5, None),
    ("line_search, every 10, safety 0.5", "line_search", 10, 0.5, None),
    ("gd, every 10, safety 0.5, max_lr 0.5", "gd", 10, 0.5, 0.5),
    ("heavy_ball, every 10, safety 0.5, max_lr 0.5", "heavy_ball", 10, 0.5, 0.5),
    ("line_search, every 10, safety 0.5, max_lr 0.5", "line_search", 10, 0.5, 0.5),
]


def train(cfg, args, data, seed):
    (x, y), (xt, yt) = data
    label, policy, interval, safety, max_lr = cfg
    m = make(seed)
    momentum = 0.9 if policy in ("fixed", "heavy_ball") else 0.0
    opt = fusedopt.SGD(m.parameters(), lr=args.fixed_lr, momentum=momentum)
    sched = None
    if policy != "fixed":
        cb = (x[:256], y[:256])
        sched = fusedopt.LanczosLR(opt, lambda: nn.functional.cross_entropy(m(cb[0]), cb[1]), policy=policy,
                                   interval=interval, k=20, safety=safety, seed=seed,
                                   max_lr=math.inf if max_lr is None else max_lr)
    g = torch.Generator().manual_seed(100 + seed)
    losses, lrs, moms = [], [], []
    for step in range(args.steps):
        if sched is not None:
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        ix = torch.randint(0, len(y), (64,), generator=g)
        loss = nn.functional.cross_entropy(m(x[ix]), y[ix])
        if not torch.isfinite(loss):
            losses.extend([float("nan")] * (args.steps - step))
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        tr = float(nn.functional.cross_entropy(m(x), y))
        acc = float((m(xt).argmax(1) == yt).float().mean())
    return m, losses, lrs, moms, tr, acc, (sched.history if sched else [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--fixed-lr", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    C.setup()
    data = C.digits()
    (x, y), _ = data
    t0 = time.time()
    # 1. batch size vs lambda_max at init (seed 0 model; 3 disjoint batches per size where possible)
    m0 = make(0)
    bs_rows = []
    full = lam_max(m0, x, y)
    for B in (16, 64, 256, 1400):
        vals = []
        for j in range(3 if B < 1400 else 1):
            sl = slice(j * B, (j + 1) * B)
            vals.append(lam_max(m0, x[sl], y[sl], seed=j))
        bs_rows.append([B, ", ".join(f"{v:.3f}" for v in vals), f"{sum(vals) / len(vals) / full:.2f}"])
    print(bs_rows, flush=True)
    # 2. training
    policies = [c[0] for c in CONFIGS]
    runs = {}
    for cfg in CONFIGS:
        pol = cfg[0]
        for s in range(args.seeds):
            runs[(pol, s)] = train(cfg, args, data, s)
            _, _, lrs, _, tr, acc, hist = runs[(pol, s)]
            print(f"{pol} seed {s}: train loss {tr:.4f} test acc {acc:.3f}; lrs "
                  + ", ".join(f"{h['lr']:.3g}" for h in hist if h["lr"] is not None) + f" ({time.time() - t0:.0f} s)",
                  flush=True)
    rows = []
    for pol in policies:
        for s in range(args.seeds):
            _, losses, lrs, moms, tr, acc, hist = runs[(pol, s)]
            ls = [h["lr"] for h in hist if h["lr"] is not None]
            Ls = [h["L"] for h in hist if h["L"] is not None]
            rows.append([pol, s, f"{tr:.4f}", f"{acc:.3f}",
                         "-" if not ls else f"{min(ls):.3g} .. {max(ls):.3g}",
                         "-" if not pol.startswith("heavy") else f"{min(moms):.3f} .. {max(moms):.3f}",
                         "-" if not Ls else f"{Ls[0]:.3g} -> {Ls[-1]:.3g}"])
    # 3. SLQ density of the full-training-set Hessian at init and after the gd run (seed 0)
    def dens(model):
        op = HessianOperator(lambda: nn.functional.cross_entropy(model(x), y), list(model.parameters()))
        return slq_density(op, k=40, num_probes=3, seed=0, num_grid=800)
    d_init = dens(make(0))
    d_end = dens(runs[(CONFIGS[2][0], 0)][0])
    slq_rows = []
    for name, d in (("init", d_init), (f"after '{CONFIGS[2][0]}'", d_end)):
        slq_rows.append([name, f"{float(d.nodes.min()):.4f}", f"{float(d.nodes.max()):.4f}", f"{d.moment(1):.5f}",
                         f"{d.moment(2):.5f}"])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for pol, col in zip(policies, ["k", "C0", "C1", "C4", "C2", "C3", "C5", "C6", "C7"]):
        _, losses, lrs, _, _, _, _ = runs[(pol, 0)]
        cv = torch.tensor(losses)
        sm = torch.nn.functional.avg_pool1d(cv[None, None], 20, 1).flatten()
        axes[0].plot(range(20, 20 + len(sm)), sm, col, label=pol)
        axes[1].plot(lrs, col, label=pol)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=6)
    axes[0].set_ylabel("train loss (20-step mean, seed 0)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("lr")
    for ax in axes[:2]:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for name, d, col in (("init", d_init, "C3"), (f"after '{CONFIGS[2][0]}'", d_end, "C0")):
        axes[2].semilogy(d.grid, d.density.clamp_min(1e-8), col, label=name)
    axes[2].set_xlabel("eigenvalue")
    axes[2].set_ylabel("SLQ density (k=40, 3 probes)")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.savefig(os.path.join(C.RESULTS, "lanczos_lr_digits.png"), dpi=110, bbox_inches="tight")
    intro = (f"MLP 64-64-64-10 (ReLU) on digits; fusedopt.SGD batch 64, {args.steps} steps. 'fixed' = lr "
             f"{args.fixed_lr}, momentum 0.9 (not tuned beyond a glance). LanczosLR: curvature batch = the first 256 "
             f"training images, k = 20, estimates every 10 or 50 steps from step 0, no smoothing, an lr clamp only "
             f"where marked (max_lr); gd and "
             f"line_search run with momentum 0, heavy_ball sets the momentum. "
             f"Seeds 0..{args.seeds - 1}.")
    C.write_md("lanczos_lr_digits.md", "LanczosLR and the Hessian spectrum on digits", intro,
               ["Largest Hessian eigenvalue at init (seed-0 model, k = 20) on batches of size B (disjoint "
                f"batches), and its ratio to the full-training-set value {full:.3f}:\n\n"
                + C.md_table(["B", "lambda_max per batch", "mean / full"], bs_rows),
                "Training:\n\n" + C.md_table(["policy", "seed", "final train loss", "test acc", "lr range set",
                                              "momentum range", "L first -> last"], rows),
                "SLQ of the full-training-set Hessian (k = 40, 3 probes; moments = estimates of trace(H^p)/n):\n\n"
                + C.md_table(["model", "min node", "max node", "moment 1", "moment 2"], slq_rows)],
               ["Plot: lanczos_lr_digits.png.", f"Wall time {time.time() - t0:.0f} s."])


if __name__ == "__main__":
    main()
