"""8-bit vs 32-bit states on scikit-learn's digits: every rule that takes 8-bit states, at its
defaults (the same optimizers as tests/test_q8.py DIGITS_RULES), full-batch 64-128-10 MLP, 200 steps,
every param quantized (min_8bit_size=0). Prints per rule the 32-bit and 8-bit final losses of each seed,
l8 / l32 per seed, and the ratio of the seed means (the README's table). One more row, not tested:
RMSprop at its default lr 1e-2, where the final loss is chaotic (loss spikes; see tests/digits.py).

  python bench/q8_digits.py [--seeds 0,1,2,3,4] [--rules adam,lamb-lr1e-2] [--markdown]

Deterministic: the 8-bit states' stochastic rounding draws from a hash of (tensor, step, state,
element), so a run prints the same numbers on any machine with the same torch CPU kernels.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fusedopt  # noqa: E402
from tests.digits import DIGITS_RULES, digits_loss  # noqa: E402

RULES = dict(DIGITS_RULES, **{"rmsprop-lr1e-2": lambda ps, **kw: fusedopt.RMSprop(ps, **kw)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    seeds = [int(x) for x in a.seeds.split(",")]
    if a.markdown:
        print("| rule | 32-bit final loss (seeds " + a.seeds + ") | 8-bit l8 / l32 per seed | mean l8 / mean l32 |")
        print("|---|---|---|---|")
    for name in a.rules.split(","):
        make = RULES[name]
        l32 = [digits_loss(lambda ps: make(ps), seed=s)[0] for s in seeds]
        l8 = [digits_loss(lambda ps: make(ps, state_bits=8, min_8bit_size=0), seed=s)[0] for s in seeds]
        per = [b / x for x, b in zip(l32, l8)]
        mean = sum(l8) / sum(l32)
        if a.markdown:
            print(f"| {name} | " + " ".join(f"{x:.4f}" for x in l32) + " | " + " ".join(f"{r:.3f}" for r in per)
                  + f" | {mean:.3f} |", flush=True)
        else:
            print(f"{name:16s} l32 " + " ".join(f"{x:.4f}" for x in l32) + "  l8/l32 " +
                  " ".join(f"{r:.3f}" for r in per) + f"  max {max(per):.3f}  mean-ratio {mean:.3f}", flush=True)


if __name__ == "__main__":
    main()
