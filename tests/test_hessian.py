"""fusedopt.hessian against exact oracles: explicit quadratics with a known spectrum and a tiny MLP's
full Hessian from torch.autograd.functional.hessian (float64)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fusedopt import hessian as H

DT = torch.float64


def quadratic(eigs, seed=0):
    """0.5 x^T A x with A = Q diag(eigs) Q^T; returns (A, param x, loss closure)."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    A = Q @ torch.diag(torch.tensor(eigs, dtype=DT)) @ Q.t()
    A = 0.5 * (A + A.t())
    x = torch.randn(n, generator=g, dtype=DT).requires_grad_()
    return A, x, (lambda: 0.5 * x @ A @ x)


def tiny_mlp(seed=0, din=3, dh=4, dout=2, nb=7):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(din, dh), nn.Tanh(), nn.Linear(dh, dout)).to(DT)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(nb, din, generator=g, dtype=DT)
    y = torch.randint(0, dout, (nb,), generator=g)
    return model, x, y


def full_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])

    def f(flat):
        ps = {n: c.view(s) for n, c, s in zip(names, flat.split(sizes), shapes)}
        out = torch.func.functional_call(model, ps, (x,))
        return nn.functional.cross_entropy(out, y)

    return torch.autograd.functional.hessian(f, flat0)


@pytest.fixture(scope="module")
def mlp_case():
    model, x, y = tiny_mlp()
    Hf = full_hessian(model, x, y)
    op = H.HessianOperator(lambda: nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    return model, x, y, Hf, op


# -- HVP ------------------------------------------------------------------------------------------

def test_hvp_quadratic_is_matrix_product():
    A, x, loss = quadratic([1.0, 2.0, 5.0, -3.0, 0.5])
    op = H.HessianOperator(loss, [x])
    v = torch.randn(5, dtype=DT)
    torch.testing.assert_close(op(v), A @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(H.hvp(loss, [x], [v])[0], A @ v, rtol=1e-12, atol=1e-12)


def test_hvp_tiny_mlp_matches_full_hessian(mlp_case):
    model, x, y, Hf, op = mlp_case
    assert op.n == Hf.shape[0]
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(op.n, generator=g, dtype=DT)
        torch.testing.assert_close(op(v), Hf @ v, rtol=1e-10, atol=1e-12)
    # without the cached graph, and per-param shaped
    op2 = H.HessianOperator(lambda: nn.functional.cross_entropy(model(x), y), list(model.parameters()),
                            cache_graph=False)
    torch.testing.assert_close(op2(v), Hf @ v, rtol=1e-10, atol=1e-12)
    parts = H.hvp(lambda: nn.functional.cross_entropy(model(x), y), list(model.parameters()), op.split(v))
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in parts]), Hf @ v, rtol=1e-10, atol=1e-12)


def test_hvp_batched_closure_averages_batches():
    model, x, y = tiny_mlp(nb=8)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    op = H.HessianOperator(lambda b: nn.functional.cross_entropy(model(b[0]), b[1]),
                           list(model.parameters()), batches=batches)
    # equal-size batches: the average of the batch Hessians is the full-batch Hessian
    Hf = full_hessian(model, x, y)
    v = torch.randn(op.n, dtype=DT)
    torch.testing.assert_close(op(v), Hf @ v, rtol=1e-10, atol=1e-12)
    full_grad = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    torch.testing.assert_close(op.gradient(), torch.cat([g.reshape(-1) for g in full_grad]))


def test_hvp_bad_inputs():
    A, x, loss = quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match="does not require grad"):
        H.HessianOperator(loss, [torch.zeros(2)])
    with pytest.raises(ValueError, match="empty"):
        H.HessianOperator(loss, [])
    op = H.HessianOperator(lambda: x * 2, [x])
    with pytest.raises(ValueError, match="scalar"):
        op(torch.ones(2, dtype=DT))
    op = H.HessianOperator(loss, [x])
    with pytest.raises(ValueError, match="3 elements"):
        op(torch.ones(3, dtype=DT))
    with pytest.raises(TypeError, match="callable"):
        H.HessianOperator(3, [x])


def test_hvp_unused_param_gives_zero_block():
    A, x, loss = quadratic([1.0, 2.0])
    z = torch.zeros(3, dtype=DT, requires_grad=True)
    op = H.HessianOperator(loss, [x, z])
    v = torch.ones(5, dtype=DT)
    out = op(v)
    torch.testing.assert_close(out[:2], A @ torch.ones(2, dtype=DT))
    assert torch.equal(out[2:], torch.zeros(3, dtype=DT))


