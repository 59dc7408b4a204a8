#!/usr/bin/env python
"""Two builds of fusedopt side by side in one run: every rule's step() time on the same parameter set.

    python bench/compare_builds.py --a DIR_A --b DIR_B [--rules all|adamw,sgd,...] [--rounds 3]
                                   [--workload gpt2s] [--timed 7] [--out bench/results/<file>.md]

DIR_A and DIR_B are folders holding a `fusedopt` package with its built `_C` (a checkout's python/
after `setup.py build_ext --inplace`, or a copy of one). Two builds cannot share a process (their
ops have the same names), so each measurement runs in a child process (`--worker`) whose PYTHONPATH
starts with that folder. The rounds alternate A, B, A, B, ... so that a change in the machine's load
hits both; a rule's time is the lowest of its per-round medians. The rules and their hyperparameters
are bench_step.py's REGISTRY (fusedopt's rows only: no peers) and EXTRA below. Prints one table: ms of A and B and
B / A per rule.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Rules bench_step.py leaves to bench_cross.py (cross-tensor passes, factored states): class, arguments
EXTRA = {
    "lamb": ("LAMB", dict(lr=1e-3, weight_decay=0.01)),
    "lars": ("LARS", dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    "adafactor": ("Adafactor", dict(lr=None)),
    "adafactor_torch": ("AdafactorTorch", dict(lr=1e-2)),
}


def worker(rules: str, workload: str, warmup: int, timed: int) -> None:
    sys.path.insert(0, HERE)
    import benchlib as bl
    import bench_step as bs
    import fusedopt

    wl = bl.make_workload(workload)
    out = {"fusedopt": os.path.dirname(fusedopt.__file__)}
    want = None if rules == "all" else set(rules.split(","))
    rules = [(r.key, r.cls, r.hp) for r in bs.REGISTRY] + [(k, c, hp) for k, (c, hp) in EXTRA.items()]
    for key, cls_name, hp in rules:
        cls = getattr(fusedopt, cls_name, None)
        if cls is None or (want is not None and key not in want):
            continue
        params = [t.requires_grad_() for t in bl.make_tensors(wl.shapes, "cpu")]
        for p, g in zip(params, bl.make_tensors(wl.shapes, "cpu", seed=1, scale=1e-3)):
            p.grad = g
        opt = cls(params, **hp)
        out[key] = bl.time_calls(opt.step, "cpu", warmup, timed).median
        del opt, params
        bl.free()
    print("RESULT " + json.dumps(out))


def run_one(folder: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--rules", args.rules, "--workload", args.workload,
           "--warmup", str(args.warmup), "--timed", str(args.timed)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(f"worker for {folder} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", help="folder holding build A's fusedopt package")
    ap.add_argument("--b", help="folder holding build B's fusedopt package")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--rules", default="all")
    ap.add_argument("--workload", default="gpt2s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timed", type=int, default=7)
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.rules, args.workload, args.warmup, args.timed)
        return
    sys.path.insert(0, HERE)
    import benchlib as bl

    best = {"a": {}, "b": {}}
    where = {}
    for r in range(args.rounds):
        for side in ("a", "b"):
            got = run_one(getattr(args, side), args)
            where[side] = got.pop("fusedopt")
            for k, ms in got.items():
                best[side][k] = min(ms, best[side].get(k, float("inf")))
            print(f"round {r + 1}/{args.rounds} {side}: {len(got)} rules", file=sys.stderr)
    rows = []
    for k in best["a"]:
        if k in best["b"]:
            a, b = best["a"][k], best["b"][k]
            rows.append([k, f"{a:.2f}", f"{b:.2f}", f"{b / a:.3f}"])
    lines = [f"# Two builds side by side: step() ms on {args.workload} (CPU), lowest of {args.rounds} "
             f"alternating rounds of {args.timed} timed steps (median)", ""]
    lines += [ln for ln in bl.machine_info("cpu") if "fusedopt" not in ln]  # each build's own: below
    lines += [f"- A ({args.label_a}): {where['a']}", f"- B ({args.label_b}): {where['b']}", ""]
    lines.append(bl.md_table(["rule", f"A ms ({args.label_a})", f"B ms ({args.label_b})", "B / A"], rows))
    only = sorted(set(best["a"]) ^ set(best["b"]))
    if only:
        lines += ["", "In one build only: " + ", ".join(only)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
