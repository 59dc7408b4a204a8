"""torch.compile(fullgraph=True) over opt.step(): the ops have fake kernels and are
functionalized; a tensor lr changed between steps does not recompile."""
from __future__ import annotations

import pytest

from .helpers import check_compiled_step
from .specs import SPECS


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_compiled_step_fullgraph_no_recompile_on_lr_change(spec, backend):
    if backend == "inductor" and spec.name != "adamw":
        pytest.skip("inductor once (slow compile on 2 cores); aot_eager covers every rule")
    check_compiled_step(spec, "cpu", backend)
