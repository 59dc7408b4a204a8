"""torch.compile(fullgraph=True) over opt.step(): the ops have fake kernels and are
functionalized; a tensor lr changed between steps does not recompile."""
from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo.testing

import fusedopt

from .specs import SPECS


def _models():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return m, copy.deepcopy(m)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_compiled_step_fullgraph_no_recompile_on_lr_change(spec, backend):
    if backend == "inductor" and spec.name != "adamw":
        pytest.skip("inductor once (slow compile on 2 cores); aot_eager covers every rule")
    torch._dynamo.reset()
    model, model2 = _models()
    opt = spec.ours(model.parameters(), lr=torch.tensor(spec.lr))
    eager = spec.ours(model2.parameters(), lr=torch.tensor(spec.lr))
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)

    @torch.compile(fullgraph=spec.compile_fullgraph, backend=counter)
    def compiled_step():
        opt.step()

    for i in range(5):
        for m, o, step in ((model, opt, compiled_step if i else opt.step), (model2, eager, eager.step)):
            o.param_groups[0]["lr"].fill_(spec.lr * 0.7 ** i)
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            step()  # first step eager: it creates the state
        for p, q in zip(model.parameters(), model2.parameters()):
            assert torch.equal(p, q), f"step {i}"
    if spec.compile_fullgraph:
        assert counter.frame_count == 1, "changing the tensor lr must not recompile"
    assert all(opt.state[p]["step"].item() == 5 for p in model.parameters())
