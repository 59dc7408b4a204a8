"""Behaviour switches of PNM, AdaPNM, Adan and Lion that the generic spec tests do not pin
(docs/algorithms.md §11, §12, §25 items 6 and 7): PNM's step parity, AdaPNM's bias correction
and eps placement, Adan's first step and its refused clipping, Lion's sign update."""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt

from .helpers import assert_close, clone_params, make_params, set_grads


def _param(n=257, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64).requires_grad_()


def _grad(p, t):
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(p.shape, generator=g, dtype=p.dtype)


# ---- PNM -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,keys", [(fusedopt.PNM, ("pos_momentum", "neg_momentum")),
                                      (fusedopt.AdaPNM, ("exp_avg", "neg_exp_avg"))])
def test_pnm_parity_selects_the_buffer(cls, keys):
    """Odd t updates the first buffer only, even t the second only (the other is written back
    bitwise unchanged); the step combines (1+b0)*updated - b0*other."""
    p = _param()
    b1, b0 = 0.8, 0.6
    betas = (b1, b0) if cls is fusedopt.PNM else (b1, 0.999, b0)
    opt = cls([p], lr=1e-2, betas=betas)
    a = torch.zeros_like(p)
    b = torch.zeros_like(p)
    for t in range(1, 9):
        g = _grad(p, t)
        p.grad = g.clone()
        before = {k: opt.state[p][k].clone() for k in keys} if t > 1 else None
        opt.step()
        st = opt.state[p]
        upd, keep = (keys[0], keys[1]) if t % 2 == 1 else (keys[1], keys[0])
        if before is not None:
            assert torch.equal(st[keep], before[keep]), f"t={t}: {keep} must not change"
            assert not torch.equal(st[upd], before[upd]), f"t={t}: {upd} must change"
        # float64 check of the selected buffer
        if t % 2 == 1:
            a = b1 * b1 * a + (1 - b1 * b1) * g
        else:
            b = b1 * b1 * b + (1 - b1 * b1) * g
        assert_close(st[keys[0]], a, rtol=1e-13, atol=1e-15)
        assert_close(st[keys[1]], b, rtol=1e-13, atol=1e-15)


def test_pnm_step_has_no_bias_correction():
    p = _param()
    p0 = p.detach().clone()
    g = _grad(p, 1)
    p.grad = g.clone()
    lr, b1 = 0.1, 0.9
    fusedopt.PNM([p], lr=lr, betas=(b1, 1.0)).step()
    # t = 1: pos = (1-b1^2) g, neg = 0, normaliser sqrt(5); no 1/(1-b1^2) debiasing
    expected = p0 - lr * 2 * (1 - b1 * b1) * g / math.sqrt(5.0)
    assert_close(p.detach(), expected, rtol=1e-13, atol=1e-15)


def test_pnm_even_step_uses_the_other_buffer_as_negative_momentum():
    p = _param()
    lr, b1, b0 = 0.1, 0.9, 1.0
    opt = fusedopt.PNM([p], lr=lr, betas=(b1, b0))
    g1, g2 = _grad(p, 1), _grad(p, 2)
    p.grad = g1.clone()
    opt.step()
    p1 = p.detach().clone()
    p.grad = g2.clone()
    opt.step()
    a = (1 - b1 * b1) * g1  # buffer of step 1: the negative momentum at step 2
    bb = (1 - b1 * b1) * g2  # buffer updated at step 2 (from zero)
    expected = p1 - lr * ((1 + b0) * bb - b0 * a) / math.sqrt((1 + b0) ** 2 + b0 ** 2)
    assert_close(p.detach(), expected, rtol=1e-13, atol=1e-15)


# ---- AdaPNM --------------------------------------------------------------------------------------

