"""Lookahead and IterateAveraging (python/fusedopt/wrappers.py, csrc/core/rules/{lookahead,averaging}.h).

Oracles: kozistr/pytorch_optimizer's Lookahead (bitwise, every step: params, slow weights, inner
states), torch.optim.swa_utils.AveragedModel / update_bn (bitwise), float64 transcriptions of the
sync and running-mean equations. Contracts: state_dict round trips, the swap context manager,
found_inf / GradScaler, LR schedulers, param groups, bad inputs, torch.compile of the ops.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
from pytorch_optimizer import Lookahead as KozistrLookahead
from torch.optim.swa_utils import AveragedModel
from torch.optim.swa_utils import update_bn as torch_update_bn

import fusedopt
import fusedopt.wrappers as W

SHAPES = [(0,), (1,), (7,), (4097,), (3, 5, 7), (70000,)]


def make(shapes=SHAPES, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


def grads(params, step, seed=1, skip=()):
    g = torch.Generator().manual_seed(seed * 7919 + step)
    out = []
    for i, p in enumerate(params):
        out.append(None if i in skip else torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return out


def set_grads(plists, gs):
    for params in plists:
        for p, g in zip(params, gs):
            p.grad = None if g is None else g.clone()


class CountingOp:
    """Stands in for fusedopt._ops.op inside wrappers.py: counts calls of each wrapper op."""

    def __init__(self, real):
        self.real, self.calls = real, {}

    def __call__(self, name):
        k = self.real(name)

        def f(*a, **kw):
            self.calls[name] = self.calls.get(name, 0) + 1
            return k(*a, **kw)

        return f


@pytest.fixture
def counting(monkeypatch):
    c = CountingOp(W.op)
    monkeypatch.setattr(W, "op", c)
    return c


# ---- Lookahead vs kozistr/pytorch_optimizer -----------------------------------------------------
# Mapping: fusedopt.Lookahead(opt, k, alpha, pullback_momentum) == kozistr Lookahead(opt, k, alpha,
# pullback_momentum) (kozistr's defaults k=5, alpha=0.5 are ours too); its per-group counter equals
# our per-param counters (every param of a group advances on every step). kozistr syncs only params
# with a grad at the sync step: a param that never has a grad is a no-op in both.
INNERS = {
    "torch_sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "torch_adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.01),
}
OURS = {  # the fusedopt counterparts
    "torch_sgd": lambda ps: fusedopt.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "torch_adam": lambda ps: fusedopt.Adam(ps, lr=1e-2, weight_decay=0.01),
}
CASES = [("torch_sgd", m) for m in ("none", "pullback", "reset")] + [("torch_adam", "none")]


@pytest.mark.parametrize("inner_kind", ["torch", "fusedopt"])
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_lookahead_matches_kozistr_every_step(name, mode, inner_kind, counting):
    k, alpha, steps = 3, 0.6, 11
    params = make()
    ref_params = clone(params)
    inner = (INNERS if inner_kind == "torch" else OURS)[name](params)
    ours = fusedopt.Lookahead(inner, k=k, alpha=alpha, pullback_momentum=mode)
    # kozistr around the same fusedopt class, except for "reset": kozistr replaces the buffer tensor,
    # which a fusedopt optimizer (caching its state lists) does not see; fusedopt.SGD is bitwise
    # torch.optim.SGD, so torch's SGD is the oracle there
    ref_inner = OURS[name] if inner_kind == "fusedopt" and mode != "reset" else INNERS[name]
    ref = KozistrLookahead(ref_inner(ref_params), k=k, alpha=alpha, pullback_momentum=mode)
    nograd = (1,)  # this param never has a grad
    for t in range(1, steps + 1):
        set_grads([params, ref_params], grads(params, t, skip=nograd))
        ours.step()
        ref.step()
        for i, (p, q) in enumerate(zip(params, ref_params)):
            assert torch.equal(p, q), f"step {t} param {i}"
            if i in nograd:
                continue
            assert torch.equal(ours.state[p]["slow_param"], ref.state[q]["slow_params"]), f"step {t} slow {i}"
            for key, v in ref.optimizer.state[q].items():
                if key == "step" or (mode == "none" and key == "momentum_buffer" and name != "torch_sgd"):
                    continue
                assert torch.equal(inner.state[p][key], v), f"step {t} inner {key} of {i}"
            if mode == "pullback":
                assert torch.equal(ours.state[p]["slow_momentum"], ref.state[q]["slow_momentum"])
            assert float(ours.state[p]["step"]) == t
    # one fused op call per step and bucket; with pullback/reset the param without a momentum buffer
    # (never had a grad) is a bucket of its own (sync without pullback)
    assert counting.calls["lookahead"] == steps * (1 if mode == "none" else 2)


def test_lookahead_float64_reference_and_sync_schedule():
    """fp64 params: the paper's equations in float64, with pullback on Adam's exp_avg."""
    k, alpha = 4, 0.35
    params = make(dtype=torch.float64)
    inner = fusedopt.Adam(params, lr=1e-2)
    after_inner = {}
    real_step = inner.step

    def recording_step(*a, **kw):  # the fast weights and exp_avg right after each inner step
        out = real_step(*a, **kw)
        after_inner["fast"] = [p.detach().clone() for p in params]
        after_inner["mom"] = [inner.state[p]["exp_avg"].clone() for p in params]
        return out

    inner.step = recording_step
    la = fusedopt.Lookahead(inner, k=k, alpha=alpha, pullback_momentum="pullback", momentum_key="exp_avg")
    slow = [p.detach().clone() for p in params]
    cached = [torch.zeros_like(p) for p in params]
    tol = dict(rtol=1e-13, atol=1e-14)
    prev = [p.detach().clone() for p in params]
    for t in range(1, 13):
        set_grads([params], grads(params, t))
        la.step()
        for i, p in enumerate(params):
            fast, mom = after_inner["fast"][i], after_inner["mom"][i]
            if t % k == 0:
                want = slow[i] + alpha * (fast - slow[i])
                torch.testing.assert_close(p.detach(), want, **tol)
                torch.testing.assert_close(la.state[p]["slow_param"], want, **tol)
                slow[i] = want
                buf = alpha * mom + (1 - alpha) * cached[i]
                torch.testing.assert_close(inner.state[p]["exp_avg"], buf, **tol)
                torch.testing.assert_close(la.state[p]["slow_momentum"], buf, **tol)
                cached[i] = buf
            else:
                assert torch.equal(p.detach(), fast) and torch.equal(la.state[p]["slow_param"], prev[i]), t
                assert torch.equal(inner.state[p]["exp_avg"], mom)
        prev = [la.state[p]["slow_param"].clone() for p in params]


@pytest.mark.parametrize("make_inner", [lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                                        lambda ps: fusedopt.AdamW(ps, lr=1e-2)], ids=["torch_sgd", "fused_adamw"])
@pytest.mark.parametrize("mode", ["none", "pullback"])
def test_lookahead_state_dict_round_trip(make_inner, mode):
    kw = dict(k=5, alpha=0.5, pullback_momentum=mode)
    if mode == "pullback" and make_inner(make()).__class__ is fusedopt.AdamW:
        kw["momentum_key"] = "exp_avg"
    a_params = make()
    a = fusedopt.Lookahead(make_inner(a_params), **kw)
    for t in range(1, 8):  # 7 steps: in the middle of the second period
        set_grads([a_params], grads(a_params, t))
        a.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    sd = a.state_dict()
    # the wrapper's per-param state is nested in the inner per-param entries (torch.distributed.checkpoint
    # keeps only those); the settings stay at the top
    own = [s["lookahead"] for s in sd["state"].values() if "lookahead" in s]
    assert len(own) == len(a_params) and all("slow_param" in s and "step" in s for s in own)
    assert sd["lookahead"]["settings"]["k"] == kw.get("k", 5)
    # the earlier format (the wrapper's state in sd["lookahead"]["state"]) still loads
    legacy = {"state": {i: {k: v for k, v in s.items() if k != "lookahead"} for i, s in sd["state"].items()},
              "param_groups": sd["param_groups"],
              "lookahead": {"state": {i: s["lookahead"] for i, s in sd["state"].items() if "lookahead" in s},
                            "settings": sd["lookahead"]["settings"]}}
    b_params, c_params = clone(a_params), clone(a_params)
    b = fusedopt.Lookahead(make_inner(b_params), **kw)
    c = fusedopt.Lookahead(make_inner(c_params), **kw)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    c.load_state_dict(copy.deepcopy(legacy))  # torch.optim's load aliases same-dtype tensors: no sharing with a
    for t in range(8, 20):
        set_grads([a_params, b_params, c_params], grads(a_params, t))
        a.step()
        b.step()
        c.step()
        for p, q, r in zip(a_params, b_params, c_params):
            assert torch.equal(p, q) and torch.equal(p, r), f"step {t}"
            assert torch.equal(a.state[p]["slow_param"], b.state[q]["slow_param"])
            assert torch.equal(a.state[p]["slow_param"], c.state[r]["slow_param"])
            assert torch.equal(a.state[p]["step"], b.state[q]["step"])


def test_lookahead_loaded_state_is_not_aliased():
    params = make()
    la = fusedopt.Lookahead(torch.optim.SGD(params, lr=0.1), k=2)
    set_grads([params], grads(params, 1))
    la.step()
    sd = la.state_dict()
    q = clone(params)
    lb = fusedopt.Lookahead(torch.optim.SGD(q, lr=0.1), k=2)
    lb.load_state_dict(sd)
    saved = sd["state"][3]["lookahead"]["slow_param"].clone()
    set_grads([q], grads(q, 2))
    lb.step()  # syncs: writes lb's slow weights
    assert torch.equal(sd["state"][3]["lookahead"]["slow_param"], saved)


def test_lookahead_swap_restores_fast_weights_bitwise():
    params = make(dtype=torch.bfloat16)
    la = fusedopt.Lookahead(fusedopt.AdamW(params, lr=1e-2, param_rounding="kahan"), k=3, alpha=0.5)
    for t in range(1, 5):
        set_grads([params], grads(params, t))
        la.step()
    fast = [p.detach().clone() for p in params]
    comps = [la.optimizer.state[p]["param_comp"].clone() for p in params]
    with la.swapped():
        for p in params:
            assert torch.equal(p.detach(), la.state[p]["slow_param"].to(p.dtype))
            assert la.state[p]["slow_param"].dtype == torch.float32
    for p, f, c in zip(params, fast, comps):
        assert torch.equal(p.detach(), f)
        assert torch.equal(la.optimizer.state[p]["param_comp"], c)


def test_lookahead_bf16_kahan_sync_uses_the_compensated_value():
    """bf16 params with fusedopt's Kahan compensation: the sync reads hi + lo and writes both."""
    params = make(shapes=[(4097,)], dtype=torch.bfloat16)
    inner = fusedopt.AdamW(params, lr=1e-3, param_rounding="kahan")
    la = fusedopt.Lookahead(inner, k=2, alpha=0.5)
    p = params[0]
    set_grads([params], grads(params, 1))
    la.step()
    slow0 = la.state[p]["slow_param"].clone()
    set_grads([params], grads(params, 2))
    # the fast value (hi + lo) right after the inner step, then the sync
    inner.step()
    fast = p.detach().float() + inner.state[p]["param_comp"].float()
    la.optimizer.step = lambda *a, **k: None  # the next la.step() only syncs
    la.step()
    want = torch.lerp(fast, slow0, 0.5)
    torch.testing.assert_close(la.state[p]["slow_param"], want, rtol=0, atol=0)
    got = p.detach().float() + inner.state[p]["param_comp"].float()
    torch.testing.assert_close(got, want, rtol=2.0**-15, atol=0)


