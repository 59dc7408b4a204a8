"""fusedopt.LanczosLR on quadratics with a known spectrum (k >= n, so Lanczos is exact)."""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt
from fusedopt import LanczosLR

DT = torch.float64


class Quad:
    """0.5 * scale * (x - x*)^T A (x - x*) with A = Q diag(eigs) Q^T."""

    def __init__(self, eigs, seed=0):
        g = torch.Generator().manual_seed(seed)
        n = len(eigs)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
        self.A = Q @ torch.diag(torch.tensor(eigs, dtype=DT)) @ Q.t()
        self.A = 0.5 * (self.A + self.A.t())
        self.xstar = torch.randn(n, generator=g, dtype=DT)
        self.x = torch.randn(n, generator=g, dtype=DT).requires_grad_()
        self.scale = 1.0
        self.n = n

    def loss(self):
        d = self.x - self.xstar
        return 0.5 * self.scale * d @ self.A @ d


EIGS = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0]


@pytest.mark.parametrize("safety", [1.0, 0.5])
def test_gd_policy_sets_lr_from_extremal_eigenvalues(safety):
    q = Quad(EIGS)
    opt = fusedopt.SGD([q.x], lr=1e-3)
    sched = LanczosLR(opt, q.loss, policy="gd", k=q.n, safety=safety, interval=5)
    rec = sched.step()
    assert rec is not None
    assert rec["L"] == pytest.approx(10.0, rel=1e-10)
    assert rec["mu"] == pytest.approx(0.5, rel=1e-10)
    expected = safety * 2.0 / (10.0 + 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-10)
    assert opt.param_groups[0]["momentum"] == 0  # gd leaves momentum alone
    torch.testing.assert_close(rec["ritz_values"], torch.tensor(EIGS, dtype=DT))
    # interval: no estimate on calls 1..4, one on call 5
    assert [sched.step() is None for _ in range(4)] == [True] * 4
    assert sched.step() is not None and sched.num_estimates == 2


def test_gd_policy_trains_the_quadratic():
    q = Quad(EIGS, seed=1)
    opt = fusedopt.SGD([q.x], lr=1e-3)
    sched = LanczosLR(opt, q.loss, policy="gd", k=q.n, interval=10)
    l0 = float(q.loss().detach())
    for _ in range(40):
        opt.zero_grad()
        q.loss().backward()
        opt.step()
        sched.step()
    # optimal fixed step: contraction (kappa-1)/(kappa+1) = 19/21 per step
    assert float(q.loss().detach()) < l0 * (19 / 21) ** 78


def test_heavy_ball_and_ssgdmn_policies_write_momentum_and_betas():
    q = Quad(EIGS)
    L, mu = 10.0, 0.5
    sL, smu = math.sqrt(L), math.sqrt(mu)
    opt = fusedopt.SGD([q.x], lr=1e-3, momentum=0.0)
    LanczosLR(opt, q.loss, policy="heavy_ball", k=q.n).step()
    assert opt.param_groups[0]["lr"] == pytest.approx(4 / (sL + smu) ** 2, rel=1e-10)
    assert opt.param_groups[0]["momentum"] == pytest.approx(((sL - smu) / (sL + smu)) ** 2, rel=1e-10)
    # Adam: beta1 is set, beta2 kept
    opt = fusedopt.Adam([q.x], lr=1e-3, betas=(0.9, 0.98))
    LanczosLR(opt, q.loss, policy="ssgdmn", k=q.n).step()
    a = math.sqrt(mu / L)
    assert opt.param_groups[0]["lr"] == pytest.approx(a, rel=1e-10)
    assert opt.param_groups[0]["betas"][0] == pytest.approx((1 - a) / (1 + a), rel=1e-10)
    assert opt.param_groups[0]["betas"][1] == 0.98
    # the optimizer still steps with the new values
    opt.zero_grad()
    q.loss().backward()
    opt.step()


def test_line_search_policy_is_exact_along_the_gradient():
    q = Quad(EIGS, seed=2)
    opt = torch.optim.SGD([q.x], lr=1e-3)
    LanczosLR(opt, q.loss, policy="line_search").step()
    g = q.A @ (q.x.detach() - q.xstar)
    expected = float(g @ g / (g @ q.A @ g))
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-10)
    # one step with that lr minimises the loss along -g
    opt.zero_grad()
    q.loss().backward()
    l_before = float(q.loss().detach())
    opt.step()
    x = q.x.detach()
    l_after = float(q.loss().detach())
    for t in (0.99, 1.01):
        xt = x + (1 - t) * expected * g  # the step scaled by t
        assert float(0.5 * (xt - q.xstar) @ q.A @ (xt - q.xstar)) >= l_after - 1e-12
    assert l_after < l_before


def test_mu_skips_bulk_and_negative_curvature():
    q = Quad([-3.0, 1e-6, 2e-6, 0.4, 2.0, 20.0])
    opt = fusedopt.SGD([q.x], lr=1e-3)
    rec = LanczosLR(opt, q.loss, policy="gd", k=q.n, rel_threshold=1e-3).step()
    assert rec["L"] == pytest.approx(20.0)
    assert rec["mu"] == pytest.approx(0.4)
    # no Ritz value above the threshold: mu is floored at rel_threshold * L
    q = Quad([1e-6, 2e-6, 5.0])
    rec = LanczosLR(fusedopt.SGD([q.x], lr=1e-3), q.loss, k=3, rel_threshold=0.5).step()
    assert rec["mu"] == pytest.approx(5.0)  # 5 itself is above 0.5*5
    rec = LanczosLR(fusedopt.SGD([q.x], lr=1e-3), q.loss, k=3, rel_threshold=1.0).step()
    assert rec["mu"] == pytest.approx(5.0)  # floor = 1.0 * L


