"""8-bit block-wise dynamic states (docs/algorithms.md §19): the codec against bitsandbytes and torchao,
every stateful rule's 8-bit update against a dequantize -> fp32 update -> requantize reference
(resynchronised every step), state_dict conversions, opt-outs, memory, training equivalence."""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt
from fusedopt import dequantize_blockwise, qmap, quantize_blockwise

from .helpers import assert_close, assert_mostly_close, clone_params, make_params, set_grads
from .reference import init_state
from .digits import DIGITS_RULES, digits_loss
from .specs import CASES, SPECS

bnbF = pytest.importorskip("bitsandbytes.functional")
ao_qu = pytest.importorskip("torchao.optim.quant_utils")


# ---- a pure-PyTorch codec: the reference the kernels must match bit for bit ----------------------
def _mids(signed):
    v = qmap(signed)
    return torch.cat([(v[:-1] + v[1:]) * 0.5, torch.tensor([math.inf])])


def _blocks(x, block, signed):
    """x padded to whole blocks (flat), each block's absmax over finite |x|, 1/absmax (0 for 0), and the
    normalised values xn = x * (1/absmax) (NaN -> 0, clamped to [-1, 1] or [0, 1]), flat."""
    flat = x.detach().reshape(-1).float()
    nb = (flat.numel() + block - 1) // block
    pad = torch.zeros(nb * block)
    pad[:flat.numel()] = flat
    pad = pad.view(nb, block)
    a = torch.where(torch.isfinite(pad), pad.abs(), torch.zeros(())).amax(1) if nb else torch.zeros(0)
    inv = torch.where(a > 0, 1.0 / a, torch.zeros(()))
    xn = torch.nan_to_num(pad * inv[:, None], nan=0.0).clamp(-1.0 if signed else 0.0, 1.0)
    return pad.reshape(-1), a, inv, xn.reshape(-1)


def ref_quantize(x, block, signed):
    """codes = #{k : mid[k] <= x * (1/absmax)} (clamped, NaN -> 0), absmax over finite |x|."""
    _, a, _, xn = _blocks(x, block, signed)
    codes = torch.searchsorted(_mids(signed), xn, right=True)
    return codes[:x.numel()].to(torch.uint8).view(x.shape), a


# ---- the optimizer's requantization (core/q8.h q8_state_code): stochastic rounding of y = |x / absmax|
# between its two neighbours in the map's non-negative half H (up when H[k] + u (H[k+1] - H[k]) < y),
# then r >= 1 for a non-zero signed x (and the mirror for negatives) or in an unsigned block with
# absmax > 0; u is a function of (step, state list, the block's new absmax, the element's place in its block)
_M32 = 0xFFFFFFFF


