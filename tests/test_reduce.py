"""The reduction engine (csrc/core/reduce.h) and fusedopt.clip_grad_norm_.

References: float64 sums / norms computed here with torch in float64; torch.nn.utils.clip_grad_norm_
as the independent oracle of clip_grad_norm_ (every norm type, error_if_nonfinite, foreach)."""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt
from fusedopt.reduce import group_sumsq

from .helpers import assert_close

OPS = torch.ops.fusedopt
# empty, single element, odd sizes, multi-chunk (kChunk = 65536), 2-D .. 4-D
SHAPES = [(0,), (1,), (7,), (33,), (4097,), (3, 5, 7), (2, 3, 4, 5), (130001,), (300, 700)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _tensors(shapes=SHAPES, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * scale).to(dtype) for s in shapes]


def _bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


# ---- multi_tensor_sumsq / multi_tensor_norm against float64 ----------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_sumsq_matches_float64(dtype):
    ts = _tensors(dtype=dtype)
    per, total = OPS.multi_tensor_sumsq(ts)
    out_dt = torch.float64 if dtype == torch.float64 else torch.float32
    assert per.dtype == out_dt and total.dtype == out_dt and per.shape == (len(ts),) and total.shape == ()
    ref = torch.stack([t.double().pow(2).sum() for t in ts])
    tol = dict(rtol=1e-13, atol=0) if dtype == torch.float64 else dict(rtol=6e-8, atol=0)  # one fp32 rounding
    assert_close(per.double(), ref, **tol)
    assert_close(total.double(), ref.sum(), **tol)
    assert per[0].item() == 0.0  # empty tensor: identity


def test_sumsq_grad_scale_is_the_unscaled_fp32_grad():
    ts = _tensors(scale=1024.0)
    scale = torch.tensor(1000.0)  # not a power of two: the fp32 division rounds
    per, total = OPS.multi_tensor_sumsq(ts, grad_scale=scale)
    ref = torch.stack([(t / scale).double().pow(2).sum() for t in ts])
    assert_close(per.double(), ref, rtol=6e-8, atol=0)
    assert_close(total.double(), ref.sum(), rtol=6e-8, atol=0)


ORDS = [2.0, 1.0, 3.5, 0.5, math.inf, -math.inf, 0.0, -1.0, -2.5]


