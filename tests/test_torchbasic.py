"""SGD / RMSprop / Adagrad / Adadelta: the behaviour switches the generic spec tests do not pin
(state_dict interop with non-default options, SGD's first-step buffer and its `step` key,
RMSprop's non-prefix state lists, Adagrad's constructor-time state, functional wrappers)."""
from __future__ import annotations

import copy

import pytest
import torch

import fusedopt

from .helpers import assert_close, clone_params, make_params, set_grads
from .specs import TOL

F32 = TOL[torch.float32]

INTEROP = [
    ("sgd-momentum", fusedopt.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9, dampening=0.3)),
    ("sgd-nesterov", fusedopt.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("rmsprop-mom-centered", fusedopt.RMSprop, torch.optim.RMSprop, dict(momentum=0.9, centered=True)),
    ("rmsprop-centered", fusedopt.RMSprop, torch.optim.RMSprop, dict(centered=True, weight_decay=0.1)),
    ("adagrad", fusedopt.Adagrad, torch.optim.Adagrad, dict(lr_decay=0.1, initial_accumulator_value=0.2)),
    ("adadelta", fusedopt.Adadelta, torch.optim.Adadelta, dict(rho=0.5, weight_decay=0.1)),
]


@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
@pytest.mark.parametrize("name,ours_cls,torch_cls,opts", INTEROP, ids=[c[0] for c in INTEROP])
def test_state_dict_interop_with_options(name, ours_cls, torch_cls, opts, direction):
    """3 steps with one class, state_dict into the other, 4 more steps: equal to 7 torch steps."""
    ps = make_params()
    ref_ps = clone_params(ps)
    first = (torch_cls(ps, foreach=False, **opts) if direction == "torch_to_fused" else ours_cls(ps, **opts))
    ref = torch_cls(ref_ps, foreach=False, **opts)
    for t in range(1, 4):
        set_grads([ps, ref_ps], t)
        first.step()
        ref.step()
    qs = clone_params(ps)
    second = ours_cls(qs, **opts) if direction == "torch_to_fused" else torch_cls(qs, foreach=False, **opts)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    for t in range(4, 8):
        set_grads([qs, ref_ps], t)
        second.step()
        ref.step()
    # RMSprop's momentum buffer cancels terms ~|g|/(1-momentum) and torch's CPU sqrt is not
    # correctly rounded: absolute tolerance at the ulp of those terms (specs.py atol_scale)
    tol = dict(F32, atol=F32["atol"] * (32 if name.startswith("rmsprop") else 1))
    for q, r in zip(qs, ref_ps):
        assert_close(q, r, **tol)
        for k, v in ref.state[r].items():
            assert_close(second.state[q][k].float(), v.float(), msg=k, **tol)


def test_sgd_first_step_buffer_is_the_gradient():
    """With dampening, the first step copies g (torch's `buf is None` branch); the second damps it."""
    p = torch.zeros(4, requires_grad=True)
    opt = fusedopt.SGD([p], lr=1.0, momentum=0.5, dampening=0.75)
    p.grad = torch.full((4,), 2.0)
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.full((4,), 2.0))
    assert torch.equal(p.detach(), torch.full((4,), -2.0))
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.full((4,), 0.5 * 2.0 + 0.25 * 2.0))


