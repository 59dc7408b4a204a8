"""Claims (1) and (2): Post-LN vs Pre-LN transformers with and without warmup, Adam vs RAdam.

A small character-level transformer language model on English text that ships with Python (the
docstrings of ~25 stdlib modules, see _hess_common.stdlib_text; the exact text depends on the
Python version). For each (layout, optimizer, warmup) we train from the same init and batches for a
few hundred steps and report the training loss at fixed points and the held-out loss at the end.

Claims tested:
  (1) RAdam trains where Adam without warmup diverges or lags (Liu et al.);
  (2) Pre-LN needs no warmup where Post-LN does (Xiong et al.).

Run: PYTHONPATH=python python examples/transformer_warmup.py  [--steps 300 --seeds 2 --lr 1e-2]
Writes examples/results/transformer_warmup.md and .png.
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


class CharLM(nn.Module):
    def __init__(self, vocab, d=64, heads=4, layers=6, ff=256, ctx=64, pre_ln=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(ctx, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=pre_ln)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_ln = nn.LayerNorm(d) if pre_ln else nn.Identity()  # Pre-LN needs a final LN
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx), persistent=False)

    def forward(self, idx):
        T = idx.shape[1]
        h = self.emb(idx) + self.pos[:T]
        h = self.blocks(h, mask=self.mask[:T, :T], is_causal=True)
        return self.head(self.final_ln(h))


def run(cfg, data, val, vocab, args, seed):
    torch.manual_seed(seed)
    model = CharLM(vocab, layers=args.layers, ctx=args.ctx, pre_ln=cfg["pre_ln"])
    opt_cls = {"Adam": fusedopt.Adam, "RAdam": fusedopt.RAdam}[cfg["opt"]]
    opt = opt_cls(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    warm = args.warmup if cfg["warmup"] else 0
    g = torch.Generator().manual_seed(1000 + seed)  # same batches for every config of a seed
    losses = []
    for step in range(args.steps):
        scale = min(1.0, (step + 1) / warm) if warm else 1.0
        for group in opt.param_groups:
            group["lr"] = args.lr * scale
        ix = torch.randint(0, len(data) - args.ctx - 1, (args.batch,), generator=g)
        x = torch.stack([data[i:i + args.ctx] for i in ix])
        y = torch.stack([data[i + 1:i + args.ctx + 1] for i in ix])
        loss = nn.functional.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        if not torch.isfinite(loss):
            losses.extend([float("nan")] * (args.steps - step))
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        gv = torch.Generator().manual_seed(7)
        ix = torch.randint(0, len(val) - args.ctx - 1, (64,), generator=gv)
        x = torch.stack([val[i:i + args.ctx] for i in ix])
        y = torch.stack([val[i + 1:i + args.ctx + 1] for i in ix])
        vloss = float(nn.functional.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1)))
    return losses, vloss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    C.setup()
    text = C.stdlib_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n_tr = int(0.9 * len(ids))
    data, val = ids[:n_tr], ids[n_tr:]
    vocab = len(chars)
    configs = [
        {"name": "Post-LN, Adam, no warmup", "pre_ln": False, "opt": "Adam", "warmup": False},
        {"name": "Post-LN, Adam, warmup", "pre_ln": False, "opt": "Adam", "warmup": True},
        {"name": "Post-LN, RAdam, no warmup", "pre_ln": False, "opt": "RAdam", "warmup": False},
        {"name": "Pre-LN, Adam, no warmup", "pre_ln": True, "opt": "Adam", "warmup": False},
        {"name": "Pre-LN, Adam, warmup", "pre_ln": True, "opt": "Adam", "warmup": True},
        {"name": "Pre-LN, RAdam, no warmup", "pre_ln": True, "opt": "RAdam", "warmup": False},
    ]
    results = {}
    t0 = time.time()
    for cfg in configs:
        runs = []
        for s in range(args.seeds):
            runs.append(run(cfg, data, val, vocab, args, s))
            print(f"{cfg['name']:28s} seed {s}: train {runs[-1][0][-1]:.3f} val {runs[-1][1]:.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        results[cfg["name"]] = runs
    marks = [m for m in (50, 100, 200, args.steps) if m <= args.steps]

    def avg_at(losses, m, w=10):  # mean training loss over the w steps ending at step m
        seg = losses[max(0, m - w):m]
        return sum(seg) / len(seg)

    header = ["config"] + [f"train loss @{m} (mean over seeds)" for m in marks] + ["held-out loss (per seed)"]
    rows = []
    for name, runs in results.items():
        row = [name]
        for m in marks:
            vals = [avg_at(l, m) for l, _ in runs]
            row.append(C.fmt(sum(vals) / len(vals)))
        row.append(", ".join(C.fmt(v) for _, v in runs))
        rows.append(row)
    suffix = args.tag
    intro = (f"Char-level transformer LM ({args.layers} layers, d=64, 4 heads, ff=256, context {args.ctx}, "
             f"batch {args.batch}, vocab {vocab}) on {len(text)} characters of stdlib docstrings "
             f"(90/10 split). lr {args.lr}, betas (0.9, 0.98), {args.steps} steps, linear warmup over "
             f"{args.warmup} steps where marked, seeds 0..{args.seeds - 1}; same init and batches across "
             f"configs of a seed. Train loss = mean over the 10 steps ending at the mark. "
             f"fusedopt.RAdam is the torch variant (SGD-with-momentum steps while rho_t <= 5).")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in results.items():
        L = torch.tensor([l for l, _ in runs]).mean(0)
        sm = torch.nn.functional.avg_pool1d(L[None, None], 10, 1).flatten()
        ax.plot(range(10, 10 + len(sm)), sm, label=name,
                ls="-" if "Pre" in name else "--")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (10-step mean, mean over seeds)")
    ax.set_title(f"Post-LN vs Pre-LN, Adam vs RAdam, warmup (lr {args.lr})")
    ax.legend()
    ax.grid(alpha=0.3)
    png = os.path.join(C.RESULTS, f"transformer_warmup{suffix}.png")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    C.write_md(f"transformer_warmup{suffix}.md", "Post-LN vs Pre-LN, warmup, Adam vs RAdam", intro,
               [C.md_table(header, rows)],
               [f"Plot: transformer_warmup{suffix}.png. Wall time {time.time() - t0:.0f} s."])


if __name__ == "__main__":
    main()
