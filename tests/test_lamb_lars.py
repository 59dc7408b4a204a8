"""LAMB, LARS and Adan's max_grad_norm: the parts the per-tensor generic suites (specs.py) cannot
cover: global grad-norm clipping over all params (float64 references computed over the whole list,
pytorch_optimizer oracles), 1-D..4-D / empty / single-element / zero-norm tensors over >= 10 steps,
exclude_fn, the multi-pass wiring and the distributed reduce_hook."""
from __future__ import annotations

import math

import pytest
import pytorch_optimizer as po
import torch

import fusedopt

from . import reference as ref
from .helpers import assert_close, clone_params, set_grads
from .specs import _LambOracle

STEPS = 12
SHAPES = [(0,), (1,), (7,), (33, 5), (3, 5, 7), (2, 3, 4, 5), (4097,), (70000,)]


def _params(shapes=SHAPES, dtype=torch.float32, seed=0, zero=()):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]
    with torch.no_grad():
        for i in zero:
            ps[i].zero_()
    return ps


def _grads(ps, t, zero=(), scale=1.0):
    set_grads([ps], t, scale=scale)
    for i in zero:
        ps[i].grad.zero_()


def _global_norm(grads64):
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads64))


# ---- LAMB with global clipping: float64 reference over the whole list ----------------------------------
@pytest.mark.parametrize("opts", [
    {}, {"adam_w_mode": False}, {"max_grad_norm": 50.0}, {"max_grad_norm": 1e9},
    {"weight_decay": 0.0, "use_nvlamb": True, "bias_correction": False, "grad_averaging": False},
    {"maximize": True, "max_grad_norm": 5.0},
])
def test_lamb_global_clip_matches_float64_reference(opts):
    ps = _params(zero=(2,))  # a zero param: ratio lr
    ours = fusedopt.LAMB(ps, lr=1e-2, **opts)
    ref_ps = [p.detach().double().clone() for p in ps]
    st = [{"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)} for p in ref_ps]
    hyper = dict(betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_grad_norm=1.0)
    hyper.update(opts)
    for t in range(1, STEPS + 1):
        _grads(ps, t, zero=(3,) if t % 3 == 0 else ())  # a zero grad now and then
        g64 = [p.grad.double() for p in ps]
        gn = _global_norm(g64)
        for p, g, s in zip(ref_ps, g64, st):
            ref.lamb(p, g, s, t, lr=1e-2, global_norm=gn, **hyper)
        ours.step()
        for i, (p, rp) in enumerate(zip(ps, ref_ps)):
            assert_close(p.detach().double(), rp, msg=f"step {t} param {i}", rtol=2e-5, atol=2e-6)
            for k in ("exp_avg", "exp_avg_sq"):
                assert_close(ours.state[p][k].double(), st[i][k], msg=f"step {t} {k} {i}", rtol=2e-5, atol=2e-7)
            assert ours.state[p]["step"].item() == t


@pytest.mark.parametrize("opts", [
    {"max_grad_norm": 1.0}, {"max_grad_norm": 30.0, "weight_decay": 0.1, "maximize": True},
    {"max_grad_norm": 0.0, "use_nvlamb": True, "weight_decay": 0.0},
])
def test_lamb_matches_pytorch_optimizer_with_clipping(opts):
    """Mapping (see specs._lamb_oracle_opts): eps=0, bias_correction=False, adam_w_mode (kozistr
    weight_decouple=False), adam_debias=True, pre_norm=True for max_grad_norm > 0, clamp of ||p|| removed."""
    ps = _params(shapes=SHAPES[1:])
    qs = clone_params(ps)
    ours = fusedopt.LAMB(ps, lr=1e-2, eps=0.0, bias_correction=False, **opts)
    mgn = opts["max_grad_norm"]
    theirs = _LambOracle(qs, lr=1e-2, eps=0.0, weight_decouple=False, weight_decay=opts.get("weight_decay", 0.01),
                         max_grad_norm=mgn, pre_norm=mgn > 0, maximize=opts.get("maximize", False), adam_debias=True)
    for t in range(1, STEPS + 1):
        set_grads([ps, qs], t)
        ours.step()
        theirs.step()
        for i, (p, q) in enumerate(zip(ps, qs)):
            assert_close(p, q, msg=f"step {t} param {i}", rtol=1e-5, atol=1e-6)
            for k in ("exp_avg", "exp_avg_sq"):
                assert_close(ours.state[p][k], theirs.state[q][k], msg=f"step {t} {k} {i}", rtol=1e-5, atol=1e-7)


def test_lamb_reads_the_global_norm_of_all_groups():
    """The global norm spans every group (apex): a second group's grads change the first group's clip."""
    a = _params(shapes=[(5, 5)], seed=1)
    b = _params(shapes=[(7,)], seed=2)
    a2 = clone_params(a)
    opt = fusedopt.LAMB([{"params": a}, {"params": b}], lr=1e-2)
    alone = fusedopt.LAMB(a2, lr=1e-2)
    a[0].grad = torch.ones(5, 5)
    a2[0].grad = torch.ones(5, 5)
    b[0].grad = torch.full((7,), 100.0)
    opt.step()
    alone.step()
    clip_all = _global_norm([a[0].grad.double(), b[0].grad.double()])
    clip_alone = 5.0
    m_all = opt.state[a[0]]["exp_avg"][0, 0].item()
    m_alone = alone.state[a2[0]]["exp_avg"][0, 0].item()
    assert math.isclose(m_all, 0.1 / clip_all, rel_tol=1e-6) and math.isclose(m_alone, 0.1 / clip_alone, rel_tol=1e-6)


def test_lamb_reduce_hook_sees_every_reduction_and_can_rewrite_it():
    """The distributed hook: called with the global sum of squares and the per-tensor sums between
    the passes; an in-place change (as an all-reduce would make) reaches the element-wise pass."""
    ps = _params(shapes=[(4, 4), (3,)])
    qs = clone_params(ps)
    seen = []
    opt = fusedopt.LAMB(ps, lr=1e-2, max_grad_norm=1.0)

    def hook(kind, t):
        seen.append((kind, tuple(t.shape)))
        if kind == "global_sumsq":
            t.mul_(4.0)  # as if another rank held the same grads again... and again
    opt.reduce_hook = hook
    plain = fusedopt.LAMB(qs, lr=1e-2, max_grad_norm=1.0)
    set_grads([ps, qs], 1)
    opt.step()
    plain.step()
    assert seen == [("global_sumsq", ()), ("tensor_sums", (2, 2))]
    # the hooked norm is twice the true one (G > max_grad_norm here): the clipped grad, so m, is halved
    for p, q in zip(ps, qs):
        assert_close(opt.state[p]["exp_avg"] * 2, plain.state[q]["exp_avg"], rtol=1e-6, atol=0)


def test_lamb_grad_untouched_and_amsgrad_refused():
    ps = _params(shapes=[(6, 3)])
    ps[0].grad = torch.randn(6, 3)
    g0 = ps[0].grad.clone()
    fusedopt.LAMB(ps).step()
    assert torch.equal(ps[0].grad, g0)  # u is not written into the grad (apex does)
    with pytest.raises(RuntimeError, match="AMSGrad"):
        fusedopt.LAMB(ps, amsgrad=True)


def test_lamb_op_needs_its_reduced_buffers():
    p = torch.randn(4)
    g = torch.randn(4)
    m, v = torch.zeros(4), torch.zeros(4)
    step = torch.zeros(())
    with pytest.raises(RuntimeError, match="tensor_out .* is required"):
        torch.ops.fusedopt.lamb1_([p], [g], [m], [v], [step], [], hyper=[0.9, 0.999, 1e-6, 0.0, 0.0], lr=1e-3)
    with pytest.raises(RuntimeError, match="tensor_in has 2 elements, expected 4"):
        torch.ops.fusedopt.lamb2_([p, p], [g, g], [m, m], [v, v], [step, step], [], hyper=[0.9, 0.999, 1e-6, 0.0, 0.0],
                                  lr=1e-3, tensor_in=torch.ones(2))
    with pytest.raises(RuntimeError, match="global_in must be a contiguous float32"):
        torch.ops.fusedopt.lamb1_([p], [g], [m], [v], [step], [], hyper=[0.9, 0.999, 1e-6, 0.0, 1.0], lr=1e-3,
                                  global_in=torch.ones(1, dtype=torch.float64), tensor_out=torch.empty(1, 2))


def test_lamb_stage1_sums_are_deterministic_across_threads():
    ps = [torch.randn(300_000), torch.randn(70_001)]
    outs = []
    for threads in (1, 2, 1):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            opt = fusedopt.LAMB([p.clone().requires_grad_() for p in ps], lr=1e-2)
            captured = []
            opt.reduce_hook = lambda kind, t: captured.append(t.clone())
            for p, q in zip(opt.param_groups[0]["params"], ps):
                p.grad = q * 0.5 + 1.0
            opt.step()
            outs.append([c.view(torch.int32).tolist() for c in captured])
        finally:
            torch.set_num_threads(old)
    assert outs[0] == outs[1] == outs[2]


# ---- Adan with max_grad_norm ------------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [{"max_grad_norm": 1.0}, {"max_grad_norm": 20.0, "weight_decay": 0.02},
                                  {"max_grad_norm": 5.0, "no_prox": True, "weight_decay": 0.05}])