def test_lookahead_found_inf_skips_sync_and_counter():
    params = make()
    la = fusedopt.Lookahead(fusedopt.SGD(params, lr=0.1, momentum=0.9), k=2)
    set_grads([params], grads(params, 1))
    la.step()
    snap = [(p.detach().clone(), la.state[p]["slow_param"].clone(), la.state[p]["step"].clone()) for p in params]
    la.found_inf, la.grad_scale = torch.ones(()), torch.ones(())
    set_grads([params], grads(params, 2))
    la.step()  # would sync (step 2) if not skipped
    for p, (v, s, c) in zip(params, snap):
        assert torch.equal(p.detach(), v) and torch.equal(la.state[p]["slow_param"], s)
        assert torch.equal(la.state[p]["step"], c)
    la.found_inf = torch.zeros(())
    la.step()
    assert all(float(la.state[p]["step"]) == 2 for p in params)
    assert not torch.equal(la.state[params[2]]["slow_param"], snap[2][1])  # synced now


@pytest.mark.parametrize("inner", ["fused", "torch"])
def test_lookahead_grad_scaler_inf_step_does_not_count(inner):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = fusedopt.Adam(model.parameters(), lr=1e-2) if inner == "fused" else torch.optim.SGD(model.parameters(),
                                                                                              lr=0.1)
    la = fusedopt.Lookahead(opt, k=2)
    assert la._step_supports_amp_scaling == (inner == "fused")
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x = torch.randn(8, 4)
    for bad in (False, True, False):
        la.zero_grad()
        loss = model(x).square().mean() * (float("inf") if bad else 1.0)
        scaler.scale(loss).backward()
        scaler.step(la)
        scaler.update()
    for p in model.parameters():
        assert float(la.state[p]["step"]) == 2
    assert not hasattr(opt, "found_inf") and not hasattr(la.optimizer, "grad_scale")


