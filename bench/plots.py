"""The README's plots, drawn from committed bench results (nothing is measured here).

    python bench/plots.py [--cpu bench/results/cpu-2026-11-25-all-rules.md] [--gpu FILE] [--out docs/plots]

- ``cpu_rules.png``: per rule on GPT-2 small, ms per step of fusedopt and of the fastest peer, and
  fusedopt's % of the ``add_`` bandwidth ceiling, from a ``bench/bench_step.py`` results file.
- ``gpu_rules.png``: the same from a GPU results file; drawn only when one exists (``--gpu``, or the
  newest ``bench/results/gpu-*.md``).
- ``state_memory.png``: optimizer-state bytes per parameter for each state format (float32,
  bfloat16, 8-bit with one float32 absmax per block), from the state layout
  (docs/algorithms.md §28; ``tests/test_plots.py`` checks it against real optimizer states).
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CPU = os.path.join(ROOT, "bench", "results", "cpu-2026-11-25-all-rules.md")

# per-element states of some rules (k), for the memory plot
STATE_COUNTS = {"SGD (momentum), Lion": 1, "Adam, AdamW, LAMB": 2, "diffGrad": 3, "Adan": 4}


def state_bytes_per_param(k: int, fmt: str, block: int = 256) -> float:
    """Bytes of per-element optimizer state per parameter element: k states stored as float32 (4 B),
    bfloat16 (2 B) or 8-bit codes (1 B) plus one float32 absmax per block of `block` elements."""
    per = {"float32": 4.0, "bfloat16": 2.0, "8-bit": 1.0 + 4.0 / block}[fmt]
    return k * per


def parse_results(path: str) -> dict:
    """{workload: {rule label: {"fusedopt": (ms, % of add_), "peer": (name, ms, % of add_) or None}}}
    from a bench_step.py results file (its "### `workload` / Rule (...)" sections)."""
    out: dict = {}
    workload = rule = None
    cols = None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"### `([^`]+)` / (.+?) \(`", line)
        if m:
            workload, rule, cols = m.group(1), m.group(2), None
            out.setdefault(workload, {})[rule] = {"fusedopt": None, "peer": None}
            continue
        if rule is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "contender":
            cols = {name: i for i, name in enumerate(cells)}
            continue
        if cols is None or set(cells[0]) <= {"-", ":"}:
            continue
        try:
            ms = float(cells[cols["ms/step (median)"]])
            pct = float(cells[cols["% of add_"]])
        except (ValueError, KeyError, IndexError):
            continue
        entry = out[workload][rule]
        if cells[0].startswith("fusedopt."):
            entry["fusedopt"] = (ms, pct)
        elif entry["peer"] is None or ms < entry["peer"][1]:
            entry["peer"] = (cells[0], ms, pct)
    return out


def parse_gpu_results(path: str) -> dict:
    """{"gpt2s": {rule: {"fusedopt": (ms, % of copy_), "peer": (name, ms, % of copy_) or None}}} from a
    bench_gpu.py results file: its per-element-rule table, and the peers of its AdamW table."""
    out: dict = {}
    section = None
    peers = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("### "):
            section = ("rules" if line.startswith("### Every per-element rule") else
                       "adamw" if line.startswith("### AdamW, fp32 (GPT-2-small set)") else None)
            continue
        if section is None or not line.startswith("| ") or line.startswith("| contender"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        try:
            ms, pct = float(cells[1]), float(cells[4])
        except (ValueError, IndexError):
            continue
        if section == "rules" and cells[0].startswith("fusedopt."):
            out[cells[0].split(".", 1)[1]] = {"fusedopt": (ms, pct), "peer": None}
        elif section == "adamw" and not cells[0].startswith("fusedopt."):
            peers.append((cells[0], ms, pct))
    if "AdamW" in out and peers:
        out["AdamW"]["peer"] = min(peers, key=lambda x: x[1])
    return {"gpt2s": out}


def newest_gpu_results() -> str | None:
    """The bench_gpu.py results file with the latest '- date:' line, or None."""
    best = None
    for path in glob.glob(os.path.join(ROOT, "bench", "results", "gpu-*.md")):
        text = open(path, encoding="utf-8").read()
        m = re.search(r"^- date: (\S+)", text, re.M)
        if "### Every per-element rule" in text and m and (best is None or m.group(1) > best[0]):
            best = (m.group(1), path)
    return best[1] if best else None


def header(path: str, device: str = "CPU") -> str:
    """'<machine>, commit <c>' from a results file's header lines (the GPU's line for a GPU plot)."""
    text = open(path, encoding="utf-8").read(4000)
    commit = re.search(r"commit: (\w+)", text)
    cpu = re.search(r"- GPU: ([^,\n]+)", text) if device == "GPU" else None
    cpu = cpu or re.search(r"- (?:CPU|GPU): ([^,\n]+)", text)
    return f"{cpu.group(1) if cpu else '?'}, commit {commit.group(1) if commit else '?'}"


def plot_rules(path: str, out_png: str, workload: str = "gpt2s", device: str = "CPU"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parsed = parse_gpu_results(path) if device == "GPU" else parse_results(path)
    ceiling = "copy_" if device == "GPU" else "add_"
    rows = [(r, e) for r, e in parsed.get(workload, {}).items() if e["fusedopt"]]
    if not rows:
        raise SystemExit(f"{path}: no fusedopt rows for workload {workload!r}")
    names = [r for r, _ in rows]
    ours = [e["fusedopt"][0] for _, e in rows]
    peers = [e["peer"][1] if e["peer"] else float("nan") for _, e in rows]
    pct = [e["fusedopt"][1] for _, e in rows]
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    x = range(len(names))
    a.bar([i - 0.2 for i in x], ours, 0.4, label="fusedopt", color="tab:blue")
    a.bar([i + 0.2 for i in x], peers, 0.4, label="fastest peer", color="tab:gray")
    a.set_yscale("log")
    a.set_ylabel("ms per step (log)")
    a.legend()
    a.set_title(f"{device}, {workload}: step time per rule ({os.path.basename(path)}; {header(path, device)})", fontsize=9)
    b.bar(list(x), pct, 0.6, color="tab:blue")
    b.axhline(100, color="k", lw=0.8, ls="--")
    b.set_ylabel(f"fusedopt, % of {ceiling} bandwidth")
    b.set_xticks(list(x))
    b.set_xticklabels(names, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_memory(out_png: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fmts = [("float32", 256), ("bfloat16", 256), ("8-bit", 256), ("8-bit", 2048)]
    labels = ["float32", "bfloat16 (state_bits=16)", "8-bit, block 256 (state_bits=8)", "8-bit, block 2048"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(fmts)
    for j, ((fmt, block), lab) in enumerate(zip(fmts, labels)):
        vals = [state_bytes_per_param(k, fmt, block) for k in STATE_COUNTS.values()]
        xs = [i + (j - (len(fmts) - 1) / 2) * width for i in range(len(STATE_COUNTS))]
        bars = ax.bar(xs, vals, width, label=lab)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(STATE_COUNTS)))
    ax.set_xticklabels([f"{n}\n({k} state{'s' if k > 1 else ''})" for n, k in STATE_COUNTS.items()])
    ax.set_ylabel("optimizer state, bytes per parameter")
    ax.set_title("State memory per parameter by state format (from the layout; checked by tests/test_plots.py)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", default=DEFAULT_CPU)
    ap.add_argument("--gpu", default=newest_gpu_results())
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "plots"))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    plot_rules(a.cpu, os.path.join(a.out, "cpu_rules.png"))
    print("wrote", os.path.join(a.out, "cpu_rules.png"))
    if a.gpu:
        plot_rules(a.gpu, os.path.join(a.out, "gpu_rules.png"), device="GPU")
        print("wrote", os.path.join(a.out, "gpu_rules.png"))
    else:
        print("no GPU results file (bench/results/gpu-*.md): no gpu_rules.png")
    plot_memory(os.path.join(a.out, "state_memory.png"))
    print("wrote", os.path.join(a.out, "state_memory.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
