"""Per-unit compile times of a ninja build, read from its .ninja_log (printed by setup.py after each
build step, so CI shows what every translation unit cost).

    python tools/build_times.py BUILD_DIR [BUILD_DIR ...]    all units of the last build of each dir
"""
from __future__ import annotations

import os
import sys

BUDGET_S = 60.0  # no translation unit should take longer (on one core of the 2-core CI machine)


def mark(build_dir: str) -> int:
    """The current end of build_dir's .ninja_log: report() shows only what is logged after it."""
    try:
        return os.path.getsize(os.path.join(build_dir, ".ninja_log"))
    except OSError:
        return 0


def entries(build_dir: str, start: int = 0) -> list:
    """[(seconds, output)] of the log from byte offset `start`; for an output logged twice, the last."""
    path = os.path.join(build_dir, ".ninja_log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        f.seek(start)
        text = f.read()
    last = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        last[parts[3]] = (int(parts[1]) - int(parts[0])) / 1000.0
    return sorted(((s, o) for o, s in last.items()), reverse=True)


def makespan(seconds: list, jobs: int) -> float:
    """Wall time of running units of these durations on `jobs` workers, longest first (ninja starts
    them in another order; an estimate for a machine with more cores, from one with fewer)."""
    import heapq

    free = [0.0] * jobs
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(free, free[0] + s)
    return max(free) if seconds else 0.0


def report(build_dir: str, start: int, title: str, file=sys.stderr) -> None:
    rows = [(s, o) for s, o in entries(build_dir, start) if o.endswith(".o") or o.endswith(".so")]
    if not rows:
        print(f"== build times, {title}: nothing compiled (up to date)", file=file)
        return
    total = sum(s for s, _ in rows)
    print(f"== build times, {title}: {len(rows)} units, {total:.1f} s of compile time "
          f"(longest {rows[0][0]:.1f} s; budget per unit {BUDGET_S:.0f} s)", file=file)
    for s, o in rows:
        flag = "  OVER BUDGET" if s > BUDGET_S else ""
        print(f"  {s:7.1f} s  {os.path.basename(o)}{flag}", file=file)
    times = [s for s, _ in rows]
    print(f"  these units on 16 jobs (estimate: longest first, at these per-unit times): "
          f"{makespan(times, 16):.1f} s; on 2 jobs {makespan(times, 2):.1f} s", file=file)


if __name__ == "__main__":
    for d in sys.argv[1:]:
        report(d, 0, d, file=sys.stdout)