@pytest.mark.parametrize("amsgrad", [True, False])
def test_adapnm_eps_outside_sqrt_bias_correction(amsgrad):
    """t = 1 and t = 2: step size lr / (1 - b1^t) (not 1 - b1^(2t)), denominator
    sqrt(v)/sqrt(1 - b2^t) + eps (E1: a large eps makes E2 visibly different)."""
    p = _param()
    lr, b1, b2, b0, eps = 0.1, 0.9, 0.999, 1.0, 0.3
    opt = fusedopt.AdaPNM([p], lr=lr, betas=(b1, b2, b0), eps=eps, amsgrad=amsgrad)
    a = torch.zeros_like(p)
    b = torch.zeros_like(p)
    v = torch.zeros_like(p)
    vmax = torch.zeros_like(p)
    for t in (1, 2, 3):
        g = _grad(p, t)
        p.grad = g.clone()
        p_before = p.detach().clone()
        opt.step()
        if t % 2 == 1:
            a = b1 * b1 * a + (1 - b1 * b1) * g
            pos, neg = a, b
        else:
            b = b1 * b1 * b + (1 - b1 * b1) * g
            pos, neg = b, a
        v = b2 * v + (1 - b2) * g * g
        vmax = torch.maximum(vmax, v)
        vv = vmax if amsgrad else v
        pn = ((1 + b0) * pos - b0 * neg) / math.sqrt((1 + b0) ** 2 + b0 ** 2)
        denom = vv.sqrt() / math.sqrt(1 - b2 ** t) + eps
        expected = p_before - lr / (1 - b1 ** t) * pn / denom
        assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)
        wrong_bc = p_before - lr / (1 - b1 ** (2 * t)) * pn / denom
        wrong_eps = p_before - lr / (1 - b1 ** t) * pn / ((vv.sqrt() + eps) / math.sqrt(1 - b2 ** t))
        assert (p.detach() - wrong_bc).abs().max() > 1e-3
        assert (p.detach() - wrong_eps).abs().max() > 1e-3