def _mix32(x):
    """core/numeric.h mix32 on Python ints (values < 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7feb352d) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846ca68b) & _M32
    return x ^ (x >> 16)


def state_stream(step, state_list):
    """q8_state_stream(sr_seed(0, step), state_list) (core/q8.h, core/storage.h): the step and the state's
    list only, not the tensor."""
    seed = _mix32(((int(step) * 0x85ebca6b) & _M32) ^ _mix32(0x632be5ab))
    return _mix32(seed ^ ((0x5bd1e995 * (state_list + 1)) & _M32))


def state_uniforms(stream, absmax, block):
    """q8_uniform(q8_block_stream(stream, bits of the block's absmax), j) for every element, j its place in
    its block: the top 23 bits of block_stream + j * 0x9e3779b9 (mod 2^32) / 2^23. Flat, whole blocks."""
    bits = absmax.contiguous().view(torch.int32).tolist()
    bstream = torch.tensor([_mix32(stream ^ (b & _M32)) for b in bits], dtype=torch.int64)
    j = torch.arange(block, dtype=torch.int64)
    return ((((bstream[:, None] + j[None, :] * 0x9e3779b9) & _M32) >> 9).to(torch.float32) * 2.0 ** -23).reshape(-1)


def ref_requantize_state(x, block, signed, stream):
    """What the optimizer stores for new state values x: (codes, absmax), bit for bit."""
    vals = qmap(signed)
    half = vals[127:] if signed else vals
    nh = half.numel()
    xs, a, inv, xn = _blocks(x, block, signed)
    y = xn.abs()
    u = state_uniforms(stream, a, block)
    k = (torch.searchsorted(half, y, right=True) - 1).clamp(0, nh - 2)
    h0 = half[k]
    r = k + (h0 + u * (half[k + 1] - h0) < y).long()
    r = torch.where(y >= 1.0, torch.full_like(r, nh - 1), r)
    if signed:
        r = torch.where(((xs > 0) | (xs < 0)) & (r < 1), torch.ones_like(r), r)
        c = torch.where(torch.signbit(xs), 127 - r.clamp(max=127), 127 + r)
    else:
        c = torch.where((inv > 0).repeat_interleave(block) & (r < 1), torch.ones_like(r), r)
    return c[:x.numel()].to(torch.uint8).view(x.shape), a


def ref_dequantize(codes, absmax, block, signed):
    v = qmap(signed)[codes.reshape(-1).long()]
    idx = torch.arange(codes.numel()) // block
    return (v * absmax[idx]).view(codes.shape)


# ---- codec -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False])
def test_maps_equal_bitsandbytes_and_torchao(signed):
    ours = qmap(signed)
    assert ours.dtype == torch.float32 and ours.numel() == 256
    assert torch.equal(ours, bnbF.create_dynamic_map(signed=signed))
    assert torch.equal(ours, torch.tensor(ao_qu.create_dynamic_map(signed), dtype=torch.float32))
    assert bool((ours[1:] > ours[:-1]).all())
    assert ours[255] == 1.0 and (ours[127] == 0.0 if signed else ours[0] == 0.0)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1000, 70001])
@pytest.mark.parametrize("block", [256, 64, 4096, 1])
def test_codec_matches_reference_exactly(n, block, signed):
    g = torch.Generator().manual_seed(n + block)
    x = torch.randn(n, generator=g) * torch.logspace(-6, 2, n if n else 1)[:n]
    codes, absmax = quantize_blockwise(x, block, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert absmax.dtype == torch.float32 and absmax.numel() == (n + block - 1) // block
    rc, ra = ref_quantize(x, block, signed)
    assert torch.equal(absmax, ra)
    assert torch.equal(codes, rc)
    back = dequantize_blockwise(codes, absmax, block, signed)
    assert torch.equal(back, ref_dequantize(codes, absmax, block, signed))
    if n:
        # round-trip error: at most half the widest gap of the map, times the block's absmax
        v = qmap(signed)
        half_gap = float((v[1:] - v[:-1]).max()) / 2
        bound = absmax[torch.arange(n) // block] * half_gap * (1 + 1e-5)
        xs = x if signed else x.clamp(min=0)
        assert bool(((back - xs).abs() <= bound).all())


def test_codec_exhaustive_over_float_patterns():
    """Every 1021st float32 bit pattern in [-1, 1] plus every midpoint and its float neighbours:
    the kernel's one-comparison bucket encoder equals the binary search (searchsorted)."""
    pos = torch.arange(0, 0x3F800001, 1021, dtype=torch.int64).to(torch.int32).view(torch.float32)
    for signed in (True, False):
        m = _mids(signed)[:255]
        near = torch.cat([m, torch.nextafter(m, torch.tensor(2.0)), torch.nextafter(m, torch.tensor(-2.0))])
        x = torch.cat([pos, -pos, near, torch.tensor([1.0, -1.0, 0.0, -0.0])])
        x = x if signed else x.clamp(min=0)
        # absmax 1 per block: put a 1.0 in each block of 256
        xb = torch.cat([x, torch.zeros((-x.numel()) % 255)]).view(-1, 255)
        xb = torch.cat([torch.ones(xb.shape[0], 1), xb], 1).reshape(-1)
        codes, absmax = quantize_blockwise(xb, 256, signed)
        assert bool((absmax == 1).all())
        assert torch.equal(codes.long(), torch.searchsorted(_mids(signed), xb, right=True))


@pytest.mark.parametrize("signed", [True, False])
def test_codes_agree_with_bitsandbytes_and_torchao_except_near_ties(signed):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256 * 64, generator=g) * torch.logspace(-5, 1, 256 * 64)
    if not signed:
        x = x.abs()
    codes, absmax = quantize_blockwise(x, 256, signed)
    mids = _mids(signed)
    xn = (x.view(-1, 256) * (1.0 / absmax)[:, None]).reshape(-1)

    def near_tie(mask, other):
        lo = torch.minimum(codes.long(), other.long())[mask]
        gap = (qmap(signed)[lo + 1] - qmap(signed)[lo])
        return bool(((xn[mask] - mids[lo]).abs() <= 1e-6 * gap + 2e-7 * xn[mask].abs()).all()) and bool(
            ((codes.long() - other.long()).abs()[mask] == 1).all())

    # torchao: x / absmax then floor search + residual >= half-gap (rounds ties up, as we do)
    xs, scale = ao_qu.scale_tensor(x.clone(), 256)
    ao_codes = ao_qu.quantize_8bit_with_qmap(xs, qmap(signed))
    assert torch.allclose(scale, absmax)
    diff = ao_codes != codes
    assert int(diff.sum()) <= 16 and near_tie(diff, ao_codes), int(diff.sum())
    # bitsandbytes (CPU): its encoder is not exactly nearest (measured: ~0.1% of the codes differ, by one or two codes,
    # up to 60% of a gap from the midpoint). Where they differ ours is the nearer value, never farther.
    b_codes, state = bnbF.quantize_blockwise(x, code=qmap(signed), blocksize=256)
    assert torch.equal(state.absmax, absmax)
    diff = b_codes != codes
    assert int(diff.sum()) <= 0.005 * x.numel(), int(diff.sum())
    assert bool(((codes.long() - b_codes.long()).abs()[diff] <= 2).all())
    v = qmap(signed)
    assert bool(((v[codes.long()] - xn).abs()[diff] <= (v[b_codes.long()] - xn).abs()[diff]).all())
    # dequantization is the same map lookup times absmax
    assert torch.equal(bnbF.dequantize_blockwise(codes, state), dequantize_blockwise(codes, absmax, 256, signed))


def test_codec_zero_block_nan_inf_and_dtypes():
    x = torch.zeros(600)
    x[300:] = torch.randn(300)
    x[310] = float("nan")
    x[320] = float("inf")
    x[330] = -float("inf")
    codes, absmax = quantize_blockwise(x, 256, True)
    assert absmax[0] == 0 and bool((codes[:256] == 127).all())  # all-zero block: code of 0, absmax 0
    fin = x[256:512][torch.isfinite(x[256:512])]
    assert absmax[1] == fin.abs().max()  # non-finite values do not enter absmax
    assert codes[310] == 127  # NaN -> 0
    assert codes[320] == 255 and codes[330] == 0  # inf -> +1 * absmax, -inf -> most negative code
    back = dequantize_blockwise(codes, absmax, 256, True)
    assert bool(torch.isfinite(back).all())
    for dt in (torch.float16, torch.bfloat16):
        c, a = quantize_blockwise(x[300:].to(dt), 256, True)
        rc, ra = ref_quantize(x[300:].to(dt).float(), 256, True)
        assert torch.equal(c, rc) and torch.equal(a, ra)
        assert dequantize_blockwise(c, a, 256, True, dtype=dt).dtype == dt


def test_codec_bad_inputs():
    x = torch.randn(300)
    with pytest.raises(RuntimeError, match="block_size must be a positive"):
        quantize_blockwise(x, 0)
    with pytest.raises(RuntimeError, match="x must be float32, float16 or bfloat16"):
        quantize_blockwise(x.double())
    c, a = quantize_blockwise(x)
    with pytest.raises(RuntimeError, match="codes must be a uint8 tensor"):
        dequantize_blockwise(c.int(), a)
    with pytest.raises(RuntimeError, match=r"absmax must be a float32 tensor of ceil\(codes.numel\(\) / block_size\) = 2"):
        dequantize_blockwise(c, a[:1])


def test_centered_rmsprop_refuses_8bit_states_clearly():
    """Centered RMSprop's sqrt(square_avg - grad_avg**2) cancels two 8-bit states: NaN on digits."""
    p = torch.randn(5000, requires_grad=True)
    for cls in (fusedopt.RMSprop, fusedopt.RMSprop8bit):
        with pytest.raises(ValueError, match="centered=True cannot be combined with state_bits=8"):
            cls([p], centered=True, **({} if cls is fusedopt.RMSprop8bit else {"state_bits": 8}))
    opt = fusedopt.RMSprop([p], centered=True)
    with pytest.raises(ValueError, match="centered=True cannot be combined with state_bits=8"):
        opt.add_param_group({"params": [torch.randn(3, requires_grad=True)], "state_bits": 8})
    opt = fusedopt.RMSprop([p], state_bits=8)
    opt.param_groups[0]["centered"] = True  # edited after construction: refused at the step
    p.grad = torch.randn_like(p)
    with pytest.raises(ValueError, match="centered=True cannot be combined with state_bits=8"):
        opt.step()
    fusedopt.RMSprop([p], centered=True, state_bits=16)  # bf16 states are fine
    fusedopt.RMSprop8bit([p], momentum=0.9)


def test_koala_refuses_8bit_states_clearly():
    p = torch.randn(5000, requires_grad=True)
    for cls in (fusedopt.MomentumKOALA, fusedopt.VanillaKOALA):
        with pytest.raises(ValueError, match=f"{cls.__name__} does not support state_bits=8 .*predict pass"):
            cls([p], state_bits=8)
    opt = fusedopt.MomentumKOALA([p])
    with pytest.raises(ValueError, match="MomentumKOALA does not support state_bits=8"):
        opt.add_param_group({"params": [torch.randn(3, requires_grad=True)], "state_bits": 8})
    assert all(s.ours._supports_8bit for s, _ in CASES)  # every RuleSpec, LAMB (two passes) included


# ---- every stateful rule: 8-bit update == dequantize -> fp32 update -> requantize --------------------
Q8_SHAPES = [(4097,), (3, 300), (1,), (256,), (0,), (257, 3)]
_LAMB = next(s for s in SPECS if s.name == "lamb")
# LAMB's generic options turn its global grad-norm clipping off (specs._NOCLIP); here it is on (the grads'
# global norm is ~80, so both bounds clip) and the float64 check gets the global norm of all grads
Q8_LAMB_CLIP = [dict(max_grad_norm=1.0), dict(max_grad_norm=1.0, adam_w_mode=False),
                dict(max_grad_norm=1.0, use_nvlamb=True, weight_decay=0.0),
                dict(max_grad_norm=50.0, adam_w_mode=False, use_nvlamb=True, maximize=True)]
Q8_CASES = [(s, o) for s, o in CASES if s.keys(o) and s.ours._supports_8bit
            and not (s.name == "rmsprop" and o.get("centered"))] + [(_LAMB, o) for o in Q8_LAMB_CLIP]
Q8_IDS = [s.id(o) for s, o in Q8_CASES]


def _state_keys(spec, opts):
    return spec.keys(opts)


def _read_only_keys(spec, t):
    """States the rule reads but does not change at step t (core/traits.h read_only_states + swap01):
    PNM and AdaPNM update one momentum buffer per step, by the parity of t."""
    if spec.name == "pnm":
        return {"neg_momentum"} if t % 2 == 1 else {"pos_momentum"}
    if spec.name == "adapnm":
        return {"neg_exp_avg"} if t % 2 == 1 else {"exp_avg"}
    return set()


def _resync_ref(ours, ref, ps, qs, keys, block):
    """Reference optimizer := our params and our dequantized states (as bnb's tests resync)."""
    for p, q in zip(ps, qs):
        q.data.copy_(p.data)
        so, sr = ours.state[p], ref.state[q]
        for k, v in so.items():
            if k.endswith("_absmax"):
                continue
            if k in keys:
                sr[k].copy_(dequantize_blockwise(v, so[k + "_absmax"], block, fusedopt._ops.SIGNED_KEYS[k]))
            elif torch.is_tensor(v):
                sr[k].copy_(v)


@pytest.mark.parametrize("spec,opts", Q8_CASES, ids=Q8_IDS)
def test_8bit_update_matches_requantized_fp32_rule(spec, opts):
    block = 256
    ps = make_params(Q8_SHAPES, seed=5)
    qs = clone_params(ps)
    ours = spec.ours(ps, lr=spec.lr, state_bits=8, min_8bit_size=0, **opts)
    ref = spec.ours(qs, lr=spec.lr, **opts)  # the same rule with fp32 states
    keys = _state_keys(spec, opts)
    lists = [k for k in fusedopt._ops.RULES[ours._rule].slots if k in keys]
    ref_ps64 = None
    for t in range(1, 13):
        set_grads([ps, qs], t)
        if t > 1:
            _resync_ref(ours, ref, ps, qs, keys, block)
            # an independent check of the update itself: the float64 equations from the same start
            ref_ps64 = [q.detach().double().clone() for q in qs]
            st64 = [{k: ref.state[q][k].double().clone() for k in keys} for q in qs]
            for q, st in zip(qs, st64):
                for k, v in ref.state[q].items():
                    if k != "step" and torch.is_tensor(v) and v.dim() == 0:
                        st[k] = v.item()
            hyper = dict(spec.defaults, **opts, lr=spec.lr)
            if spec.name == "lamb":  # clipping by the global grad norm (if max_grad_norm > 0)
                hyper["global_norm"] = math.sqrt(sum(float(q.grad.double().pow(2).sum()) for q in qs))
            for p64, q, st in zip(ref_ps64, qs, st64):
                spec.reference(p64, q.grad.double(), st, t, **hyper)
        untouched = _read_only_keys(spec, t)
        kept = {i: {k: (ours.state[p][k].clone(), ours.state[p][k + "_absmax"].clone()) for k in untouched}
                for i, p in enumerate(ps) if ours.state[p]}
        ours.step()
        ref.step()
        if t == 1 and "param" in fusedopt._ops.RULES[spec.ours._rule].inits.values():
            continue  # a state that starts as the param (Schedule-Free's z) starts quantized in ours: from the resync on
        ctx = f"{spec.id(opts)} step {t}"
        for i, (p, q) in enumerate(zip(ps, qs)):
            assert_close(p, q, msg=f"{ctx} param {i}", rtol=0, atol=0)
            if ref_ps64 is not None and p.numel():
                assert_mostly_close(p.double(), ref_ps64[i], msg=f"{ctx} param {i} vs float64",
                                    rtol=2e-6, atol=2e-7 * spec.atol_scale, max_frac=1e-3)
            so = ours.state[p]
            for k in keys:
                assert so[k].dtype == torch.uint8, (ctx, k)
                if k in untouched and i in kept:
                    # a state the rule only reads this step is not requantized: its codes and absmax stay
                    # bit for bit (requantizing would shrink a block whose largest value is negative,
                    # since the signed map's most negative code is -0.99297, not -1)
                    assert torch.equal(so[k], kept[i][k][0]) and torch.equal(so[k + "_absmax"], kept[i][k][1]), \
                        f"{ctx} {k} of param {i} was rewritten"
                    continue
                signed = fusedopt._ops.SIGNED_KEYS[k]
                # the op's tensors are ps in order (one bucket); its state lists are keys in slot order
                stream = state_stream(t, lists.index(k))
                rc, ra = ref_requantize_state(ref.state[q][k], block, signed, stream)
                assert torch.equal(so[k + "_absmax"], ra), f"{ctx} {k}_absmax of param {i}"
                assert torch.equal(so[k], rc), f"{ctx} {k} codes of param {i}"


def test_signedness_declared_once_in_the_rule_table():
    from fusedopt._ops import RULES, SIGNED_KEYS, UNSIGNED_STATES

    assert set(UNSIGNED_STATES) == set(RULES)
    assert SIGNED_KEYS["exp_avg"] and not SIGNED_KEYS["exp_avg_sq"] and not SIGNED_KEYS["sum"]
    assert SIGNED_KEYS["momentum_buffer"] and not SIGNED_KEYS["square_avg"]
    for name, spec in RULES.items():
        assert UNSIGNED_STATES[name] <= set(spec.slots)


def test_sign_preserving_requantization():
    """A tiny momentum next to a large one keeps its sign instead of collapsing to 0."""
    p = torch.zeros(4096, requires_grad=True)
    opt = fusedopt.SGD([p], lr=0.0, momentum=0.9, state_bits=8, min_8bit_size=0)
    g = torch.zeros(4096)
    g[0], g[1], g[2] = 1.0, 1e-9, -1e-9
    p.grad = g
    opt.step()
    codes = opt.state[p]["momentum_buffer"]
    assert codes[1] == 128 and codes[2] == 126 and codes[3] == 127
    plain, _ = quantize_blockwise(g, 256, True)
    assert plain[1] == 127 and plain[2] == 127  # the standalone codec does not do this


def test_nonfinite_grads_do_not_poison_a_block():
    p = torch.randn(1024, requires_grad=True)
    p0 = p.detach().clone()
    opt = fusedopt.AdamW([p], lr=1e-2, state_bits=8, min_8bit_size=0)
    p.grad = torch.randn(1024)
    opt.step()
    st = {k: v.clone() for k, v in opt.state[p].items()}
    p1 = p.detach().clone()
    g = torch.randn(1024)
    g[5], g[300] = float("nan"), float("inf")
    p.grad = g
    opt.step()
    assert p[5] == p1[5] and p[300] == p1[300]  # element skipped
    assert bool(torch.isfinite(p).all()) and bool((p != p1).sum() >= 1000)
    for k in ("exp_avg_absmax", "exp_avg_sq_absmax"):
        assert bool(torch.isfinite(opt.state[p][k]).all())
    assert not torch.equal(p0, p1)
    assert st["exp_avg"].dtype == torch.uint8


# ---- LAMB: pass 1 (lamb1) reads 8-bit states, pass 2 (lamb2) stores them ------------------------------
def _lamb1_call(opt, ps, states, absmax, out):
    """LAMB's first pass alone, as FusedOptimizer.step calls it (one bucket)."""
    group = opt.param_groups[0]
    gsq = opt._global_sumsq(None)
    torch.ops.fusedopt.lamb1_(ps, [p.grad for p in ps], [s["exp_avg"] for s in states],
                              [s["exp_avg_sq"] for s in states], [s["step"] for s in states], [],
                              hyper=fusedopt._ops.RULES["lamb1"].pack_hyper(opt._hyper(group)), lr=group["lr"],
                              flags=opt._group_flags(group),
                              state_absmax=absmax, block_size=256, tensor_out=out, global_in=gsq)


@pytest.mark.parametrize("opts", [{}, {"adam_w_mode": False, "max_grad_norm": 0.0},
                                  {"use_nvlamb": True, "weight_decay": 0.0, "maximize": True}])
def test_lamb_first_pass_leaves_8bit_states_untouched_and_sums_as_32bit(opts):
    """lamb1 on 8-bit states: params, grads, codes and absmax stay bit for bit; only the step is bumped;
    its per-tensor sums (p^2, u^2) equal bitwise those of lamb1 on float32 copies of the dequantized
    states (the same lanes and folds: the trust ratio of pass 2 is the 32-bit one)."""
    shapes = [(5000,), (3, 300), (70000,), (65536 + 300,)]  # the last two: more than one work item
    ps = make_params(shapes, seed=7)
    opt = fusedopt.LAMB(ps, lr=1e-2, state_bits=8, min_8bit_size=0, **opts)
    _train(opt, ps, 3, 5)  # codes away from their initial values
    set_grads([ps], 11)
    states = [opt.state[p] for p in ps]
    keys = ("exp_avg", "exp_avg_sq")
    assert all(s[k].dtype == torch.uint8 for s in states for k in keys)
    absmax = [s[k + "_absmax"] for k in keys for s in states]
    before = [(p.detach().clone(), p.grad.clone(), {k: v.clone() for k, v in s.items()}) for p, s in zip(ps, states)]
    # the 32-bit twin: the same params and grads, the dequantized states, the same step
    qs = clone_params(ps)
    for q, p in zip(qs, ps):
        q.grad = p.grad.clone()
    twin = [{k: dequantize_blockwise(s[k], s[k + "_absmax"], 256, k == "exp_avg") for k in keys} for s in states]
    for tw, s in zip(twin, states):
        tw["step"] = s["step"].clone()
    out8, out32 = torch.full((len(ps), 2), float("nan")), torch.full((len(ps), 2), float("nan"))
    _lamb1_call(opt, ps, states, absmax, out8)
    _lamb1_call(opt, qs, twin, None, out32)
    for i, (p, s, (p0, g0, s0)) in enumerate(zip(ps, states, before)):
        assert torch.equal(p, p0) and torch.equal(p.grad, g0), i
        for k, v in s0.items():
            if k == "step":
                assert s[k] == v + 1, i
            else:
                assert s[k].dtype == v.dtype and torch.equal(s[k], v), (i, k)
    assert bool(torch.isfinite(out8).all()) and bool((out8 > 0).all())
    assert torch.equal(out8, out32), (out8, out32)
    # and the sums are the float64 ones (to fp32 rounding)
    ref_u2 = []
    hyper = dict(_LAMB.defaults, **opts)
    gn = math.sqrt(sum(float(r.grad.double().pow(2).sum()) for r in qs))
    for q, tw in zip(qs, twin):
        g = -q.grad.double() if opts.get("maximize") else q.grad.double()
        mgn = hyper["max_grad_norm"]
        if mgn > 0 and gn > mgn:
            g = g / (gn / mgn)
        if not hyper.get("adam_w_mode", True):
            g = g + hyper["weight_decay"] * q.detach().double()
        b1, b2 = hyper["betas"]
        m = b1 * tw["exp_avg"].double() + (1 - b1) * g
        v = b2 * tw["exp_avg_sq"].double() + (1 - b2) * g * g
        t = int(tw["step"])
        u = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + hyper["eps"])
        if hyper.get("adam_w_mode", True):
            u = u + hyper["weight_decay"] * q.detach().double()
        ref_u2.append(float(u.pow(2).sum()))
    assert_close(out8[:, 0].double(), torch.tensor([float(q.detach().double().pow(2).sum()) for q in qs],
                                                    dtype=torch.float64),
                 rtol=1e-6, atol=0)
    assert_close(out8[:, 1].double(), torch.tensor(ref_u2, dtype=torch.float64), rtol=1e-5, atol=0)