@pytest.mark.parametrize("ord", ORDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_norm_matches_torch_vector_norm(ord, dtype):
    ts = _tensors(dtype=dtype)
    ts[3][5] = 0  # a zero element (negative orders: the norm becomes 0)
    nonempty = [t for t in ts if t.numel()]
    per, total = OPS.multi_tensor_norm(nonempty, ord)
    ref = torch.stack([torch.linalg.vector_norm(t.double(), ord) for t in nonempty])
    ref_total = torch.linalg.vector_norm(ref, ord)
    tol = dict(rtol=1e-12, atol=0) if dtype == torch.float64 else dict(rtol=2e-6, atol=0)
    assert_close(per.double(), ref, **tol)
    assert_close(total.double(), ref_total, **tol)


def test_norm_zero_counts_nonzero_tensors_like_torch():
    ts = [torch.tensor([0.0, 1.0, 2.0]), torch.zeros(4), torch.tensor([3.0])]
    per, total = OPS.multi_tensor_norm(ts, 0.0)
    assert per.tolist() == [2.0, 0.0, 1.0]
    assert total.item() == 2.0  # vector_norm(ord=0) of the per-tensor norms


def test_norm_nan_propagates():
    ts = [torch.tensor([1.0, float("nan"), 2.0]), torch.ones(3)]
    for ord in (2.0, 1.0, math.inf, -math.inf, 3.0):
        per, total = OPS.multi_tensor_norm(ts, ord)
        assert math.isnan(per[0].item()) and math.isnan(total.item()), ord


def test_empty_list():
    """The ops need one tensor (the dispatcher picks the device from it); the helpers take empty lists."""
    assert group_sumsq([], torch.device("cpu")).item() == 0.0
    assert fusedopt.get_total_norm([]).item() == 0.0


# ---- determinism -------------------------------------------------------------------------------------
def test_reduce_is_bitwise_deterministic_across_runs_and_threads():
    ts = _tensors(shapes=[(1_000_003,), (70000,), (5,), (2, 300, 301)], seed=3)
    runs = {}
    for threads in (1, 2, 1, 2):
        per, total = OPS.multi_tensor_sumsq(ts, threads=threads)
        key = (per.view(torch.int32).tolist(), total.view(torch.int32).item())
        runs.setdefault(threads, []).append(key)
    assert runs[1][0] == runs[1][1] == runs[2][0] == runs[2][1]
    old = torch.get_num_threads()
    try:
        res = []
        for n in (1, 2):
            torch.set_num_threads(n)
            res.append([_bits(x).tolist() for x in OPS.multi_tensor_norm(ts, 3.0)])
            res.append([_bits(x).tolist() for x in OPS.multi_tensor_norm(ts, math.inf)])
        assert res[0] == res[2] and res[1] == res[3]
    finally:
        torch.set_num_threads(old)


def test_reduce_is_not_a_plain_float_sum():
    """The fp64 accumulation is really used: a plain fp32 running sum of 1e6 squares would be off."""
    t = torch.full((1_000_000,), 0.1)
    per, _ = OPS.multi_tensor_sumsq([t])
    exact = (torch.tensor(0.1, dtype=torch.float32).double() ** 2 * 1_000_000).item()
    assert per.item() == torch.tensor(exact, dtype=torch.float32).item()


def test_row_col_sums_deterministic_across_threads():
    ts = _tensors(shapes=[(3, 1500, 50), (200, 700)], seed=5)
    a = OPS.row_col_sums(ts, add=1e-30, threads=1)
    b = OPS.row_col_sums(ts, add=1e-30, threads=2)
    c = OPS.row_col_sums(ts, add=1e-30, threads=2)
    for x, y, z in zip(a[0] + a[1], b[0] + b[1], c[0] + c[1]):
        assert torch.equal(x.view(torch.int32), y.view(torch.int32))
        assert torch.equal(y.view(torch.int32), z.view(torch.int32))


# ---- row / col sums -----------------------------------------------------------------------------------
RC_SHAPES = [(1, 1), (3, 17), (5, 64), (1500, 50), (2, 3, 4), (2, 3, 40, 33), (0, 5), (4, 0), (2, 0, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mean", [False, True])
def test_row_col_sums_match_float64(dtype, mean):
    ts = _tensors(shapes=RC_SHAPES, dtype=dtype, seed=7)
    rows, cols = OPS.row_col_sums(ts, add=1e-3, square=True, mean=mean)
    for t, r, c in zip(ts, rows, cols):
        u = t.double() ** 2 + 1e-3
        rr = u.mean(-1) if mean else u.sum(-1)
        cr = u.mean(-2) if mean else u.sum(-2)
        assert r.shape == rr.shape and c.shape == cr.shape and r.dtype == torch.float32
        assert_close(r.double(), rr, rtol=6e-8, atol=0, equal_nan=True)
        assert_close(c.double(), cr, rtol=6e-8, atol=0, equal_nan=True)


def test_row_col_sums_plain_and_non_contiguous():
    t = torch.randn(40, 30).t()  # logical [30, 40], transposed storage
    rows, cols = OPS.row_col_sums([t], square=False)
    assert_close(rows[0].double(), t.double().sum(-1), rtol=1e-6, atol=1e-6)
    assert_close(cols[0].double(), t.double().sum(-2), rtol=1e-6, atol=1e-6)


def test_row_col_sums_refuses_1d_naming_it():
    with pytest.raises(RuntimeError, match=r"tensors\[1\] has 1 dims"):
        OPS.row_col_sums([torch.ones(2, 2), torch.ones(3)])


# ---- bad inputs name the tensor ------------------------------------------------------------------------
def test_ops_refuse_bad_inputs_naming_the_tensor():
    with pytest.raises(RuntimeError, match=r"tensors\[1\] has dtype .*Half.* one dtype"):
        OPS.multi_tensor_sumsq([torch.ones(2), torch.ones(2, dtype=torch.float16)])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] has unsupported dtype Long"):
        OPS.multi_tensor_sumsq([torch.ones(2, dtype=torch.long)])
    with pytest.raises(RuntimeError, match=r"tensors\[1\] is complex"):
        OPS.multi_tensor_sumsq([torch.ones(2)] * 0 + [torch.ones(2), torch.ones(2, dtype=torch.complex64)])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] is sparse"):
        OPS.multi_tensor_sumsq([torch.ones(2).to_sparse()])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] is a non-dense view"):
        OPS.multi_tensor_sumsq([torch.ones(4, 4)[:, 1]])
    with pytest.raises(RuntimeError, match="grad_scale must be a one-element float32"):
        OPS.multi_tensor_sumsq([torch.ones(2)], grad_scale=torch.ones(2))
    with pytest.raises(RuntimeError, match="total_norm must be a one-element float32"):
        OPS.multi_tensor_clip_([torch.ones(2)], torch.ones(2), 1.0)


