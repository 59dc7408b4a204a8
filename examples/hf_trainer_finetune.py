"""Hugging Face Trainer with fusedopt: pre-train a tiny GPT-2 on text that ships with Python, then
fine-tune it on fusedopt's own docstrings with three optimizers from the same weights and batches.

- pre-training: ``TrainingArguments(optim="fusedopt_adamw")`` (fusedopt.integrations.hf), an
  unchanged ``transformers.Trainer``;
- fine-tuning: torch's AdamW (``optim="adamw_torch"``), fusedopt.AdamW through
  ``optimizer_cls_and_kwargs``, and 8-bit fusedopt.AdamW through
  ``optim="fusedopt_adamw", optim_args="state_bits=8,min_8bit_size=1024"`` (the embeddings keep
  32-bit states, Trainer's rule for 8-bit optimizers).

Character-level, no downloads, CPU, one thread, under a minute. Progress bars only on a terminal.

Run: PYTHONPATH=python python examples/hf_trainer_finetune.py
Writes examples/results/hf_trainer_finetune.md (settings, the loss log, final losses) and .png.
"""
from __future__ import annotations

import inspect
import os
import platform
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _hess_common as C  # noqa: E402

import transformers  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt.integrations import hf  # noqa: E402

CTX, BATCH = 64, 16
PRE_STEPS, FT_STEPS = 150, 100
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def fusedopt_text() -> str:
    """The docstrings of fusedopt's public names: the fine-tuning domain."""
    parts = [fusedopt.__doc__ or ""]
    for name in sorted(fusedopt.__all__):
        doc = inspect.getdoc(getattr(fusedopt, name))
        if doc:
            parts.append(doc)
    return "\n\n".join(parts)


class Chunks(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.starts = torch.randint(0, len(ids) - CTX - 1, (n,), generator=g)
        self.ids = ids

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        x = self.ids[self.starts[i]: self.starts[i] + CTX]
        return {"input_ids": x, "labels": x}


def args(out, steps, lr, **kw):
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=lr,
                lr_scheduler_type="cosine", warmup_steps=10, weight_decay=0.1, logging_steps=10, save_strategy="no",
                report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0,
                disable_tqdm=not sys.stderr.isatty(), **kw)


def train(model, ta, data, **trainer_kw):
    tr = transformers.Trainer(model=model, args=ta, train_dataset=data, **trainer_kw)
    tr.train()
    return tr, [(h["step"], h["loss"]) for h in tr.state.log_history if "loss" in h]


