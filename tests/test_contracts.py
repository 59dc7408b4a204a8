"""The contract every fused optimizer keeps (parametrized over specs.SPECS): AMP skip and
unscale, tensor lr, state_dict both ways with torch.optim, dtypes of states, bad inputs,
grad=None, empty and non-contiguous tensors, one op call per bucket."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

import fusedopt
from fusedopt.optim import base as fo_base

from .helpers import (assert_bitwise_equal, assert_close, clone_params, make_params, set_grads, snapshot)
from .specs import DROP_IN, DROP_IN_IDS, SPECS, TOL

IDS = [s.name for s in SPECS]
F32 = TOL[torch.float32]


def _first_opts(spec):
    return {"weight_decay": 0.1} if spec.name != "adamw" else {}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_found_inf_skips_everything_bitwise(spec):
    ps = make_params()
    opt = spec.ours(ps, lr=spec.lr, **_first_opts(spec))
    set_grads([ps], 1)
    opt.step()
    set_grads([ps], 2)
    before = snapshot(opt, ps)
    opt.found_inf = torch.ones(())
    opt.grad_scale = torch.full((), 4.0)
    opt.step()
    assert_bitwise_equal(before, snapshot(opt, ps))  # params, grads (not unscaled), states, steps
    del opt.found_inf, opt.grad_scale
    opt.found_inf = torch.zeros(())
    opt.step()
    assert all(opt.state[p]["step"].item() == 2 for p in ps)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_grad_scale_unscales_and_writes_back(spec):
    """Grads scaled by a power of two and unscaled in the kernel give bitwise the result of
    unscaled grads, and are written back unscaled."""
    ps = make_params()
    qs = clone_params(ps)
    ours = spec.ours(ps, lr=spec.lr)
    plain = spec.ours(qs, lr=spec.lr)
    for t in range(1, 5):
        set_grads([ps, qs], t)
        for p in ps:
            p.grad.mul_(1024.0)
        ours.grad_scale = torch.full((), 1024.0)
        ours.found_inf = torch.zeros(())
        ours.step()
        plain.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p.grad, q.grad)  # written back unscaled
            assert torch.equal(p, q)


@pytest.mark.parametrize("spec", DROP_IN, ids=DROP_IN_IDS)
def test_grad_scaler_end_to_end_cpu(spec):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model2 = copy.deepcopy(model)
    ours = spec.ours(model.parameters(), lr=spec.lr)
    theirs = spec.make_oracle(model2.parameters())
    s1 = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    s2 = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x = torch.randn(32, 8)
    y = torch.randn(32, 1)
    for it in range(6):
        for m, opt, sc in ((model, ours, s1), (model2, theirs, s2)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            if it == 3:
                loss = loss * float("inf")  # an overflow step: skipped, scale backs off
            sc.scale(loss).backward()
            sc.step(opt)
            sc.update()
        assert s1.get_scale() == s2.get_scale()
        for p, q in zip(model.parameters(), model2.parameters()):
            assert_close(p, q, **F32)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert ours.state[p]["step"].item() == 5
        assert theirs.state[q].get("step", torch.tensor(5.0)).item() == 5  # torch's SGD keeps no step


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_tensor_lr_matches_float_lr(spec):
    ps = make_params()
    qs = clone_params(ps)
    a = spec.ours(ps, lr=torch.tensor(spec.lr))
    b = spec.ours(qs, lr=torch.tensor(spec.lr).item())  # the float32 value of the tensor
    for t in range(1, 5):
        set_grads([ps, qs], t)
        a.step()
        b.step()
        a.param_groups[0]["lr"].fill_(spec.lr * 0.5 ** t)  # a scheduler writing into the tensor
        b.param_groups[0]["lr"] = torch.tensor(spec.lr * 0.5 ** t).item()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)


@pytest.mark.parametrize("spec", DROP_IN, ids=DROP_IN_IDS)
@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_state_dict_interop_with_torch(spec, direction):
    ps = make_params()
    qs = clone_params(ps)
    first = spec.oracle(qs, lr=spec.lr) if direction == "torch_to_fused" else spec.ours(qs, lr=spec.lr)
    for t in range(1, 4):
        set_grads([qs], t)
        first.step()
    sd = copy.deepcopy(first.state_dict())
    ps = clone_params(qs)
    second = spec.ours(ps, lr=spec.lr) if direction == "torch_to_fused" else spec.oracle(ps, lr=spec.lr)
    second.load_state_dict(sd)
    ref = spec.make_oracle(clone_params(qs))
    ref.load_state_dict(copy.deepcopy(sd) if direction == "torch_to_fused" else _as_torch(sd))
    rs = [p for p in ref.param_groups[0]["params"]]
    for t in range(4, 8):
        set_grads([ps, rs], t)
        second.step()
        ref.step()
    for p, r in zip(ps, rs):
        assert_close(p, r, **F32)
        for k, v in ref.state[r].items():
            assert_close(second.state[p][k].float().cpu(), v.float().cpu(), msg=k, **F32)


def _as_torch(sd):
    return copy.deepcopy(sd)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_round_trip_keeps_state_dtypes(spec):
    """bf16 params keep fp32 states through save/load (torch.optim would cast them to bf16)."""
    ps = make_params(dtype=torch.bfloat16)
    opt = spec.ours(ps, lr=spec.lr)
    set_grads([ps], 1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    qs = clone_params(ps)
    opt2 = spec.ours(qs, lr=spec.lr)
    opt2.load_state_dict(sd)
    for i, (p, q) in enumerate(zip(ps, qs)):
        for k, v in opt.state[p].items():
            w = opt2.state[q][k]
            assert w.dtype == v.dtype and torch.equal(w, v), k
            if w.numel():  # not aliasing the caller's dict
                assert w.data_ptr() != sd["state"][i][k].data_ptr()
    set_grads([ps, qs], 2)
    opt.step()
    opt2.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)


def test_bf16_state_option_survives_load():
    ps = make_params()
    opt = fusedopt.AdamW(ps, state_dtype=torch.bfloat16)
    set_grads([ps], 1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    opt2 = fusedopt.AdamW(clone_params(ps), state_dtype=torch.bfloat16)
    opt2.load_state_dict(sd)
    assert all(v["exp_avg"].dtype == torch.bfloat16 for v in opt2.state.values())


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_grad_none_params_are_skipped(spec):
    ps = make_params()
    opt = spec.ours(ps, lr=spec.lr, **_first_opts(spec))
    set_grads([ps], 1)
    ps[3].grad = None
    before = ps[3].detach().clone()
    opt.step()
    assert torch.equal(ps[3], before)
    # no state, or (Adagrad creates its state in the constructor, as torch) a state left untouched
    assert len(opt.state[ps[3]]) == 0 or opt.state[ps[3]]["step"].item() == 0
    assert opt.state[ps[2]]["step"].item() == 1


def test_empty_tensors_are_noops_but_count_steps():
    ps = [torch.zeros(0, requires_grad=True), torch.randn(5, requires_grad=True), torch.zeros(0, 3, requires_grad=True)]
    opt = fusedopt.AdamW(ps)
    set_grads([ps], 1)
    opt.step()
    assert opt.state[ps[0]]["step"].item() == 1 and opt.state[ps[2]]["exp_avg"].shape == (0, 3)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_non_contiguous_param_updated_correctly(spec):
    base = torch.randn(7, 5)
    p = base.t().requires_grad_()  # transposed: dense, not contiguous
    q = p.detach().clone(memory_format=torch.contiguous_format).requires_grad_()
    assert not p.is_contiguous() and q.is_contiguous()
    ours = spec.ours([p], lr=spec.lr, **_first_opts(spec))
    theirs = spec.ours([q], lr=spec.lr, **_first_opts(spec))  # same rule on a contiguous copy
    for t in range(1, 4):
        g = torch.randn(5, 7)
        p.grad = torch.empty_strided(p.shape, p.stride()).copy_(g)
        q.grad = g.clone()
        ours.step()
        theirs.step()
    assert_close(p, q, **F32)
    for k in spec.keys(_first_opts(spec)):  # every state (not every rule has an exp_avg)
        assert_close(ours.state[p][k], theirs.state[q][k], msg=k, **F32)
    assert torch.equal(base.t(), p.detach())  # updated in place, through the view


def test_non_dense_view_refused_clearly():
    base = torch.randn(6, 8)
    p = base[:, ::2].requires_grad_()
    p.grad = torch.randn_like(p)
    opt = fusedopt.Adam([p])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].*non-dense view"):
        opt.step()


def test_grad_with_other_strides_refused_clearly():
    p = torch.randn(5, 7).t().requires_grad_()
    p.grad = torch.randn(7, 5)  # a contiguous grad for a transposed param
    opt = fusedopt.Adam([p])
    with pytest.raises(ValueError, match="strides"):
        opt.step()


@pytest.mark.parametrize("bad,match", [
    (dict(lr=-1e-3), "learning rate"),
    (dict(eps=-1.0), "epsilon"),
    (dict(betas=(1.0, 0.999)), "beta parameter at index 0"),
    (dict(betas=(0.9, -0.1)), "beta parameter at index 1"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(differentiable=True), "differentiable"),
    (dict(fused=False), "fused=False"),
    (dict(state_dtype=torch.float16), "state_dtype"),
    (dict(param_rounding="up"), "param_rounding"),
])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bad_constructor_arguments(spec, bad, match):
    missing = [k for k in bad if k not in spec.ours.__init__.__code__.co_varnames]
    if missing:
        pytest.skip(f"no {missing[0]} argument")
    with pytest.raises(ValueError, match=match):
        spec.ours([torch.zeros(2, requires_grad=True)], **bad)


def test_complex_param_refused_with_name():
    p = torch.randn(3, dtype=torch.complex64, requires_grad=True)
    p.grad = torch.randn_like(p)
    opt = fusedopt.Adam([("encoder.w", p)])
    with pytest.raises(ValueError, match=r"'encoder.w'.*complex"):
        opt.step()


def test_sparse_grad_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = fusedopt.Adam(emb.parameters())
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


def test_unsupported_dtype_refused():
    p = torch.zeros(4, dtype=torch.int32)
    p.grad = torch.zeros(4, dtype=torch.int32)
    opt = fusedopt.Adam([torch.zeros(1, requires_grad=True)])
    opt.param_groups[0]["params"].append(p)
    with pytest.raises(ValueError, match=r"\['params'\]\[1\].*unsupported dtype"):
        opt.step()


def _functional_lists(n=2, dtype=torch.float32):
    ps = [torch.randn(5, dtype=dtype) for _ in range(n)]
    gs = [torch.randn(5, dtype=dtype) for _ in range(n)]
    ms = [torch.zeros(5) for _ in range(n)]
    vs = [torch.zeros(5) for _ in range(n)]
    steps = [torch.zeros(()) for _ in range(n)]
    return ps, gs, ms, vs, steps


@pytest.mark.parametrize("mutate,match", [
    (lambda L: L[1].__setitem__(1, torch.randn(5, dtype=torch.float64)), r"grads\[1\] has dtype Double"),
    (lambda L: L[1].__setitem__(0, torch.randn(6)), r"grads\[0\] has shape"),
    (lambda L: L[0].__setitem__(1, torch.randn(5, dtype=torch.float16)), r"params\[1\] has dtype Half"),
    (lambda L: L[2].__setitem__(1, torch.zeros(5, dtype=torch.float16)), "state 0 of params\\[1\\] has dtype"),
    (lambda L: L[4].__setitem__(0, torch.zeros(2)), r"state_steps\[0\]"),
    (lambda L: L[1].__setitem__(0, torch.randn(5).to_sparse()), r"grads\[0\] is sparse"),
    (lambda L: L[0].__setitem__(0, torch.randn(5, dtype=torch.complex64)), "dtype"),
])
def test_functional_bad_inputs_name_the_tensor(mutate, match):
    L = list(_functional_lists())
    mutate(L)
    with pytest.raises(RuntimeError, match=match):
        fusedopt.functional.adam(L[0], L[1], L[2], L[3], [], L[4], lr=1e-3)


def test_op_refuses_missing_state_list_and_unknown_variant():
    ps, gs, ms, vs, steps = _functional_lists()
    rule = fusedopt._ops.RULES["adam"]
    hyper = rule.pack_hyper(rule.hyper_defaults)
    amsgrad = rule.pack_flags(dict(decoupled_weight_decay=False), dict(amsgrad=True))
    with pytest.raises(RuntimeError, match="uses 3 state lists, got 2"):  # amsgrad flag without its list
        torch.ops.fusedopt.adam_(ps, gs, ms, vs, [], steps, [], hyper=hyper, lr=1e-3, flags=amsgrad)
    with pytest.raises(RuntimeError, match="variant 3"):  # the op checks what it is given, whatever Python packs
        torch.ops.fusedopt.adam_(ps, gs, ms, vs, [], steps, [], hyper=hyper, lr=1e-3,
                                 flags=3 << fusedopt._ops._VARIANT_SHIFT)
    with pytest.raises(RuntimeError, match="hyper must hold 4"):
        torch.ops.fusedopt.adam_(ps, gs, ms, vs, [], steps, [], hyper=hyper[:3], lr=1e-3)
    assert all(s.item() == 0 for s in steps)  # nothing ran


def test_functional_matches_optimizer():
    ps = make_params()
    qs = clone_params(ps)
    opt = fusedopt.AdamW(ps, lr=1e-2, amsgrad=True)
    ms = [torch.zeros_like(q) for q in qs]
    vs = [torch.zeros_like(q) for q in qs]
    vm = [torch.zeros_like(q) for q in qs]
    steps = [torch.zeros(()) for _ in qs]
    for t in range(1, 4):
        set_grads([ps, qs], t)
        opt.step()
        with torch.no_grad():
            fusedopt.functional.adamw(qs, [q.grad for q in qs], ms, vs, vm, steps, lr=1e-2, amsgrad=True)
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
    # and the adamw op equals the adam op with the decoupled flag
    assert all(s.item() == 3 for s in steps)


def test_one_op_call_per_bucket(monkeypatch):
    """Path under test really ran: one fused call per (device, dtype) bucket per group per step: the op on
    the first step, the bucket's kept plan (the fast path) on later ones."""
    calls = []
    real_op, real_plan = fo_base.op, fo_base.new_plan

    def counting(name):
        k = real_op(name)

        def wrapper(params, *a, **kw):
            calls.append(("op", name, len(params), params[0].dtype))
            return k(params, *a, **kw)
        return wrapper

    class CountingPlan:
        def __init__(self, *args):
            self.plan, self.key = real_plan(*args), (args[0], len(args[1]), args[1][0].dtype)

        def step(self, *a):
            calls.append(("plan",) + self.key)
            return self.plan.step(*a)

    monkeypatch.setattr(fo_base, "op", counting)
    monkeypatch.setattr(fo_base, "new_plan", CountingPlan)
    ps32 = make_params(seed=1)
    ps16 = make_params(dtype=torch.bfloat16, seed=2)
    opt = fusedopt.Adam([{"params": ps32 + ps16}, {"params": make_params(seed=3), "lr": 0.1}])
    for t in range(3):
        for g in opt.param_groups:
            set_grads([g["params"]], t)
        opt.step()
    buckets = [("adam", 6, torch.float32), ("adam", 6, torch.bfloat16), ("adam", 6, torch.float32)]
    assert calls == [("op",) + b for b in buckets] + [("plan",) + b for b in buckets] * 2


