"""CUDA engine: fusedopt on CUDA vs torch.optim on CUDA (for-loop), vs fusedopt on the CPU, and the
CUDA-specific contracts (found_inf skip, device lr, state_dict across devices, CUDA graphs,
streams, many tensors, unaligned views, tensors of more than 2^31 elements).

Skipped entirely where no CUDA device is available.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

import fusedopt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
SHAPES = [(0,), (1,), (7,), (4097,), (3, 5, 7), (70000,)]
STEPS = 10

# (fusedopt class, torch.optim class, options, state keys)
ADAM_KEYS = ["exp_avg", "exp_avg_sq"]
CASES = [
    (fusedopt.Adam, torch.optim.Adam, {}, ADAM_KEYS),
    (fusedopt.Adam, torch.optim.Adam, {"weight_decay": 0.1}, ADAM_KEYS),
    (fusedopt.Adam, torch.optim.Adam, {"amsgrad": True}, ADAM_KEYS + ["max_exp_avg_sq"]),
    (fusedopt.Adam, torch.optim.Adam, {"maximize": True}, ADAM_KEYS),
    (fusedopt.Adam, torch.optim.Adam, {"decoupled_weight_decay": True, "weight_decay": 0.1}, ADAM_KEYS),
    (fusedopt.Adam, torch.optim.Adam,
     {"amsgrad": True, "weight_decay": 0.05, "maximize": True, "betas": (0.8, 0.99), "eps": 1e-6},
     ADAM_KEYS + ["max_exp_avg_sq"]),
    (fusedopt.AdamW, torch.optim.AdamW, {}, ADAM_KEYS),
    (fusedopt.AdamW, torch.optim.AdamW, {"amsgrad": True, "weight_decay": 0.3}, ADAM_KEYS + ["max_exp_avg_sq"]),
    (fusedopt.AdamW, torch.optim.AdamW, {"maximize": True, "betas": (0.5, 0.9), "eps": 1e-4}, ADAM_KEYS),
    (fusedopt.Adamax, torch.optim.Adamax, {}, ["exp_avg", "exp_inf"]),
    (fusedopt.Adamax, torch.optim.Adamax, {"weight_decay": 0.1}, ["exp_avg", "exp_inf"]),
    (fusedopt.Adamax, torch.optim.Adamax, {"maximize": True, "betas": (0.5, 0.9), "eps": 1e-3},
     ["exp_avg", "exp_inf"]),
]


def case_id(c):
    cls, _, opts, _ = c
    return cls.__name__ + ("-" + "-".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


CASE_IDS = [case_id(c) for c in CASES]

FP32_TOL = dict(rtol=1e-5, atol=1e-6)
# one unit in the last place of the param dtype (the fp32 result rounded once more)
PARAM_TOL = {torch.float16: dict(rtol=2.0**-10, atol=1e-5), torch.bfloat16: dict(rtol=2.0**-7, atol=1e-5)}


def make_params(shapes=SHAPES, dtype=torch.float32, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]


def grads_for(shapes, step, seed=1):
    g = torch.Generator().manual_seed(seed * 100003 + step)
    return [torch.randn(s, generator=g) for s in shapes]


def set_grads(params, base):
    for p, b in zip(params, base):
        p.grad = b.to(device=p.device, dtype=p.dtype)


def lr_of(cls):
    return 2e-2 if cls is fusedopt.Adamax else 1e-2


def check_step(ours, ref, params, rparams, keys, msg, ptol=FP32_TOL):
    for i, (p, rp) in enumerate(zip(params, rparams)):
        torch.testing.assert_close(p.float(), rp.float().to(p.device), **ptol, msg=lambda m: f"{msg} param {i}\n{m}")
        so, sr = ours.state[p], ref.state[rp]
        assert float(so["step"]) == float(sr["step"]), f"{msg} step of param {i}"
        assert so["step"].device == p.device and so["step"].dtype == torch.float32
        for k in keys:
            torch.testing.assert_close(so[k], sr[k].to(so[k].device, so[k].dtype), **FP32_TOL,
                                       msg=lambda m: f"{msg} state {k} of param {i}\n{m}")


# ---- vs torch.optim (for-loop) on CUDA ---------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fp32_matches_torch_forloop(case):
    cls, tcls, opts, keys = case
    params = make_params()
    rparams = [p.clone() for p in params]
    ours = cls(params, lr=lr_of(cls), **opts)
    ref = tcls(rparams, lr=lr_of(cls), foreach=False, **opts)
    for s in range(STEPS):
        base = grads_for(SHAPES, s)
        set_grads(params, base)
        set_grads(rparams, base)
        ours.step()
        ref.step()
        check_step(ours, ref, params, rparams, keys, f"step {s}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_low_precision_params_match_torch_fp32_resynced(case, dtype):
    """fp16/bf16 params keep fp32 states and compute in fp32: each step must equal torch.optim's fp32
    step from the same (upcast) params, grads and states, rounded once to the param dtype."""
    cls, tcls, opts, keys = case
    params = make_params(dtype=dtype)
    rparams = [p.float() for p in params]
    ours = cls(params, lr=lr_of(cls), **opts)
    ref = tcls(rparams, lr=lr_of(cls), foreach=False, **opts)
    for s in range(STEPS):
        if s > 0:  # resync the oracle to our state
            for p, rp in zip(params, rparams):
                rp.copy_(p.float())
                for k in keys:
                    ref.state[rp][k].copy_(ours.state[p][k])
        base = grads_for(SHAPES, s)
        set_grads(params, base)
        for p, rp in zip(params, rparams):
            rp.grad = p.grad.float()
        ours.step()
        ref.step()
        for p in params:
            assert p.dtype == dtype and all(ours.state[p][k].dtype == torch.float32 for k in keys)
        check_step(ours, ref, params, rparams, keys, f"{dtype} step {s}", ptol=PARAM_TOL[dtype])


def test_many_tensors_match_torch_forloop():
    """2000 tensors of 4096 elements: many launches (tensor slots full) in one op call."""
    shapes = [(4096,)] * 2000
    params = make_params(shapes)
    rparams = [p.clone() for p in params]
    opts = dict(lr=1e-2, amsgrad=True, weight_decay=0.01)
    ours = fusedopt.Adam(params, **opts)
    ref = torch.optim.Adam(rparams, foreach=False, **opts)
    for s in range(3):
        base = [b.to(DEV) for b in grads_for([(2000, 4096)], s)][0].unbind(0)
        set_grads(params, base)
        set_grads(rparams, base)
        ours.step()
        ref.step()
        check_step(ours, ref, params, rparams, ADAM_KEYS + ["max_exp_avg_sq"], f"step {s}")


def test_tensor_spanning_launches_matches_torch_forloop():
    """A tensor of more than 320 chunks (blocks per launch) continues in the next launch."""
    shapes = [(5,), (320 * 65536 + 12345,), (3,), (0,), (65537,)]
    params = make_params(shapes)
    rparams = [p.clone() for p in params]
    ours = fusedopt.AdamW(params, lr=1e-2)
    ref = torch.optim.AdamW(rparams, lr=1e-2, foreach=False)
    for s in range(3):
        base = grads_for(shapes, s)
        set_grads(params, base)
        set_grads(rparams, base)
        ours.step()
        ref.step()
        check_step(ours, ref, params, rparams, ADAM_KEYS, f"step {s}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_unaligned_views(dtype):
    """Dense params (and grads) at a storage offset of one element: not 16-byte aligned."""
    shapes = [(1,), (7,), (4097,), (70000,), (8,)]
    ps = make_params(shapes, dtype=dtype)
    params, rparams = [], []
    for p in ps:
        a = torch.empty(p.numel() + 1, device=DEV, dtype=dtype)[1:].view(p.shape)
        b = torch.empty(p.numel() + 1, device=DEV, dtype=dtype)[1:].view(p.shape)
        a.copy_(p)
        b.copy_(p)
        assert a.storage_offset() == 1 and a.is_contiguous()
        params.append(a)
        rparams.append(b)
    ours = fusedopt.Adam(params, lr=1e-2, amsgrad=True)
    ref = fusedopt.Adam([p.to("cpu", copy=True) for p in ps], lr=1e-2, amsgrad=True)  # same engine, CPU
    cpu_params = ref.param_groups[0]["params"]
    for s in range(4):
        base = grads_for(shapes, s)
        for p, b in zip(params, base):
            g = torch.empty(p.numel() + 1, device=DEV, dtype=dtype)[1:].view(p.shape)
            g.copy_(b)
            p.grad = g
        set_grads(cpu_params, base)
        ours.step()
        ref.step()
        tol = FP32_TOL if dtype == torch.float32 else PARAM_TOL[dtype]
        for p, cp in zip(params, cpu_params):
            torch.testing.assert_close(p.cpu().float(), cp.float(), **tol)
            for k in ADAM_KEYS + ["max_exp_avg_sq"]:
                torch.testing.assert_close(ours.state[p][k].cpu(), ref.state[cp][k], **FP32_TOL)
    # and the aligned twin on CUDA gives the same bits (vector path == element path)
    twin = fusedopt.Adam(rparams, lr=1e-2, amsgrad=True)
    aligned = [p.clone() for p in rparams]
    atwin = fusedopt.Adam(aligned, lr=1e-2, amsgrad=True)
    for s in range(2):
        base = grads_for(shapes, s)
        set_grads(rparams, base)
        set_grads(aligned, base)
        twin.step()
        atwin.step()
    for a, b in zip(rparams, aligned):
        assert torch.equal(a, b)


# ---- vs fusedopt on the CPU (the engine whose semantics CUDA mirrors) --------------------------------------
@pytest.mark.parametrize("rounding", ["nearest", "stochastic", "kahan"])
@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16], ids=["f32states", "bf16states"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", CASES[:3] + CASES[6:8] + CASES[9:10], ids=CASE_IDS[:3] + CASE_IDS[6:8] + CASE_IDS[9:10])
def test_cuda_matches_cpu_engine(case, dtype, state_dtype, rounding):
    """Both engines compute every element in fp32 without FMA contraction: results agree to the last
    bit in practice (allowed: one ulp of the stored dtype, for scalars whose double pow differs)."""
    if rounding != "nearest" and dtype != torch.bfloat16:
        pytest.skip("stochastic / kahan rounding apply to bf16 params")
    cls, _, opts, keys = case
    params = make_params(dtype=dtype)
    cparams = [p.to("cpu", copy=True) for p in params]
    kw = dict(lr=lr_of(cls), state_dtype=state_dtype, param_rounding=rounding, **opts)
    ours, ref = cls(params, **kw), cls(cparams, **kw)
    ptol = FP32_TOL if dtype == torch.float32 else PARAM_TOL[dtype]
    stol = FP32_TOL if state_dtype is None else PARAM_TOL[torch.bfloat16]
    for s in range(5):
        base = grads_for(SHAPES, s)
        set_grads(params, base)
        set_grads(cparams, base)
        ours.step()
        ref.step()
        for p, cp in zip(params, cparams):
            torch.testing.assert_close(p.cpu().float(), cp.float(), **ptol)
            assert float(ours.state[p]["step"]) == float(ref.state[cp]["step"]) == s + 1
            for k in keys + (["param_comp"] if rounding == "kahan" else []):
                torch.testing.assert_close(ours.state[p][k].cpu().float(), ref.state[cp][k].float(), **stol)


# ---- AMP, lr, state_dict, graphs, streams -------------------------------------------------------------------
def snapshot(opt, params):
    out = []
    for p in params:
        st = {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
        out.append((p.clone(), p.grad.clone(), st))
    return out


def assert_bitwise(a, b):
    for (p1, g1, s1), (p2, g2, s2) in zip(a, b):
        assert torch.equal(p1, p2) and torch.equal(g1, g2)
        assert s1.keys() == s2.keys()
        for k in s1:
            assert torch.equal(s1[k], s2[k]), k


@pytest.mark.parametrize("cls,opts", [(fusedopt.Adam, {"amsgrad": True}), (fusedopt.AdamW, {}), (fusedopt.Adamax, {})],
                         ids=["adam-amsgrad", "adamw", "adamax"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_found_inf_skips_everything_bitwise(cls, opts, dtype):
    params = make_params(dtype=dtype)
    opt = cls(params, lr=1e-2, **opts)
    set_grads(params, grads_for(SHAPES, 0))
    opt.step()  # states exist
    set_grads(params, [g * 1024 for g in grads_for(SHAPES, 1)])
    opt.grad_scale = torch.full((), 1024.0, device=DEV)
    opt.found_inf = torch.ones((), device=DEV)
    before = snapshot(opt, params)
    opt.step()
    torch.cuda.synchronize()
    assert_bitwise(before, snapshot(opt, params))  # params, grads (still scaled), states, steps
    for p in params:
        assert float(opt.state[p]["step"]) == 1.0


def test_grad_scale_unscales_and_stores_grads():
    params = make_params()
    rparams = [p.clone() for p in params]
    ours = fusedopt.Adam(params, lr=1e-2)
    ref = torch.optim.Adam(rparams, lr=1e-2, foreach=False)
    ours.grad_scale = torch.full((), 64.0, device=DEV)
    ours.found_inf = torch.zeros((), device=DEV)
    for s in range(3):
        base = grads_for(SHAPES, s)
        set_grads(params, [b * 64 for b in base])
        set_grads(rparams, base)
        ours.step()
        ref.step()
        for p, rp in zip(params, rparams):
            torch.testing.assert_close(p.grad, rp.grad, rtol=0, atol=0)  # 64 is a power of two: exact
        check_step(ours, ref, params, rparams, ADAM_KEYS, f"step {s}")


def test_tensor_lr_on_device():
    params = make_params()
    rparams = [p.clone() for p in params]
    lr = torch.tensor(1e-2, device=DEV)
    ours = fusedopt.Adam(params, lr=lr)
    ref = torch.optim.Adam(rparams, lr=1e-2, foreach=False)
    for s in range(4):
        if s == 2:  # changed in place: read on the device at every step
            lr.fill_(3e-3)
            ref.param_groups[0]["lr"] = float(lr.cpu())
        base = grads_for(SHAPES, s)
        set_grads(params, base)
        set_grads(rparams, base)
        ours.step()
        ref.step()
        check_step(ours, ref, params, rparams, ADAM_KEYS, f"step {s}")


@pytest.mark.parametrize("first", ["cuda", "cpu"])
def test_state_dict_round_trip_across_devices(first):
    second = "cpu" if first == "cuda" else "cuda"
    params = make_params(device=first)
    opt = fusedopt.Adam(params, lr=1e-2, amsgrad=True)
    for s in range(3):
        set_grads(params, grads_for(SHAPES, s))
        opt.step()
    sd = opt.state_dict()
    moved = [p.detach().to(second).clone() for p in params]
    opt2 = fusedopt.Adam(moved, lr=1e-2, amsgrad=True)
    opt2.load_state_dict(sd)
    for p in moved:
        st = opt2.state[p]
        assert st["step"].device == p.device and st["step"].dtype == torch.float32 and float(st["step"]) == 3
        for k in ADAM_KEYS + ["max_exp_avg_sq"]:
            assert st[k].device == p.device and st[k].dtype == torch.float32
    for s in range(3, 6):
        base = grads_for(SHAPES, s)
        set_grads(params, base)
        set_grads(moved, base)
        opt.step()
        opt2.step()
        for p, q in zip(params, moved):
            torch.testing.assert_close(q.to(first), p, **FP32_TOL)
            for k in ADAM_KEYS + ["max_exp_avg_sq"]:
                torch.testing.assert_close(opt2.state[q][k].to(first), opt.state[p][k], **FP32_TOL)


def test_runs_on_the_current_stream():
    params = make_params()
    other = [p.clone() for p in params]
    a, b = fusedopt.Adam(params, lr=1e-2), fusedopt.Adam(other, lr=1e-2)
    s = torch.cuda.Stream()
    for step in range(3):
        base = grads_for(SHAPES, step)
        set_grads(params, base)
        set_grads(other, base)
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            a.step()
        torch.cuda.current_stream().wait_stream(s)
        b.step()
    torch.cuda.synchronize()
    for x, y in zip(params, other):
        assert torch.equal(x, y)


def test_large_tensor_over_2_31_elements():
    """A tensor of 2^31 + 1 fp32 elements (64-bit offsets): its last elements are updated."""
    n = 2**31 + 1
    free, _ = torch.cuda.mem_get_info()
    if free < 40e9:
        pytest.skip(f"needs ~40 GB of free GPU memory (param, grad and two states of {n} floats)")
    p = torch.zeros(n, device=DEV)
    p.grad = torch.ones(n, device=DEV)
    opt = fusedopt.Adam([p], lr=1e-3)
    opt.step()
    torch.cuda.synchronize()
    # step 1 with g = 1: m_hat = v_hat = 1, p = -lr / (1 + eps)
    expect = torch.full((4,), -1e-3 / (1 + 1e-8))
    for sl in (slice(0, 4), slice(2**31 - 3, 2**31 + 1), slice(n - 4, n)):
        torch.testing.assert_close(p[sl].cpu(), expect, rtol=1e-6, atol=0)
        torch.testing.assert_close(opt.state[p]["exp_avg"][sl].cpu(), torch.full((4,), 0.1), rtol=1e-6, atol=0)
    assert float(opt.state[p]["step"]) == 1.0


# ---- wrappers: Lookahead and IterateAveraging (fused no-grad ops, device-side counters) -----------------------
def _wrapped(kind, params, mode="pullback"):
    inner = fusedopt.SGD(params, lr=0.05, momentum=0.9, capturable=True)
    if kind == "lookahead":
        return fusedopt.Lookahead(inner, k=3, alpha=0.6, pullback_momentum=mode)
    return fusedopt.IterateAveraging(inner, start_step=2, every=2)


def _wrapper_state(w, params):
    key = "slow_param" if isinstance(w, fusedopt.Lookahead) else "param_avg"
    return [(p.detach().clone(), w.state[p][key].clone(), w.state[p]["step"].clone()) for p in params]


@pytest.mark.parametrize("kind,mode", [("lookahead", "none"), ("lookahead", "pullback"), ("lookahead", "reset"),
                                       ("average", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_wrappers_cuda_match_cpu(kind, mode, dtype):
    init = make_params(dtype=dtype, device="cpu")
    gp, cp = [p.clone().to(DEV) for p in init], [p.clone() for p in init]
    g, c = _wrapped(kind, gp, mode), _wrapped(kind, cp, mode)
    for s in range(STEPS):
        base = grads_for(SHAPES, s)
        set_grads(gp, base)
        set_grads(cp, base)
        g.step()
        c.step()
        for (p1, s1, t1), (p2, s2, t2) in zip(_wrapper_state(g, gp), _wrapper_state(c, cp)):
            assert s1.dtype == torch.float32 and t1.dtype == torch.float64 and t1.device == p1.device
            torch.testing.assert_close(p1.cpu().float(), p2.float(), **FP32_TOL)
            torch.testing.assert_close(s1.cpu(), s2, **FP32_TOL)
            assert float(t1) == float(t2) == s + 1


@pytest.mark.parametrize("kind", ["lookahead", "average"])
def test_wrappers_found_inf_on_device_skips_everything(kind):
    params = make_params()
    w = _wrapped(kind, params)
    set_grads(params, grads_for(SHAPES, 0))
    w.step()
    before = _wrapper_state(w, params)
    w.found_inf, w.grad_scale = torch.ones((), device=DEV), torch.ones((), device=DEV)
    set_grads(params, grads_for(SHAPES, 1))
    w.step()  # step 2 would sync / collect
    for (p1, s1, t1), (p2, s2, t2) in zip(before, _wrapper_state(w, params)):
        assert torch.equal(p1, p2) and torch.equal(s1, s2) and torch.equal(t1, t2)


@pytest.mark.parametrize("kind", ["lookahead", "average"])
def test_wrappers_cuda_graph_replay_equals_eager(kind):
    """The sync / collection decision is made on the device: a captured step replays correctly across
    sync and non-sync steps."""
    shapes = [(7,), (4097,), (70000,)]
    init = make_params(shapes)
    gp, ep = [p.clone() for p in init], [p.clone() for p in init]
    gw, ew = _wrapped(kind, gp), _wrapped(kind, ep)
    static_grads = [torch.zeros_like(p) for p in gp]
    for p, g in zip(gp, static_grads):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for s in range(2):
            base = grads_for(shapes, s)
            for g, b in zip(static_grads, base):
                g.copy_(b)
            set_grads(ep, base)
            gw.step()
            ew.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gw.step()
    for s in range(2, 10):
        base = grads_for(shapes, s)
        for g, b in zip(static_grads, base):
            g.copy_(b)
        graph.replay()
        set_grads(ep, base)
        ew.step()
        torch.cuda.synchronize()
        for a, b in zip(_wrapper_state(gw, gp), _wrapper_state(ew, ep)):
            for x, y in zip(a, b):
                assert torch.equal(x, y), f"step {s}"


# ---- 8-bit states on CUDA (never run here: no GPU on the development machine) -------------------------
@pytest.mark.parametrize("n,block", [(0, 256), (1, 256), (257, 256), (70001, 256), (5000, 4096), (1000, 64)])
@pytest.mark.parametrize("signed", [True, False])
def test_q8_codec_cuda_equals_cpu(n, block, signed):
    x = torch.randn(n) * torch.logspace(-6, 2, max(n, 1))[:n]
    c_cpu, a_cpu = fusedopt.quantize_blockwise(x, block, signed)
    c_gpu, a_gpu = fusedopt.quantize_blockwise(x.cuda(), block, signed)
    assert torch.equal(c_gpu.cpu(), c_cpu) and torch.equal(a_gpu.cpu(), a_cpu)
    d = fusedopt.dequantize_blockwise(c_gpu, a_gpu, block, signed)
    assert torch.equal(d.cpu(), fusedopt.dequantize_blockwise(c_cpu, a_cpu, block, signed))


@pytest.mark.parametrize("block", [256, 1024, 4096])
@pytest.mark.parametrize("cls", [fusedopt.AdamW, fusedopt.SGD, fusedopt.Adan, fusedopt.AdaPNM, fusedopt.NAdam])
def test_q8_step_cuda_equals_cpu(cls, block):
    """The CUDA tile walk and the CPU one: same params bit for bit, same codes and absmax."""
    shapes = [(4097,), (3, 3000), (1,), (0,), (70000,)]
    g = torch.Generator().manual_seed(0)
    cpu = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    gpu = [p.detach().cuda().requires_grad_() for p in cpu]
    kw = dict(momentum=0.9) if cls is fusedopt.SGD else {}
    oc = cls(cpu, lr=1e-2, state_bits=8, min_8bit_size=0, block_size=block, **kw)
    og = cls(gpu, lr=1e-2, state_bits=8, min_8bit_size=0, block_size=block, **kw)
    for t in range(5):
        for p, q in zip(cpu, gpu):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.cuda()
        oc.step()
        og.step()
    for p, q in zip(cpu, gpu):
        assert torch.equal(q.detach().cpu(), p.detach())
        for k, v in oc.state[p].items():
            assert torch.equal(og.state[q][k].cpu(), v), k


@pytest.mark.parametrize("opts", [{"max_grad_norm": 0.0}, {"adam_w_mode": False, "max_grad_norm": 1.0},
                                  {"use_nvlamb": True, "weight_decay": 0.0, "max_grad_norm": 5.0}],
                         ids=["noclip", "l2-clip", "nvlamb-clip"])
def test_q8_lamb_cuda_matches_cpu_and_pass1_reads_only(opts):
    """8-bit LAMB on CUDA (q8_kernel.cuh with per-tensor outputs) against the CPU tile walk. The per-tensor
    sums are folded in another order on the device, so params agree to rounding, not bit for bit; without
    clipping and with adam_w_mode, m and v do not depend on the sums or on p: codes and absmax stay equal bit
    for bit. The reduce_hook, called between the passes, sees pass 1 leave every code and absmax as it was."""
    shapes = [(4097,), (3, 3000), (1,), (0,), (70000,), (65536 + 300,)]
    g = torch.Generator().manual_seed(0)
    cpu = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    gpu = [p.detach().cuda().requires_grad_() for p in cpu]
    oc = fusedopt.LAMB(cpu, lr=1e-2, state_bits=8, min_8bit_size=0, **opts)
    og = fusedopt.LAMB(gpu, lr=1e-2, state_bits=8, min_8bit_size=0, **opts)
    sums = {}
    for name, o, ps in (("cpu", oc, cpu), ("gpu", og, gpu)):
        def hook(kind, t, o=o, ps=ps, name=name):
            if kind == "tensor_sums":
                sums[name] = t.detach().cpu().clone()
                # the states pass 1 found (none before the first step: pass 1 creates nothing either)
                before = sums[name + "_before"]
                sums[name + "_untouched"] = all(torch.equal(o.state[p][k], before[i][k])
                                                for i, p in enumerate(ps) for k in before[i] if k != "step")
        o.reduce_hook = hook
    exact = opts.get("max_grad_norm") == 0.0 and opts.get("adam_w_mode", True)
    for t in range(6):
        for p, q in zip(cpu, gpu):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.cuda()
        for name, o, ps in (("cpu", oc, cpu), ("gpu", og, gpu)):
            sums[name + "_before"] = [{k: v.clone() for k, v in o.state[p].items()} for p in ps]
        oc.step()
        og.step()
        assert sums["cpu_untouched"] and sums["gpu_untouched"], t
        assert t == 0 or all(sums["gpu_before"]), "from step 2 on, pass 1 must have found states to leave alone"
        torch.testing.assert_close(sums["gpu"], sums["cpu"], rtol=1e-6, atol=0)
        for p, q in zip(cpu, gpu):
            assert og.state[q]["exp_avg"].dtype == torch.uint8
            torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=1e-5, atol=1e-6)
            if exact:
                for k, v in oc.state[p].items():
                    assert torch.equal(og.state[q][k].cpu(), v), (t, k)


def test_q8_state_dict_cpu_to_cuda_byte_exact():
    p = torch.randn(5000, requires_grad=True)
    opt = fusedopt.AdamW8bit([p])
    p.grad = torch.randn_like(p)
    opt.step()
    q = p.detach().cuda().requires_grad_()
    o2 = fusedopt.AdamW8bit([q])
    o2.load_state_dict(opt.state_dict())
    for k, v in opt.state[p].items():
        assert torch.equal(o2.state[q][k].cpu(), v), k


# ---- reduction engine and cross-tensor rules on CUDA (never run here: no GPU where written) ---------------
RED_SHAPES = [(0,), (1,), (7,), (33, 5), (2, 3, 4, 5), (70001,), (300, 700)]


def _red_tensors(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in RED_SHAPES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("ord", [2.0, 1.0, 3.0, float("inf"), 0.0])
def test_reduce_cuda_matches_float64_and_is_deterministic(dtype, ord):
    ts = _red_tensors(dtype)
    dts = [t.to(DEV) for t in ts]
    nonempty = [t for t in dts if t.numel()]
    per, total = torch.ops.fusedopt.multi_tensor_norm(nonempty, ord)
    assert per.device.type == "cuda" and per.dtype == torch.float32
    ref = torch.stack([torch.linalg.vector_norm(t.double(), ord) for t in ts if t.numel()])
    tot = ref.ne(0).sum().double() if ord == 0 else torch.linalg.vector_norm(ref, ord)
    torch.testing.assert_close(per.cpu().double(), ref, rtol=2e-7, atol=0)
    torch.testing.assert_close(total.cpu().double(), tot, rtol=2e-7, atol=0)
    per2, total2 = torch.ops.fusedopt.multi_tensor_norm(nonempty, ord)
    assert torch.equal(per.view(torch.int32), per2.view(torch.int32))
    assert torch.equal(total.view(torch.int32), total2.view(torch.int32))


def test_row_col_sums_cuda_match_cpu():
    ts = [t for t in _red_tensors() if t.dim() >= 2]
    rc, cc = torch.ops.fusedopt.row_col_sums([t.to(DEV) for t in ts], add=1e-30)
    for t, r, c in zip(ts, rc, cc):
        u = t.double() ** 2 + 1e-30
        torch.testing.assert_close(r.cpu().double(), u.sum(-1), rtol=2e-7, atol=0)
        torch.testing.assert_close(c.cpu().double(), u.sum(-2), rtol=2e-7, atol=0)


def test_clip_grad_norm_cuda_matches_torch_and_no_sync():
    ps = [torch.nn.Parameter(t.to(DEV)) for t in _red_tensors()[1:]]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    for p, q in zip(ps, qs):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside raises
    try:
        ours = fusedopt.clip_grad_norm_(ps, 0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    theirs = torch.nn.utils.clip_grad_norm_(qs, 0.5)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=0)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-5, atol=1e-30)


@pytest.mark.parametrize("cls,opts", [(fusedopt.LAMB, {}), (fusedopt.LAMB, {"adam_w_mode": False, "max_grad_norm": 5.0}),
                                      (fusedopt.LARS, {"weight_decay": 0.01}), (fusedopt.Adan, {"max_grad_norm": 1.0})],
                         ids=["lamb", "lamb-l2", "lars", "adan-clip"])
def test_cross_tensor_rules_cuda_match_cpu(cls, opts):
    ps = [torch.randn(s, generator=torch.Generator().manual_seed(i)).requires_grad_() for i, s in enumerate(RED_SHAPES)]
    qs = [p.detach().to(DEV).requires_grad_() for p in ps]
    a, b = cls(ps, lr=1e-2, **opts), cls(qs, lr=1e-2, **opts)
    for t in range(1, STEPS + 1):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * t + p.numel()))
            q.grad = p.grad.to(DEV)
        a.step()
        b.step()
        for p, q in zip(ps, qs):
            torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=2e-5, atol=2e-6)


def test_lamb_cuda_graph_capturable():
    ps = [torch.randn(s, device=DEV).requires_grad_() for s in [(64, 32), (32,)]]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = fusedopt.LAMB(ps, lr=torch.tensor(1e-2, device=DEV))
    opt.step()  # state
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        opt.step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        opt.step()
    before = [p.detach().clone() for p in ps]
    g.replay()
    assert any(not torch.equal(p, b) for p, b in zip(ps, before))


@pytest.mark.parametrize("cls", [fusedopt.VanillaKOALA, fusedopt.MomentumKOALA], ids=["koala-v", "koala-m"])
def test_koala_cuda_matches_cpu_without_host_sync(cls):
    """KOALA on CUDA vs on the CPU (params, states, P, R, qw); the iterations run with torch's sync
    debug mode set to error, a GradScaler-style found_inf on the device skips the update."""
    ps = [torch.randn(s, generator=torch.Generator().manual_seed(i)).requires_grad_() for i, s in enumerate(RED_SHAPES)]
    qs = [p.detach().to(DEV).requires_grad_() for p in ps]
    a = cls(ps, weight_decay=5e-4, lr=torch.tensor(0.5))
    b = cls(qs, weight_decay=5e-4, lr=torch.tensor(0.5, device=DEV))
    for t in range(1, STEPS + 1):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * t + p.numel())) * 0.1
            q.grad = p.grad.to(DEV)
        L, S = torch.tensor(1.0 / t), torch.tensor(1.5 / t)
        Ld, Sd = L.to(DEV), S.to(DEV)
        b.found_inf = torch.full((), float(t == 4), device=DEV)
        a.predict()
        if t != 4:
            a.step(loss=L, loss_sq_mean=S)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            b.predict()
            b.step(loss=Ld, loss_sq_mean=Sd)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for p, q in zip(ps, qs):
            torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=2e-5, atol=2e-6)
            for k in a.state[p]:
                torch.testing.assert_close(b.state[q][k].cpu(), a.state[p][k], rtol=2e-5, atol=2e-6)
        for k in a.state["koala"]:
            torch.testing.assert_close(b.state["koala"][k].cpu(), a.state["koala"][k], rtol=1e-5, atol=1e-9)


# ---- Adafactor (csrc/cuda/adafactor.cu) ------------------------------------------------------------
AF_SHAPES = [(), (0,), (1,), (7,), (5, 0), (1, 70), (64, 33), (300, 257), (3, 17, 9), (2, 3, 4, 5), (70000,),
             (2, 600, 130)]
AF_CASES = [
    (fusedopt.Adafactor, {}),
    (fusedopt.Adafactor, {"warmup_init": True, "weight_decay": 0.01}),
    (fusedopt.Adafactor, {"lr": 1e-2, "relative_step": False, "scale_parameter": False, "beta1": 0.9,
                          "weight_decay": 0.01, "clip_threshold": 0.5}),
    (fusedopt.Adafactor, {"lr": 1e-2, "relative_step": False, "maximize": True}),
    (fusedopt.AdafactorTorch, {}),
    # d is torch.optim.Adafactor's clipping threshold, which it requires to be >= 1 (so does AdafactorTorch)
    (fusedopt.AdafactorTorch, {"weight_decay": 0.1, "d": 1.25, "maximize": True}),
]
AF_IDS = ["hf-default", "hf-warmup-wd", "hf-lr-beta1-clip", "hf-maximize", "torch-default", "torch-wd-d-max"]


def _af_params(dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype).requires_grad_() for s in AF_SHAPES]


def _af_grads(t, dtype):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(s, generator=g).to(dtype) for s in AF_SHAPES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cls,opts", AF_CASES, ids=AF_IDS)
def test_adafactor_cuda_matches_cpu_without_host_sync(cls, opts, dtype):
    """Adafactor / AdafactorTorch on CUDA vs the CPU kernel (params, every state, step, RMS) over 10
    steps on 0-D to 4-D, empty, single-row and multi-piece params. The CUDA steps run with torch's
    sync debug mode set to error; step 4 carries found_inf = 1 on the device and must change nothing."""
    ps, qs = _af_params(dtype, "cpu"), _af_params(dtype, DEV)
    a, b = cls(ps, **opts), cls(qs, **opts)
    tol = FP32_TOL if dtype == torch.float32 else PARAM_TOL[dtype]
    for t in range(1, STEPS + 1):
        for p, q, g in zip(ps, qs, _af_grads(t, dtype)):
            p.grad, q.grad = g, g.to(DEV)
        before = [q.detach().clone() for q in qs]
        b.found_inf = torch.full((), float(t == 4), device=DEV)
        if t != 4:
            a.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            b.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if t == 4:
            assert all(torch.equal(q, x) for q, x in zip(qs, before))
        for p, q in zip(ps, qs):
            torch.testing.assert_close(q.detach().cpu(), p.detach(), **tol)
            assert set(b.state[q]) == set(a.state[p])
            for k, v in a.state[p].items():
                w = b.state[q][k]
                assert w.device.type == "cuda" and w.dtype == v.dtype, k
                torch.testing.assert_close(w.cpu(), v, rtol=2e-5, atol=1e-30, equal_nan=True, msg=k)


def test_adafactor_cuda_is_deterministic_and_graph_capturable():
    """Two runs from the same start are bitwise equal; a captured step replays like an eager one."""
    def run():
        qs = _af_params(torch.float32, DEV)
        opt = fusedopt.Adafactor(qs, beta1=0.9)
        for t in range(1, 4):
            for q, g in zip(qs, _af_grads(t, torch.float32)):
                q.grad = g.to(DEV)
            opt.step()
        return qs, opt
    q1, o1 = run()
    q2, o2 = run()
    for a_, b_ in zip(q1, q2):
        assert torch.equal(a_, b_)
        for k in o1.state[a_]:
            assert torch.equal(o1.state[a_][k].nan_to_num(), o2.state[b_][k].nan_to_num()), k
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        o2.step()  # warm-up on a side stream, as torch's graph docs ask
    torch.cuda.current_stream().wait_stream(s)
    o1.step()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        o2.step()
    g.replay()  # q2 now had 5 steps, q1 4: one more eager step of q1 must equal the replay
    o1.step()
    for a_, b_ in zip(q1, q2):
        assert torch.equal(a_, b_)


def test_adafactor_cuda_refuses_float64():
    q = torch.zeros(4, 4, device=DEV, dtype=torch.float64, requires_grad=True)
    q.grad = torch.ones_like(q)
    with pytest.raises(RuntimeError, match="float64"):
        fusedopt.Adafactor([q]).step()


# ---- every optimizer class on CUDA vs the CPU engine: 3,000 tensors, fp32/bf16 params, every storage ----
from .helpers import check_compiled_step  # noqa: E402
from .specs import SPECS  # noqa: E402

N_MANY = 3000
_CYCLE = [(1,), (3,), (64,), (257,), (32, 33), (4097,), (5, 0), (2, 3, 7)]


def _many_shapes():
    shapes = [_CYCLE[i % len(_CYCLE)] for i in range(N_MANY)]
    shapes[10] = (70000,)          # several chunks
    shapes[1500] = (2, 65536 + 7)  # several chunks, 2-D
    return shapes


MANY_SHAPES = _many_shapes()
STORAGES = {"32bit": {}, "bf16": {"state_dtype": torch.bfloat16}, "8bit": {"state_bits": 8, "min_8bit_size": 0}}
CROSS_TENSOR = {"lamb", "lars"}  # per-tensor norms are summed in another order on the device


def _spec_opts(spec):
    # the rule's defaults, with what a class needs to take a step (Adan's clipping is cross-tensor too)
    return {"momentum": 0.9} if spec.name == "sgd" else {}


def _flat(ts):
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in ts]) if ts else torch.zeros(0)


def _grads_many(step, dtype):
    g = torch.Generator().manual_seed(7 + step)
    flat = torch.randn(sum(math.prod(s) for s in MANY_SHAPES), generator=g)
    out, o = [], 0
    for s in MANY_SHAPES:
        n = math.prod(s)
        out.append(flat[o:o + n].view(s).to(dtype))
        o += n
    return out


def _compare_states(ours, ref, ps, cps, storage, dtype, tol, msg):
    keys = sorted({k for p in ps for k in ours.state[p]})
    for k in keys:
        a = [ours.state[p][k] for p in ps if k in ours.state[p]]
        b = [ref.state[c][k] for c in cps if k in ref.state[c]]
        assert len(a) == len(b), f"{msg}: state {k} exists for {len(a)} CUDA params, {len(b)} CPU params"
        if not a or not torch.is_tensor(a[0]):
            continue
        assert all(x.device.type == "cuda" for x in a), f"{msg}: state {k} is not on the GPU"
        assert {x.dtype for x in a} == {y.dtype for y in b}, f"{msg}: state {k} dtypes differ"
        fa, fb = _flat(a), _flat(b)
        if a[0].dtype == torch.uint8:  # 8-bit codes: a 1-ulp difference of an input may move a code by one
            d = (fa - fb).abs()
            assert d.max() <= 1 and (d > 0).float().mean() <= 1e-3, f"{msg}: 8-bit codes of {k} differ"
        else:
            stol = tol if a[0].dtype == torch.float32 else PARAM_TOL[torch.bfloat16]
            # equal_nan: Adafactor's RMS of an empty tensor is 0/0 on both engines (transformers' too)
            torch.testing.assert_close(fa, fb, **stol, equal_nan=True, msg=lambda m: f"{msg}: state {k}\n{m}")


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_class_cuda_matches_cpu_engine_3000_tensors(spec, dtype, storage):
    """Every per-element / cross-tensor class, 3,000 tensors (empty, 1-element, multi-chunk, 2-D and 3-D)
    in one bucket, 3 steps: CUDA params and every state tensor against the CPU engine's."""
    opts = dict(_spec_opts(spec), **STORAGES[storage])
    init = make_params(MANY_SHAPES, dtype=dtype, device="cpu", seed=3)
    ps = [p.to(DEV).requires_grad_() for p in init]
    cps = [p.clone().requires_grad_() for p in init]
    try:
        ours = spec.ours(ps, lr=spec.lr, **opts)
    except ValueError as e:
        pytest.skip(f"{spec.name} does not take {storage} states: {e}")
    ref = spec.ours(cps, lr=spec.lr, **opts)
    exact = spec.name not in CROSS_TENSOR
    tol = FP32_TOL if exact else dict(rtol=2e-5, atol=2e-6)
    ptol = tol if dtype == torch.float32 else PARAM_TOL[dtype]
    for s in range(3):
        for p, c, g in zip(ps, cps, _grads_many(s, dtype)):
            p.grad, c.grad = g.to(DEV), g.clone()
        ours.step()
        ref.step()
    msg = f"{spec.name} {dtype} {storage}"
    torch.testing.assert_close(_flat(ps), _flat(cps), **ptol, msg=lambda m: f"{msg}: params\n{m}")
    _compare_states(ours, ref, ps, cps, storage, dtype, tol, msg)
    if storage == "8bit":
        assert any(ours.state[p].get(k, torch.zeros(0)).dtype == torch.uint8
                   for p in ps for k in ours.state[p]), f"{msg}: no 8-bit state was made"
    steps = {float(ours.state[p]["step"]) for p in ps}
    assert steps == {3.0}, f"{msg}: steps {steps}"


