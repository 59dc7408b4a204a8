"""Each rule against torch.optim (fp32) and against the float64 reference of the equations,
on params and every state tensor after every step, for every option set of specs.py."""
from __future__ import annotations

import pytest
import torch

from .helpers import SHAPES, assert_close, assert_mostly_close, clone_params, make_params, set_grads
from .reference import init_state
from .specs import CASE_IDS, CASES, DROP_IN, DROP_IN_IDS, ORACLE_CASE_IDS, ORACLE_CASES, TOL

STEPS = 12

ROUND = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -10}


def _compare_states(spec, ours, theirs, params_o, params_t, keys, tol, ctx):
    for i, (po, pt) in enumerate(zip(params_o, params_t)):
        so, st = ours.state[po], theirs.state[pt]
        if "step" in st and torch.is_tensor(st["step"]):
            assert_close(so["step"].float().cpu(), st["step"].float().cpu(), msg=f"{ctx} step of param {i}")
        for k in keys:
            assert so[k].dtype == torch.float32 or so[k].dtype == po.dtype == torch.float64, (k, so[k].dtype)
            theirs_k = st[spec.oracle_key(k)]
            mine = so[k] if spec.oracle_state is None else spec.oracle_state(k, so[k])
            assert_close(mine.to(theirs_k.dtype), theirs_k, msg=f"{ctx} state {k} of param {i}", **tol)


@pytest.mark.parametrize("spec,opts", ORACLE_CASES, ids=ORACLE_CASE_IDS)
def test_matches_oracle_fp32(spec, opts):
    """Against torch.optim (for-loop) or the authors' / pytorch_optimizer's implementation."""
    ps = make_params()
    qs = clone_params(ps)
    ours = spec.ours(ps, lr=spec.lr, **opts)
    theirs = spec.make_oracle(qs, **opts)
    for t in range(1, STEPS + 1):
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
        ctx = f"{spec.id(opts)} step {t}"
        for i, (p, q) in enumerate(zip(ps, qs)):
            assert_close(p, q, msg=f"{ctx} param {i} {tuple(p.shape)}", **spec.tol(TOL[torch.float32]))
        _compare_states(spec, ours, theirs, ps, qs, spec.keys(opts), spec.tol(TOL[torch.float32]), ctx)


def _resync(state, keys):
    """A float64 copy of our state for the reference: element states, and per-tensor scalar
    states (0-dim tensors other than step, e.g. NAdam's mu_product) as Python floats."""
    out = {k: state[k].double().clone() for k in keys}
    for k, v in state.items():
        if k != "step" and torch.is_tensor(v) and v.dim() == 0:
            out[k] = v.item()
    return out


def _run_reference(spec, opts, params64, states, t, grads64):
    hyper = dict(spec.defaults)
    hyper.update(opts)
    hyper["lr"] = spec.lr
    for p, g, st in zip(params64, grads64, states):
        spec.reference(p, g, st, t, **hyper)


def _resynced_steps(spec, opts, ours, ps, keys):
    """Steps ours for t = 1..STEPS; before each, a float64 reference starts from our current params
    and states (fresh states at t = 1) and takes the same step. Yields (t, reference params,
    reference states) after our step."""
    for t in range(1, STEPS + 1):
        set_grads([ps], t)
        ref_ps = [p.detach().double().clone() for p in ps]
        if t == 1:
            ref_states = [init_state(keys, p, ours.param_groups[0]["state_dtype"]) for p in ps]
        else:
            ref_states = [_resync(ours.state[p], keys) for p in ps]
        _run_reference(spec, opts, ref_ps, ref_states, t, [p.grad.double() for p in ps])
        ours.step()
        yield t, ref_ps, ref_states


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spec,opts", CASES, ids=CASE_IDS)
def test_matches_float64_reference(spec, opts, dtype):
    ps = make_params(dtype=dtype)
    ref_ps = [p.detach().double().clone() for p in ps]
    keys = spec.keys(opts)
    ref_states = [init_state(keys, p) for p in ref_ps]
    ours = spec.ours(ps, lr=spec.lr, **opts)
    # fp32 accumulates rounding over the trajectory: the bound grows with the step count
    tol = (spec.f64_tol or TOL[dtype]) if dtype == torch.float64 else spec.tol(dict(rtol=2e-5, atol=2e-6))
    for t in range(1, STEPS + 1):
        set_grads([ps], t)
        _run_reference(spec, opts, ref_ps, ref_states, t, [p.grad.double() for p in ps])
        ours.step()
        for i, (p, rp, rs) in enumerate(zip(ps, ref_ps, ref_states)):
            ctx = f"{spec.id(opts)} {dtype} step {t} param {i}"
            assert_close(p.detach().double(), rp, msg=ctx, **tol)
            for k in keys:
                assert_close(ours.state[p][k].double(), rs[k], msg=f"{ctx} state {k}", **tol)
            assert ours.state[p]["step"].item() == t