def test_adan_max_grad_norm_matches_pytorch_optimizer_and_reference(opts):
    ps = _params(shapes=SHAPES[1:])
    qs = clone_params(ps)
    ref_ps = [p.detach().double().clone() for p in ps]
    keys = ["exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad"]
    st = [{k: torch.zeros_like(p) for k in keys} for p in ref_ps]
    ours = fusedopt.Adan(ps, lr=1e-2, **opts)
    theirs = po.Adan(qs, lr=1e-2, weight_decay=opts.get("weight_decay", 0.0),
                     weight_decouple=opts.get("no_prox", False), max_grad_norm=opts["max_grad_norm"], foreach=False)
    for t in range(1, STEPS + 1):
        set_grads([ps, qs], t)
        g64 = [p.grad.double() for p in ps]
        clip = min(opts["max_grad_norm"] / (_global_norm(g64) + 1e-8), 1.0)
        for p, g, s in zip(ref_ps, g64, st):
            ref.adan(p, g, s, t, lr=1e-2, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=opts.get("weight_decay", 0.0),
                     no_prox=opts.get("no_prox", False), clip=clip)
        grads_before = [p.grad.clone() for p in ps]
        ours.step()
        for p, g in zip(ps, grads_before):
            assert torch.equal(p.grad, g)  # .grad is not clipped in place (the official code does)
        theirs.step()  # (it clips the shared grad tensors in place: after ours)
        for i, (p, q, rp) in enumerate(zip(ps, qs, ref_ps)):
            assert_close(p, q, msg=f"step {t} param {i} vs pytorch_optimizer", rtol=1e-5, atol=1e-6)
            assert_close(p.detach().double(), rp, msg=f"step {t} param {i} vs reference", rtol=2e-5, atol=2e-6)
            for k in keys:
                assert_close(ours.state[p][k].double(), st[i][k], msg=f"step {t} {k} {i}", rtol=2e-5, atol=2e-7)
            assert_close(ours.state[p]["exp_avg"], theirs.state[q]["exp_avg"], rtol=1e-5, atol=1e-7)