def test_lookahead_param_groups_schedulers_and_add_param_group(counting):
    a, b = make(shapes=[(5,), (6,)]), make(shapes=[(7,)], dtype=torch.float64, seed=3)
    inner = torch.optim.SGD([{"params": a, "lr": 0.1}, {"params": b, "lr": 0.2}], momentum=0.5)
    la = fusedopt.Lookahead(inner, k=2)
    sched = torch.optim.lr_scheduler.StepLR(la, step_size=1, gamma=0.5)
    assert la.param_groups is inner.param_groups
    for t in range(1, 4):
        set_grads([a + b], grads(a + b, t))
        la.step()
        sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    assert inner.param_groups[1]["lr"] == pytest.approx(0.2 * 0.5 ** 3)
    assert counting.calls["lookahead"] == 3 * 2  # per step: one call per group (one bucket each)
    c = make(shapes=[(3,)], seed=5)
    la.add_param_group({"params": c, "lr": 0.3})
    set_grads([a + b + c], grads(a + b + c, 4))
    la.step()
    assert float(la.state[a[0]]["step"]) == 4 and float(la.state[c[0]]["step"]) == 1


def test_lookahead_pullback_without_momentum_state_is_an_error():
    params = make(shapes=[(4,)])
    la = fusedopt.Lookahead(torch.optim.Adam(params), k=2, pullback_momentum="pullback")
    set_grads([params], grads(params, 1))
    with pytest.raises(ValueError, match="momentum_key='exp_avg'"):
        la.step()