def test_adapnm_amsgrad_default_and_state_keys():
    p = _param()
    p.grad = _grad(p, 1)
    opt = fusedopt.AdaPNM([p])
    opt.step()
    assert set(opt.state[p]) == {"step", "exp_avg", "neg_exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    q = _param()
    q.grad = _grad(q, 1)
    opt = fusedopt.AdaPNM([q], amsgrad=False)
    opt.step()
    assert set(opt.state[q]) == {"step", "exp_avg", "neg_exp_avg", "exp_avg_sq"}


# ---- Adan ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("maximize", [False, True])
def test_adan_first_step_takes_g_prev_as_g1(maximize):
    """t = 1: the gradient difference is 0 (g_prev := g_1), so exp_avg_diff stays 0,
    n = (1-b3) g^2 and the step is lr * g / (|g| + eps) (bias corrections cancel)."""
    p = _param()
    p0 = p.detach().clone()
    lr, betas, eps = 0.1, (0.98, 0.92, 0.99), 1e-8
    g = _grad(p, 1)
    p.grad = g.clone()
    opt = fusedopt.Adan([p], lr=lr, betas=betas, eps=eps, maximize=maximize)
    opt.step()
    ge = -g if maximize else g
    st = opt.state[p]
    assert torch.equal(st["exp_avg_diff"], torch.zeros_like(p))
    assert torch.equal(st["neg_pre_grad"], -ge)
    assert_close(st["exp_avg"], (1 - betas[0]) * ge, rtol=1e-14, atol=0)
    assert_close(st["exp_avg_sq"], (1 - betas[2]) * ge * ge, rtol=1e-14, atol=0)
    assert_close(p.detach(), p0 - lr * ge / (ge.abs() + eps), rtol=1e-12, atol=1e-14)
    # step 2 uses g_1 as the previous grad
    g2 = _grad(p, 2)
    p.grad = g2.clone()
    opt.step()
    g2e = -g2 if maximize else g2
    assert_close(st["exp_avg_diff"], (1 - betas[1]) * (g2e - ge), rtol=1e-13, atol=1e-15)
    assert torch.equal(st["neg_pre_grad"], -g2e)


def test_adan_first_step_ignores_stale_neg_pre_grad():
    """A state loaded before the first step (step == 0) does not leak a stale g_prev."""
    p = _param()
    q = p.detach().clone().requires_grad_()
    a = fusedopt.Adan([p], lr=0.1)
    b = fusedopt.Adan([q], lr=0.1)
    p.grad = _grad(p, 1)
    q.grad = _grad(q, 1)
    a._ensure_state(p, a.param_groups[0], (True,) * 4)["neg_pre_grad"].fill_(123.0)
    a.step()
    b.step()
    assert torch.equal(p, q)


def test_adan_prox_vs_no_prox_weight_decay():
    """prox (default): p = (p - lr*u) / (1 + lr*wd); no_prox: p = p*(1 - lr*wd) - lr*u."""
    lr, wd = 0.1, 0.5
    p = _param()
    p0 = p.detach().clone()
    q = p0.clone().requires_grad_()
    r = p0.clone().requires_grad_()
    g = _grad(p, 1)
    for x in (p, q, r):
        x.grad = g.clone()
    fusedopt.Adan([p], lr=lr, weight_decay=wd).step()
    fusedopt.Adan([q], lr=lr, weight_decay=wd, no_prox=True).step()
    fusedopt.Adan([r], lr=lr).step()
    step = r.detach() - p0  # -lr*u
    assert_close(p.detach(), (p0 + step) / (1 + lr * wd), rtol=1e-13, atol=1e-15)
    assert_close(q.detach(), p0 * (1 - lr * wd) + step, rtol=1e-13, atol=1e-15)


def test_adan_max_grad_norm_supported_and_negative_refused():
    """max_grad_norm > 0 clips (tests/test_lamb_lars.py checks the values); < 0 is refused; a value set
    in the param group after construction is used at step()."""
    p = torch.zeros(3, requires_grad=True)
    fusedopt.Adan([p], max_grad_norm=1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        fusedopt.Adan([p], max_grad_norm=-1.0)
    q = torch.zeros(3, requires_grad=True)
    a, b = fusedopt.Adan([p]), fusedopt.Adan([q])
    a.param_groups[0]["max_grad_norm"] = 0.5
    p.grad = torch.full((3,), 10.0)
    q.grad = torch.full((3,), 10.0)
    a.step()
    b.step()
    ratio = (a.state[p]["exp_avg"] / b.state[q]["exp_avg"]).tolist()
    assert all(abs(r - 0.5 / (300 ** 0.5 + 1e-8)) < 1e-6 for r in ratio)


def test_adan_defaults_are_official():
    p = torch.zeros(3, requires_grad=True)
    g = fusedopt.Adan([p]).param_groups[0]
    assert g["betas"] == (0.98, 0.92, 0.99) and g["lr"] == 1e-3 and g["eps"] == 1e-8
    assert g["weight_decay"] == 0.0 and g["max_grad_norm"] == 0.0 and g["no_prox"] is False


# ---- Lion ----------------------------------------------------------------------------------------

def test_lion_sign_update_and_defaults():
    p = _param()
    p0 = p.detach().clone()
    g = _grad(p, 1)
    g[:5] = 0.0
    p.grad = g.clone()
    opt = fusedopt.Lion([p])
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["betas"] == (0.9, 0.99)
    opt.step()
    d = p.detach() - p0
    assert torch.equal(d[:5], torch.zeros(5, dtype=d.dtype))  # sign(0) = 0
    assert_close(d[5:], -1e-4 * torch.sign(g[5:]), rtol=1e-9, atol=1e-15)
    assert_close(opt.state[p]["exp_avg"], 0.01 * g, rtol=1e-14, atol=0)


def test_lion_decoupled_weight_decay_divides_by_initial_lr():
    lr, wd = 1e-3, 1e-2
    p = _param()
    q = p.detach().clone().requires_grad_()
    g = _grad(p, 1)
    p.grad = g.clone()
    q.grad = g.clone()
    a = fusedopt.Lion([p], lr=lr, weight_decay=wd, decoupled_weight_decay=True)
    a.param_groups[0]["lr"] = lr / 2  # a scheduler halves the lr: decay is wd * lr / init_lr
    a.step()
    expected = q.detach() * (1 - (lr / 2) * (wd / lr)) - (lr / 2) * torch.sign(g)
    assert_close(p.detach(), expected, rtol=1e-13, atol=1e-15)


# ---- functional ----------------------------------------------------------------------------------

def test_functional_wrappers_match_classes():
    F = fusedopt.functional
    cases = [
        (fusedopt.PNM, dict(weight_decay=0.1), lambda ps, gs, st, steps: F.pnm(
            ps, gs, st[0], st[1], steps, lr=1e-2, weight_decay=0.1), 2),
        (fusedopt.AdaPNM, dict(weight_decay=0.1), lambda ps, gs, st, steps: F.adapnm(
            ps, gs, st[0], st[1], st[2], st[3], steps, lr=1e-2, weight_decay=0.1), 4),
        (fusedopt.Adan, dict(weight_decay=0.1), lambda ps, gs, st, steps: F.adan(
            ps, gs, st[0], st[1], st[2], st[3], steps, lr=1e-2, weight_decay=0.1), 4),
        (fusedopt.Lion, dict(weight_decay=0.1), lambda ps, gs, st, steps: F.lion(
            ps, gs, st[0], steps, lr=1e-2, weight_decay=0.1), 1),
    ]
    for cls, kw, fn, nstates in cases:
        ps = make_params(seed=5)
        qs = clone_params(ps)
        opt = cls(ps, lr=1e-2, **kw)
        st = [[torch.zeros_like(q) for q in qs] for _ in range(nstates)]
        steps = [torch.zeros(()) for _ in qs]
        for t in range(1, 5):
            set_grads([ps, qs], t)
            opt.step()
            with torch.no_grad():
                fn(qs, [q.grad for q in qs], st, steps)
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), cls.__name__
        assert all(s.item() == 4 for s in steps)
