"""Behaviours of PyTorch's own optimizer tests (test_optim.py) that fusedopt must share, for every class:
the device/graph flags every class takes, the older state_dict format (a Python-number `step`), load hooks
that see the states as the optimizer keeps them, and group keys restored from older state_dicts. Plus the
storage options, declared once in optim/base.py and taken by every class."""
from __future__ import annotations

import pytest
import torch

import fusedopt
from fusedopt.optim.base import STORAGE_OPTIONS

from .specs import SPECS

IDS = [s.name for s in SPECS]


def _make(spec, ps, **kw):
    if spec.name == "sgd":
        kw.setdefault("momentum", 0.9)  # a state to look at
    return spec.ours(ps, lr=spec.lr, **kw)


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in [(5, 3), (7,), (4097,)]]


def _step(opt, ps, seed):
    g = torch.Generator().manual_seed(100 + seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
    opt.step()


# every class: the constructor flags of torch.optim and fusedopt's storage options
OTHER = [
    ("Adafactor", lambda ps, **kw: fusedopt.Adafactor(ps, **kw)),
    ("AdafactorTorch", lambda ps, **kw: fusedopt.AdafactorTorch(ps, **kw)),
    ("VanillaKOALA", lambda ps, **kw: fusedopt.VanillaKOALA(ps, **kw)),
    ("MomentumKOALA", lambda ps, **kw: fusedopt.MomentumKOALA(ps, **kw)),
]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_class_takes_capturable_and_the_storage_options(spec):
    ps = _params()
    opt = _make(spec, ps, capturable=True, state_dtype=torch.bfloat16, param_rounding="nearest")
    assert opt.param_groups[0]["capturable"] is True
    assert opt.param_groups[0]["state_dtype"] == torch.bfloat16
    _step(opt, ps, 0)
    keys = [k for k, v in opt.state[ps[0]].items() if torch.is_tensor(v) and v.shape == ps[0].shape]
    assert keys and all(opt.state[ps[0]][k].dtype == torch.bfloat16 for k in keys)
    for key, default in STORAGE_OPTIONS.items():  # declared once, with the same default in every class
        assert _make(spec, _params()).param_groups[0][key] == default or (key == "state_dtype" and default is None)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_unknown_keyword_is_refused_by_name(spec):
    with pytest.raises(TypeError, match="unexpected keyword argument 'state_bitz'"):
        _make(spec, _params(), state_bitz=8)


@pytest.mark.parametrize("name,make", OTHER, ids=[n for n, _ in OTHER])
def test_other_classes_take_capturable(name, make):
    opt = make(_params(), capturable=True)
    assert opt.param_groups[0].get("capturable") is True


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_load_nontensor_step(spec):
    """torch's test_load_nontensor_step: a state_dict whose `step` is a Python number (the older format)
    loads, `step` becomes a float32 tensor, and training continues exactly as from the tensor form."""
    ps = _params()
    opt = _make(spec, ps)
    for t in range(3):
        _step(opt, ps, t)
    sd = opt.state_dict()
    old = {"state": {i: {k: (float(v) if k == "step" else v) for k, v in st.items()}
                     for i, st in sd["state"].items()}, "param_groups": sd["param_groups"]}
    assert all(isinstance(st["step"], float) for st in old["state"].values())
    a_ps = [p.detach().clone().requires_grad_() for p in ps]
    b_ps = [p.detach().clone().requires_grad_() for p in ps]
    a, b = _make(spec, a_ps), _make(spec, b_ps)
    a.load_state_dict(old)
    b.load_state_dict(sd)
    for p in a_ps:
        st = a.state[p]["step"]
        assert torch.is_tensor(st) and st.dtype == torch.float32 and st.dim() == 0 and float(st) == 3.0
    for t in range(3, 5):
        _step(a, a_ps, t)
        _step(b, b_ps, t)
    for p, q in zip(a_ps, b_ps):
        assert torch.equal(p, q)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_load_state_dict_post_hook_sees_the_states_the_optimizer_keeps(spec):
    """With bf16 params, a post-hook runs after fusedopt's conversion: it sees fp32 states (what the
    optimizer keeps, not torch's cast to the param dtype), and what it changes stays."""
    ps = _params(torch.bfloat16)
    opt = _make(spec, ps)
    for t in range(2):
        _step(opt, ps, t)
    sd = opt.state_dict()
    q = [p.detach().clone().requires_grad_() for p in ps]
    new = _make(spec, q)
    seen = {}

    def pre(optimizer, state_dict):
        seen["pre"] = True

    def post(optimizer):
        st = optimizer.state[q[0]]
        seen["dtypes"] = {k: v.dtype for k, v in st.items() if torch.is_tensor(v) and v.shape == q[0].shape}
        for k in seen["dtypes"]:
            st[k].fill_(0.25)  # the hook's change must survive

    new.register_load_state_dict_pre_hook(pre)
    new.register_load_state_dict_post_hook(post)
    new.load_state_dict(sd)
    assert seen.get("pre") and seen["dtypes"], "both hooks ran, after the states were made"
    assert all(d == torch.float32 for d in seen["dtypes"].values()), seen["dtypes"]
    for k in seen["dtypes"]:
        assert torch.all(new.state[q[0]][k] == 0.25), k


def test_pre_hook_may_replace_the_state_dict():
    ps = _params()
    opt = fusedopt.AdamW(ps, lr=1e-2)
    _step(opt, ps, 0)
    sd = opt.state_dict()
    q = [p.detach().clone().requires_grad_() for p in ps]
    new = fusedopt.AdamW(q, lr=1e-2)

    def pre(optimizer, state_dict):
        out = dict(state_dict)
        out["param_groups"] = [dict(g, lr=0.125) for g in state_dict["param_groups"]]
        return out

    new.register_load_state_dict_pre_hook(pre)
    new.load_state_dict(sd)
    assert new.param_groups[0]["lr"] == 0.125


@pytest.mark.parametrize("name,make", OTHER + [("Lookahead", lambda ps, **kw: fusedopt.Lookahead(
    fusedopt.SGD(ps, lr=0.1, momentum=0.9), k=2))], ids=[n for n, _ in OTHER] + ["Lookahead"])
def test_load_hooks_of_other_classes(name, make):
    ps = _params()
    opt = make(ps)
    if name.endswith("KOALA"):
        opt.predict()
        _step_koala(opt, ps)
    else:
        _step(opt, ps, 0)
    sd = opt.state_dict()
    new = make([p.detach().clone().requires_grad_() for p in ps])
    calls = []
    new.register_load_state_dict_pre_hook(lambda o, s: calls.append("pre"))
    new.register_load_state_dict_post_hook(lambda o: calls.append(("post", len(o.state) > 0)))
    new.load_state_dict(sd)
    assert calls == ["pre", ("post", True)]


def _step_koala(opt, ps):
    g = torch.Generator().manual_seed(5)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)
    opt.step(loss=torch.tensor(1.0), loss_sq_mean=torch.tensor(1.5))


def test_adafactor_torch_restores_foreach_from_an_older_state_dict():
    ps = _params()
    opt = fusedopt.AdafactorTorch(ps, foreach=True)
    _step(opt, ps, 0)
    sd = opt.state_dict()
    for g in sd["param_groups"]:
        del g["foreach"]  # an older torch.optim.Adafactor state_dict
    new = fusedopt.AdafactorTorch([p.detach().clone().requires_grad_() for p in ps], foreach=False)
    new.load_state_dict(sd)
    assert "foreach" in new.param_groups[0] and new.param_groups[0]["foreach"] is False
    ref = torch.optim.Adafactor([p.detach().clone().requires_grad_() for p in ps])
    ref.load_state_dict(sd)  # torch's own class does the same
    assert "foreach" in ref.param_groups[0]