@pytest.mark.parametrize("kw,match", [
    (dict(k=0), "Invalid k"), (dict(k=2.5), "Invalid k"), (dict(k=True), "Invalid k"),
    (dict(alpha=-0.1), "Invalid alpha"), (dict(alpha=1.5), "Invalid alpha"),
    (dict(pullback_momentum="sometimes"), "Invalid pullback_momentum"),
])
def test_lookahead_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fusedopt.Lookahead(torch.optim.SGD(make(shapes=[(2,)]), lr=0.1), **kw)


def test_wrappers_need_an_optimizer():
    with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer"):
        fusedopt.Lookahead(make(shapes=[(2,)]))
    with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer"):
        fusedopt.IterateAveraging(None)


def test_no_grad_ops_refuse_grad_scale():
    p = torch.randn(3)
    with pytest.raises(RuntimeError, match="grad_scale must be None"):
        torch.ops.fusedopt.lookahead_([p], [p.clone()], [], [], [torch.zeros((), dtype=torch.float64)], [],
                                      hyper=[0.5, 2.0], lr=0.0, grad_scale=torch.ones(()))


@pytest.mark.parametrize("rule", ["lookahead", "iterate_avg"])
def test_compiled_wrapper_op_matches_eager(rule):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    p0 = [torch.randn(s, generator=g) for s in [(5,), (300,)]]
    s0 = [torch.randn(p.shape, generator=g) for p in p0]

    def run(fn):
        ps, ss = [p.clone() for p in p0], [s.clone() for s in s0]
        steps = [torch.zeros((), dtype=torch.float64) for _ in ps]
        ns = [torch.zeros(()) for _ in ps]
        for _ in range(4):
            fn(ps, ss, ns, steps)
        return ps, ss, steps

    def step(ps, ss, ns, steps):
        if rule == "lookahead":
            torch.ops.fusedopt.lookahead_(ps, ss, [], [], steps, [], hyper=[0.5, 2.0], lr=0.0)
        else:
            torch.ops.fusedopt.iterate_avg_(ps, ss, ns, steps, [], hyper=[1.0, 1.0], lr=0.0)
        for p in ps:
            p.mul_(1.5)

    eager = run(step)
    compiled = run(torch.compile(step, fullgraph=True, backend="aot_eager"))
    for a, b in zip(eager, compiled):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert float(eager[2][0]) == 4