# -- Lanczos --------------------------------------------------------------------------------------

def test_lanczos_full_dimension_recovers_whole_spectrum():
    eigs = [-2.0, 0.1, 0.5, 1.0, 3.0, 7.0, 10.0]
    A, x, loss = quadratic(eigs)
    res = H.lanczos(H.HessianOperator(loss, [x]), k=7, seed=1)
    torch.testing.assert_close(res.ritz_values, torch.tensor(eigs, dtype=DT), rtol=0, atol=1e-10)
    torch.testing.assert_close(res.weights.sum(), torch.tensor(1.0, dtype=DT))


def test_lanczos_extremal_ritz_values_of_large_quadratic():
    # 200-dim spectrum with well separated extremes: 30 steps resolve both ends tightly
    g = torch.Generator().manual_seed(0)
    bulk = (torch.rand(196, generator=g, dtype=DT) * 2).tolist()
    eigs = bulk + [-5.0, 20.0, 40.0, 100.0]
    A, x, loss = quadratic(eigs, seed=2)
    res = H.lanczos(H.HessianOperator(loss, [x]), k=30, seed=3, return_vectors=True)
    assert abs(res.ritz_values[-1].item() - 100.0) < 1e-8
    assert abs(res.ritz_values[-2].item() - 40.0) < 1e-8
    assert abs(res.ritz_values[0].item() + 5.0) < 1e-6
    # Ritz vectors: unit norm, and the top one is an eigenvector
    v = res.ritz_vectors[-1]
    assert abs(v.norm().item() - 1) < 1e-10
    torch.testing.assert_close(A @ v, 100.0 * v, rtol=0, atol=1e-6)
    # the tridiagonal matrix is Q^T A Q: its eigenvalues interlace A's (all inside [min, max])
    assert res.ritz_values.min() >= -5.0 - 1e-9 and res.ritz_values.max() <= 100.0 + 1e-9


def test_lanczos_reorthogonalisation_prevents_ghosts():
    # a spectrum with one dominant outlier: plain Lanczos run long enough repeats it (a ghost copy)
    eigs = [1000.0] + torch.linspace(0, 1, 99, dtype=DT).tolist()
    A, _, _ = quadratic(eigs, seed=4)
    with_ro = H.lanczos(A, k=60, seed=5, reorth=True)
    without = H.lanczos(A, k=60, seed=5, reorth=False)
    n_top_ro = int((with_ro.ritz_values > 999).sum())
    n_top_plain = int((without.ritz_values > 999).sum())
    assert n_top_ro == 1
    assert n_top_plain >= 2, "expected a ghost copy of the top eigenvalue without re-orthogonalisation"


def test_lanczos_tiny_mlp_matches_eigvalsh(mlp_case):
    model, x, y, Hf, op = mlp_case
    exact = torch.linalg.eigvalsh(Hf)
    res = H.lanczos(op, k=op.n, seed=0)  # full Krylov space (may stop early on breakdown)
    # with full re-orthogonalisation the extremal Ritz values match to tight tolerance
    assert abs(res.ritz_values[-1] - exact[-1]) < 1e-9
    assert abs(res.ritz_values[0] - exact[0]) < 1e-9
    # fewer steps: the top eigenvalue is still approached from below (Ritz values interlace)
    r10 = H.lanczos(op, k=10, seed=0)
    assert r10.ritz_values[-1] <= exact[-1] + 1e-10
    assert r10.ritz_values[-1] >= 0.9 * exact[-1]


def test_lanczos_breakdown_stops_early():
    # A = diag with 2 distinct eigenvalues: the Krylov space from any start has dimension 2
    A = torch.diag(torch.tensor([1.0, 1.0, 1.0, 4.0, 4.0], dtype=DT))
    res = H.lanczos(A, k=5, v0=torch.ones(5, dtype=DT))
    assert res.steps == 2
    torch.testing.assert_close(res.ritz_values, torch.tensor([1.0, 4.0], dtype=DT))
    torch.testing.assert_close(res.weights, torch.tensor([0.6, 0.4], dtype=DT))


