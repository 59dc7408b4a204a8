"""fusedopt.create_optimizer (model-aware factory, every rule by name) and fusedopt.override (per-param
state width and lr factor, applied at state creation and kept in state_dict)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fusedopt
from fusedopt.factory import RULES, param_groups


class RMSNormLike(nn.Module):  # a norm that is not a torch class (as transformers' LlamaRMSNorm)
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Tiny(nn.Module):
    """Embedding (tied to the head), LayerNorm, a custom RMS norm, Linear layers with biases; the
    body and the embedding are large enough (>= 4096 elements) for 8-bit states."""

    def __init__(self, vocab=100, d=64, hidden=128):  # embedding 6400 elements: 8-bit by size
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d, bias=False)
        self.norm = RMSNormLike(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.scale = nn.Parameter(torch.ones(d))  # a plain 1-D param: decayed

    def forward(self, x):
        h = self.ln(self.emb(x))
        h = h + self.down(torch.relu(self.up(h)))
        return self.head(self.norm(h) * self.scale)


def _model(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def _batch(step, vocab=50):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randint(0, vocab, (4, 12), generator=g)
    return x, torch.roll(x, -1, 1)


def _loss(model, step):
    x, y = _batch(step)
    return nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())


def _train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        _loss(model, t).backward()
        opt.step()


def test_param_groups_decay_rules():
    m = _model()
    groups = param_groups(m, 0.1)
    names = {g["weight_decay"]: g["param_names"] for g in groups}
    assert names[0.1] == ["scale", "up.weight", "down.weight"]  # named_parameters order
    # the embedding (tied with head.weight: one param, named once), both norms, biases
    assert names[0.0] == ["emb.weight", "ln.weight", "ln.bias", "up.bias", "norm.weight"]
    g2 = {g["weight_decay"]: g["param_names"] for g in param_groups(m, 0.1, decay_embeddings=True,
                                                                       no_decay=["sc*"])}
    assert g2[0.1] == ["emb.weight", "up.weight", "down.weight"]
    assert "scale" in g2[0.0]
    m.up.weight.requires_grad_(False)  # frozen params are left out
    assert "up.weight" not in [n for g in param_groups(m, 0.1) for n in g["param_names"]]


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_by_name_trains(name):
    """Each name builds its class with the decay groups and takes steps that move the params."""
    m = _model()
    kw = {"relative_step": False, "lr": 1e-2} if name == "adafactor" else {"lr": 1e-2} if name == "sgd8bit" else {}
    opt = fusedopt.create_optimizer(m, name, weight_decay=0.01, **kw)
    assert type(opt) is RULES[name].cls
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    before = [p.detach().clone() for p in m.parameters()]
    for t in range(3):
        if "koala" in name:  # KOALA's protocol: predict, per-sample losses, step with the loss
            opt.predict()
            x, y = _batch(t)
            losses = nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten(), reduction="none")
            opt.zero_grad()
            losses.mean().backward()
            opt.step(loss=losses.mean().detach(), loss_sq_mean=losses.pow(2).mean().detach())
        else:
            _train(m, opt, 1, t)
    moved = [not torch.equal(a, b) for a, b in zip(before, m.parameters())]
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert sum(moved) >= len(moved) - 1, name  # at most one param may stay (e.g. a zero-grad bias)


def test_names_are_lenient_and_unknown_names_are_refused():
    m = _model()
    assert type(fusedopt.create_optimizer(m, "AdamW")) is fusedopt.AdamW
    assert type(fusedopt.create_optimizer(m, "FusedLAMB")) is fusedopt.LAMB
    assert type(fusedopt.create_optimizer(m, "adam_w")) is fusedopt.AdamW
    la = fusedopt.create_optimizer(m, "lookahead_lion", lr=1e-4)
    assert type(la) is fusedopt.Lookahead and type(la.optimizer) is fusedopt.Lion
    with pytest.raises(ValueError, match="unknown rule 'adamz'.*adamw"):
        fusedopt.create_optimizer(m, "adamz")
    assert fusedopt.list_optimizers() == sorted(RULES) and "adamw8bit" in RULES


def test_state_bits_8_with_embedding_override_and_exact_resume():
    """create_optimizer(state_bits=8): the body's states are 8-bit; an override keeps the embedding's
    at 32 bits. The override is recorded in the state and saved: a fresh optimizer over a fresh model
    (no override call) that loads the checkpoint keeps the embedding at 32 bits and continues bit for
    bit."""
    m = _model()
    fusedopt.override(m.emb, state_bits=32)
    opt = fusedopt.create_optimizer(m, "adamw", lr=1e-3, weight_decay=0.1, state_bits=8)
    _train(m, opt, 3)
    st_emb, st_up = opt.state[m.emb.weight], opt.state[m.up.weight]
    assert st_up["exp_avg"].dtype == torch.uint8 and "exp_avg_absmax" in st_up
    assert st_emb["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in st_emb
    assert st_emb["override"] == {"state_bits": 32} and "override" not in st_up
    sd = copy.deepcopy(opt.state_dict())
    m2 = copy.deepcopy(m)
    for p in m2.parameters():  # a new process: no override attribute on the params
        p.__dict__.pop("_fusedopt_override", None)
    opt2 = fusedopt.create_optimizer(m2, "adamw", lr=1e-3, weight_decay=0.1, state_bits=8)
    opt2.load_state_dict(sd)
    assert opt2.state[m2.emb.weight]["exp_avg"].dtype == torch.float32
    _train(m, opt, 3, start=3)
    _train(m2, opt2, 3, start=3)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    # without the saved record the same checkpoint would quantize the embedding's states
    (emb_id,) = [i for i, st in sd["state"].items() if "override" in st]
    del sd["state"][emb_id]["override"]
    m3 = copy.deepcopy(m2)
    opt3 = fusedopt.create_optimizer(m3, "adamw", lr=1e-3, weight_decay=0.1, state_bits=8)
    opt3.load_state_dict(sd)
    assert opt3.state[m3.emb.weight]["exp_avg"].dtype == torch.uint8


def test_override_after_construction_before_first_step():
    """Order does not matter until the state exists (bitsandbytes #1269: an override registered
    after register_parameters was silently ignored)."""
    torch.manual_seed(0)
    big = nn.Parameter(torch.randn(64, 128))
    opt = fusedopt.AdamW([big], state_bits=8)
    fusedopt.override(big, state_bits=32)
    big.grad = torch.randn_like(big)
    opt.step()
    assert opt.state[big]["exp_avg"].dtype == torch.float32
    fusedopt.override(big, state_bits=8)  # too late: the state exists and keeps its width
    opt.step()
    assert opt.state[big]["exp_avg"].dtype == torch.float32 and opt.state[big]["override"]["state_bits"] == 32


def test_state_bits_16_and_32_overrides():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(300)), nn.Parameter(torch.randn(300))
    fusedopt.override(a, state_bits=16)
    fusedopt.override(b, state_bits=32)
    opt = fusedopt.Adam([{"params": [a]}, {"params": [b], "state_dtype": torch.bfloat16}])
    a.grad, b.grad = torch.randn(300), torch.randn(300)
    opt.step()
    assert opt.state[a]["exp_avg"].dtype == torch.bfloat16 and opt.state[b]["exp_avg"].dtype == torch.float32


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb"])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_scale_equals_own_group_with_scaled_lr(name, tensor_lr):
    """lr_scale = the param alone in a param group whose lr is lr * lr_scale (bit for bit), under a
    schedule too."""
    torch.manual_seed(0)
    init = [torch.randn(16, 32), torch.randn(32), torch.randn(8, 16)]
    ps = [nn.Parameter(t.clone()) for t in init]
    qs = [nn.Parameter(t.clone()) for t in init]
    lr = 0.05
    fusedopt.override(ps[0], lr_scale=0.25)
    fusedopt.override(ps[2], lr_scale=3.0)
    cls = RULES[name].cls
    mk = (lambda v: torch.tensor(v)) if tensor_lr else (lambda v: v)
    kw = {"momentum": 0.9} if name == "sgd" else {"weight_decay": 0.1}
    ours = cls([{"params": ps, "lr": mk(lr)}], **kw)
    ref = cls([{"params": [qs[0]], "lr": mk(lr * 0.25)}, {"params": [qs[1]], "lr": mk(lr)},
               {"params": [qs[2]], "lr": mk(lr * 3.0)}], **kw)
    s1 = torch.optim.lr_scheduler.LambdaLR(ours, lambda t: 1.0 / (1 + t))
    s2 = torch.optim.lr_scheduler.LambdaLR(ref, lambda t: 1.0 / (1 + t))
    for t in range(5):
        g = torch.Generator().manual_seed(t)
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        ours.step(), ref.step(), s1.step(), s2.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), (name, t)
    assert ours.state[ps[0]]["override"] == {"lr_scale": 0.25}


def test_override_errors():
    p = nn.Parameter(torch.randn(8))
    with pytest.raises(ValueError, match="state_bits must be 8, 16 or 32"):
        fusedopt.override(p, state_bits=4)
    with pytest.raises(ValueError, match="lr_scale must be a finite float >= 0"):
        fusedopt.override(p, lr_scale=-1.0)
    with pytest.raises(ValueError, match="give state_bits and/or lr_scale"):
        fusedopt.override(p)
    with pytest.raises(TypeError, match="a module, a parameter or an iterable"):
        fusedopt.override(3, state_bits=32)
    q = nn.Parameter(torch.randn(8))
    fusedopt.override(q, lr_scale=0.5)
    koala = fusedopt.KOALA([q])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].*lr_scale override.*KOALA"):
        koala.predict()
    with pytest.raises(ValueError, match="lr_scale override, which Adafactor does not apply"):
        fusedopt.create_optimizer([q], "adafactor")
    s = nn.Parameter(torch.randn(5000, dtype=torch.bfloat16))
    fusedopt.override(s, state_bits=8)
    s.grad = torch.randn(5000, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="state_bits=8 override.*param_rounding='stochastic'"):
        fusedopt.AdamW([s], param_rounding="stochastic").step()
    k = nn.Parameter(torch.randn(5000))
    fusedopt.override(k, state_bits=8)
    k.grad = torch.randn(5000)
    koala = fusedopt.KOALA([k])
    with pytest.raises(ValueError, match="state_bits=8 override.*does not support 8-bit states"):
        koala.predict()
    with pytest.raises(ValueError, match="keeps 32-bit states"):
        fusedopt.create_optimizer([nn.Parameter(torch.randn(3))], "adafactor", state_bits=8)


def test_register_32bit_state_is_an_override():
    p = fusedopt.register_32bit_state(nn.Parameter(torch.randn(5000)))
    assert p._fusedopt_override == {"state_bits": 32}
    fusedopt.override(p, lr_scale=2.0)  # options accumulate
    assert p._fusedopt_override == {"state_bits": 32, "lr_scale": 2.0}
