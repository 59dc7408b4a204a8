"""Claim (4): Adam's trajectory has a lower R_med than SGD's (Jiang, Malik, Li 2023).

An MLP (64-64-64-10, ReLU) on scikit-learn's digits, trained from the same init with
fusedopt.SGD (momentum 0.9) and fusedopt.Adam; every `--every` steps fusedopt.hessian.r_med
(Hutchinson, 100 Rademacher probes, fixed seed) on a fixed batch of 512 training images.
R per layer = max |diag H| / median |diag H| over that layer's weight and bias entries; R_med =
median over the 3 layers (see fusedopt.hessian.r_med for the definition chosen).

Run: PYTHONPATH=python python examples/rmed_adam_vs_sgd.py
Writes examples/results/rmed_adam_vs_sgd.md and .png.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _hess_common as C  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt.hessian import r_med  # noqa: E402


def make(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def run(opt_name, lr, seed, args, data):
    (x, y), (xt, yt) = data
    m = make(seed)
    opt = (fusedopt.SGD(m.parameters(), lr=lr, momentum=0.9) if opt_name == "SGD"
           else fusedopt.Adam(m.parameters(), lr=lr))
    hb = (x[:512], y[:512])
    g = torch.Generator().manual_seed(100 + seed)
    traj = []
    for step in range(args.steps + 1):
        if step % args.every == 0:
            r = r_med(m, nn.functional.cross_entropy, hb, num_probes=args.probes, seed=0)
            with torch.no_grad():
                tl = float(nn.functional.cross_entropy(m(x), y))
            traj.append((step, r["r_med"], r["per_layer"], tl))
        if step == args.steps:
            break
        ix = torch.randint(0, len(y), (64,), generator=g)
        loss = nn.functional.cross_entropy(m(x[ix]), y[ix])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((m(xt).argmax(1) == yt).float().mean())
    return traj, acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--sgd-lr", type=float, default=0.05)
    ap.add_argument("--adam-lr", type=float, default=1e-3)
    args = ap.parse_args()
    C.setup()
    data = C.digits()
    t0 = time.time()
    out = {}
    for name, lr in (("SGD", args.sgd_lr), ("Adam", args.adam_lr)):
        for seed in range(args.seeds):
            out[(name, seed)] = run(name, lr, seed, args, data)
            traj, acc = out[(name, seed)]
            print(f"{name} seed {seed}: R_med " + ", ".join(f"{s}:{r:.1f}" for s, r, _, _ in traj)
                  + f"; test acc {acc:.3f} ({time.time() - t0:.0f} s)", flush=True)
    steps = [s for s, _, _, _ in out[("SGD", 0)][0]]
    header = ["step"] + [f"{n} seed {s}: R_med (train loss)" for n in ("SGD", "Adam") for s in range(args.seeds)]
    rows = []
    for i, st in enumerate(steps):
        row = [st]
        for n in ("SGD", "Adam"):
            for s in range(args.seeds):
                _, r, _, tl = out[(n, s)][0][i]
                row.append(f"{r:.1f} ({tl:.3f})")
        rows.append(row)
    acc_row = ["test acc"] + [f"{out[(n, s)][1]:.3f}" for n in ("SGD", "Adam") for s in range(args.seeds)]
    rows.append(acc_row)
    # per-layer R at the end
    layer_rows = []
    for n in ("SGD", "Adam"):
        for s in range(args.seeds):
            per = out[(n, s)][0][-1][2]
            layer_rows.append([f"{n} seed {s}"] + [f"{v:.1f}" for v in per.values()])
    layer_names = list(out[("SGD", 0)][0][-1][2].keys())
    intro = (f"MLP 64-64-64-10 (ReLU) on digits, batch 64, {args.steps} steps; SGD lr {args.sgd_lr} momentum 0.9, "
             f"Adam lr {args.adam_lr}; same init per seed. R_med by fusedopt.hessian.r_med (Hutchinson, "
             f"{args.probes} probes) on a fixed batch of 512 training images every {args.every} steps; train "
             f"loss on all 1,400 training images.")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for n, col in (("SGD", "C3"), ("Adam", "C0")):
        for s in range(args.seeds):
            traj = out[(n, s)][0]
            axes[0].plot([t[0] for t in traj], [t[1] for t in traj], col, ls="-" if s == 0 else "--",
                         label=f"{n} seed {s}")
            axes[1].plot([t[0] for t in traj], [t[3] for t in traj], col, ls="-" if s == 0 else "--",
                         label=f"{n} seed {s}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("R_med (median over layers of max|diag H| / median|diag H|)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("train loss")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(os.path.join(C.RESULTS, "rmed_adam_vs_sgd.png"), dpi=110, bbox_inches="tight")
    C.write_md("rmed_adam_vs_sgd.md", "R_med along SGD and Adam trajectories", intro,
               [C.md_table(header, rows),
                "Per-layer R at the last step:\n\n" + C.md_table(["run"] + layer_names, layer_rows)],
               ["Plot: rmed_adam_vs_sgd.png.", f"Wall time {time.time() - t0:.0f} s."])


if __name__ == "__main__":
    main()