def test_lanczos_bad_inputs():
    A = torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match="k must be"):
        H.lanczos(A, k=0)
    with pytest.raises(ValueError, match="square"):
        H.lanczos(torch.ones(2, 3), k=1)
    with pytest.raises(ValueError, match="non-zero"):
        H.lanczos(A, k=2, v0=torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match="n=3"):
        H.lanczos(A, k=2, v0=torch.ones(4, dtype=DT))
    with pytest.raises(TypeError, match="HessianOperator"):
        H.lanczos("A", k=2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        H.lanczos((lambda v: v * float("nan"), 3), k=2)


def test_lanczos_deterministic_with_seed():
    A, _, _ = quadratic([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    a = H.lanczos(A, k=3, seed=7)
    b = H.lanczos(A, k=3, seed=7)
    assert torch.equal(a.T, b.T)


# -- SLQ ------------------------------------------------------------------------------------------

def test_slq_density_integrates_to_one_and_moments_match(mlp_case):
    model, x, y, Hf, op = mlp_case
    n = op.n
    dens = H.slq_density(op, k=12, num_probes=40, seed=0, num_grid=4000)
    dx = float(dens.grid[1] - dens.grid[0])
    mass = float(dens.density.sum() * dx)
    assert abs(mass - 1) < 1e-3
    tr1 = float(torch.trace(Hf)) / n
    tr2 = float(torch.trace(Hf @ Hf)) / n
    # per probe the quadrature reproduces v^T H v and v^T H^2 v exactly (Gauss rule, degree < 2k);
    # over 40 Rademacher probes the average is within a few standard errors of trace/n.
    # Var of the Rademacher quadratic-form estimator (unit-normalised): 2 sum_{i!=j} M_ij^2 / n^2
    for p, tr, M in ((1, tr1, Hf), (2, tr2, Hf @ Hf)):
        offdiag = (M ** 2).sum() - (torch.diagonal(M) ** 2).sum()
        se = math.sqrt(2 * float(offdiag) / n ** 2 / 40)
        assert abs(dens.moment(p) - tr) < 4 * se + 1e-12, (p, dens.moment(p), tr, se)
    # the grid density's mean equals the quadrature mean; its 2nd moment adds sigma^2
    m1 = float((dens.grid * dens.density).sum() * dx)
    m2 = float((dens.grid ** 2 * dens.density).sum() * dx)
    assert abs(m1 - dens.moment(1)) < 1e-3 * max(1.0, abs(dens.moment(1)))
    assert abs(m2 - (dens.moment(2) + dens.sigma ** 2)) < 1e-3 * max(1.0, dens.moment(2))


def test_slq_quadrature_is_exact_per_probe():
    eigs = [0.5, 1.0, 2.0, 3.0, 8.0, 9.0]
    A, _, _ = quadratic(eigs)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, generator=g, dtype=DT)
    v = v / v.norm()
    res = H.lanczos(A, k=3, v0=v)
    for p in range(0, 6):  # Gauss quadrature with 3 nodes is exact up to degree 5
        exact = float(v @ torch.linalg.matrix_power(A, p) @ v)
        assert abs(float((res.weights * res.ritz_values ** p).sum()) - exact) < 1e-8 * max(1, abs(exact))


def test_slq_full_krylov_gives_exact_density_of_quadratic():
    eigs = [1.0, 2.0, 4.0, 8.0]
    A, _, _ = quadratic(eigs)
    dens = H.slq_density(A, k=4, num_probes=3, sigma=0.1, seed=2)
    # every probe: nodes = the eigenvalues
    for i in range(3):
        torch.testing.assert_close(dens.nodes[i], torch.tensor(eigs, dtype=DT), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="sigma"):
        H.slq_density(A, k=2, sigma=0.0)
    with pytest.raises(ValueError, match="num_probes"):
        H.slq_density(A, k=2, num_probes=0)


# -- Hutchinson -----------------------------------------------------------------------------------

def test_hutchinson_basis_probes_are_exact(mlp_case):
    model, x, y, Hf, op = mlp_case
    d = H.hutchinson_diagonal(op, probes="basis")
    torch.testing.assert_close(d, torch.diagonal(Hf), rtol=1e-10, atol=1e-12)


def test_hutchinson_rademacher_within_statistical_bound(mlp_case):
    model, x, y, Hf, op = mlp_case
    m = 1000
    d, se = H.hutchinson_diagonal(op, m, seed=0, return_std=True)
    # exact per-entry standard error: sqrt(sum_{j!=i} H_ij^2 / m)
    off = (Hf ** 2).sum(1) - torch.diagonal(Hf) ** 2
    exact_se = (off / m).sqrt()
    err = (d - torch.diagonal(Hf)).abs()
    assert (err <= 5 * exact_se + 1e-12).all(), (err / exact_se).max()
    # the reported standard error is close to the exact one
    torch.testing.assert_close(se, exact_se, rtol=0.2, atol=1e-9)
    # diagonal matrix: one Rademacher probe is exact
    A = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=DT))
    torch.testing.assert_close(H.hutchinson_diagonal(A, 1), torch.tensor([1.0, -2.0, 3.0], dtype=DT))
    with pytest.raises(ValueError, match="probes"):
        H.hutchinson_diagonal(A, probes="gauss")