def test_bf16_rounding_modes_keep_small_updates():
    """Updates far below a bf16 ulp vanish with round-to-nearest; stochastic rounding and
    Kahan compensation accumulate them (docs/algorithms.md §1; USER_NEEDS #15)."""
    n = 4096
    results = {}
    for mode in ("nearest", "stochastic", "kahan"):
        p = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
        opt = fusedopt.Adam([p], lr=1e-4, param_rounding=mode)
        for _ in range(50):
            p.grad = torch.ones(n, dtype=torch.bfloat16)
            opt.step()
        value = p.detach().float()
        if mode == "kahan":
            value = value + opt.state[p]["param_comp"].float()  # the param is the hi + lo pair
        results[mode] = value.mean().item()
    expected = 1.0 - 50 * 1e-4
    assert results["nearest"] == 1.0  # every update was lost
    assert abs(results["kahan"] - expected) < 1e-4
    assert abs(results["stochastic"] - expected) < 2e-4


def test_stochastic_rounding_is_reproducible():
    out = []
    for _ in range(2):
        p = torch.linspace(-1, 1, 999, dtype=torch.bfloat16).requires_grad_()
        opt = fusedopt.AdamW([p], lr=1e-3, param_rounding="stochastic")
        for t in range(3):
            p.grad = torch.full_like(p, 0.5)
            opt.step()
        out.append(p.detach().clone())
    assert torch.equal(out[0], out[1])


