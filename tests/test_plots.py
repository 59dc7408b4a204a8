"""bench/plots.py: the state-memory model against the states real optimizers allocate, and the
results parser against the figures the README quotes from the same file."""
from __future__ import annotations

import os
import sys

import pytest
import torch

import fusedopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import plots  # noqa: E402

RULES = [(lambda ps, **kw: fusedopt.SGD(ps, lr=0.1, momentum=0.9, **kw), 1),
         (lambda ps, **kw: fusedopt.Lion(ps, **kw), 1),
         (lambda ps, **kw: fusedopt.AdamW(ps, **kw), 2),
         (lambda ps, **kw: fusedopt.LAMB(ps, **kw), 2),
         (lambda ps, **kw: fusedopt.DiffGrad(ps, **kw), 3),
         (lambda ps, **kw: fusedopt.Adan(ps, **kw), 4)]
FORMATS = [("float32", 256, {}), ("bfloat16", 256, {"state_bits": 16}), ("8-bit", 256, {"state_bits": 8}),
           ("8-bit", 2048, {"state_bits": 8, "block_size": 2048})]


@pytest.mark.parametrize("fmt,block,kw", FORMATS, ids=[f"{f}-{b}" for f, b, _ in FORMATS])
@pytest.mark.parametrize("i", range(len(RULES)))
def test_state_bytes_match_real_states(i, fmt, block, kw):
    make, k = RULES[i]
    n = 1 << 16
    p = torch.nn.Parameter(torch.randn(n))
    opt = make([p], **kw)
    p.grad = torch.randn(n)
    opt.step()
    per_element = sum(v.numel() * v.element_size() for key, v in opt.state[p].items()
                      if isinstance(v, torch.Tensor) and v.dim() > 0)  # not `step` and other scalars
    assert per_element == n * plots.state_bytes_per_param(k, fmt, block)


def test_results_parser_reads_the_quoted_figures():
    r = plots.parse_results(plots.DEFAULT_CPU)["gpt2s"]
    assert r["AdamW"]["fusedopt"] == (73.12, 99.3)  # the README's all-rules table
    assert r["AdamW"]["peer"] == ("torch AdamW fused=True", 72.05, 100.7)
    assert r["Lion"]["peer"][0] == "pytorch_optimizer Lion" and r["ACProp"]["peer"] is None


def test_plots_are_drawn(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    assert plots.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "cpu_rules.png").stat().st_size > 10_000 and (tmp_path / "state_memory.png").exists()