@torch.no_grad()
def eval_loss(model, ids):
    model.eval()
    xs = ids[: (len(ids) // CTX) * CTX].view(-1, CTX)
    loss = float(model(input_ids=xs, labels=xs).loss)
    model.train()
    return loss


def main():
    torch.set_num_threads(1)
    t0 = time.time()
    transformers.logging.set_verbosity_error()
    pre, ft = C.stdlib_text(), fusedopt_text()
    vocab = sorted(set(pre) | set(ft))
    stoi = {c: i for i, c in enumerate(vocab)}
    enc = lambda s: torch.tensor([stoi[c] for c in s], dtype=torch.long)  # noqa: E731
    pre_ids, ft_ids = enc(pre), enc(ft)
    cut = int(0.9 * len(ft_ids))
    ft_train, ft_val = ft_ids[:cut], ft_ids[cut:]
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=CTX, n_embd=64, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    base = transformers.GPT2LMHeadModel(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        _, pre_log = train(base, hf.TrainingArguments(**args(tmp, PRE_STEPS, 3e-3, optim="fusedopt_adamw")),
                           Chunks(pre_ids, PRE_STEPS * BATCH, 0))
        start = {k: v.clone() for k, v in base.state_dict().items()}
        runs = {}
        configs = [
            ("torch AdamW (optim='adamw_torch')",
             lambda: (transformers.TrainingArguments(**args(tmp, FT_STEPS, 1e-3, optim="adamw_torch")), {})),
            ("fusedopt.AdamW (optimizer_cls_and_kwargs)",
             lambda: (transformers.TrainingArguments(**args(tmp, FT_STEPS, 1e-3)),
                      {"optimizer_cls_and_kwargs": (fusedopt.AdamW, {"lr": 1e-3})})),
            ("fusedopt.AdamW 8-bit (optim='fusedopt_adamw', state_bits=8)",
             lambda: (hf.TrainingArguments(**args(tmp, FT_STEPS, 1e-3, optim="fusedopt_adamw",
                                                  optim_args="state_bits=8,min_8bit_size=1024")), {})),
        ]
        before = None
        for name, make in configs:
            model = transformers.GPT2LMHeadModel(cfg)
            model.load_state_dict(start)
            before = eval_loss(model, ft_val) if before is None else before
            ta, kw = make()
            t1 = time.time()
            tr, log = train(model, ta, Chunks(ft_train, FT_STEPS * BATCH, 1), **kw)
            opt = getattr(tr.optimizer, "optimizer", tr.optimizer)
            runs[name] = dict(log=log, val=eval_loss(model, ft_val), secs=time.time() - t1,
                              state_mb=fusedopt.state_nbytes(opt) / 2**20)
    wall = time.time() - t0
    write(pre_log, runs, before, len(vocab), len(pre_ids), len(ft_ids), wall)


def write(pre_log, runs, before, vocab, n_pre, n_ft, wall):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUT, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(*zip(*pre_log), marker="o")
    a.set_title("pre-training on stdlib docstrings (fusedopt_adamw)", fontsize=9)
    a.set_xlabel("step")
    a.set_ylabel("train loss")
    for name, r in runs.items():
        b.plot(*zip(*r["log"]), marker="o", label=name)
    b.set_title("fine-tuning on fusedopt's docstrings (same start, same batches)", fontsize=9)
    b.set_xlabel("step")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "hf_trainer_finetune.png"), dpi=100)
    lines = [
        "# Hugging Face Trainer: pre-train, then fine-tune with three optimizers", "",
        f"Tiny GPT-2 (2 layers, n_embd 64, 4 heads, context {CTX}, char vocab {vocab}) built from a config. "
        f"Pre-training: {PRE_STEPS} steps on {n_pre} characters of Python stdlib docstrings with "
        "`TrainingArguments(optim=\"fusedopt_adamw\")`, lr 3e-3. Fine-tuning: from the same weights and "
        f"batches, {FT_STEPS} steps on 90% of fusedopt's own docstrings ({n_ft} characters), lr 1e-3, cosine "
        "schedule with 10 warmup steps, weight decay 0.1 (Trainer's decay / no-decay groups), batch "
        f"{BATCH}; held-out loss on the last 10%. The 8-bit run keeps the embeddings' states in 32 bits.", "",
        f"Command: `python examples/hf_trainer_finetune.py` (transformers {transformers.__version__}, torch "
        f"{torch.__version__}, Python {platform.python_version()}, {platform.machine()}, 1 thread, "
        f"{time.strftime('%Y-%m-%d')}). Wall time {wall:.0f} s.", "",
        f"Held-out loss before fine-tuning: {before:.4f}.", "",
        "| fine-tuning optimizer | held-out loss after | final train loss (mean of the last log interval) | "
        "optimizer state MB | seconds |", "|---|---:|---:|---:|---:|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['val']:.4f} | {r['log'][-1][1]:.4f} | {r['state_mb']:.3f} | {r['secs']:.1f} |")
    lines += ["", "## Log (train loss, mean over each 10-step interval)", "",
              "| step | pre-training | " + " | ".join(runs) + " |", "|---:|---:|" + "---:|" * len(runs)]
    steps = sorted({s for s, _ in pre_log} | {s for r in runs.values() for s, _ in r["log"]})
    pre_d = dict(pre_log)
    for s in steps:
        cells = [f"{pre_d[s]:.4f}" if s in pre_d else ""]
        cells += [f"{dict(r['log'])[s]:.4f}" if s in dict(r["log"]) else "" for r in runs.values()]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Plot: hf_trainer_finetune.png."]
    open(os.path.join(OUT, "hf_trainer_finetune.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