def test_sgd_without_momentum_keeps_no_buffer():
    p = torch.randn(5, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, theirs = fusedopt.SGD([p], lr=0.1, weight_decay=0.1), torch.optim.SGD([q], lr=0.1, weight_decay=0.1)
    for t in range(3):
        p.grad = torch.randn(5)
        q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    assert set(ours.state[p]) == {"step"} and ours.state[p]["step"].item() == 3
    assert_close(p, q, **F32)


def test_sgd_momentum_switched_on_later_matches_torch():
    """A buffer created at step 4 starts from the gradient, as in torch (our step restarts)."""
    ps = make_params()
    qs = clone_params(ps)
    ours, theirs = fusedopt.SGD(ps, lr=1e-2), torch.optim.SGD(qs, lr=1e-2, foreach=False)
    for t in range(1, 8):
        if t == 4:
            for o in (ours, theirs):
                o.param_groups[0]["momentum"] = 0.9
                o.param_groups[0]["dampening"] = 0.5
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
        for p, q in zip(ps, qs):
            assert_close(p, q, msg=f"step {t}", **F32)
    for p, q in zip(ps, qs):
        assert_close(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"], **F32)
        assert ours.state[p]["step"].item() == 4  # steps since the buffer was created


def test_sgd_tensor_weight_decay():
    ps = make_params()
    qs = clone_params(ps)
    ours = fusedopt.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=torch.tensor(0.1))
    theirs = torch.optim.SGD(qs, lr=1e-2, momentum=0.9, weight_decay=torch.tensor(0.1), foreach=False)
    for t in range(1, 4):
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
    for p, q in zip(ps, qs):
        assert_close(p, q, **F32)


def test_sgd_nesterov_arguments_checked():
    with pytest.raises(ValueError, match="Nesterov"):
        fusedopt.SGD([torch.zeros(1, requires_grad=True)], momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        fusedopt.SGD([torch.zeros(1, requires_grad=True)], momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        fusedopt.SGD([torch.zeros(1, requires_grad=True)], momentum=-0.1)


@pytest.mark.parametrize("bad,match", [
    ((fusedopt.RMSprop, dict(alpha=-0.1)), "alpha"),
    ((fusedopt.RMSprop, dict(momentum=-0.1)), "momentum"),
    ((fusedopt.Adagrad, dict(lr_decay=-0.1)), "lr_decay"),
    ((fusedopt.Adagrad, dict(initial_accumulator_value=-0.1)), "initial_accumulator_value"),
    ((fusedopt.Adadelta, dict(rho=1.1)), "rho"),
    ((fusedopt.Adadelta, dict(rho=-0.1)), "rho"),
])
def test_rule_specific_bad_arguments(bad, match):
    cls, kw = bad
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(1, requires_grad=True)], **kw)
    fusedopt.Adadelta([torch.zeros(1, requires_grad=True)], rho=1.0)  # torch allows rho == 1


def test_rmsprop_op_needs_exactly_the_variant_lists():
    """centered without momentum uses lists 0 and 2 (not a prefix): the op checks which lists are given."""
    p, g = [torch.randn(5)], [torch.randn(5)]
    sq, ga, steps = [torch.zeros(5)], [torch.zeros(5)], [torch.zeros(())]
    rule = fusedopt._ops.RULES["rmsprop"]
    hyper = rule.pack_hyper(dict(alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0))
    flags = rule.pack_flags(variant=dict(momentum=False, centered=True))
    with pytest.raises(RuntimeError, match="momentum_buffers"):  # grad_avg passed in the momentum slot
        torch.ops.fusedopt.rmsprop_(p, g, sq, ga, [], steps, [], hyper=hyper, lr=1e-2, flags=flags)
    assert steps[0].item() == 0
    torch.ops.fusedopt.rmsprop_(p, g, sq, [], ga, steps, [], hyper=hyper, lr=1e-2, flags=flags)
    assert steps[0].item() == 1 and ga[0].abs().sum() > 0


def test_adagrad_state_created_in_constructor_and_shared():
    p = torch.randn(6, requires_grad=True)
    opt = fusedopt.Adagrad([p], initial_accumulator_value=0.25)
    theirs = torch.optim.Adagrad([p.detach().clone().requires_grad_()], initial_accumulator_value=0.25)
    assert set(opt.state[p]) == set(next(iter(theirs.state.values()))) == {"step", "sum"}
    assert torch.equal(opt.state[p]["sum"], torch.full((6,), 0.25)) and opt.state[p]["step"].item() == 0
    opt.share_memory()
    assert opt.state[p]["sum"].is_shared()


FUNCTIONAL = [
    ("sgd", lambda ps: fusedopt.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True),
     lambda qs, st, steps: fusedopt.functional.sgd(qs, [q.grad for q in qs], st[0], steps, lr=1e-2, momentum=0.9,
                                                   nesterov=True), 1),
    ("sgd-plain", lambda ps: fusedopt.SGD(ps, lr=1e-2, weight_decay=0.1),
     lambda qs, st, steps: fusedopt.functional.sgd(qs, [q.grad for q in qs], [], steps, lr=1e-2,
                                                   weight_decay=0.1), 0),
    ("rmsprop", lambda ps: fusedopt.RMSprop(ps, centered=True),
     lambda qs, st, steps: fusedopt.functional.rmsprop(qs, [q.grad for q in qs], st[0], [], st[1], steps,
                                                       centered=True), 2),
    ("adagrad", lambda ps: fusedopt.Adagrad(ps, lr_decay=0.1),
     lambda qs, st, steps: fusedopt.functional.adagrad(qs, [q.grad for q in qs], st[0], steps, lr_decay=0.1), 1),
    ("adadelta", lambda ps: fusedopt.Adadelta(ps, rho=0.8),
     lambda qs, st, steps: fusedopt.functional.adadelta(qs, [q.grad for q in qs], st[0], st[1], steps, rho=0.8), 2),
]


@pytest.mark.parametrize("name,make,call,nstates", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_matches_optimizer(name, make, call, nstates):
    ps = make_params()
    qs = clone_params(ps)
    opt = make(ps)
    st = [[torch.zeros_like(q) for q in qs] for _ in range(nstates)]
    steps = [torch.zeros(()) for _ in qs]
    for t in range(1, 4):
        set_grads([ps, qs], t)
        opt.step()
        with torch.no_grad():
            call(qs, st, steps)
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
    assert all(s.item() == 3 for s in steps)