def test_opcheck_and_compile():
    ts = _tensors(shapes=[(3,), (4, 5)])
    torch.library.opcheck(OPS.multi_tensor_sumsq.default, (ts,))
    torch.library.opcheck(OPS.multi_tensor_norm.default, (ts, 3.0))
    torch.library.opcheck(OPS.row_col_sums.default, ([ts[1]],), dict(add=0.5))
    torch.library.opcheck(OPS.multi_tensor_clip_.default, ([t.clone() for t in ts], torch.tensor(3.0), 1.0))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(xs):
        _, tot = OPS.multi_tensor_sumsq(xs)
        OPS.multi_tensor_clip_(xs, tot.sqrt(), 1.0)
        return tot

    a = [t.clone() for t in ts]
    b = [t.clone() for t in ts]
    ta = f(a)
    tb = fusedopt.clip_grad_norm_([torch.nn.Parameter(torch.zeros_like(t)) for t in b], 1.0) if False else None
    _, tot = OPS.multi_tensor_sumsq(b)
    OPS.multi_tensor_clip_(b, tot.sqrt(), 1.0)
    assert torch.equal(ta, tot) and tb is None
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ---- clip_grad_norm_ against torch.nn.utils.clip_grad_norm_ --------------------------------------------
def _params_with_grads(dtypes=(torch.float32,), seed=0, scale=1.0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    ps = []
    for i, s in enumerate(shapes):
        dt = dtypes[i % len(dtypes)]
        p = torch.nn.Parameter(torch.randn(s, generator=g).to(dt))
        p.grad = (torch.randn(s, generator=g) * scale).to(dt)
        ps.append(p)
    return ps


def _clone(ps):
    out = []
    for p in ps:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("norm_type", [2.0, 1, 3.0, 0.5, math.inf, -math.inf, 0, -1.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, foreach):
    # torch refuses the +-inf and negative norms of lists holding an empty grad (no identity); we skip them
    shapes = SHAPES[1:] if math.isinf(float(norm_type)) or float(norm_type) < 0 else SHAPES
    ps = _params_with_grads(shapes=shapes)
    qs = _clone(ps)
    ps[2].grad = None
    qs[2].grad = None
    ours = fusedopt.clip_grad_norm_(ps, max_norm, norm_type, foreach=foreach)
    theirs = torch.nn.utils.clip_grad_norm_(qs, max_norm, norm_type, foreach=foreach)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.device == theirs.device
    # torch accumulates in fp32 (1 ulp per tensor norm plus its summation error); ours is the fp64 value
    # rounded once: within an ulp of the float64 truth, within 2e-5 of torch
    nt = float(norm_type)
    per = torch.stack([torch.linalg.vector_norm(p.grad.double(), nt) for p in _params_with_grads(shapes=shapes)][:2]
                      + [torch.linalg.vector_norm(p.grad.double(), nt) for p in _params_with_grads(shapes=shapes)][3:])
    truth = per.ne(0).sum().double() if nt == 0 else torch.linalg.vector_norm(per, nt)
    assert_close(ours.double(), truth, rtol=1.2e-7, atol=0)
    assert_close(ours, theirs, rtol=2e-5, atol=0)
    for p, q in zip(ps, qs):
        if q.grad is None:
            assert p.grad is None
        else:
            assert_close(p.grad, q.grad, rtol=2e-5, atol=1e-30)
    if float(ours) + 1e-6 < max_norm and float(theirs) + 1e-6 < max_norm:
        for p, q in zip(ps, qs):  # coefficient clamped to 1: grads untouched, bit for bit
            if q.grad is not None:
                assert torch.equal(p.grad, q.grad)


def test_clip_grad_norm_mixed_dtypes_groups():
    ps = _params_with_grads(dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64), shapes=SHAPES[1:])
    qs = _clone(ps)
    for nt in (2.0, math.inf, 0, 1.5):
        a, b = _clone(ps), _clone(qs)
        ours = fusedopt.clip_grad_norm_(a, 0.3, nt)
        theirs = torch.nn.utils.clip_grad_norm_(b, 0.3, nt)
        assert ours.dtype == theirs.dtype == torch.float64
        # torch accumulates the fp16/bf16 norms in fp16/bf16: compare against float64 truth instead
        truth = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.double(), nt) for p in ps]), nt)
        if nt == 0:
            truth = torch.stack([torch.linalg.vector_norm(p.grad.double(), 2) for p in ps]).ne(0).sum().double()
        assert_close(ours, truth, rtol=2e-6, atol=0)
        coef = min(0.3 / (float(ours) + 1e-6), 1.0)
        for p, q in zip(a, ps):
            assert_close(p.grad.double(), q.grad.double() * coef, rtol=8e-3 if p.dtype != torch.float32 else 2e-6,
                         atol=1e-7 if p.dtype == torch.float16 else 1e-30)  # fp16 subnormals: absolute