def test_param_rounding_needs_bf16():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.zeros(3)
    with pytest.raises(ValueError, match="bfloat16 params only"):
        fusedopt.Adam([p], param_rounding="kahan").step()


def test_add_param_group_and_second_group_hyper():
    ps = make_params(seed=4)
    qs = clone_params(ps)
    ours = fusedopt.Adam(ps[:3], lr=1e-2)
    ours.add_param_group({"params": ps[3:], "lr": 1e-1, "betas": (0.5, 0.6)})
    theirs = torch.optim.Adam(qs[:3], lr=1e-2, foreach=False)
    theirs.add_param_group({"params": qs[3:], "lr": 1e-1, "betas": (0.5, 0.6)})
    for t in range(1, 4):
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
    for p, q in zip(ps, qs):
        assert_close(p, q, **F32)


def test_closure_and_zero_grad():
    p = torch.randn(4, requires_grad=True)
    opt = fusedopt.Adam([p])

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() > 0 and opt.state[p]["step"].item() == 1


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512-permute"])
def test_every_cpu_isa_gives_the_same_bits(isa):
    """The baseline and AVX2 kernels, and the AVX-512 kernels with the 8-bit decoder of CPUs without
    VBMI (FUSEDOPT_Q8_DECODER=permute), give bitwise the same result as the default ISA: fp32 states,
    and 8-bit states (codes, absmax and params; the requantization has per-ISA SIMD bodies)."""
    code = (
        "import torch, fusedopt;"
        "torch.manual_seed(0);"
        "ps=[torch.randn(s, requires_grad=True) for s in [(1,),(7,),(4097,),(70001,)]];"
        "o=fusedopt.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=0.1);"
        "[([setattr(p,'grad',torch.randn_like(p)) for p in ps], o.step()) for _ in range(3)];"
        "qs=[torch.randn(s, requires_grad=True) for s in [(1,),(7,),(4097,),(70001,)]];"
        "q8=fusedopt.AdamW(qs, lr=1e-2, weight_decay=0.1, state_bits=8, min_8bit_size=0);"
        "gs=lambda q: torch.randn_like(q)*torch.rand_like(q).pow(8)*torch.rand_like(q).lt(0.9);"
        "[([setattr(q,'grad',gs(q)) for q in qs], q8.step()) for _ in range(3)];"
        "print(fusedopt.build_info()['cpu_isa'], fusedopt.build_info()['cpu_q8_decoder']);"
        "st=[v for q in qs for k,v in sorted(q8.state[q].items()) if k!='step'];"
        "torch.save([p.detach() for p in ps + qs] + st, __import__('sys').argv[1])"
    )
    outs = []
    for cap in (isa, "avx512"):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fo_isa_{cap}_{os.getpid()}.pt")
        env = dict(os.environ, FUSEDOPT_CPU_ISA=cap.split("-")[0])
        env.pop("FUSEDOPT_Q8_DECODER", None)
        if cap == "avx512-permute":
            env["FUSEDOPT_Q8_DECODER"] = "permute"
        r = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True, text=True, check=True)
        outs.append((r.stdout.strip(), torch.load(path)))
        os.remove(path)
    ran, decoder = outs[0][0].split()
    if isa == "avx512-permute":
        if ran != "avx512":
            pytest.skip(f"this CPU runs {ran}, not AVX-512")
        assert decoder == "avx512-permute"  # the setting took effect
    else:
        assert ran == isa or ran == "scalar"
        assert decoder == {"scalar": "scalar", "avx2": "avx2-gather"}[ran]  # build_info names the decoder that ran
    ran512, decoder512 = outs[1][0].split()
    if ran512 == "avx512":
        assert decoder512 in ("avx512-vbmi", "avx512-permute")
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.equal(a, b)