def test_clamps_apply():
    q = Quad(EIGS)
    opt = fusedopt.SGD([q.x], lr=1e-3)
    LanczosLR(opt, q.loss, k=q.n, max_lr=0.05).step()
    assert opt.param_groups[0]["lr"] == 0.05
    LanczosLR(opt, q.loss, k=q.n, min_lr=0.5).step()
    assert opt.param_groups[0]["lr"] == 0.5
    LanczosLR(opt, q.loss, k=q.n, policy="heavy_ball", max_momentum=0.3).step()
    assert opt.param_groups[0]["momentum"] == 0.3
    LanczosLR(opt, q.loss, k=q.n, policy="heavy_ball", min_momentum=0.9).step()
    assert opt.param_groups[0]["momentum"] == 0.9


def test_ema_smooths_curvature_across_estimates():
    q = Quad(EIGS)
    opt = fusedopt.SGD([q.x], lr=1e-3)
    sched = LanczosLR(opt, q.loss, k=q.n, ema=0.75, interval=1)
    r1 = sched.step()
    assert r1["L_smooth"] == pytest.approx(10.0)
    q.scale = 3.0  # curvature triples: L 30, mu 1.5
    r2 = sched.step()
    assert r2["L"] == pytest.approx(30.0)
    assert r2["L_smooth"] == pytest.approx(0.75 * 10 + 0.25 * 30)
    assert r2["mu_smooth"] == pytest.approx(0.75 * 0.5 + 0.25 * 1.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(2 / (r2["L_smooth"] + r2["mu_smooth"]))
    # no smoothing: follows the new curvature at once
    sched0 = LanczosLR(opt, q.loss, k=q.n, ema=0.0)
    sched0.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2 / 31.5)
    # state_dict round trip keeps the smoothed values
    s2 = LanczosLR(opt, q.loss, k=q.n, ema=0.75)
    s2.load_state_dict(sched.state_dict())
    assert s2._L == sched._L and s2.num_calls == sched.num_calls


def test_tensor_lr_is_filled_in_place_and_groups_selectable():
    q = Quad(EIGS)
    other = torch.zeros(3, dtype=DT, requires_grad=True)
    lr_t = torch.tensor(1e-3, dtype=DT)
    opt = fusedopt.SGD([{"params": [q.x], "lr": lr_t}, {"params": [other], "lr": 0.123}])
    LanczosLR(opt, q.loss, k=q.n, params=[q.x], groups=[0]).step()
    assert opt.param_groups[0]["lr"] is lr_t
    assert float(lr_t) == pytest.approx(2 / 10.5)
    assert opt.param_groups[1]["lr"] == 0.123


def test_callable_policy():
    q = Quad(EIGS)
    opt = fusedopt.SGD([q.x], lr=1e-3)
    LanczosLR(opt, q.loss, k=q.n, policy=lambda L, mu, ritz: (1.0 / L, 0.5)).step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ValueError, match="must return"):
        LanczosLR(opt, q.loss, k=q.n, policy=lambda L, mu, r: 0.1).step()


def test_bad_inputs():
    q = Quad(EIGS)
    opt = fusedopt.SGD([q.x], lr=1e-3)
    with pytest.raises(ValueError, match="policy must be one of"):
        LanczosLR(opt, q.loss, policy="newton")
    with pytest.raises(ValueError, match="interval"):
        LanczosLR(opt, q.loss, interval=0)
    with pytest.raises(ValueError, match="safety"):
        LanczosLR(opt, q.loss, safety=0)
    with pytest.raises(ValueError, match="max_lr"):
        LanczosLR(opt, q.loss, min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="ema"):
        LanczosLR(opt, q.loss, ema=1.0)
    with pytest.raises(ValueError, match="groups"):
        LanczosLR(opt, q.loss, groups=[3])
    with pytest.raises(TypeError, match="Optimizer"):
        LanczosLR(object(), q.loss)
    ada = torch.optim.Adagrad([q.x], lr=0.1)
    with pytest.raises(ValueError, match="neither 'momentum' nor 'betas'"):
        LanczosLR(ada, q.loss, policy="heavy_ball")
    with pytest.raises(ValueError, match="scalar"):
        LanczosLR(opt, lambda: q.x * 2, k=2).step()


def test_gd_on_a_tiny_mlp_matches_the_full_hessian_spectrum():
    """A real network: k = n Lanczos steps, so L and mu come from the exact spectrum."""
    from torch import nn

    from tests.test_hessian import full_hessian, tiny_mlp

    model, x, y = tiny_mlp(nb=8)
    ev = torch.linalg.eigvalsh(full_hessian(model, x, y))
    L = float(ev.abs().max())
    mu = float(ev[ev > 1e-3 * L].min())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = sum(p.numel() for p in model.parameters())
    rec = LanczosLR(opt, lambda: nn.functional.cross_entropy(model(x), y), k=n).step()
    assert rec["L"] == pytest.approx(L, rel=1e-8)
    assert rec["mu"] == pytest.approx(mu, rel=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(2 / (L + mu), rel=1e-6)
    # the same through a batched closure (two equal halves: the same Hessian)
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1)
    halves = [(x[:4], y[:4]), (x[4:], y[4:])]
    rec2 = LanczosLR(opt2, lambda b: nn.functional.cross_entropy(model(b[0]), b[1]), k=n,
                     batches=halves).step()
    assert rec2["L"] == pytest.approx(L, rel=1e-8)
