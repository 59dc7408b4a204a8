"""PyTorch Lightning with fusedopt: a tiny Llama (built from a config) learns Python's stdlib
docstrings, character by character. ``configure_optimizers`` returns fusedopt optimizers through
``fusedopt.integrations.lightning.configure_optimizers`` (decay / no-decay groups, a warmup +
cosine schedule stepped every step); Lightning calls ``step(closure=...)``.

Runs, from the same init and batches: torch.optim.AdamW (32-true), fusedopt.AdamW (32-true),
fusedopt.AdamW (bf16-mixed), fusedopt.AdamW with 8-bit states (32-true), fusedopt.Lion (32-true).
CPU, one thread, under a minute; progress bars only on a terminal.

Run: PYTHONPATH=python python examples/lightning_run.py
Writes examples/results/lightning_run.md (settings, the loss log, results) and .png.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _hess_common as C  # noqa: E402

import lightning as L  # noqa: E402
import transformers  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt.integrations.lightning import configure_optimizers  # noqa: E402

CTX, BATCH, STEPS, LOG_EVERY = 64, 16, 120, 10
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def schedule(opt, warmup=10):
    f = lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(t, STEPS) / STEPS))  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


class LitLlama(L.LightningModule):
    def __init__(self, vocab, make_opt):
        super().__init__()
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=CTX)
        self.net = transformers.LlamaForCausalLM(cfg)
        self.make_opt = make_opt
        self.log_losses = []
        self._acc = []

    def training_step(self, batch, i):
        loss = self.net(input_ids=batch, labels=batch).loss
        self._acc.append(float(loss))
        if len(self._acc) == LOG_EVERY:
            self.log_losses.append((self.global_step + 1, sum(self._acc) / LOG_EVERY))
            self._acc = []
        return loss

    def configure_optimizers(self):
        return self.make_opt(self)


def batches(ids, n, seed):
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - CTX - 1, (n, BATCH), generator=g)
    return [torch.stack([ids[s: s + CTX] for s in row]) for row in starts]


RUNS = {
    "torch.optim.AdamW, 32-true": ("32-true", lambda m: {
        "optimizer": (o := torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.1)),
        "lr_scheduler": {"scheduler": schedule(o), "interval": "step"}}),
    "fusedopt.AdamW, 32-true": ("32-true", lambda m: configure_optimizers(
        m, "adamw", lr=3e-3, weight_decay=0.1, scheduler=schedule)),
    "fusedopt.AdamW, bf16-mixed": ("bf16-mixed", lambda m: configure_optimizers(
        m, "adamw", lr=3e-3, weight_decay=0.1, scheduler=schedule)),
    "fusedopt.AdamW state_bits=8, 32-true": ("32-true", lambda m: configure_optimizers(
        m, "adamw", lr=3e-3, weight_decay=0.1, state_bits=8, min_8bit_size=1024, scheduler=schedule)),
    "fusedopt.Lion, 32-true": ("32-true", lambda m: configure_optimizers(
        m, "lion", lr=1e-3, weight_decay=0.3, scheduler=schedule)),
}


def main():
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    t0 = time.time()
    text = C.stdlib_text()
    vocab = sorted(set(text))
    stoi = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    train_batches, val = batches(ids[:cut], STEPS, 0), batches(ids[cut:], 8, 1)
    results = {}
    for name, (precision, make) in RUNS.items():
        lit = LitLlama(len(vocab), make)
        tr = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, precision=precision, logger=False,
                       enable_checkpointing=False, enable_model_summary=False,
                       enable_progress_bar=sys.stderr.isatty())
        t1 = time.time()
        tr.fit(lit, train_dataloaders=torch.utils.data.DataLoader(train_batches, batch_size=None))
        secs = time.time() - t1
        lit.eval()
        with torch.no_grad():
            v = sum(float(lit.net(input_ids=b, labels=b).loss) for b in val) / len(val)
        opt = tr.optimizers[0]
        results[name] = dict(log=lit.log_losses, val=v, secs=secs, state_mb=fusedopt.state_nbytes(opt) / 2**20,
                             opt=type(opt).__module__ + "." + type(opt).__name__)
        print(f"{name}: held-out {v:.4f}, {secs:.1f} s", flush=True)
    write(results, len(vocab), len(ids), time.time() - t0)


def write(results, vocab, n_chars, wall):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUT, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, r in results.items():
        ax.plot(*zip(*r["log"]), marker="o", ms=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"train loss (mean of {LOG_EVERY} steps)")
    ax.set_title("Lightning, tiny Llama on stdlib docstrings (same init and batches)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "lightning_run.png"), dpi=100)
    lines = [
        "# PyTorch Lightning: a tiny Llama with fusedopt optimizers", "",
        f"LlamaForCausalLM from a config (2 layers, hidden 64, 4 heads, context {CTX}, char vocab {vocab}) on "
        f"90% of {n_chars} characters of Python stdlib docstrings; {STEPS} steps of batch {BATCH}, the same "
        "init and batches for every run; lr warmup over 10 steps then cosine, stepped per step; weight decay on "
        "the decay group only (fusedopt.create_optimizer's grouping; torch's AdamW decays every param). "
        "Held-out loss: 8 batches from the last 10%.", "",
        f"Command: `python examples/lightning_run.py` (lightning {L.__version__}, transformers "
        f"{transformers.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, 1 thread, {time.strftime('%Y-%m-%d')}). Wall time {wall:.0f} s.", "",
        "| run | optimizer class | held-out loss | last logged train loss | optimizer state MB | seconds |",
        "|---|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | `{r['opt']}` | {r['val']:.4f} | {r['log'][-1][1]:.4f} | {r['state_mb']:.3f} | "
                     f"{r['secs']:.1f} |")
    lines += ["", f"## Log (train loss, mean over each {LOG_EVERY} steps)", "",
              "| step | " + " | ".join(results) + " |", "|---:|" + "---:|" * len(results)]
    for i, (step, _) in enumerate(next(iter(results.values()))["log"]):
        lines.append(f"| {step} | " + " | ".join(f"{r['log'][i][1]:.4f}" for r in results.values()) + " |")
    lines += ["", "Plot: lightning_run.png."]
    open(os.path.join(OUT, "lightning_run.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