def _koala_run(cls, ps, dev, steps=3):
    opt = cls(ps, weight_decay=5e-4, lr=torch.tensor(0.5, device=dev))
    for t in range(steps):
        for p, g in zip(ps, _grads_many(t, ps[0].dtype)):
            p.grad = g.to(dev)
        opt.predict()
        opt.step(loss=torch.tensor(1.0 / (t + 1), device=dev), loss_sq_mean=torch.tensor(1.5 / (t + 1), device=dev))
    return opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["adafactor", "adafactor-torch", "koala-v", "koala-m", "lookahead-adam",
                                  "iterate-avg-sgd", "gadam", "gadamx"])
def test_other_classes_cuda_match_cpu_3000_tensors(kind, dtype):
    """The classes outside the rule specs: Adafactor (both semantics), KOALA, and the wrappers, with the
    same 3,000 tensors on CUDA and on the CPU."""
    init = make_params(MANY_SHAPES, dtype=dtype, device="cpu", seed=4)
    ps = [p.to(DEV).requires_grad_() for p in init]
    cps = [p.clone().requires_grad_() for p in init]
    make = {
        "adafactor": lambda q: fusedopt.Adafactor(q),
        "adafactor-torch": lambda q: fusedopt.AdafactorTorch(q),
        "lookahead-adam": lambda q: fusedopt.Lookahead(fusedopt.Adam(q, lr=1e-2), k=2, alpha=0.5),
        "iterate-avg-sgd": lambda q: fusedopt.IterateAveraging(fusedopt.SGD(q, lr=1e-2, momentum=0.9), start_step=1,
                                                               every=1),
        "gadam": lambda q: fusedopt.Gadam(q, lr=1e-2, start_step=1, every=1),
        "gadamx": lambda q: fusedopt.GadamX(q, lr=1e-2, start_step=1, every=1),
    }
    if kind.startswith("koala"):
        cls = fusedopt.VanillaKOALA if kind == "koala-v" else fusedopt.MomentumKOALA
        ours, ref = _koala_run(cls, ps, DEV), _koala_run(cls, cps, "cpu")
    else:
        ours, ref = make[kind](ps), make[kind](cps)
        for s in range(3):
            for p, c, g in zip(ps, cps, _grads_many(s, dtype)):
                p.grad, c.grad = g.to(DEV), g.clone()
            ours.step()
            ref.step()
    tol = dict(rtol=2e-5, atol=2e-6)  # Adafactor's and KOALA's sums fold in another order on the device
    ptol = tol if dtype == torch.float32 else PARAM_TOL[dtype]
    torch.testing.assert_close(_flat(ps), _flat(cps), **ptol, msg=lambda m: f"{kind} {dtype}: params\n{m}")
    state_of = (lambda o: o) if not hasattr(ours, "optimizer") else (lambda o: o.optimizer)
    _compare_states(state_of(ours), state_of(ref), ps, cps, "32bit", dtype, tol, kind)
    if hasattr(ours, "optimizer"):  # the wrapper's own state (slow weights / averages)
        _compare_states(ours, ref, ps, cps, "32bit", dtype, tol, kind + " wrapper")