# ---- IterateAveraging ----------------------------------------------------------------------------
def _mlp(bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(6, 16)] + ([torch.nn.BatchNorm1d(16)] if bn else []) + [torch.nn.ReLU(),
                                                                                       torch.nn.Linear(16, 3)]
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("make_inner", [lambda ps: fusedopt.AdamW(ps, lr=1e-2, weight_decay=0.1),
                                        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)],
                         ids=["fused_adamw", "torch_sgd"])
@pytest.mark.parametrize("start,every", [(0, 1), (3, 2), (5, 4)])
def test_iterate_averaging_matches_averaged_model_every_step(make_inner, start, every, counting):
    model = _mlp()
    swa = AveragedModel(model)
    ia = fusedopt.IterateAveraging(make_inner(model.parameters()), start_step=start, every=every)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    params = list(model.parameters())
    for t in range(1, 16):
        ia.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        ia.step()
        if t >= start and (t - start) % every == 0:
            swa.update_parameters(model)
        n = int(swa.n_averaged)
        for p, q in zip(params, swa.module.parameters()):
            assert float(ia.state[p]["n_averaged"]) == n, f"step {t}"
            if n:
                assert torch.equal(ia.state[p]["param_avg"], q), f"step {t}"
    assert ia.n_averaged() == int(swa.n_averaged) > 0
    assert counting.calls["iterate_avg"] == 15


def test_iterate_averaging_float64_running_mean():
    params = make(dtype=torch.float64)
    ia = fusedopt.IterateAveraging(fusedopt.SGD(params, lr=0.1, momentum=0.5), start_step=2, every=3)
    collected = [[] for _ in params]
    for t in range(1, 20):
        set_grads([params], grads(params, t))
        ia.step()
        if t >= 2 and (t - 2) % 3 == 0:
            for c, p in zip(collected, params):
                c.append(p.detach().clone())
        for c, p in zip(collected, params):
            if c:
                torch.testing.assert_close(ia.state[p]["param_avg"], torch.stack(c).mean(0), rtol=1e-13, atol=1e-14)
    assert ia.n_averaged() == 6


def test_iterate_averaging_does_not_write_params():
    params = make(dtype=torch.bfloat16)
    ia = fusedopt.IterateAveraging(fusedopt.SGD(params, lr=0.1), start_step=0)
    set_grads([params], grads(params, 1))
    ia.optimizer.step()
    before = [p.detach().clone() for p in params]
    ia.optimizer.step = lambda *a, **k: None
    ia.step()
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)
        assert torch.equal(ia.state[p]["param_avg"], b.float())  # first collection copies


def test_update_bn_matches_torch():
    model = _mlp(bn=True)
    ref = copy.deepcopy(model)
    loader = [(torch.randn(10, 6), torch.zeros(10)) for _ in range(4)] + [torch.randn(7, 6)]
    model.eval()
    ref.eval()
    fusedopt.update_bn(loader, model)
    torch_update_bn(loader, ref)
    for (n, a), (_, b) in zip(model.named_buffers(), ref.named_buffers()):
        assert torch.equal(a, b), n
    assert not model.training and model[1].momentum == ref[1].momentum == 0.1


