"""The fast path of FusedOptimizer.step (optim/base.py _fast_step; csrc/torch/ops.cpp Plan): a bucket's
lists cross into C++ once, and later steps read each grad from its param. It must give exactly what the
op path gives, for every rule it serves, whatever changes between steps."""
from __future__ import annotations

import pytest
import torch

import fusedopt
from fusedopt.optim.base import FusedOptimizer

from .specs import SPECS

IDS = [s.name for s in SPECS]
SHAPES = [(3, 5), (7,), (4097,), (0,), (2, 3, 4)]


def _params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in SHAPES]


def _grads(ps, t):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in ps]


def _opts(spec):
    return {"momentum": 0.9} if spec.name == "sgd" else {}


def _slow(monkeypatch):
    monkeypatch.setattr(FusedOptimizer, "_fast_step", lambda self, *a, **k: False)


def _handles(opt):
    return [getattr(b, "handle", None) for _, plan in opt._plans.values() for b in plan]


@pytest.mark.parametrize("storage", [{}, {"state_bits": 8, "min_8bit_size": 0}, {"state_dtype": torch.bfloat16}],
                         ids=["32bit", "8bit", "bf16states"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_fast_path_equals_op_path(spec, storage, monkeypatch):
    ps, qs = _params(), _params()
    try:
        fast = spec.ours(ps, lr=spec.lr, **_opts(spec), **storage)
    except ValueError as e:
        pytest.skip(str(e))
    slow = spec.ours(qs, lr=spec.lr, **_opts(spec), **storage)
    for t in range(5):
        for p, q, g in zip(ps, qs, _grads(ps, t)):
            p.grad, q.grad = g, g.clone()
        fast.step()
        with monkeypatch.context() as m:
            _slow(m)
            slow.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), (t, p.shape)
            for k, v in slow.state[q].items():
                if torch.is_tensor(v):
                    assert torch.equal(fast.state[p][k], v), (t, k)
    served = fast._plans[0][1].fast
    assert not served or all(h is not None for h in _handles(fast)), "the fast path never ran"


def test_fast_path_serves_the_single_pass_rules_only():
    ps = _params()
    for cls, fast in [(fusedopt.AdamW, True), (fusedopt.LAMB, False), (fusedopt.LARS, False)]:
        opt = cls(ps, lr=1e-3)
        for t in range(2):
            for p, g in zip(ps, _grads(ps, t)):
                p.grad = g
            opt.step()
        assert opt._plans[0][1].fast == fast, cls.__name__


def test_params_without_grad_take_no_step_and_new_grads_rebuild(monkeypatch):
    ps, qs = _params(), _params()
    fast, slow = fusedopt.Adam(ps, lr=1e-2), fusedopt.Adam(qs, lr=1e-2)
    pattern = [[0, 1, 2, 3, 4], [0, 2, 4], [0, 1, 2, 3, 4], [1], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    for t, have in enumerate(pattern):
        for i, (p, q, g) in enumerate(zip(ps, qs, _grads(ps, t))):
            p.grad = g if i in have else None
            q.grad = g.clone() if i in have else None
        fast.step()
        with monkeypatch.context() as m:
            _slow(m)
            slow.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), t
            if q in slow.state:
                assert float(fast.state[p]["step"]) == float(slow.state[q]["step"]), t
    # a param that had no grad when the plan was made, with a grad now: the plan is rebuilt to include it
    rs = _params()
    opt = fusedopt.Adam(rs, lr=1e-2)
    rs[3].grad = None
    for t in range(3):
        for i, (r, g) in enumerate(zip(rs, _grads(rs, t))):
            r.grad = g if (i != 1 or t == 2) else None
        opt.step()
    assert float(opt.state[rs[1]]["step"]) == 1.0 and float(opt.state[rs[0]]["step"]) == 3.0


def test_replaced_param_data_repacks(monkeypatch):
    ps, qs = _params(), _params()
    fast, slow = fusedopt.AdamW(ps, lr=1e-2), fusedopt.AdamW(qs, lr=1e-2)
    for t in range(4):
        if t == 2:  # new storage under the same params (as model.load_state_dict(..., assign=True) may do)
            for p, q in zip(ps, qs):
                p.data = p.data.clone()
                q.data = q.data.clone()
        for p, q, g in zip(ps, qs, _grads(ps, t)):
            p.grad, q.grad = g, g.clone()
        fast.step()
        with monkeypatch.context() as m:
            _slow(m)
            slow.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), t


def test_bad_grad_on_the_fast_path_is_named():
    ps = _params()
    opt = fusedopt.AdamW(ps, lr=1e-2)
    for t in range(2):
        for p, g in zip(ps, _grads(ps, t)):
            p.grad = g
        opt.step()
    assert all(h is not None for h in _handles(opt))
    # torch refuses a grad of another shape or dtype itself; strides it lets through, the kernels do not
    ps[0].grad = torch.randn(5, 3).t()
    with pytest.raises(RuntimeError, match=r"grads\[0\].*does not match its param"):
        opt.step()


def test_switching_rounding_or_variant_makes_a_new_plan(monkeypatch):
    ps, qs = _params(dtype=torch.bfloat16), _params(dtype=torch.bfloat16)
    fast, slow = fusedopt.Adam(ps, lr=1e-2), fusedopt.Adam(qs, lr=1e-2)
    for t in range(6):
        if t == 2:
            for o in (fast, slow):
                o.param_groups[0]["param_rounding"] = "stochastic"
        if t == 4:
            for o in (fast, slow):
                o.param_groups[0]["amsgrad"] = True
        for p, q, g in zip(ps, qs, _grads(ps, t)):
            p.grad, q.grad = g, g.clone()
        fast.step()
        with monkeypatch.context() as m:
            _slow(m)
            slow.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), t