# ---- CUDA graphs and torch.compile for every class ------------------------------------------------------
def _capturable_makers():
    out = [(s.name, (lambda q, s=s: s.ours(q, lr=s.lr, capturable=True, **_spec_opts(s)))) for s in SPECS]
    out += [(s.name + "-8bit", (lambda q, s=s: s.ours(q, lr=s.lr, capturable=True, state_bits=8, min_8bit_size=0,
                                                       **_spec_opts(s))))
            for s in SPECS if s.name in ("adamw", "lamb", "lion", "adan")]
    out += [("adam-amsgrad-tensor-lr", lambda q: fusedopt.Adam(q, lr=torch.tensor(1e-2, device=DEV), amsgrad=True,
                                                               weight_decay=0.01, capturable=True)),
            ("adafactor", lambda q: fusedopt.Adafactor(q, beta1=0.9)), ("adafactor-torch", fusedopt.AdafactorTorch),
            ("lookahead", lambda q: fusedopt.Lookahead(fusedopt.AdamW(q, lr=1e-2, capturable=True), k=2)),
            ("gadam", lambda q: fusedopt.Gadam(q, lr=1e-2, start_step=1, every=2, capturable=True))]
    return out


CAPTURABLE = _capturable_makers()


@pytest.mark.parametrize("name,make", CAPTURABLE, ids=[n for n, _ in CAPTURABLE])
def test_every_capturable_class_graph_replay_equals_eager(name, make):
    """A step captured in a CUDA graph and replayed equals an eager step, bit for bit, params and every state,
    over several steps (step counters, bias corrections and wrapper decisions are read on the device)."""
    shapes = [(7,), (4097,), (33, 65), (70000,), (0,)]
    init = make_params(shapes, seed=5)
    gp, ep = [p.clone().requires_grad_() for p in init], [p.clone().requires_grad_() for p in init]
    gopt, eopt = make(gp), make(ep)
    static = [torch.zeros_like(p) for p in gp]
    for p, g in zip(gp, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: lazy state and cached plans, as torch's graph docs ask
        for s in range(2):
            for g, b in zip(static, grads_for(shapes, s)):
                g.copy_(b)
            set_grads(ep, grads_for(shapes, s))
            gopt.step()
            eopt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gopt.step()
    for s in range(2, 6):
        for g, b in zip(static, grads_for(shapes, s)):
            g.copy_(b)
        graph.replay()
        set_grads(ep, grads_for(shapes, s))
        eopt.step()
        torch.cuda.synchronize()
        for a, b in zip(gp, ep):
            assert torch.equal(a, b), f"{name}: params differ at step {s}"
        go = gopt.optimizer if hasattr(gopt, "optimizer") else gopt
        eo = eopt.optimizer if hasattr(eopt, "optimizer") else eopt
        for a, b in zip(gp, ep):
            for k, v in go.state[a].items():
                if torch.is_tensor(v):
                    assert torch.equal(v.nan_to_num(), eo.state[b][k].nan_to_num()), f"{name}: {k} at step {s}"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_compiled_step_on_cuda_fullgraph(spec):
    """torch.compile(fullgraph=True) of opt.step() on CUDA (aot_eager; inductor for AdamW): one graph, a tensor
    lr changed in place does not recompile, and the compiled steps equal eager ones bit for bit."""
    check_compiled_step(spec, DEV, "inductor" if spec.name == "adamw" else "aot_eager", steps=4,
                        opts=_spec_opts(spec))