def test_clip_grad_norm_single_tensor_empty_and_generators():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    n = fusedopt.clip_grad_norm_(p, 1.0)
    assert_close(n, torch.tensor(math.sqrt(12.0)))
    assert_close(p.grad, torch.full((3,), 2.0 / (math.sqrt(12.0) + 1e-6)))
    assert fusedopt.clip_grad_norm_([], 1.0).item() == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        assert fusedopt.clip_grad_norm_((x for x in []), 1.0).item() == 0.0
    q = torch.nn.Parameter(torch.ones(2))  # no grad at all
    assert fusedopt.clip_grad_norm_([q], 1.0).item() == 0.0


def test_clip_grad_norm_inf_norms_skip_empty_grads():
    ps = _params_with_grads(shapes=[(0,), (3,), (0, 4)])
    for nt in (math.inf, -math.inf):
        ref = [torch.linalg.vector_norm(p.grad, nt) for p in ps if p.grad.numel()][0]
        assert fusedopt.clip_grad_norm_(_clone(ps), 1e9, nt).item() == ref.item()


def test_clip_grad_norm_nonfinite():
    ps = _params_with_grads()
    ps[4].grad[3] = float("nan")
    qs = _clone(ps)
    with pytest.raises(RuntimeError, match="non-finite"):
        fusedopt.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(qs, 1.0, error_if_nonfinite=True)
    for p, q in zip(ps, qs):  # nothing clipped on error
        assert torch.equal(p.grad, q.grad) or (p.grad.isnan() == q.grad.isnan()).all()
    ours = fusedopt.clip_grad_norm_(ps, 1.0)
    theirs = torch.nn.utils.clip_grad_norm_(qs, 1.0)
    assert math.isnan(ours.item()) and math.isnan(theirs.item())
    for p, q in zip(ps, qs):
        assert torch.equal(p.grad.isnan(), q.grad.isnan())
    inf_ps = _params_with_grads()
    inf_ps[1].grad[0] = float("inf")
    with pytest.raises(RuntimeError, match="non-finite"):
        fusedopt.clip_grad_norm_(inf_ps, 1.0, norm_type=math.inf, error_if_nonfinite=True)


def test_clip_grad_norm_complex_and_bad_grads():
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.complex64))
    p.grad = torch.randn(4, dtype=torch.complex64)
    q = torch.nn.Parameter(p.detach().clone())
    q.grad = p.grad.clone()
    assert_close(fusedopt.clip_grad_norm_([p], 0.1), torch.nn.utils.clip_grad_norm_([q], 0.1), rtol=2e-6, atol=0)
    assert_close(p.grad, q.grad, rtol=4e-6, atol=0)
    with pytest.raises(RuntimeError, match=r"complex tensors .* support only norm_type=2"):
        fusedopt.clip_grad_norm_([p], 0.1, norm_type=1.0)
    s = torch.nn.Parameter(torch.ones(3))
    s.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match=r"parameters\[1\].grad is sparse"):
        fusedopt.clip_grad_norm_([p, s], 1.0)
    i = torch.nn.Parameter(torch.ones(3))
    i.grad = torch.ones(3)
    i.grad.data = torch.ones(3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        fusedopt.clip_grad_norm_([i], 1.0)


def test_group_sumsq_mixed_dtypes():
    ts = _tensors() + _tensors(dtype=torch.bfloat16, seed=2)
    tot = group_sumsq(ts, torch.device("cpu"))
    ref = sum(t.double().pow(2).sum() for t in ts)
    assert tot.dtype == torch.float32 and tot.shape == ()
    assert_close(tot.double(), ref, rtol=2e-7, atol=0)
