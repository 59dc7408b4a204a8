"""Behaviour switches of AdaBelief, ACProp, DiffGrad, Padam and generalized SignSGD that the generic
spec tests cover only implicitly (docs/algorithms.md §7-10, §18, §25 items 1, 2, 5, 8, 9): the step where
a branch changes, eps stored in the state, the AMSGrad max, ACProp's first step, diffGrad's copy of
the previous gradient, signSGD's transients."""
from __future__ import annotations

import math

import pytest
import pytorch_optimizer
import torch

import fusedopt

from . import reference as ref


def _run(opt_cls, grads, p0=None, dtype=torch.float64, **kw):
    """Steps a one-tensor optimizer through `grads`; returns (param after each step, optimizer, param)."""
    p = (torch.zeros_like(grads[0]) if p0 is None else p0.clone()).to(dtype).requires_grad_()
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = g.to(dtype).clone()
        opt.step()
        out.append(p.detach().clone())
    return out, opt, p


def _grads(n, size=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(size, generator=gen, dtype=torch.float64) for _ in range(n)]


# ---- AdaBelief --------------------------------------------------------------------------------
def test_adabelief_rectify_threshold_switches_at_step_6():
    """beta2=0.999: rho_5 = 4.996 < 5 <= rho_6: steps 1-5 are SGD steps lr*m/bc1, step 6 is rectified."""
    lr, b1 = 1e-2, 0.9
    grads = _grads(7)
    ps, opt, p = _run(fusedopt.AdaBelief, grads, lr=lr)
    prev = torch.zeros(5, dtype=torch.float64)
    m = torch.zeros(5, dtype=torch.float64)
    for t, (g, pt) in enumerate(zip(grads, ps), start=1):
        m = b1 * m + (1 - b1) * g
        sgd = prev - lr * m / (1 - b1 ** t)
        if t <= 5:
            torch.testing.assert_close(pt, sgd, rtol=1e-13, atol=1e-15)
        else:
            assert (pt - sgd).abs().max() > 1e-4, f"step {t} must be rectified, not SGD"
        prev = pt


def test_adabelief_no_degenerate_skips_update_but_keeps_decay():
    grads = _grads(7)
    p0 = torch.ones(5, dtype=torch.float64)
    ps, _, _ = _run(fusedopt.AdaBelief, grads, p0=p0, lr=1e-2, degenerated_to_sgd=False)
    assert all(torch.equal(pt, p0) for pt in ps[:5])  # no update at all on steps 1-5 (wd = 0)
    assert not torch.equal(ps[5], p0)
    ps, _, _ = _run(fusedopt.AdaBelief, grads, p0=p0, lr=1e-2, degenerated_to_sgd=False, weight_decay=0.5)
    torch.testing.assert_close(ps[0], p0 * (1 - 1e-2 * 0.5), rtol=1e-15, atol=0)  # decoupled decay still applied
    ps, _, _ = _run(fusedopt.AdaBelief, grads, p0=p0, lr=1e-2, degenerated_to_sgd=False, weight_decay=0.5,
                    fixed_decay=True)
    torch.testing.assert_close(ps[0], p0 * 0.5, rtol=1e-15, atol=0)


def test_adabelief_eps_is_stored_in_state():
    zeros = [torch.zeros(3, dtype=torch.float64)] * 3
    eps, b2 = 1e-3, 0.999
    _, opt, p = _run(fusedopt.AdaBelief, zeros, eps=eps, rectify=False)
    expect = eps + b2 * (eps + b2 * eps)
    torch.testing.assert_close(opt.state[p]["exp_avg_var"], torch.full((3,), expect, dtype=torch.float64))