# -- R_med ----------------------------------------------------------------------------------------

class TwoHeads(nn.Module):
    """y_hat = a . x1 + b . x2 with MSE: the Hessian diagonal is known in closed form."""

    def __init__(self, d1, d2):
        super().__init__()
        self.a = nn.Linear(d1, 1, bias=False)
        self.b = nn.Linear(d2, 1, bias=False)
        self.d1 = d1

    def forward(self, x):
        return (self.a(x[:, : self.d1]) + self.b(x[:, self.d1:])).squeeze(1)


def test_r_med_on_model_with_known_diagonal():
    torch.manual_seed(0)
    d1, d2, N = 5, 6, 50
    model = TwoHeads(d1, d2).to(DT)
    # feature scales chosen so the diagonal 2 * mean(x_j^2) is known: column j scaled by s_j
    s1 = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=DT)
    s2 = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 5.0], dtype=DT)
    x = torch.randn(N, d1 + d2, dtype=DT) * torch.cat([s1, s2])
    y = torch.randn(N, dtype=DT)
    diag = 2 * (x ** 2).mean(0)  # Hessian diagonal of mean((x.w - y)^2)
    exp_a = float(diag[:d1].max() / diag[:d1].median())
    exp_b = float(diag[d1:].max() / diag[d1:].median())
    res = H.r_med(model, nn.functional.mse_loss, (x, y), mode="exact", return_diagonals=True)
    assert set(res["per_layer"]) == {"a", "b"}
    assert abs(res["per_layer"]["a"] - exp_a) < 1e-9 * exp_a
    assert abs(res["per_layer"]["b"] - exp_b) < 1e-9 * exp_b
    assert abs(res["r_med"] - min(exp_a, exp_b)) < 1e-9 * exp_a  # median of 2 values: the lower
    torch.testing.assert_close(res["diagonals"]["a"], diag[:d1])
    # Hutchinson with many probes approaches it (within 10% here)
    est = H.r_med(model, nn.functional.mse_loss, (x, y), layers=["b"], num_probes=3000, seed=1)
    assert abs(est["per_layer"]["b"] - exp_b) < 0.1 * exp_b
    assert est["num_hvps"] == 3000


def test_r_med_tiny_mlp_exact_matches_full_hessian(mlp_case):
    model, x, y, Hf, op = mlp_case
    d = torch.diagonal(Hf).abs()
    res = H.r_med(model, nn.functional.cross_entropy, (x, y), mode="exact")
    sizes = [sum(p.numel() for p in m.parameters()) for m in (model[0], model[2])]
    d0, d2 = d[: sizes[0]], d[sizes[0]:]
    assert res["per_layer"]["0"] == pytest.approx(float(d0.max() / d0.median()), rel=1e-9)
    assert res["per_layer"]["2"] == pytest.approx(float(d2.max() / d2.median()), rel=1e-9)
    assert model.training  # restored


def test_r_med_bad_inputs(mlp_case):
    model, x, y, Hf, op = mlp_case
    with pytest.raises(ValueError, match="not a submodule name"):
        H.r_med(model, nn.functional.cross_entropy, (x, y), layers=["nope"])
    with pytest.raises(ValueError, match="no trainable parameters"):
        H.r_med(model, nn.functional.cross_entropy, (x, y), layers=["1"])  # Tanh
    with pytest.raises(ValueError, match="pair"):
        H.r_med(model, nn.functional.cross_entropy, x)
    with pytest.raises(ValueError, match="mode"):
        H.r_med(model, nn.functional.cross_entropy, (x, y), mode="full")
    with pytest.raises(ValueError, match="not a submodule of the model"):
        H.r_med(model, nn.functional.cross_entropy, (x, y), layers=[nn.Linear(2, 2)])