def test_lamb_8bit_nonfinite_grads_skip_elements_and_add_nothing():
    p = torch.randn(1024, requires_grad=True)
    opt = fusedopt.LAMB([p], lr=1e-2, state_bits=8, min_8bit_size=0, max_grad_norm=0.0)
    p.grad = torch.randn(1024)
    opt.step()
    p1 = p.detach().clone()
    g = torch.randn(1024)
    g[5], g[300] = float("nan"), float("inf")
    p.grad = g
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.uint8
    assert p[5] == p1[5] and p[300] == p1[300]  # element skipped in both passes
    assert bool(torch.isfinite(p).all()) and bool((p != p1).sum() >= 1000)  # the trust ratio stayed finite
    for k in ("exp_avg_absmax", "exp_avg_sq_absmax"):
        assert bool(torch.isfinite(opt.state[p][k]).all())


def test_lamb_8bit_plumbing_min_size_opt_out_state_dict():
    big, small, forced = (torch.randn(5000, requires_grad=True), torch.randn(100, requires_grad=True),
                          torch.randn(4096, requires_grad=True))
    fusedopt.register_32bit_state(forced)
    ps = [big, small, forced]
    opt = fusedopt.LAMB(ps, lr=1e-2, state_bits=8)  # min_8bit_size 4096
    _train(opt, ps, 3, 6)
    assert opt.state[big]["exp_avg"].dtype == torch.uint8 and opt.state[big]["exp_avg_sq_absmax"].numel() == 20
    for p in (small, forced):  # one step, two buckets (8-bit and 32-bit), each with its two passes
        assert opt.state[p]["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in opt.state[p]
    # state_dict: byte-exact round trip, training continues identically
    qs = clone_params(ps)
    fusedopt.register_32bit_state(qs[2])
    _check_state_dict_round_trip(opt, ps, fusedopt.LAMB(qs, lr=1e-2, state_bits=8), qs, 2, 7)
    # out to a 32-bit LAMB (dequantized), and a 32-bit state_dict into an 8-bit LAMB (quantized)
    plain = fusedopt.dequantize_state_dict(opt.state_dict())
    assert all(not k.endswith("_absmax") for s in plain["state"].values() for k in s)
    rs = clone_params(ps)
    o32 = fusedopt.LAMB(rs, lr=1e-2)
    o32.load_state_dict(plain)
    m = dequantize_blockwise(opt.state[big]["exp_avg"], opt.state[big]["exp_avg_absmax"], 256, True)
    assert o32.state[rs[0]]["exp_avg"].dtype == torch.float32 and torch.equal(o32.state[rs[0]]["exp_avg"], m)
    back = clone_params(rs)
    o8 = fusedopt.LAMB(back, lr=1e-2, state_bits=8)
    o8.load_state_dict(o32.state_dict())
    rc, ra = ref_quantize(m, 256, True)
    assert torch.equal(o8.state[back[0]]["exp_avg"], rc) and torch.equal(o8.state[back[0]]["exp_avg_absmax"], ra)
    _train(o8, back, 1, 8)


# ---- bitsandbytes' AdamW8bit on the CPU -------------------------------------------------------------
def test_close_to_bitsandbytes_adamw8bit_cpu():
    """bnb's CPU path: dequantize -> torch AdamW (decay before the step, as ours) -> requantize to
    the nearest code, without the sign fix and with its own encoder (codes differ at near-ties). Ours
    rounds stochastically and floors second moments (core/q8.h q8_state_code): unbiased, but noisier
    over a few steps. Over 10 steps from the same start (measured): the params differ by 3.9e-5 and
    5.2e-5 (medians) against a median move of 2.9e-3, 5.3e-4 at most against 1.1e-2; against torch's
    fp32 AdamW the mean |error| of our dequantized states is 1.4x bnb's (a stochastic rounding error is
    a third of a gap on average, a nearest one a quarter)."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    ps = [torch.randn(64, 256, requires_grad=True), torch.randn(8192, requires_grad=True)]
    qs, rs = clone_params(ps), clone_params(ps)
    ours = fusedopt.AdamW8bit(ps, lr=1e-3, weight_decay=0.1)
    theirs = bnb.optim.AdamW8bit(qs, lr=1e-3, weight_decay=0.1)
    fp32 = torch.optim.AdamW(rs, lr=1e-3, weight_decay=0.1)
    for t in range(1, 11):
        set_grads([ps, qs, rs], t)
        ours.step()
        theirs.step()
        fp32.step()
    for p, q, r in zip(ps, qs, rs):
        diff = (p.detach() - q.detach()).abs()
        assert float(diff.max()) < 1e-3 and float(diff.median()) < 1e-4, (float(diff.max()), float(diff.median()))
        so, sq, sr = ours.state[p], theirs.state[q], fp32.state[r]
        for key, bkey, signed in (("exp_avg", "1", True), ("exp_avg_sq", "2", False)):  # bnb: state1, state2
            x_ours = dequantize_blockwise(so[key], so[key + "_absmax"], 256, signed).view(-1)
            x_bnb = dequantize_blockwise(sq["state" + bkey], sq["absmax" + bkey], 256, signed).view(-1)
            x_32 = sr[key].view(-1)
            e_ours, e_bnb = (x_ours - x_32).abs().mean(), (x_bnb - x_32).abs().mean()
            assert e_ours <= 1.6 * e_bnb, (key, float(e_ours), float(e_bnb))


# ---- optimizer plumbing -------------------------------------------------------------------------------
def test_min_8bit_size_override_and_stable_embedding():
    big, small, forced = torch.randn(4096, requires_grad=True), torch.randn(4095, requires_grad=True), \
        torch.randn(5000, requires_grad=True)
    fusedopt.register_32bit_state(forced)
    emb = fusedopt.nn.StableEmbedding(300, 16)
    grp32 = torch.randn(8000, requires_grad=True)
    opt = fusedopt.AdamW8bit([{"params": [big, small, forced, emb.weight]},
                              {"params": [grp32], "state_bits": 32}])
    for p in (big, small, forced, emb.weight, grp32):
        p.grad = torch.randn_like(p)
    opt.step()
    assert opt.state[big]["exp_avg"].dtype == torch.uint8 and "exp_avg_absmax" in opt.state[big]
    for p in (small, forced, emb.weight, grp32):
        assert opt.state[p]["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in opt.state[p]
    # StableEmbedding: Xavier init bounds, LayerNorm output, padding row zero
    e = fusedopt.nn.StableEmbedding(100, 32, padding_idx=0)
    bound = math.sqrt(6 / (100 + 32))
    assert float(e.weight.abs().max()) <= bound and bool((e.weight[0] == 0).all())
    out = e(torch.tensor([[1, 2, 3]]))
    assert out.shape == (1, 3, 32)
    assert_close(out.mean(-1), torch.zeros(1, 3), atol=1e-5, rtol=0)
    assert getattr(e.weight, "_fusedopt_32bit_state", False)


def test_state_bits_options_and_bad_inputs():
    p = torch.randn(5000, requires_grad=True)
    with pytest.raises(ValueError, match="state_bits must be 8, 16 or 32"):
        fusedopt.AdamW([p], state_bits=4)
    with pytest.raises(ValueError, match="block_size must be one of"):
        fusedopt.AdamW([p], state_bits=8, block_size=300)
    with pytest.raises(ValueError, match="block_size must be one of"):
        fusedopt.AdamW([p], state_bits=8, block_size=0)
    with pytest.raises(ValueError, match="percentile_clipping=5 is not supported"):
        fusedopt.AdamW8bit([p], percentile_clipping=5)
    with pytest.raises(ValueError, match="block_wise=False is not supported"):
        fusedopt.Adam8bit([p], block_wise=False)
    with pytest.raises(ValueError, match="is_paged"):
        fusedopt.Lion8bit([p], is_paged=True)
    with pytest.raises(ValueError, match="param_rounding"):
        fusedopt.AdamW([p.bfloat16()], state_bits=8, param_rounding="stochastic")
    # state_bits=16 is bfloat16 states
    o = fusedopt.AdamW([p], state_bits=16)
    p.grad = torch.randn_like(p)
    o.step()
    assert o.state[p]["exp_avg"].dtype == torch.bfloat16
    # fp64 params cannot take 8-bit states: clear error naming the param
    d = torch.randn(5000, dtype=torch.float64, requires_grad=True)
    d.grad = torch.randn_like(d)
    with pytest.raises(ValueError, match=r"params'\]\[0\].*float64"):
        fusedopt.AdamW([d], state_bits=8).step()


def _q8_op_args(n=512, block=256):
    p = torch.randn(n)
    g = torch.randn(n)
    m, am_m = quantize_blockwise(torch.zeros(n), block, True)
    v, am_v = quantize_blockwise(torch.zeros(n), block, False)
    return p, g, m, v, am_m, am_v, torch.zeros(())


def test_op_rejects_bad_codes_and_absmax():
    op = torch.ops.fusedopt.adamw_
    hyper = [0.9, 0.999, 1e-8, 0.0]
    p, g, m, v, am_m, am_v, step = _q8_op_args()
    with pytest.raises(RuntimeError, match=r"exp_avg_sqs\[0\].*has dtype Float but other states have Byte"):
        op([p], [g], [m], [v.float()], [], [step], [], hyper=hyper, lr=1e-3, state_absmax=[am_m, am_v])
    with pytest.raises(RuntimeError, match=r"exp_avgs\[0\].*has shape"):
        op([p], [g], [m[:100]], [v], [], [step], [], hyper=hyper, lr=1e-3, state_absmax=[am_m, am_v])
    with pytest.raises(RuntimeError, match=r"state_absmax for exp_avg_sqs\[0\] must be a contiguous float32 tensor"):
        op([p], [g], [m], [v], [], [step], [], hyper=hyper, lr=1e-3, state_absmax=[am_m, am_v[:1]])
    with pytest.raises(RuntimeError, match="8-bit states need state_absmax with 2 x 1 tensors"):
        op([p], [g], [m], [v], [], [step], [], hyper=hyper, lr=1e-3)
    with pytest.raises(RuntimeError, match="block_size 300 is not supported"):
        op([p], [g], [m], [v], [], [step], [], hyper=hyper, lr=1e-3, state_absmax=[am_m, am_v], block_size=300)
    with pytest.raises(RuntimeError, match="state_absmax was given but the states are not uint8"):
        op([p], [g], [m.float()], [v.float()], [], [step], [], hyper=hyper, lr=1e-3, state_absmax=[am_m, am_v])
    assert step.item() == 0  # nothing ran


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params_with_8bit_states(dtype):
    ps = make_params([(4097,), (3, 600)], dtype=dtype, seed=2)
    qs = clone_params(ps)
    ours = fusedopt.AdamW(ps, lr=1e-2, state_bits=8, min_8bit_size=0)
    ref = fusedopt.AdamW(qs, lr=1e-2)
    for t in range(1, 6):
        set_grads([ps, qs], t)
        if t > 1:
            _resync_ref(ours, ref, ps, qs, ["exp_avg", "exp_avg_sq"], 256)
        ours.step()
        ref.step()
        for p, q in zip(ps, qs):
            assert p.dtype == dtype and ours.state[p]["exp_avg"].dtype == torch.uint8
            assert torch.equal(p, q)


def test_found_inf_skips_and_empty_tensors():
    ps = [torch.randn(5000, requires_grad=True), torch.zeros(0, requires_grad=True)]
    opt = fusedopt.AdamW(ps, lr=1e-2, state_bits=8, min_8bit_size=0)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()
    before = [(p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}) for p in ps]
    opt.found_inf = torch.ones(())
    opt.grad_scale = torch.full((), 2.0)
    opt.step()
    del opt.found_inf, opt.grad_scale
    for p, (pb, sb) in zip(ps, before):
        assert torch.equal(p, pb)
        for k, v in sb.items():
            assert torch.equal(opt.state[p][k], v), k
    assert opt.state[ps[1]]["exp_avg"].dtype == torch.uint8 and opt.state[ps[1]]["exp_avg_absmax"].numel() == 0
    opt.step()
    assert opt.state[ps[1]]["step"] == 2


# ---- state_dict ---------------------------------------------------------------------------------------
def _train(opt, ps, steps, seed):
    for t in range(steps):
        set_grads([ps], t, seed=seed)
        opt.step()


def _check_state_dict_round_trip(opt, ps, opt2, qs, steps, seed):
    """opt2 (over clones qs of ps) loads opt's state_dict: every state byte-exact, and `steps` more steps
    of both agree bit for bit."""
    opt2.load_state_dict(opt.state_dict())
    same = lambda a, b: a == b if not isinstance(a, torch.Tensor) else a.dtype == b.dtype and torch.equal(a, b)  # noqa: E731
    for p, q in zip(ps, qs):
        for k, v in opt.state[p].items():  # tensors, and the recorded fusedopt.override options
            assert same(opt2.state[q][k], v), k
    _train(opt, ps, steps, seed)
    _train(opt2, qs, steps, seed)
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        for k, v in opt.state[p].items():
            assert same(opt2.state[q][k], v), k


def test_state_dict_round_trip_is_byte_exact_and_training_continues_identically():
    ps = make_params([(5000,), (70, 80), (10,)], seed=1)
    opt = fusedopt.AdamW(ps, lr=1e-2, state_bits=8)
    _train(opt, ps, 3, 1)
    qs = clone_params(ps)
    _check_state_dict_round_trip(opt, ps, fusedopt.AdamW(qs, lr=1e-2, state_bits=8), qs, 3, 2)


def test_state_dict_32bit_to_8bit_and_back_and_out_to_torch():
    ps = make_params([(5000,), (10,)], seed=4)
    o32 = fusedopt.AdamW(ps, lr=1e-2)
    _train(o32, ps, 2, 3)
    qs = clone_params(ps)
    o8 = fusedopt.AdamW(qs, lr=1e-2, state_bits=8)
    o8.load_state_dict(o32.state_dict())  # loading 32-bit states into an 8-bit optimizer quantizes them
    st = o8.state[qs[0]]
    rc, ra = ref_quantize(o32.state[ps[0]]["exp_avg"], 256, True)
    assert torch.equal(st["exp_avg"], rc) and torch.equal(st["exp_avg_absmax"], ra)
    assert o8.state[qs[1]]["exp_avg"].dtype == torch.float32  # below min_8bit_size
    # an 8-bit state_dict loads into a 32-bit fusedopt optimizer (dequantized)
    rs = clone_params(qs)
    back = fusedopt.AdamW(rs, lr=1e-2)
    back.load_state_dict(o8.state_dict())
    assert back.state[rs[0]]["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in back.state[rs[0]]
    assert torch.equal(back.state[rs[0]]["exp_avg"], dequantize_blockwise(rc, ra, 256, True))
    # leaving fusedopt: plain fp32 tensors for torch.optim
    plain = fusedopt.dequantize_state_dict(o8.state_dict())
    assert all(not k.endswith("_absmax") for s in plain["state"].values() for k in s)
    assert o8.state[qs[0]]["exp_avg"].dtype == torch.uint8  # the optimizer's own state is untouched
    ts = clone_params(qs)
    tor = torch.optim.AdamW(ts, lr=1e-2)
    tor.load_state_dict(plain)
    assert torch.equal(tor.state[ts[0]]["exp_avg"], dequantize_blockwise(rc, ra, 256, True))
    set_grads([ts], 9)
    tor.step()


# ---- memory and training equivalence ------------------------------------------------------------------
GPT2_BLOCK = [(2304, 768), (2304,), (768, 768), (768,), (3072, 768), (3072,), (768, 3072), (768,), (768,), (768,),
              (768,), (768,)]


def test_state_memory_per_param_gpt2_block_shapes():
    """GPT-2-small's repeated block (the bench prints the whole 124M-param model)."""
    ps = [torch.zeros(s, requires_grad=True) for s in GPT2_BLOCK]
    n = sum(p.numel() for p in ps)
    for cls in (fusedopt.AdamW8bit, fusedopt.Adam8bit):
        opt = cls(ps)
        for p in ps:
            p.grad = torch.zeros_like(p)
        opt.step()
        per = fusedopt.state_nbytes(opt) / n
        assert per <= 2.04, per
    o32 = fusedopt.AdamW(ps)
    o32.step()
    assert fusedopt.state_nbytes(o32) / n >= 8.0


# ---- training on digits: every rule that takes 8-bit states at its defaults (tests/digits.py) --------
def test_digits_rules_cover_every_8bit_rule():
    """DIGITS_RULES holds one optimizer of each rule that takes 8-bit states (LAMB: two passes, one rule)."""
    covered = set()
    for make in DIGITS_RULES.values():
        covered.add(make([torch.zeros(1, requires_grad=True)])._rule)
    stateful = {s.ours([torch.zeros(1, requires_grad=True)])._rule for s, o in Q8_CASES}
    assert stateful <= covered, stateful - covered


@pytest.mark.parametrize("name", list(DIGITS_RULES))
def test_training_equivalence_on_digits(name):
    """8-bit states (every param quantized) train within 2% of 32-bit: final loss l8 <= 1.02 * l32 (a lower
    8-bit loss passes). With nearest rounding this failed for Adamax (+3.5%), AdaBelief (+2.2%), ACProp
    (one seed diverged), Adan (+31%) and LAMB at lr 1e-2 (+60%); the stochastic rounding and the floor of
    core/q8.h q8_state_code bring every rule within 2% (most within 1%, both ways)."""
    make = DIGITS_RULES[name]
    l32, q32 = digits_loss(lambda ps: make(ps))
    l8, q8 = digits_loss(lambda ps: make(ps, state_bits=8, min_8bit_size=0))
    assert q8 and not q32
    assert math.isfinite(l8) and l8 <= 1.02 * l32, (name, l32, l8)