def test_functional_is_generated_from_every_rule_of_the_table():
    """fusedopt.functional has one function per rule of csrc/core/rule_table.h: its state lists in the op's
    order, then keyword-only arguments named and defaulted as the header declares them (kHyper, kLr, kFlags)."""
    import inspect

    from fusedopt._ops import RULES

    P = inspect.Parameter
    assert set(fusedopt.functional.__all__) == set(RULES) | {"apply"}
    for name, rule in RULES.items():
        sig = inspect.signature(getattr(fusedopt.functional, name)).parameters
        lists = [n for n, p in sig.items() if p.kind is P.POSITIONAL_OR_KEYWORD]
        assert lists[0] == "params" and lists[-1] == "state_steps", name
        assert len(lists) == 2 + rule.reads_grad + len(rule.slots) + len(rule.scalars), (name, lists)
        assert sig["lr"].default == rule.lr, name
        for n in rule.hyper:
            assert sig[n].kind is P.KEYWORD_ONLY and sig[n].default == rule.hyper_defaults[n], (name, n)
        for n in rule.flags:
            assert sig[n].kind is P.KEYWORD_ONLY and sig[n].default == rule.flag_defaults[n], (name, n)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_class_defaults_are_the_header_defaults(spec):
    """What a default-constructed optimizer hands its kernel equals the defaults its rule's header declares
    (the class signature and the header state them for different readers; this keeps them one fact)."""
    from fusedopt._ops import RULES

    opt = spec.ours([torch.zeros(2, requires_grad=True)])
    rule = RULES[opt._rule]
    named = opt._hyper(opt.param_groups[0])
    assert list(named) == list(rule.hyper) or set(named) == set(rule.hyper)
    for n, v in named.items():
        if n != "ckp1":  # Schedule-Free's averaging weight is per step, not an argument
            assert v == pytest.approx(rule.hyper_defaults[n]), (spec.name, n)