def test_adan_clip_really_applied():
    """A norm far above max_grad_norm changes the update (the clip path ran), and a norm below leaves
    it bitwise as without clipping."""
    a, b, c = _params(shapes=[(50,)]), _params(shapes=[(50,)]), _params(shapes=[(50,)])
    oa = fusedopt.Adan(a, lr=1e-2, max_grad_norm=0.5)
    ob = fusedopt.Adan(b, lr=1e-2)
    oc = fusedopt.Adan(c, lr=1e-2, max_grad_norm=1e6)
    for t in (1, 2):
        set_grads([a, b, c], t)
        for o in (oa, ob, oc):
            o.step()
    assert torch.equal(b[0], c[0])
    assert not torch.equal(a[0], b[0])
    # m = (1 - b1) (b1 clip1 g1 + clip2 g2) with ||clip g|| <= 0.5 (+ eps): bounded as clipped grads are
    assert oa.state[a[0]]["exp_avg"].norm().item() <= 0.02 * 0.5 * (1 + 0.98) * (1 + 1e-6)
    assert ob.state[b[0]]["exp_avg"].norm().item() > 0.1


# ---- LARS ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [{}, {"weight_decay": 0.01, "nesterov": True}, {"trust_clip": True},
                                  {"exclude_fn": None, "weight_decay": 0.1, "momentum": 0.0},
                                  {"exclude_fn": (lambda p: p.dim() == 3), "weight_decay": 0.05}])