def test_adabelief_amsgrad_max_used_only_unrectified():
    # large then small gradients: s decreases, the max keeps the large value
    big = [torch.full((4,), 10.0 * (-1) ** i, dtype=torch.float64) for i in range(3)]
    grads = big + [torch.full((4,), 0.01, dtype=torch.float64)] * 9
    kw = dict(lr=1e-2, betas=(0.5, 0.9))  # rectified from t=6 with beta2=0.9
    a, oa, pa = _run(fusedopt.AdaBelief, grads, rectify=False, amsgrad=True, **kw)
    b, _, _ = _run(fusedopt.AdaBelief, grads, rectify=False, amsgrad=False, **kw)
    st = oa.state[pa]
    assert (st["max_exp_avg_var"] > st["exp_avg_var"]).all()
    assert not torch.allclose(a[-1], b[-1])
    # rectified branch: the max is kept but never used -> same params as without amsgrad
    a, oa, pa = _run(fusedopt.AdaBelief, grads, rectify=True, amsgrad=True, **kw)
    b, _, _ = _run(fusedopt.AdaBelief, grads, rectify=True, amsgrad=False, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert (oa.state[pa]["max_exp_avg_var"] > oa.state[pa]["exp_avg_var"]).all()


# ---- ACProp -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rectify", [False, True])
def test_acprop_first_step_is_sgd_and_second_uses_previous_s(rectify):
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    g1, g2 = _grads(2, seed=3)
    p0 = torch.randn(5, dtype=torch.float64)
    ps, opt, p = _run(fusedopt.ACProp, [g1, g2], p0=p0, lr=lr, eps=eps, rectify=rectify, weight_decouple=False)
    torch.testing.assert_close(ps[0], p0 - lr * g1, rtol=1e-14, atol=1e-15)  # lr * m/bc1 = lr * g
    m1 = (1 - b1) * g1
    s1 = (1 - b2) * (g1 - m1) ** 2  # no eps yet at t=1
    m2 = b1 * m1 + (1 - b1) * g2
    if rectify:  # rho_2 < 5: degenerate SGD step with m/bc1
        expect = ps[0] - lr * m2 / (1 - b1 ** 2)
    else:  # g2 over the denominator of s_1 (+eps), bias-corrected with 1 - b2^(t-1)
        expect = ps[0] - lr * g2 / ((s1 + eps).sqrt() / math.sqrt(1 - b2) + eps)
    torch.testing.assert_close(ps[1], expect, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(opt.state[p]["exp_avg_var"], b2 * (s1 + eps) + (1 - b2) * (g2 - m2) ** 2,
                               rtol=1e-14, atol=0)


def test_acprop_denominator_does_not_see_current_grad():
    """Asynchronous update: at t=2 the step is proportional to g_2 (the denominator is s_1)."""
    g1 = _grads(1, seed=4)[0]
    ps_a, _, _ = _run(fusedopt.ACProp, [g1, g1 * 0 + 1.0], rectify=False, eps=1e-8)
    ps_b, _, _ = _run(fusedopt.ACProp, [g1, g1 * 0 + 3.0], rectify=False, eps=1e-8)
    torch.testing.assert_close(ps_b[1] - ps_b[0], 3 * (ps_a[1] - ps_a[0]), rtol=1e-12, atol=0)


# ---- DiffGrad ---------------------------------------------------------------------------------
def test_diffgrad_keeps_a_copy_of_the_previous_grad():
    """v1 kept an alias of p.grad: with grads written in place xi was 0.5 forever. v2 (ours) copies."""
    p = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = fusedopt.DiffGrad([p], lr=1e-2)
    g1, g2 = _grads(2, seed=5)
    p.grad = g1.clone()
    opt.step()
    st = opt.state[p]
    assert st["previous_grad"].data_ptr() != p.grad.data_ptr()
    p.grad.copy_(g2)  # in place, as zero_grad(set_to_none=False) + backward do
    before = p.detach().clone()
    opt.step()
    torch.testing.assert_close(st["previous_grad"], g2)
    b1, b2, lr, eps = 0.9, 0.999, 1e-2, 1e-8
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1 ** 2 + (1 - b2) * g2 ** 2
    xi = torch.sigmoid((g1 - g2).abs())
    expect = before - lr * math.sqrt(1 - b2 ** 2) / (1 - b1 ** 2) * xi * m / (v.sqrt() + eps)
    torch.testing.assert_close(p.detach(), expect, rtol=1e-13, atol=1e-15)
    assert not torch.allclose(xi, torch.full_like(xi, 0.5))


def test_diffgrad_first_step_friction_is_sigmoid_of_grad():
    g = _grads(1, seed=6)[0]
    ps, _, _ = _run(fusedopt.DiffGrad, [g], lr=1e-2)
    # step 1: m = 0.1 g, sqrt(v) = sqrt(0.001)|g|, lr*sqrt(bc2)/bc1 -> lr * sign(g) * xi (eps aside)
    expect = -1e-2 * torch.sigmoid(g.abs()) * g / (g.abs() + 1e-8 / math.sqrt(1e-3))
    torch.testing.assert_close(ps[0], expect, rtol=1e-12, atol=1e-15)


# ---- Padam ------------------------------------------------------------------------------------
@pytest.mark.parametrize("partial", [0.125, 0.25, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_padam_eps_before_power_and_sqrt_bc2(partial, dtype):
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-3
    g = torch.tensor([1e-6, 1e-3, 0.5, -2.0, 30.0, 0.0], dtype=torch.float64)
    ps, _, _ = _run(fusedopt.Padam, [g], dtype=dtype, lr=lr, eps=eps, partial=partial)
    m, v = (1 - b1) * g, (1 - b2) * g * g
    expect = -lr * math.sqrt(1 - b2) / (1 - b1) * m / (v.sqrt() + eps) ** (2 * partial)
    tol = dict(rtol=1e-14, atol=1e-16) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ps[0].double(), expect, **tol)


def test_padam_half_is_amsgrad_with_e2_eps():
    grads = [g * (1 + i) for i, g in enumerate(_grads(6, seed=7))]
    ps, _, _ = _run(fusedopt.Padam, grads, lr=1e-2, partial=0.5, eps=1e-3)
    # E2: eps on the raw root; == torch Adam(amsgrad) with eps' = eps * sqrt(bc2) only per step, so
    # compare with the equations directly
    b1, b2, lr, eps = 0.9, 0.999, 1e-2, 1e-3
    p = torch.zeros(5, dtype=torch.float64)
    m = torch.zeros(5, dtype=torch.float64)
    v = torch.zeros(5, dtype=torch.float64)
    vmax = torch.zeros(5, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = torch.maximum(vmax, v)
        p = p - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (vmax.sqrt() + eps)
        torch.testing.assert_close(ps[t - 1], p, rtol=1e-13, atol=1e-15)


def test_padam_bad_partial_refused():
    with pytest.raises(ValueError, match="partial"):
        fusedopt.Padam([torch.zeros(2, requires_grad=True)], partial=0.0)
    with pytest.raises(ValueError, match="partial"):
        fusedopt.Padam([torch.zeros(2, requires_grad=True)], partial=1.5)


# ---- generalized SignSGD ----------------------------------------------------------------------
def test_signsgd_transients_without_bias_correction():
    """Constant grad, beta2 = 0.999: the step is lr/sqrt(1-b2) = 31.6 lr at t=1, then 28.0, 24.8 lr."""
    lr = 1e-3
    grads = [torch.full((3,), 2.0, dtype=torch.float64)] * 3
    ps, _, _ = _run(fusedopt.SignSGD, grads, lr=lr, eps=0.0)
    steps = [-(ps[0][0].item())] + [-(ps[i][0] - ps[i - 1][0]).item() for i in (1, 2)]
    assert steps[0] == pytest.approx(lr / math.sqrt(1e-3), rel=1e-12)
    assert [round(s / lr, 1) for s in steps] == [31.6, 28.0, 24.8]


def test_signsgd_bias_correction_first_step_is_lr_over_one_minus_beta1():
    ps, _, _ = _run(fusedopt.SignSGD, [torch.full((3,), -0.5, dtype=torch.float64)], lr=1e-3, eps=0.0,
                    use_bias_correction=True)
    torch.testing.assert_close(ps[0], torch.full((3,), 1e-3 / 0.1, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("b1", [0.0, 0.9])
def test_signsgd_settings_give_signum_and_signsgd(b1):
    """betas=(b1, 0), eps=0: exactly lr*sign(m) (signSGD for b1 = 0), in fp32 too."""
    grads = [g.float() for g in _grads(5, size=1000, seed=8)]
    ps, _, _ = _run(fusedopt.SignSGD, grads, dtype=torch.float32, lr=1e-3, betas=(b1, 0.0), eps=0.0)
    m = torch.zeros(1000)
    p = torch.zeros(1000)
    for g, pt in zip(grads, ps):
        m = b1 * m + (1 - b1) * g
        p = p - 1e-3 * torch.sign(m)
        torch.testing.assert_close(pt, p, rtol=0, atol=0)


class _SignumOracle(pytorch_optimizer.SignSGD):
    """pytorch_optimizer's SignSGD (p -= lr*sign(m), m a lerp momentum; momentum 0: sign(g)), with the
    generalized rule's state at beta2 = 0 exposed: exp_avg = its momentum buffer (the effective grad,
    modified in place by maximize / L2, when momentum is 0), exp_avg_sq = exp_avg**2."""

    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    st = self.state[p]
                    m = st["momentum_buffer"] if group["momentum"] > 0 else p.grad
                    st["exp_avg"] = m.clone()
                    st["exp_avg_sq"] = m * m
        return loss


@pytest.mark.parametrize("opts", [dict(betas=(0.9, 0.0)), dict(betas=(0.0, 0.0)),
                                  dict(betas=(0.8, 0.0), weight_decay=0.1, maximize=True),
                                  dict(betas=(0.0, 0.0), weight_decay=0.1)])
def test_signsgd_signum_settings_match_pytorch_optimizer(opts):
    """Oracle: pytorch_optimizer.SignSGD (weight_decouple=False = L2) for the signum / signSGD settings
    (eps = 0, beta2 = 0, no bias correction), fp32, every step, params and both states. A sign flip of an
    m that rounds differently (lerp vs b1*m + (1-b1)*g) would move one element by 2 lr: allowed for at
    most 1e-4 of the elements."""
    from .helpers import assert_mostly_close, clone_params, make_params, set_grads

    ps = make_params()
    qs = clone_params(ps)
    lr = 1e-2
    ours = fusedopt.SignSGD(ps, lr=lr, eps=0.0, **opts)
    theirs = _SignumOracle(qs, lr=lr, momentum=opts["betas"][0], weight_decay=opts.get("weight_decay", 0.0),
                           weight_decouple=False, maximize=opts.get("maximize", False), foreach=False)
    for t in range(1, 13):
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
        for p, q in zip(ps, qs):
            assert_mostly_close(p.detach(), q.detach(), msg=f"step {t}", rtol=4e-6, atol=2e-7)
            # beta2 = 0: exp_avg_sq is not kept (it would be exp_avg**2)
            assert "exp_avg_sq" not in ours.state[p]
            assert_mostly_close(ours.state[p]["exp_avg"], theirs.state[q]["exp_avg"], msg=f"step {t} exp_avg",
                                rtol=4e-6, atol=1e-7)


def test_signsgd_switch_from_beta2_zero_starts_v_at_m_squared():
    """Steps with beta2 = 0 keep no v; switching the group to beta2 > 0 starts v at m**2 (the reference's
    value), so the run equals the float64 reference that kept v all along."""
    grads = _grads(8, size=300, seed=5)
    p = torch.zeros(300, dtype=torch.float64, requires_grad=True)
    opt = fusedopt.SignSGD([p], lr=1e-2, betas=(0.9, 0.0), eps=1e-3)
    q = torch.zeros(300, dtype=torch.float64)
    st = ref.init_state(["exp_avg", "exp_avg_sq"], q)
    for t, g in enumerate(grads, 1):
        if t == 4:
            opt.param_groups[0]["betas"] = (0.9, 0.5)
        b2 = 0.0 if t < 4 else 0.5
        p.grad = g.clone()
        opt.step()
        ref.signsgd(q, g, st, t, lr=1e-2, betas=(0.9, b2), eps=1e-3, weight_decay=0.0)
        assert ("exp_avg_sq" in opt.state[p]) == (t >= 4)
        torch.testing.assert_close(p.detach(), q, rtol=1e-12, atol=1e-14)
        if t >= 4:
            torch.testing.assert_close(opt.state[p]["exp_avg_sq"], st["exp_avg_sq"], rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("name,cls,kw,nstates", [
    ("adabelief", fusedopt.AdaBelief, dict(amsgrad=True, rectify=False, weight_decay=0.1), 3),
    ("acprop", fusedopt.ACProp, dict(momentum_update=True, weight_decay=0.1, fixed_decay=True), 2),
    ("diffgrad", fusedopt.DiffGrad, dict(weight_decay=0.1), 3),
    ("padam", fusedopt.Padam, dict(partial=0.125, decoupled_wd=True, weight_decay=0.1), 3),
    ("signsgd", fusedopt.SignSGD, dict(use_bias_correction=True, weight_decay=0.1), 2),
])
def test_functional_matches_optimizer(name, cls, kw, nstates):
    from .helpers import clone_params, make_params, set_grads

    ps = make_params(shapes=[(7,), (4097,)])
    qs = clone_params(ps)
    opt = cls(ps, lr=1e-2, **kw)
    states = [[torch.zeros_like(q) for q in qs] for _ in range(nstates)]
    steps = [torch.zeros(()) for _ in qs]
    fkw = dict(kw)
    if name in ("adabelief", "acprop") and nstates == 2:
        states.append([])
    for t in range(1, 8):
        set_grads([ps, qs], t)
        opt.step()
        with torch.no_grad():
            getattr(fusedopt.functional, name)(qs, [q.grad for q in qs], *states, steps, lr=1e-2, **fkw)
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
    assert all(s.item() == 7 for s in steps)


def test_padam_exponent_kind_selects_kernel_variant():
    """padam.h variant bits 1-2: sqrt/identity for 2*partial in (0.5, 1), two square roots for 0.25, pow
    otherwise (the values are compared with the equations in test_padam_eps_before_power_and_sqrt_bc2)."""
    from fusedopt.optim.padam import _exponent_kind

    assert [_exponent_kind(p) for p in (0.25, 0.5, 0.125, 0.3, 0.0625, 1.0)] == [0, 0, 2, 1, 1, 1]


def test_functional_signsgd_without_exp_avg_sq_at_beta2_zero():
    """functional.signsgd with beta2 = 0 and an empty exp_avg_sqs list runs the variant that keeps no v,
    and equals the optimizer (which does the same) bit for bit."""
    from .helpers import clone_params, make_params, set_grads

    ps = make_params(shapes=[(7,), (4097,)])
    qs = clone_params(ps)
    opt = fusedopt.SignSGD(ps, lr=1e-2, betas=(0.9, 0.0), eps=1e-3)
    ms = [torch.zeros_like(q) for q in qs]
    steps = [torch.zeros(()) for _ in qs]
    for t in range(1, 6):
        set_grads([ps, qs], t)
        opt.step()
        with torch.no_grad():
            fusedopt.functional.signsgd(qs, [q.grad for q in qs], ms, [], steps, lr=1e-2, beta1=0.9, beta2=0.0,
                                        eps=1e-3)
    for p, q, m in zip(ps, qs, ms):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], m)
        assert "exp_avg_sq" not in opt.state[p]
    with pytest.raises(RuntimeError, match="exp_avg_sq"):  # beta2 > 0 needs the list
        fusedopt.functional.signsgd(qs, [q.grad for q in qs], ms, [], steps, lr=1e-2, beta2=0.5)
