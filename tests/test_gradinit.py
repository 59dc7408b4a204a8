"""fusedopt.gradinit: constraint, positivity, output scaling, determinism, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fusedopt
from fusedopt import gradinit


def make_data(n_batches=4, bs=16, din=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, din, generator=g), torch.randint(0, classes, (bs,), generator=g))
            for _ in range(n_batches)]


def mlp(seed=0, bias=True, din=8, width=16, classes=3, gain=1.0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(din, width, bias=bias), nn.ReLU(), nn.Linear(width, width, bias=bias),
                      nn.ReLU(), nn.Linear(width, classes, bias=bias))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(gain)
    return m


def grad_norm(model, x, y, p=2):
    loss = nn.functional.cross_entropy(model(x), y)
    gs = torch.autograd.grad(loss, list(model.parameters()))
    if p == 1:
        return float(sum(g.abs().sum() for g in gs))
    return float(torch.sqrt(sum((g * g).sum() for g in gs)))


@pytest.mark.parametrize("alg,p", [("sgd", 2), ("adam", 1)])
def test_gradient_norm_constraint_holds_after_init(alg, p):
    data = make_data(1)
    x, y = data[0]
    model = mlp(gain=3.0)  # large init: a large gradient norm
    g0 = grad_norm(model, x, y, p)
    gamma = g0 / 4
    model, info = gradinit(model, data, nn.functional.cross_entropy, alg=alg, gamma=gamma, iters=20,
                           lr=0.1, eta=1e-2, return_info=True)
    extra = sum(r["kind"] == "constraint_extra" for r in info["history"])
    assert grad_norm(model, x, y, p) <= gamma * (1 + 1e-9)
    assert info["constraint_steps"] > 0 and extra < 200
    sc = info["scales"]
    assert all(a >= 0.01 for n, a in sc.items() if n.endswith("weight"))  # floored at min_scale
    assert all(a >= 0.0 for a in sc.values())  # biases floored at bias_min_scale=0


def test_scales_positive_and_outputs_scale_as_the_scales_say():
    data = make_data(3)
    model = mlp(bias=False, seed=1)
    x = torch.randn(5, 8)
    before = model(x).detach()
    w_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, info = gradinit(model, data, nn.functional.cross_entropy, iters=15, lr=0.05, return_info=True,
                           min_scale=0.05)
    scales = info["scales"]
    assert set(scales) == {"0.weight", "2.weight", "4.weight"}
    assert all(s >= 0.05 for s in scales.values())
    assert any(abs(s - 1) > 1e-3 for s in scales.values()), "the scales did not move"
    # each tensor is its initial tensor times its scale
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), scales[n] * w_before[n])
    # bias-free ReLU net is positively homogeneous in each layer: output scales by the product
    prod = math.prod(scales.values())
    torch.testing.assert_close(model(x).detach(), prod * before, rtol=1e-5, atol=1e-6)


def test_objective_steps_lower_the_loss_after_one_sgd_step():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)  # a learnable labelling
    data = [(x, y)]
    model = mlp(seed=2)
    model, info = gradinit(model, data, nn.functional.cross_entropy, iters=60, lr=0.05, eta=0.1,
                           return_info=True)
    h = [r for r in info["history"] if r["kind"] == "objective"]
    assert len(h) == 60 and info["constraint_steps"] == 0  # gamma=inf: no constraint
    assert h[-1]["loss_after_step"] < h[0]["loss_after_step"] - 0.1


def test_deterministic_with_seed_and_rng_untouched():
    ds = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randint(0, 3, (64,)))

    def run(seed):
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
        m = mlp(seed=3)
        torch.manual_seed(123)
        state = torch.get_rng_state()
        gradinit(m, loader, nn.functional.cross_entropy, iters=10, lr=0.05, seed=seed, gamma=1.0)
        assert torch.equal(torch.get_rng_state(), state), "gradinit disturbed the global RNG"
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    a = run(0)
    b = run(0)
    c = run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the seed drives the batch order


def test_zero_bias_skipped_and_batchnorm_buffers_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    nn.init.zeros_(model[0].bias)
    model.train()
    buf = {n: b.clone() for n, b in model.named_buffers()}
    model, info = gradinit(model, make_data(2), nn.functional.cross_entropy, iters=5, return_info=True)
    assert "0.bias" in info["skipped_zero_tensors"]
    assert torch.equal(model[0].bias, torch.zeros(16))
    for n, b in model.named_buffers():
        assert torch.equal(b, buf[n]), n
    assert model.training


def test_bad_inputs():
    data = make_data(1)
    model = mlp()
    ce = nn.functional.cross_entropy
    with pytest.raises(ValueError, match="alg"):
        gradinit(model, data, ce, alg="lamb")
    with pytest.raises(ValueError, match="iters"):
        gradinit(model, data, ce, iters=0)
    with pytest.raises(ValueError, match="eta"):
        gradinit(model, data, ce, eta=0)
    with pytest.raises(ValueError, match="gamma"):
        gradinit(model, data, ce, gamma=-1.0)
    with pytest.raises(ValueError, match="min_scale"):
        gradinit(model, data, ce, min_scale=-0.1)
    with pytest.raises(ValueError, match="betas"):
        gradinit(model, data, ce, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="normalize_grad"):
        gradinit(model, data, ce, alg="adam", normalize_grad=True)
    with pytest.raises(ValueError, match="no batches"):
        gradinit(model, [], ce)
    with pytest.raises(ValueError, match="pair"):
        gradinit(model, [torch.randn(4, 8)], ce)
    with pytest.raises(ValueError, match="no trainable"):
        gradinit(nn.ReLU(), data, ce)
    with pytest.raises(TypeError, match="nn.Module"):
        gradinit("model", data, ce)
    with pytest.raises(ValueError, match="scalar"):
        gradinit(model, data, lambda o, t: o)
    with pytest.raises(ValueError, match="one-shot"):
        gradinit(model, iter(data), ce, iters=2)
    # nothing was changed by the failed calls
    torch.testing.assert_close(list(model.parameters())[0], list(mlp().parameters())[0])


def test_exported():
    assert fusedopt.gradinit is gradinit
