"""Claim (3): GradInit lets a deep network without normalisation train at a learning rate where
its initialisation alone fails (Zhu et al. 2021).

Network: a residual MLP without any normalisation (input Linear, 16 blocks h <- h + W2 relu(W1 h),
output Linear; width 64) on scikit-learn's digits (1,400 train / 397 test, pixels / 16).
Initialisations:
  * "torch default": PyTorch's default Linear init (uniform, variance 1/(3 fan_in));
  * "Kaiming": He normal (variance 2/fan_in, zero biases) -- the usual init for ReLU nets, which
    in a residual net without normalisation makes the forward signal grow with depth;
and each of them followed by fusedopt.gradinit (alg="sgd", eta = the training lr, gamma = 1,
scale lr 0.05, 100 iterations, batches of 32 from a shuffling loader; seed = run seed).
Training: fusedopt.SGD momentum 0.9, batch 64, 200 steps, lrs 0.003 ... 0.1, seeds 0 and 1.

Run: PYTHONPATH=python python examples/gradinit_deep_mlp.py
Writes examples/results/gradinit_deep_mlp.md and .png.
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


class ResMLP(nn.Module):
    def __init__(self, blocks=16, width=64, din=64, classes=10):
        super().__init__()
        self.inp = nn.Linear(din, width)
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(blocks)])
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def make(init, seed, blocks):
    torch.manual_seed(seed)
    m = ResMLP(blocks)
    if init == "Kaiming":
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
    return m


def train(m, lr, x, y, xt, yt, steps, seed):
    opt = fusedopt.SGD(m.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(100 + seed)
    curve = []
    for s in range(steps):
        ix = torch.randint(0, len(y), (64,), generator=g)
        loss = nn.functional.cross_entropy(m(x[ix]), y[ix])
        if not torch.isfinite(loss):
            curve.extend([float("nan")] * (steps - s))
            return curve, float("nan"), float("nan")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(float(loss))
    with torch.no_grad():
        tr = float(nn.functional.cross_entropy(m(x), y))
        acc = float((m(xt).argmax(1) == yt).float().mean())
    return curve, tr, acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--lrs", default="0.003,0.01,0.03,0.1")
    ap.add_argument("--gi-iters", type=int, default=100)
    args = ap.parse_args()
    C.setup()
    (x, y), (xt, yt) = C.digits()
    lrs = [float(v) for v in args.lrs.split(",")]
    inits = ["torch default", "torch default + GradInit", "Kaiming", "Kaiming + GradInit"]
    res = {}
    logit_std = {}
    t0 = time.time()
    for init in inits:
        for lr in lrs:
            for seed in range(args.seeds):
                m = make(init.split(" + ")[0], seed, args.blocks)
                if init.endswith("GradInit"):
                    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32,
                                                         shuffle=True)
                    fusedopt.gradinit(m, loader, nn.functional.cross_entropy, alg="sgd", eta=lr, gamma=1.0,
                                      lr=0.05, iters=args.gi_iters, seed=seed)
                with torch.no_grad():
                    logit_std[(init, lr, seed)] = float(m(x).std())
                res[(init, lr, seed)] = train(m, lr, x, y, xt, yt, args.steps, seed)
                c, tr, acc = res[(init, lr, seed)]
                print(f"{init:26s} lr {lr:<6} seed {seed}: logit std at start {logit_std[(init, lr, seed)]:.3g}, "
                      f"final train loss {tr:.4f}, test acc {acc:.3f} ({time.time() - t0:.0f} s)", flush=True)
    header = ["init"] + [f"lr {lr}: test acc (train loss)" for lr in lrs]
    rows = []
    for init in inits:
        row = [init]
        for lr in lrs:
            cells = []
            for seed in range(args.seeds):
                _, tr, acc = res[(init, lr, seed)]
                cells.append("diverged" if math.isnan(tr) else f"{acc:.3f} ({tr:.3f})")
            row.append(" / ".join(cells))
        rows.append(row)
    std_rows = []
    for init in inits:
        std_rows.append([init] + [" / ".join(C.fmt(logit_std[(init, lr, s)]) for s in range(args.seeds))
                                  for lr in lrs])
    std_table = C.md_table(["init"] + [f"lr {lr}: std of the logits at the start of training" for lr in lrs],
                           std_rows)
    intro = (f"Residual MLP without normalisation ({args.blocks} blocks, width 64) on digits; SGD momentum 0.9, "
             f"batch 64, {args.steps} steps. Cells: seed 0 / seed 1, test accuracy after training (train loss "
             f"on all 1,400 training images); 'diverged' = the loss became inf/nan. GradInit: alg='sgd', "
             f"eta = training lr, gamma = 1, scale lr 0.05, {args.gi_iters} iterations (its own seed = run seed).")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(lrs), figsize=(4 * len(lrs), 3.6), sharey=True)
    for ax, lr in zip(axes, lrs):
        for init, sty in zip(inits, ["C0-", "C0--", "C3-", "C3--"]):
            cv = torch.tensor(res[(init, lr, 0)][0])
            sm = torch.nn.functional.avg_pool1d(cv[None, None], 10, 1).flatten()
            ax.plot(range(10, 10 + len(sm)), sm, sty, label=init)
        ax.set_title(f"lr {lr}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("train loss (10-step mean, seed 0)")
    axes[0].legend(fontsize=7)
    fig.savefig(os.path.join(C.RESULTS, "gradinit_deep_mlp.png"), dpi=110, bbox_inches="tight")
    C.write_md("gradinit_deep_mlp.md", "GradInit on a deep residual MLP without normalisation", intro,
               [C.md_table(header, rows), std_table],
               ["Plot: gradinit_deep_mlp.png (missing points = diverged).",
                f"Wall time {time.time() - t0:.0f} s."])


if __name__ == "__main__":
    main()