def test_packing_names_the_rule_and_the_unknown_or_missing_names():
    from fusedopt._ops import RULES

    r = RULES["adam"]
    with pytest.raises(ValueError, match=r"fusedopt.adam: hyperparameters missing \['eps'\]"):
        r.pack_hyper(dict(beta1=0.9, beta2=0.999, weight_decay=0.0))
    with pytest.raises(ValueError, match=r"fusedopt.adam: hyperparameters unknown \['lr'\]"):
        r.pack_hyper(dict(r.hyper_defaults, lr=1e-3))
    with pytest.raises(ValueError, match=r"fusedopt.adam: flags missing \['decoupled_weight_decay'\]"):
        r.pack_flags({}, dict(amsgrad=True))
    with pytest.raises(ValueError, match=r"fusedopt.adam: variant fields unknown \['ams'\]"):
        r.pack_flags(dict(decoupled_weight_decay=False), dict(amsgrad=True, ams=1))
    with pytest.raises(ValueError, match=r"fusedopt.radam: variant must be one of \('torch', 'official'\)"):
        RULES["radam"].pack_flags(dict(decoupled_weight_decay=False, degenerated_to_sgd=False), dict(variant="x"))
    # the packed bits reach the kernel where it reads them: adam with the decoupled flag and amsgrad is adamw's
    outs = []
    for op, flags in (("adam", r.pack_flags(dict(decoupled_weight_decay=True), dict(amsgrad=True))),
                      ("adamw", RULES["adamw"].pack_flags({}, dict(amsgrad=True)))):
        p, g = torch.linspace(-1, 1, 9), torch.linspace(0.5, -0.5, 9)
        st = [[torch.zeros(9)] for _ in range(3)]
        getattr(torch.ops.fusedopt, f"{op}_")([p], [g], *st, [torch.zeros(())], [], lr=0.1, flags=flags,
                                            hyper=r.pack_hyper(dict(r.hyper_defaults, weight_decay=0.5)))
        outs.append(p)
    assert torch.equal(*outs) and not torch.equal(outs[0], torch.linspace(-1, 1, 9))


@pytest.mark.parametrize("call,match", [
    (lambda F, L: F.adam(*L, amsgrad=True), "amsgrad=True needs one max_exp_avg_sq per param"),
    (lambda F, L: F.padam(*L, amsgrad=True), "amsgrad=True needs one max_exp_avg_sq per param"),
    (lambda F, L: F.sgd(L[0], L[1], [], L[5], momentum=0.9), "momentum=0.9 needs one momentum_buffer per param"),
    (lambda F, L: F.rmsprop(L[0], L[1], L[2], [], [], L[5], centered=True), "centered=True needs one grad_avg"),
    (lambda F, L: F.sgd(L[0], L[1], L[2], L[5], momentum=0.9, nesterov=True, dampening=0.5), "Nesterov"),
    (lambda F, L: F.padam(*L, partial=2.0), "invalid partial"),
])
def test_functional_names_the_missing_list_or_bad_setting(call, match):
    ps, gs, ms, vs, steps = _functional_lists()
    with pytest.raises(ValueError, match=match):
        call(fusedopt.functional, [ps, gs, ms, vs, [], steps])
    assert all(s.item() == 0 for s in steps)
