"""KOALA-V and KOALA-M (fusedopt.VanillaKOALA / MomentumKOALA): the generic suites (specs.py) call
step() without a loss, so KOALA has its own tests here:
  * against float64 references written from the equations (tests/reference.py, docs/algorithms.md §16);
  * against an independent oracle: a pure-PyTorch transcription of the authors' classes
    (Araachie/koala : koala.py, util.ExpAverage; call protocol of training_funcs.py), below;
params, every state tensor and the global P, R, qw after each of 12 steps, on 0-D..4-D, empty,
single-element, zero-grad (skipped) and grad-less params; the step API and its errors, found_inf /
GradScaler, grad_scale, tensor lr, state_dict round trip, no host sync in step(), and a training
run on scikit-learn's digits."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.overrides import TorchFunctionMode

import fusedopt

from . import reference as ref
from .helpers import assert_close, clone_params
from .koala_authors import AuthorsMomentumKOALA, AuthorsVanillaKOALA, ExpAverage

STEPS = 12
SHAPES = [(0,), (), (1,), (7,), (33, 5), (3, 5, 7), (2, 3, 4, 5), (70000,)]
ZERO_GRAD = 3          # this param's grad is zero on every third step: skipped
NO_GRAD = 4            # this param has no grad on every fourth step


def _params(shapes=SHAPES, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.5).to(dtype).requires_grad_() for s in shapes]


def _grads(t, shapes=SHAPES, seed=1):
    """Grads of step t (float32 values); None where a param has no grad this step."""
    g = torch.Generator().manual_seed(seed * 1000 + t)
    out = [torch.randn(s, generator=g) * 0.3 for s in shapes]
    if t % 3 == 0 and len(out) > ZERO_GRAD:
        out[ZERO_GRAD] = torch.zeros(shapes[ZERO_GRAD])
    if t % 4 == 0 and len(out) > NO_GRAD:
        out[NO_GRAD] = None
    return out


def _set(ps, grads):
    for p, g in zip(ps, grads):
        p.grad = None if g is None else g.to(p.dtype)


def _losses(t):
    """(L, S) of step t: a decreasing mean loss and a second moment above L^2."""
    L = 2.0 * 0.85 ** t + 0.05
    return L, L * L * 1.3 + 0.01


# ---- helpers -------------------------------------------------------------------------------------------
def _glob(opt):
    return opt.state["koala"]


def _check_state(opt, ps, ref_ps, ref_st, glob, t, tol, momentum, steps):
    for i, (p, rp) in enumerate(zip(ps, ref_ps)):
        assert_close(p.detach().double(), rp, msg=f"step {t} param {i} {tuple(p.shape)}", **tol)
        if momentum:
            for k in ("velocity", "param_ema"):
                assert_close(opt.state[p][k].double(), ref_st[i][k], msg=f"step {t} {k} {i}", **tol)
        if steps is not None:
            assert opt.state[p]["step"].item() == steps[i], f"step {t} param {i}"
    g = _glob(opt)
    assert_close(g["P"], torch.as_tensor(glob["P"], dtype=torch.float64), msg=f"step {t} P", rtol=tol["rtol"], atol=0)
    assert_close(g["R"], torch.tensor(float(glob["R"]), dtype=torch.float64), msg=f"step {t} R", rtol=tol["rtol"], atol=0)
    if momentum:
        assert_close(g["qw"], torch.tensor(float(glob["qw"]), dtype=torch.float64), msg=f"step {t} qw",
                     rtol=tol["rtol"], atol=0)


V_OPTS = [{}, {"sigma": 0.1, "weight_decay": 5e-4}, {"r": 0.5, "q": 0.3, "weight_decay": 0.1, "lr": 0.5},
          {"alpha_r": 0.5, "sigma": 2.0, "lr": 0.2}]
M_OPTS = [{}, {"weight_decay": 5e-4}, {"sc": 0.02, "a": 0.5, "qw": 0.1, "qv": 0.05, "weight_decay": 0.1, "lr": 0.5},
          {"r": 2.0, "sw": 1.0, "sv": 0.3, "lr": 0.3}, {"alpha_r": 0.0, "a": 1.0}]
CASES = [("V", o) for o in V_OPTS] + [("M", o) for o in M_OPTS]
IDS = [f"{v}-" + ("-".join(f"{k}={x}" for k, x in o.items()) or "defaults") for v, o in CASES]
CLS = {"V": fusedopt.VanillaKOALA, "M": fusedopt.MomentumKOALA}
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-6, atol=1e-7)}  # fp32 gains (see the class docstring)


def _defaults(variant):
    import inspect
    sig = inspect.signature(CLS[variant].__init__)
    return {k: v.default for k, v in sig.parameters.items() if k not in ("self", "params") and
            v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}


# ---- against the float64 reference ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant,opts", CASES, ids=IDS)
def test_matches_float64_reference(variant, opts, dtype):
    momentum = variant == "M"
    ps = _params(dtype=dtype)
    opt = CLS[variant](ps, **opts)
    h = dict(_defaults(variant), **opts)
    ref_ps = [p.detach().double().clone() for p in ps]
    ref_st = [{"velocity": torch.zeros_like(p), "param_ema": torch.zeros_like(p)} for p in ref_ps]
    if momentum:
        glob = {"P": torch.tensor([[h["sw"], h["sc"]], [h["sc"], h["sv"]]], dtype=torch.float64),
                "R": 1.0 if h["r"] is None else h["r"], "qw": h["qw"]}
    else:
        glob = {"P": h["sigma"], "R": 1.0 if h["r"] is None else h["r"]}
    hyper = [(h["lr"], h["weight_decay"])] * len(ps)
    steps = [0] * len(ps)
    for t in range(1, STEPS + 1):
        grads = _grads(t)
        L, S = _losses(t)
        opt.predict()
        if momentum:
            ref.koala_m_predict(ref_ps, ref_st, glob, a=h["a"], qv=h["qv"])
        else:
            ref.koala_v_predict(glob, q=h["q"])
        _set(ps, grads)
        opt.step(loss=L, loss_sq_mean=S)
        g64 = [None if g is None else g.to(dtype).double() for g in grads]
        if momentum:
            ref.koala_m_update(ref_ps, g64, ref_st, glob, L, S, hyper=hyper, r=h["r"], alpha_r=h["alpha_r"])
        else:
            ref.koala_v_update(ref_ps, g64, glob, L, S, hyper=hyper, r=h["r"], alpha_r=h["alpha_r"])
        steps = [s + (g is not None) for s, g in zip(steps, grads)]
        _check_state(opt, ps, ref_ps, ref_st, glob, t, TOL[dtype], momentum, steps)
    # the zero-grad param was skipped whole on the steps it had a zero grad, and P shrank / grew as it should
    assert 0 < float(_glob(opt)["P"].reshape(-1)[0]) < 1e3


# ---- against the authors' code (the transcription above) ----------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant,opts", CASES, ids=IDS)
def test_matches_authors_code(variant, opts, dtype):
    momentum = variant == "M"
    ps = _params(dtype=dtype)
    qs = clone_params(ps)
    ours = CLS[variant](ps, **opts)
    theirs = (AuthorsMomentumKOALA if momentum else AuthorsVanillaKOALA)(qs, **opts)
    tol = TOL[torch.float32] if momentum or dtype == torch.float32 else TOL[torch.float64]
    for t in range(1, STEPS + 1):
        grads = _grads(t)
        L, S = _losses(t)
        ours.predict()
        theirs.predict()
        # the authors' P update P - P^2 h cancels most of P (float32 for KOALA-V, h rounded to float32
        # for KOALA-M): their P is good to ~1e-7 of the predicted P, not of the result (ours: float64)
        p_atol = 1e-6 * float(_glob(ours)["P"].abs().max())
        _set(ps, grads)
        _set(qs, grads)
        ours.step(loss=torch.tensor(L, dtype=dtype), loss_sq_mean=torch.tensor(S, dtype=dtype))
        theirs.update(torch.tensor(L, dtype=dtype), torch.tensor(S, dtype=dtype))
        for i, (p, q) in enumerate(zip(ps, qs)):
            assert_close(p.detach(), q.detach(), msg=f"step {t} param {i}", **tol)
            if momentum:
                assert_close(ours.state[p]["velocity"], theirs.state[q]["vt"], msg=f"step {t} velocity {i}", **tol)
                assert_close(ours.state[p]["param_ema"], theirs.state[q]["gt"], msg=f"step {t} param_ema {i}", **tol)
        g = _glob(ours)
        if momentum:
            assert_close(g["P"], theirs.P, msg=f"step {t} P", rtol=tol["rtol"], atol=p_atol)
            assert_close(g["qw"], torch.as_tensor(theirs.qw.avg).double(), msg=f"step {t} qw", rtol=tol["rtol"], atol=0)
            R = theirs.R.avg if isinstance(theirs.R, ExpAverage) else theirs.R
        else:
            assert_close(g["P"], torch.as_tensor(theirs.sigma).double(), msg=f"step {t} P", rtol=tol["rtol"],
                         atol=p_atol)
            R = theirs.r.avg if isinstance(theirs.r, ExpAverage) else theirs.r
        assert_close(g["R"], torch.as_tensor(R).double(), msg=f"step {t} R", rtol=tol["rtol"], atol=0)


def test_skipped_tensor_is_left_alone_and_counts_no_grad_steps():
    ps = _params(shapes=[(5,), (3, 4)])
    opt = fusedopt.MomentumKOALA(ps, weight_decay=0.1)
    for t in range(1, 4):
        opt.predict()
        ps[0].grad = torch.randn(5)
        ps[1].grad = torch.zeros(3, 4)  # ||g|| < 1e-9: skipped (even though g + wd p is not zero)
        before = [ps[1].detach().clone(), opt.state[ps[1]]["velocity"].clone(), opt.state[ps[1]]["param_ema"].clone()]
        opt.step(loss=1.0, loss_sq_mean=1.5)
        assert torch.equal(ps[1].detach(), before[0])
        assert torch.equal(opt.state[ps[1]]["velocity"], before[1])
        assert torch.equal(opt.state[ps[1]]["param_ema"], before[2])
        assert opt.state[ps[1]]["step"].item() == t  # the step counts update calls with a grad
    assert torch.count_nonzero(opt.state[ps[0]]["param_ema"]) == 5


def test_two_groups_with_their_own_lr_and_weight_decay():
    ps = _params(shapes=[(7,), (4, 3), (2, 2, 2)])
    opt = fusedopt.MomentumKOALA([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.3, "weight_decay": 0.2}],
                                 weight_decay=1e-3)
    ref_ps = [p.detach().double().clone() for p in ps]
    ref_st = [{"velocity": torch.zeros_like(p), "param_ema": torch.zeros_like(p)} for p in ref_ps]
    glob = {"P": torch.tensor([[0.1, 0.0], [0.0, 0.1]], dtype=torch.float64), "R": 1.0, "qw": 1e-2}
    hyper = [(1.0, 1e-3), (1.0, 1e-3), (0.3, 0.2)]
    for t in range(1, STEPS + 1):
        g = torch.Generator().manual_seed(t)
        grads = [torch.randn(p.shape, generator=g) for p in ps]
        opt.predict()
        ref.koala_m_predict(ref_ps, ref_st, glob, a=0.9, qv=1e-2)
        _set(ps, grads)
        L, S = _losses(t)
        opt.step(loss=L, loss_sq_mean=S)
        ref.koala_m_update(ref_ps, [x.double() for x in grads], ref_st, glob, L, S, hyper=hyper)
        _check_state(opt, ps, ref_ps, ref_st, glob, t, TOL[torch.float32], True, [t] * 3)


# ---- step API ------------------------------------------------------------------------------------------
def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


@pytest.mark.parametrize("variant", ["V", "M"])
def test_closure_equals_explicit_protocol(variant):
    m1 = _mlp()
    m2 = copy.deepcopy(m1)
    o1 = CLS[variant](m1.parameters(), weight_decay=5e-4)
    o2 = CLS[variant](m2.parameters(), weight_decay=5e-4)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    for _ in range(5):
        def closure():
            o1.zero_grad()
            losses = ce(m1(x), y)
            losses.mean().backward()
            return losses

        ret = o1.step(closure)
        o2.predict()
        losses = ce(m2(x), y)
        o2.zero_grad()
        losses.mean().backward()
        o2.step(loss=losses.mean(), loss_sq_mean=losses.pow(2).mean())
        assert_close(ret, losses.mean().detach(), rtol=1e-6, atol=1e-7)  # the closure's mean loss
        for p, q in zip(m1.parameters(), m2.parameters()):
            assert_close(p, q, rtol=1e-6, atol=1e-7)
        assert_close(_glob(o1)["P"], _glob(o2)["P"], rtol=1e-6, atol=0)


def test_step_api_errors():
    ps = _params(shapes=[(3,), (2, 2)])
    opt = fusedopt.MomentumKOALA(ps)
    _set(ps, [torch.ones(3), torch.ones(2, 2)])
    with pytest.raises(TypeError, match="needs the minibatch loss"):
        opt.step()
    opt.predict()
    with pytest.raises(TypeError, match="loss_sq_mean"):
        opt.step(loss=1.0)
    with pytest.raises(TypeError, match="either a closure or"):
        opt.step(lambda: torch.ones(2), loss=1.0)
    with pytest.raises(ValueError, match="one element"):
        opt.step(loss=torch.ones(4), loss_sq_mean=1.0)
    with pytest.raises(TypeError, match="per-sample losses"):
        opt.step(lambda: torch.tensor(1.0))
    with pytest.raises(TypeError, match="number or a one-element tensor"):
        opt.step(loss="x", loss_sq_mean=1.0)
    fresh = fusedopt.VanillaKOALA(clone_params(ps))
    with pytest.raises(RuntimeError, match="call predict"):
        fresh.step(loss=1.0, loss_sq_mean=1.0)
    # a fixed r needs no second moment
    fixed = fusedopt.VanillaKOALA(clone_params(ps), r=0.5)
    fixed.predict()
    for q in fixed.param_groups[0]["params"]:
        q.grad = torch.ones_like(q)
    fixed.step(loss=1.0)
    with pytest.raises(RuntimeError, match="call predict"):  # one predict per step
        fixed.step(loss=1.0)


@pytest.mark.parametrize("bad,match", [
    ({"lr": -1.0}, "learning rate"), ({"weight_decay": -0.1}, "weight_decay"), ({"alpha_r": 1.5}, "alpha_r"),
    ({"r": -1.0}, "Invalid r"), ({"state_bits": 8}, "state_bits=8"), ({"fused": False}, "always fused"),
])
@pytest.mark.parametrize("variant", ["V", "M"])
def test_bad_constructor_arguments(variant, bad, match):
    with pytest.raises(ValueError, match=match):
        CLS[variant](_params(shapes=[(3,)]), **bad)


@pytest.mark.parametrize("bad,match", [({"a": 1.5}, "Invalid a"), ({"sw": -1.0}, "Invalid sw"),
                                       ({"qv": -1.0}, "Invalid qv"), ({"sc": float("nan")}, "Invalid sc")])
def test_bad_momentum_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        fusedopt.MomentumKOALA(_params(shapes=[(3,)]), **bad)


@pytest.mark.parametrize("variant", ["V", "M"])
def test_bad_inputs_name_the_param(variant):
    p = torch.zeros(5, requires_grad=True)
    opt = CLS[variant]([torch.zeros(2, requires_grad=True), p])
    for q in opt.param_groups[0]["params"]:
        q.grad = torch.ones_like(q)
    p.grad = torch.ones(5).to_sparse()
    opt.predict()
    with pytest.raises(ValueError, match=r"params'\]\[1\] has a sparse gradient"):
        opt.step(loss=1.0, loss_sq_mean=1.0)
    c = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match="complex"):
        o = CLS[variant]([c])
        o.predict()
        c.grad = torch.ones_like(c)
        o.step(loss=1.0, loss_sq_mean=1.0)


# ---- AMP, tensor lr, state_dict -------------------------------------------------------------------------
def _snap(opt, ps):
    out = [p.detach().clone() for p in ps]
    for p in ps:
        out += [v.clone() for v in opt.state[p].values()]
    out += [v.clone() for v in _glob(opt).values()]
    return out


@pytest.mark.parametrize("variant", ["V", "M"])
def test_found_inf_skips_the_whole_update_bitwise(variant):
    ps = _params()
    opt = CLS[variant](ps, weight_decay=0.1)
    for t in (1, 2):
        opt.predict()
        _set(ps, _grads(t))
        opt.step(loss=1.0, loss_sq_mean=2.0)
    opt.predict()
    _set(ps, _grads(5))
    grads = [None if p.grad is None else p.grad.clone() for p in ps]
    before = _snap(opt, ps)
    opt.found_inf = torch.ones(())
    opt.grad_scale = torch.full((), 4.0)
    opt.step(loss=1.0, loss_sq_mean=2.0)
    after = _snap(opt, ps)
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # params, states, steps, P, R, qw
    assert all(g is None or torch.equal(g, p.grad) for g, p in zip(grads, ps))  # grads not unscaled
    opt.found_inf = torch.zeros(())
    opt.grad_scale = None
    opt.predict()
    opt.step(loss=1.0, loss_sq_mean=2.0)
    assert not all(torch.equal(a, b) for a, b in zip(before, _snap(opt, ps)))


@pytest.mark.parametrize("variant", ["V", "M"])
def test_grad_scale_unscales_and_writes_back(variant):
    ps = _params()
    qs = clone_params(ps)
    a, b = CLS[variant](ps), CLS[variant](qs)
    for t in range(1, 5):
        a.predict()
        b.predict()
        _set(ps, _grads(t))
        _set(qs, _grads(t))
        for p in ps:
            if p.grad is not None:
                p.grad.mul_(1024.0)
        a.grad_scale, a.found_inf = torch.full((), 1024.0), torch.zeros(())
        a.step(loss=1.0, loss_sq_mean=1.5)
        b.step(loss=1.0, loss_sq_mean=1.5)
        for p, q in zip(ps, qs):
            assert p.grad is None or torch.equal(p.grad, q.grad)
            assert torch.equal(p, q)


@pytest.mark.parametrize("variant", ["V", "M"])
def test_grad_scaler_end_to_end_cpu(variant):
    m1 = _mlp()
    m2 = copy.deepcopy(m1)
    o1, o2 = CLS[variant](m1.parameters()), CLS[variant](m2.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    skipped = 0
    for it in range(6):
        o1.predict()
        losses = ce(m1(x), y)
        o1.zero_grad()
        lm = losses.mean()
        scaler.scale(lm * float("inf") if it == 3 else lm).backward()
        scaler.step(o1, loss=lm, loss_sq_mean=losses.pow(2).mean())
        scaler.update()
        if it == 3:
            skipped += 1
            o2.predict()  # the predict of the skipped step stands
            continue
        o2.predict()
        losses = ce(m2(x), y)
        o2.zero_grad()
        losses.mean().backward()
        o2.step(loss=losses.mean(), loss_sq_mean=losses.pow(2).mean())
        for p, q in zip(m1.parameters(), m2.parameters()):
            assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert skipped == 1
    for p in m1.parameters():
        assert o1.state[p]["step"].item() == 5


@pytest.mark.parametrize("variant", ["V", "M"])
def test_tensor_lr_matches_float_lr(variant):
    ps = _params()
    qs = clone_params(ps)
    a = CLS[variant](ps, lr=torch.tensor(0.5))
    b = CLS[variant](qs, lr=0.5)
    for t in range(1, 5):
        for o, xs in ((a, ps), (b, qs)):
            o.predict()
            _set(xs, _grads(t))
            o.step(loss=1.0, loss_sq_mean=1.5)
        for p, q in zip(ps, qs):
            assert torch.equal(p, q)


@pytest.mark.parametrize("variant", ["V", "M"])
def test_state_dict_round_trip(variant):
    ps = _params()
    opt = CLS[variant](ps, weight_decay=0.01)

    def run(o, xs, ts):
        for t in ts:
            o.predict()
            _set(xs, _grads(t))
            o.step(loss=_losses(t)[0], loss_sq_mean=_losses(t)[1])

    run(opt, ps, range(1, 6))
    sd = copy.deepcopy(opt.state_dict())
    # the global scalars ride in param_groups[0] (torch.distributed.checkpoint keeps per-param "state" entries)
    assert "koala" not in sd["state"] and set(sd["param_groups"][0]["koala"]) == set(_glob(opt))
    qs = clone_params(ps)
    other = CLS[variant](qs, weight_decay=0.01, **({"sw": 3.0} if variant == "M" else {"sigma": 3.0}))
    other.load_state_dict(sd)
    for k, v in _glob(other).items():  # copied, not aliased
        assert v.dtype == torch.float64 and v.data_ptr() != sd["param_groups"][0]["koala"][k].data_ptr()
        assert torch.equal(v, _glob(opt)[k])
    run(opt, ps, range(6, 11))
    run(other, qs, range(6, 11))
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        for k in opt.state[p]:
            assert torch.equal(opt.state[p][k], other.state[q][k]), k
    for k in _glob(opt):
        assert torch.equal(_glob(opt)[k], _glob(other)[k]), k


def test_state_dict_of_the_other_variant_is_refused():
    sd = fusedopt.VanillaKOALA(_params(shapes=[(3,)])).state_dict()
    with pytest.raises(ValueError, match="lacks 'qw'|shape"):
        fusedopt.MomentumKOALA(_params(shapes=[(3,)])).load_state_dict(sd)


@pytest.mark.parametrize("variant", ["V", "M"])
@pytest.mark.parametrize("pdtype,sdtype", [(torch.bfloat16, None), (torch.float16, None),
                                           (torch.float32, torch.bfloat16)])
def test_low_precision_params_and_states_track_fp32(variant, pdtype, sdtype):
    ps = _params(shapes=SHAPES[1:], dtype=pdtype)
    qs = [p.detach().float().requires_grad_() for p in ps]
    a = CLS[variant](ps, state_dtype=sdtype, weight_decay=0.01)
    b = CLS[variant](qs, weight_decay=0.01)
    for t in range(1, 6):
        for o, xs in ((a, ps), (b, qs)):
            o.predict()
            _set(xs, _grads(t, shapes=SHAPES[1:]))
            o.step(loss=1.0, loss_sq_mean=1.5)
    for p, q in zip(ps, qs):
        assert_close(p.float(), q.detach(), rtol=3e-2, atol=3e-2)
    if variant == "M":
        for p in ps:
            assert a.state[p]["velocity"].dtype == (sdtype or torch.float32)


@pytest.mark.parametrize("rounding", ["stochastic", "kahan"])
def test_bf16_param_rounding_modes_run_all_passes(rounding):
    """The predict move, the read-only norms pass and the update all go through the bf16 param policy."""
    ps = _params(shapes=[(7,), (33, 5), (4097,)], dtype=torch.bfloat16)
    qs = [p.detach().float().requires_grad_() for p in ps]
    a = fusedopt.MomentumKOALA(ps, param_rounding=rounding, lr=0.5)
    b = fusedopt.MomentumKOALA(qs, lr=0.5)
    for t in range(1, 6):
        for o, xs in ((a, ps), (b, qs)):
            o.predict()
            _set(xs, [g * 1e-2 for g in _grads(t, shapes=[(7,), (33, 5), (4097,)])])
            o.step(loss=1.0, loss_sq_mean=1.5)
    for p, q in zip(ps, qs):
        if rounding == "kahan":
            assert a.state[p]["param_comp"].dtype == torch.bfloat16
            hi = p.float() + a.state[p]["param_comp"].float()
        else:
            hi = p.float()
        assert_close(hi, q.detach(), rtol=2e-2, atol=2e-2)


# ---- no host sync inside step() / predict() -----------------------------------------------------------
class _NoHostSync(TorchFunctionMode):
    """Fails on every Tensor -> Python conversion (each would be a device sync on CUDA)."""
    BANNED = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
              torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.BANNED:
            raise AssertionError(f"host sync: {func}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["V", "M"])
def test_no_host_sync_in_step_or_predict(variant):
    ps = _params()
    opt = CLS[variant](ps, lr=torch.tensor(0.7), weight_decay=0.01)
    for t in range(1, 4):
        _set(ps, _grads(t))
        L = torch.tensor(_losses(t)[0])
        S = torch.tensor(_losses(t)[1])
        opt.found_inf, opt.grad_scale = torch.zeros(()), torch.ones(())
        with _NoHostSync():
            opt.predict()
            opt.step(loss=L, loss_sq_mean=S)
    assert opt.state[ps[0]]["step"].item() == 3


# ---- training on scikit-learn's digits ------------------------------------------------------------------
@pytest.mark.parametrize("variant,opts", [("V", {"sigma": 0.1, "weight_decay": 5e-4}),
                                          ("M", {"weight_decay": 5e-4})])
def test_trains_on_digits(variant, opts):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = CLS[variant](model.parameters(), **opts)
    ce = torch.nn.CrossEntropyLoss(reduction="none")

    def full_loss():
        with torch.no_grad():
            out = model(X)
            return ce(out, y).mean().item(), (out.argmax(1) == y).float().mean().item()

    loss0, _ = full_loss()
    g = torch.Generator().manual_seed(0)
    for epoch in range(4):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 64):
            idx = perm[i:i + 64]

            def closure():
                opt.zero_grad()
                losses = ce(model(X[idx]), y[idx])
                losses.mean().backward()
                return losses

            opt.step(closure)
    loss, acc = full_loss()
    assert loss < 0.25 * loss0 and acc > 0.9, (loss0, loss, acc)