def test_lars_matches_float64_reference_nd(opts):
    ps = _params(zero=(4,))  # a zero 3-D param: trust 1
    excl = opts.get("exclude_fn", lambda p: p.dim() <= 1)
    ours = fusedopt.LARS(ps, lr=0.1, trust_coefficient=0.02, **opts)
    hyper = dict(momentum=0.9, weight_decay=0.0, eps=1e-8, trust_coefficient=0.02)
    hyper.update({k: v for k, v in opts.items() if k != "exclude_fn"})
    ref_ps = [p.detach().double().clone() for p in ps]
    st = [{"momentum_buffer": torch.zeros_like(p)} for p in ref_ps]
    for t in range(1, STEPS + 1):
        _grads(ps, t, zero=(5,) if t % 4 == 0 else ())  # a zero grad now and then: trust 1
        for p, rp, s in zip(ps, ref_ps, st):
            ref.lars(rp, p.grad.double(), s, t, lr=0.1, exclude=bool(excl(p)) if excl else False, **hyper)
        ours.step()
        for i, (p, rp) in enumerate(zip(ps, ref_ps)):
            assert_close(p.detach().double(), rp, msg=f"step {t} param {i}", rtol=2e-5, atol=2e-6)
            if hyper["momentum"] > 0:
                assert_close(ours.state[p]["momentum_buffer"].double(), st[i]["momentum_buffer"],
                             msg=f"step {t} buffer {i}", rtol=2e-5, atol=2e-7)


def test_lars_grad_scale_uses_unscaled_norm():
    ps = _params(shapes=[(20, 10), (10,)])
    qs = clone_params(ps)
    a = fusedopt.LARS(ps, lr=0.1, weight_decay=0.01)
    b = fusedopt.LARS(qs, lr=0.1, weight_decay=0.01)
    for t in range(1, 4):
        set_grads([ps, qs], t)
        for p in ps:
            p.grad.mul_(1024.0)
        a.grad_scale = torch.full((), 1024.0)
        a.found_inf = torch.zeros(())
        a.step()
        b.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q)


@pytest.mark.parametrize("isa", ["scalar", "avx2"])
def test_every_cpu_isa_gives_the_same_bits_lamb_lars_reduce(isa):
    """Reductions, LAMB (stage-1 sums and stage 2; fp32 and 8-bit states) and LARS: bitwise the same on every ISA."""
    import os
    import subprocess
    import sys
    code = (
        "import torch, fusedopt;"
        "torch.manual_seed(0);"
        "ps=[torch.randn(s, requires_grad=True) for s in [(1,),(7,),(33,5),(4097,),(70001,)]];"
        "qs=[p.detach().clone().requires_grad_() for p in ps];"
        "rs=[p.detach().clone().requires_grad_() for p in ps];"
        "o=fusedopt.LAMB(ps, lr=1e-2); l=fusedopt.LARS(qs, lr=0.1, weight_decay=0.01);"
        "o8=fusedopt.LAMB(rs, lr=1e-2, state_bits=8, min_8bit_size=0);"
        "[([setattr(p,'grad',torch.randn_like(p)) for p in ps+qs+rs], o.step(), l.step(), o8.step()) for _ in range(3)];"
        "assert o8.state[rs[3]]['exp_avg'].dtype==torch.uint8;"
        "st=[v for r in rs for k,v in sorted(o8.state[r].items()) if k!='step'];"
        "r=torch.ops.fusedopt.multi_tensor_norm([p.detach() for p in ps], 3.0);"
        "rc=torch.ops.fusedopt.row_col_sums([ps[2].detach()], add=1e-3);"
        "print(fusedopt.build_info()['cpu_isa']);"
        "torch.save([p.detach() for p in ps+qs+rs]+st+list(r)+rc[0]+rc[1], __import__('sys').argv[1])"
    )
    outs = []
    for cap in (isa, "avx512"):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fo_isa_red_{cap}_{os.getpid()}.pt")
        env = dict(os.environ, FUSEDOPT_CPU_ISA=cap)
        r = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True, text=True, check=True)
        outs.append(torch.load(path))
        os.remove(path)
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)