@pytest.mark.parametrize("pdtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("spec,opts", CASES, ids=CASE_IDS)
def test_low_precision_params_resynced(spec, opts, pdtype):
    """bf16/fp16 params, fp32 states: each step, a float64 reference starts from our current
    param and states; our states must match at fp32 precision and our param must be the
    reference rounded to the param dtype (within one rounding)."""
    ps = make_params(dtype=pdtype)
    keys = spec.keys(opts)
    ours = spec.ours(ps, lr=spec.lr, **opts)
    for t, ref_ps, ref_states in _resynced_steps(spec, opts, ours, ps, keys):
        for i, (p, rp, rs) in enumerate(zip(ps, ref_ps, ref_states)):
            ctx = f"{spec.id(opts)} {pdtype} step {t} param {i}"
            assert p.dtype == pdtype
            for k in keys:
                assert ours.state[p][k].dtype == torch.float32
                # atol: two fp32 roundings of O(1) terms (an EMA that cancels to ~1e-3, e.g. PNM's
                # 0.64*m + 0.36*g at step 9, is off by ~1.1e-7 = 2 ulp of its terms)
                assert_close(ours.state[p][k].double(), rs[k], msg=f"{ctx} state {k}", **spec.tol(dict(rtol=4e-6, atol=2.5e-7)))
            # one rounding of the fp32 result; a rare element sits where fp32 and fp64 cancel
            # differently (g + wd*p == 0 exactly in fp64) and may land one ulp away
            assert_mostly_close(p.detach(), rp, msg=ctx, outlier_rtol=4 * ROUND[pdtype],
                                **spec.tol(dict(rtol=ROUND[pdtype], atol=1e-7)))


@pytest.mark.parametrize("spec,opts", CASES, ids=CASE_IDS)
def test_bf16_states_resynced(spec, opts):
    """state_dtype=bfloat16: states are stored rounded to bf16; the update itself uses the
    unrounded fp32 values, so params match the reference at fp32 precision."""
    ps = make_params()
    keys = spec.keys(opts)
    ours = spec.ours(ps, lr=spec.lr, state_dtype=torch.bfloat16, **opts)
    for t, ref_ps, ref_states in _resynced_steps(spec, opts, ours, ps, keys):
        for i, (p, rp, rs) in enumerate(zip(ps, ref_ps, ref_states)):
            ctx = f"{spec.id(opts)} bf16-state step {t} param {i}"
            for k in keys:
                assert ours.state[p][k].dtype == torch.bfloat16
                assert_close(ours.state[p][k].double(), rs[k], msg=f"{ctx} state {k}", **spec.tol(dict(rtol=2.0 ** -8, atol=1e-7)))
            assert_close(p.detach().double(), rp, msg=ctx, **spec.tol(dict(rtol=2e-6, atol=1e-7)))


@pytest.mark.parametrize("spec", DROP_IN, ids=DROP_IN_IDS)
def test_defaults_match_torch(spec):
    import inspect

    ours = inspect.signature(spec.ours.__init__).parameters
    theirs = inspect.signature(spec.oracle.__init__).parameters
    for name, par in theirs.items():
        assert name in ours, f"{spec.name}: torch argument {name!r} missing"
        assert ours[name].default == par.default, f"{spec.name}: default of {name!r}"
        assert ours[name].kind == par.kind, f"{spec.name}: kind of {name!r}"
    p = torch.zeros(3, requires_grad=True)
    q = torch.zeros(3, requires_grad=True)
    g_ours = spec.ours([p]).param_groups[0]
    g_theirs = spec.oracle([q]).param_groups[0]
    assert set(g_theirs) <= set(g_ours), set(g_theirs) - set(g_ours)
    for k in g_theirs:
        if k != "params":
            assert g_ours[k] == g_theirs[k], k


def test_many_tensors_cross_chunks():
    """2,000 tensors of mixed sizes in one call, against torch.optim.AdamW."""
    import fusedopt

    shapes = [(1 + (i * 37) % 5000,) for i in range(2000)] + [(140000,)]
    ps = make_params(shapes, seed=3)
    qs = clone_params(ps)
    ours = fusedopt.AdamW(ps, lr=1e-2)
    theirs = torch.optim.AdamW(qs, lr=1e-2, foreach=False)
    for t in range(1, 4):
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
    for p, q in zip(ps, qs):
        assert_close(p, q, **TOL[torch.float32])
        assert_close(ours.state[p]["exp_avg_sq"], theirs.state[q]["exp_avg_sq"], **TOL[torch.float32])


assert SHAPES


def test_radam_switches_at_step_6():
    """docs/algorithms.md §6: with beta2 = 0.999, rho_5 = 4.996 and rho_6 = 5.994, so both the torch (> 5)
    and the official (>= 5) variants first rectify at t = 6. Before that torch takes the SGD step and
    the official variant leaves the param (and its weight decay) alone."""
    import fusedopt

    p_t = torch.ones(8, requires_grad=True)
    p_o = torch.ones(8, requires_grad=True)
    torch_v = fusedopt.RAdam([p_t], lr=0.1)
    official = fusedopt.RAdam([p_o], lr=0.1, weight_decay=0.1, variant="official")
    for t in range(1, 8):
        before_t, before_o = p_t.detach().clone(), p_o.detach().clone()
        for p in (p_t, p_o):
            p.grad = torch.full_like(p, 0.5)
        torch_v.step()
        official.step()
        if t <= 5:
            assert torch.equal(p_o, before_o), t
            # SGD step: p -= lr * m / bc1 == lr * g for a constant grad
            assert_close(before_t - p_t.detach(), torch.full((8,), 0.05), rtol=1e-5, atol=0)
        else:
            assert not torch.equal(p_o, before_o), t
            # rectified: lr * r_t * m_hat / sqrt(v_hat), r_t ~ 0.05 at t = 6: far from the SGD step
            assert ((before_t - p_t.detach()) - 0.05).abs().min() > 0.01, t