def test_iterate_averaging_swap_with_bn_refresh_and_restore():
    model = _mlp(bn=True)
    swa = AveragedModel(model)
    ia = fusedopt.Gadam(model.parameters(), lr=1e-2, start_step=2)
    loader = [torch.randn(16, 6) for _ in range(3)]
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    with pytest.raises(RuntimeError, match="no iterate collected"):
        with ia.swapped():
            pass
    for t in range(1, 7):
        ia.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        ia.step()
        if t >= 2:
            swa.update_parameters(model)
    fast = [p.detach().clone() for p in model.parameters()]
    bn_before = [b.clone() for b in model.buffers()]
    torch_update_bn(loader, swa)
    with ia.swapped(bn_loader=loader, model=model):
        for p, q in zip(model.parameters(), swa.module.parameters()):
            assert torch.equal(p, q)
        for a, b in zip(model.buffers(), swa.module.buffers()):
            assert torch.equal(a, b)
    for p, f in zip(model.parameters(), fast):
        assert torch.equal(p.detach(), f)
    for a, b in zip(model.buffers(), bn_before):
        assert torch.equal(a, b)


def test_iterate_averaging_state_dict_round_trip_and_found_inf():
    a_params = make()
    a = fusedopt.GadamX(a_params, lr=1e-2, start_step=3, every=2)
    for t in range(1, 7):
        set_grads([a_params], grads(a_params, t))
        a.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b_params = clone(a_params)
    b = fusedopt.GadamX(b_params, lr=1e-2, start_step=3, every=2)
    b.load_state_dict(torch.load(buf))
    for t in range(7, 15):
        set_grads([a_params, b_params], grads(a_params, t))
        a.step()
        b.step()
        for p, q in zip(a_params, b_params):
            assert torch.equal(p, q)
            for key in ("param_avg", "n_averaged", "step"):
                assert torch.equal(a.state[p][key], b.state[q][key]), key
    # a skipped step (found_inf) moves nothing, collection and counter included
    snap = {id(p): {k: v.clone() for k, v in b.state[p].items()} for p in b_params}
    pv = [p.detach().clone() for p in b_params]
    b.found_inf, b.grad_scale = torch.ones(()), torch.ones(())
    b.step()  # step 15 would collect
    for p, v in zip(b_params, pv):
        assert torch.equal(p.detach(), v)
        for k, s in snap[id(p)].items():
            assert torch.equal(b.state[p][k], s), k


def test_gadam_and_gadamx_configurations():
    ps = make(shapes=[(3,)])
    g = fusedopt.Gadam(ps, start_step=10)
    assert isinstance(g, fusedopt.IterateAveraging) and isinstance(g.optimizer, fusedopt.AdamW)
    assert g.start_step == 10 and g.every == 1
    x = fusedopt.GadamX(ps, start_step=0, every=5)
    grp = x.optimizer.param_groups[0]
    assert isinstance(x.optimizer, fusedopt.Padam)
    assert grp["decoupled_wd"] and grp["partial"] == 0.125 and grp["amsgrad"] and grp["lr"] == 0.1


@pytest.mark.parametrize("kw,match", [(dict(start_step=-1), "Invalid start_step"), (dict(every=0), "Invalid every"),
                                      (dict(start_step=1.5), "Invalid start_step"), (dict(every=2.0), "Invalid every")])
def test_iterate_averaging_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fusedopt.IterateAveraging(torch.optim.SGD(make(shapes=[(2,)]), lr=0.1), **kw)


def test_op_schemas_agree_with_the_python_rule_table():
    """_ops.RULES (built from rule_specs()) agrees with the op schemas: state lists in order; no grads list
    for no-grad rules."""
    from fusedopt._ops import NO_GRAD_RULES, RULES

    assert "lookahead" in RULES and "iterate_avg" in RULES
    for name, spec in RULES.items():
        args = [a.name for a in getattr(torch.ops.fusedopt, f"{name}_").default._schema.arguments]
        want = ["params"] + ([] if name in NO_GRAD_RULES else ["grads"])
        want += [f"{k}s" for k in spec.slots] + [f"{k}s" for k, _ in spec.scalars] + ["state_steps", "param_comps"]
        assert args[:len(want)] == want, name
