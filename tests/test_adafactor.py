"""fusedopt.Adafactor (transformers semantics) and fusedopt.AdafactorTorch (torch.optim semantics).

Oracles: a float64 transcription of docs/algorithms.md §13 written here from the equations,
transformers.optimization.Adafactor and torch.optim.Adafactor. Params and every state tensor
are compared after each of 10+ steps."""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt

transformers_opt = pytest.importorskip("transformers.optimization")

SHAPES = [(7,), (), (4, 9), (3, 4, 5), (2, 3, 4, 5), (1, 9), (9, 1), (1, 1), (0,), (0, 5), (3, 0), (33, 70)]
HF_KEYS = ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq", "exp_avg")


def _params(shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]


def _grads(shapes, step, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    # a spread of magnitudes so that some updates are clipped and some are not
    return [(torch.randn(s, generator=g, dtype=torch.float64) * (0.1 + 3.0 * (i % 3))).to(dtype)
            for i, s in enumerate(shapes)]


# ---- float64 reference, from the equations (docs/algorithms.md §13) -----------------------------------
class RefAdafactor:
    """transformers semantics (torch_sem=False) or torch.optim semantics (torch_sem=True), float64."""

    def __init__(self, params, torch_sem=False, lr=None, eps=(1e-30, 1e-3), clip=1.0, decay=-0.8, beta1=None,
                 wd=0.0, scale_parameter=True, relative_step=True, warmup_init=False, maximize=False):
        self.p = [p.detach().to(torch.float64).clone() for p in params]
        self.o = dict(torch_sem=torch_sem, lr=lr, eps=eps, clip=clip, decay=decay, beta1=beta1, wd=wd,
                      scale=scale_parameter, rel=relative_step, warm=warmup_init, maximize=maximize)
        self.state = [dict(step=0) for _ in self.p]

    @staticmethod
    def rms(x):
        return math.sqrt(float((x * x).sum()) / x.numel()) if x.numel() else float("nan")

    def step(self, grads):
        o = self.o
        for p, g, st in zip(self.p, grads, self.state):
            g = g.to(torch.float64)
            if o["maximize"]:
                g = -g
            fac = p.dim() >= 2
            if st["step"] == 0:
                if fac:
                    st["R"] = torch.zeros(p.shape[:-1], dtype=torch.float64)
                    st["C"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=torch.float64)
                else:
                    st["V"] = torch.zeros_like(p)
                if o["beta1"] is not None:
                    st["M"] = torch.zeros_like(p)
            st["step"] += 1
            t = st["step"]
            rms_p = self.rms(p)
            st["RMS"] = rms_p
            scale = rms_p if rms_p > o["eps"][1] else o["eps"][1]
            if o["torch_sem"]:
                eps1 = o["eps"][0]
                alpha = scale * min(o["lr"], 1 / math.sqrt(t))
                w = t ** o["decay"]
                p.mul_(1 - o["lr"] * o["wd"])
                if fac:
                    st["R"] += w * ((g * g).mean(-1) - st["R"])
                    st["C"] += w * ((g * g).mean(-2) - st["C"])
                    den = st["R"].mean(-1, keepdim=True).clamp(min=eps1).unsqueeze(-1)
                    v = st["R"].unsqueeze(-1) * st["C"].unsqueeze(-2) / den
                else:
                    st["V"] += w * (g * g - st["V"])
                    v = st["V"]
                u = g / v.clamp(min=eps1 * eps1).sqrt()
                div = max(1.0, self.rms(u) / o["clip"]) if u.numel() else 1.0
                p.add_(-alpha / div * u)
                continue
            rho = o["lr"]
            if o["rel"]:
                rho = min(1e-6 * t if o["warm"] else 1e-2, 1 / math.sqrt(t))
            alpha = rho * (scale if o["scale"] else 1.0)
            b2 = 1 - t ** o["decay"]
            U = g * g + o["eps"][0]
            if fac:
                st["R"] = b2 * st["R"] + (1 - b2) * U.mean(-1)
                st["C"] = b2 * st["C"] + (1 - b2) * U.mean(-2)
                r = st["R"] / st["R"].mean(-1, keepdim=True)
                u = g / (r.unsqueeze(-1) * st["C"].unsqueeze(-2)).sqrt()
            else:
                st["V"] = b2 * st["V"] + (1 - b2) * U
                u = g / st["V"].sqrt()
            div = max(1.0, self.rms(u) / o["clip"]) if u.numel() else 1.0
            u = u / div * alpha
            if o["beta1"] is not None:
                st["M"] = o["beta1"] * st["M"] + (1 - o["beta1"]) * u
                u = st["M"]
            p.sub_(o["wd"] * alpha * p)
            p.sub_(u)


def _ours_state(st, fac, torch_sem=False):
    if torch_sem:
        return dict(R=st["row_var"].squeeze(-1), C=st["col_var"].squeeze(-2)) if fac else dict(V=st["variance"])
    d = dict(R=st["exp_avg_sq_row"], C=st["exp_avg_sq_col"]) if fac else dict(V=st["exp_avg_sq"])
    if "exp_avg" in st:
        d["M"] = st["exp_avg"]
    return d


def _close(a, b, rtol, atol, what):
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")


HF_OPTIONS = [
    dict(),
    dict(warmup_init=True),
    dict(scale_parameter=False),
    dict(relative_step=False, lr=1e-2),
    dict(relative_step=False, lr=3e-2, scale_parameter=False),
    dict(beta1=0.9),
    dict(weight_decay=0.1),
    dict(weight_decay=0.05, beta1=0.5, clip_threshold=0.5),
    dict(clip_threshold=100.0),
    dict(decay_rate=-0.5),
    dict(maximize=True),
]


def _hf_kwargs(o):
    m = {"relative_step": True, "scale_parameter": True, "warmup_init": False, "lr": None}
    m.update(o)
    return m


@pytest.mark.parametrize("opts", HF_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_against_float64_reference(opts):
    shapes = SHAPES
    params = [p.requires_grad_() for p in _params(shapes, torch.float64)]
    opt = fusedopt.Adafactor(params, **opts)
    ro = {"lr": opts.get("lr"), "clip": opts.get("clip_threshold", 1.0), "decay": opts.get("decay_rate", -0.8),
          "beta1": opts.get("beta1"), "wd": opts.get("weight_decay", 0.0),
          "scale_parameter": opts.get("scale_parameter", True), "relative_step": opts.get("relative_step", True),
          "warmup_init": opts.get("warmup_init", False), "maximize": opts.get("maximize", False)}
    ref = RefAdafactor(params, **ro)
    for t in range(1, 13):
        grads = _grads(shapes, t, torch.float64)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        ref.step(grads)
        for i, (p, rp, rst) in enumerate(zip(params, ref.p, ref.state)):
            st = opt.state[p]
            assert st["step"].item() == t
            # fp64 factored statistics pass through the reduction engine's fp32 row/col outputs (~1e-7)
            _close(p.detach(), rp, 1e-7, 1e-8, f"step {t} param {i} {tuple(p.shape)}")
            if p.numel() == 0:  # zero-numel params are a no-op: their statistics are not NaN-poisoned
                continue
            for k, v in _ours_state(st, p.dim() >= 2).items():
                _close(v, rst[k], 1e-6, 1e-9, f"step {t} state {k} of param {i} {tuple(p.shape)}")
            assert (math.isnan(rst["RMS"]) and math.isnan(st["RMS"].item())) or \
                st["RMS"].item() == pytest.approx(rst["RMS"], rel=1e-6)


def _hf_state_cmp(ours, theirs, fac, rtol, atol, what):
    for k in HF_KEYS:
        assert (k in ours) == (k in theirs), f"{what}: state key {k}"
        if k in ours:
            _close(ours[k], theirs[k], rtol, atol, f"{what} {k}")
    rms_t = theirs["RMS"]
    rms_t = float(rms_t) if not isinstance(rms_t, torch.Tensor) else rms_t.item()
    if not math.isnan(rms_t):
        assert ours["RMS"].item() == pytest.approx(rms_t, rel=1e-5), what
    assert ours["step"].item() == theirs["step"], what


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("opts", HF_OPTIONS[:-1], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_against_transformers(opts, dtype):
    shapes = [s for s in SHAPES if 0 not in s or dtype == torch.float64]
    ps = [p.requires_grad_() for p in _params(shapes, dtype)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    ours = fusedopt.Adafactor(ps, **opts)
    theirs = transformers_opt.Adafactor(qs, **_hf_kwargs(opts))
    rtol, atol = (1e-6, 1e-8) if dtype == torch.float64 else (2e-5, 1e-7)
    for t in range(1, 12):
        grads = _grads(shapes, t, dtype)
        for p, q, g in zip(ps, qs, grads):
            p.grad = g.clone()
            q.grad = g.clone()
        ours.step()
        theirs.step()
        for i, (p, q) in enumerate(zip(ps, qs)):
            what = f"step {t} param {i} {tuple(p.shape)}"
            _close(p.detach(), q.detach(), rtol, atol, what)
            if p.numel() == 0:  # transformers NaN-poisons the statistics of empty params; we leave them
                assert ours.state[p]["step"].item() == t
                continue
            _hf_state_cmp(ours.state[p], theirs.state[q], p.dim() >= 2, rtol, 1e-9 if dtype == torch.float64 else 1e-9, what)


@pytest.mark.parametrize("torch_sem", [False, True], ids=["transformers", "torch"])
def test_tensor_groups_across_the_cache_budget(torch_sem):
    """Tensors go through the four passes in groups of ~20 MB of params + grads (adafactor_impl.h):
    a list spanning several groups (a big tensor alone, small ones packed) gives bitwise what one
    optimizer per tensor gives, and matches the oracle (fp32 row/col means over 1,000+ elements
    round differently from ours, fp64-accumulated: a looser atol than the small-shape tests)."""
    shapes = [(7,), (1024, 1536), (3, 5), (1536, 1024), (64,), (2, 600, 1000), (33, 9)]  # 12 + 12 + 19 MB
    ps = [p.requires_grad_() for p in _params(shapes)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    rs = [p.detach().clone().requires_grad_() for p in ps]
    make = (lambda x: fusedopt.AdafactorTorch(x, lr=1e-2)) if torch_sem else fusedopt.Adafactor
    ours, alone = make(ps), [make([r]) for r in rs]
    theirs = torch.optim.Adafactor(qs, lr=1e-2) if torch_sem else transformers_opt.Adafactor(qs)
    for t in range(1, 4):
        grads = _grads(shapes, t)
        for p, q, r, g in zip(ps, qs, rs, grads):
            p.grad, q.grad, r.grad = g.clone(), g.clone(), g.clone()
        ours.step()
        theirs.step()
        for o in alone:
            o.step()
        for i, (p, q, r) in enumerate(zip(ps, qs, rs)):
            assert torch.equal(p, r), f"step {t} param {i}: grouping changed the result"
            _close(p.detach(), q.detach(), 2e-5, 2e-6, f"step {t} param {i} {tuple(p.shape)}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_params_against_transformers(dtype):
    """transformers upcasts grad and param to fp32 and copies back: the same as ours up to fp32
    rounding, which after the round to the param dtype agrees to a couple of ulps of that dtype."""
    shapes = [(7,), (4, 9), (3, 4, 5), (33, 70)]
    ps = [p.requires_grad_() for p in _params(shapes, dtype)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    ours = fusedopt.Adafactor(ps, beta1=0.9, weight_decay=0.01)
    theirs = transformers_opt.Adafactor(qs, beta1=0.9, weight_decay=0.01)
    ulp = torch.finfo(dtype).eps
    for t in range(1, 11):
        grads = _grads(shapes, t, dtype)
        for p, q, g in zip(ps, qs, grads):
            p.grad = g.clone()
            q.grad = g.clone()
        ours.step()
        theirs.step()
        for i, (p, q) in enumerate(zip(ps, qs)):
            assert p.dtype == dtype
            diff = (p.detach().float() - q.detach().float()).abs()
            tol = 2 * ulp * q.detach().float().abs() + 1e-6
            assert (diff <= tol).float().mean() > 0.99, f"step {t} param {i}"
            assert ours.state[p]["exp_avg"].dtype == torch.float32
            _hf_state_cmp(ours.state[p], theirs.state[q], p.dim() >= 2, 1e-2, 1e-6, f"step {t} param {i}")


TORCH_OPTIONS = [dict(), dict(lr=3e-3), dict(weight_decay=0.1), dict(d=2.0, beta2_decay=-0.5),
                 dict(eps=(1e-8, 1e-2)), dict(maximize=True)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("opts", TORCH_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_torch_variant_against_torch_optim(opts, dtype):
    shapes = [s for s in SHAPES if 0 not in s]
    ps = [p.requires_grad_() for p in _params(shapes, dtype)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    ours = fusedopt.AdafactorTorch(ps, **opts)
    theirs = torch.optim.Adafactor(qs, foreach=False, **opts)
    rs = RefAdafactor(ps, torch_sem=True, lr=opts.get("lr", 1e-2),
                      eps=(opts.get("eps", (None,))[0] or torch.finfo(dtype).eps, opts.get("eps", (0, 1e-3))[1]),
                      clip=opts.get("d", 1.0), decay=opts.get("beta2_decay", -0.8), wd=opts.get("weight_decay", 0.0),
                      maximize=opts.get("maximize", False))
    rtol = 1e-6 if dtype == torch.float64 else 2e-5
    for t in range(1, 12):
        grads = _grads(shapes, t, dtype)
        for p, q, g in zip(ps, qs, grads):
            p.grad = g.clone()
            q.grad = g.clone()
        ours.step()
        theirs.step()
        rs.step(grads)
        for i, (p, q) in enumerate(zip(ps, qs)):
            what = f"step {t} param {i} {tuple(p.shape)}"
            _close(p.detach(), q.detach(), rtol, 1e-7 if dtype == torch.float32 else 1e-9, what)
            _close(p.detach(), rs.p[i], rtol, 1e-7 if dtype == torch.float32 else 1e-9, what + " (float64 ref)")
            so, st = ours.state[p], theirs.state[q]
            assert set(so) == set(st), what
            for k in st:
                if k != "step":
                    _close(so[k], st[k], rtol, 1e-12, f"{what} {k}")
            assert so["step"].item() == st["step"].item()


def test_found_inf_skips_everything():
    shapes = [(7,), (4, 9), (2, 3, 4)]
    ps = [p.requires_grad_() for p in _params(shapes)]
    opt = fusedopt.Adafactor(ps, beta1=0.9)
    for p, g in zip(ps, _grads(shapes, 1)):
        p.grad = g
    opt.step()
    before = [p.detach().clone() for p in ps]
    sts = [{k: v.clone() for k, v in opt.state[p].items()} for p in ps]
    opt.found_inf = torch.ones(())
    for p, g in zip(ps, _grads(shapes, 2)):
        p.grad = g
    opt.step()
    for p, b, s in zip(ps, before, sts):
        assert torch.equal(p.detach(), b)
        for k, v in s.items():
            assert torch.equal(opt.state[p][k], v), k
    opt.found_inf = torch.zeros(())
    opt.step()
    assert all(opt.state[p]["step"].item() == 2 for p in ps)
    assert not torch.equal(ps[0].detach(), before[0])


def test_grad_scale_unscales():
    shapes = [(7,), (4, 9)]
    ps = [p.requires_grad_() for p in _params(shapes)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a, b = fusedopt.Adafactor(ps), fusedopt.Adafactor(qs)
    for p, q, g in zip(ps, qs, _grads(shapes, 1)):
        p.grad = g * 1024
        q.grad = g.clone()
    a.grad_scale = torch.tensor(1024.0)
    a.found_inf = torch.zeros(())
    a.step()
    b.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [fusedopt.Adafactor, fusedopt.AdafactorTorch])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_grad_scale_unscales_in_the_kernel_bitwise(cls, dtype):
    """The op divides the grads by grad_scale in place (GradScaler's contract: written back unscaled, in the
    param dtype) and reads the stored values: bitwise the step on grads unscaled beforehand; on a skipped
    step (found_inf) the grads stay scaled."""
    shapes = [(7,), (4, 9), (3, 4, 5), (0,)]
    ps = [p.to(dtype).requires_grad_() for p in _params(shapes)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a, b = cls(ps), cls(qs)
    for t in (1, 2):
        for p, q, g in zip(ps, qs, _grads(shapes, t, dtype)):
            p.grad = g * 1024
            q.grad = g.clone()
        a.grad_scale = torch.tensor(1024.0)
        a.found_inf = torch.zeros(())
        a.step()
        b.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p.grad, q.grad) and torch.equal(p, q)
    scaled = [p.grad.mul_(4.0).clone() for p in ps]
    a.found_inf = torch.ones(())
    a.step()
    assert all(torch.equal(p.grad, s) for p, s in zip(ps, scaled))


def test_plan_is_built_and_validated_once(monkeypatch):
    """Params are validated and the op's lists built when the set of params with grads changes, not every
    step (base.PlanCache, shared with the fused optimizers)."""
    ps = [p.requires_grad_() for p in _params([(7,), (4, 9), (2, 3)])]
    opt = fusedopt.Adafactor(ps, beta1=0.9)
    calls = []
    real = opt._validate
    monkeypatch.setattr(opt, "_validate", lambda *a: calls.append(a[2:]) or real(*a))
    for t in range(1, 5):
        for p, g in zip(ps, _grads([(7,), (4, 9), (2, 3)], t)):
            p.grad = g
        if t == 3:
            ps[1].grad = None  # the set of params with grads changed: rebuilt once
        opt.step()
    assert calls == [(0, 0), (0, 1), (0, 2), (0, 0), (0, 2), (0, 0), (0, 1), (0, 2)]


def test_state_dict_round_trip_with_transformers():
    shapes = [(7,), (4, 9), (3, 4, 5)]
    ps = [p.requires_grad_() for p in _params(shapes)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    theirs = transformers_opt.Adafactor(qs, beta1=0.9, weight_decay=0.01)
    for t in range(1, 4):
        for q, g in zip(qs, _grads(shapes, t)):
            q.grad = g.clone()
        theirs.step()
    ours = fusedopt.Adafactor(ps, beta1=0.9, weight_decay=0.01)
    for p, q in zip(ps, qs):
        p.data.copy_(q.detach())
    ours.load_state_dict(theirs.state_dict())
    for p in ps:
        st = ours.state[p]
        assert isinstance(st["step"], torch.Tensor) and st["step"].item() == 3
        assert st["exp_avg"].dtype == torch.float32
    for t in range(4, 8):
        grads = _grads(shapes, t)
        for p, q, g in zip(ps, qs, grads):
            p.grad = g.clone()
            q.grad = g.clone()
        ours.step()
        theirs.step()
        for i, (p, q) in enumerate(zip(ps, qs)):
            _close(p.detach(), q.detach(), 2e-5, 1e-7, f"step {t} param {i}")
    # NOT covered yet: loading ours back into transformers (a first try diverged; to investigate)


def test_torch_state_dict_round_trip():
    shapes = [(7,), (4, 9)]
    ps = [p.requires_grad_() for p in _params(shapes)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    theirs = torch.optim.Adafactor(qs)
    for q, g in zip(qs, _grads(shapes, 1)):
        q.grad = g
    theirs.step()
    ours = fusedopt.AdafactorTorch(ps)
    for p, q in zip(ps, qs):
        p.data.copy_(q.detach())
    ours.load_state_dict(theirs.state_dict())
    for p, q, g in zip(ps, qs, _grads(shapes, 2)):
        p.grad = g.clone()
        q.grad = g.clone()
    ours.step()
    theirs.step()
    for p, q in zip(ps, qs):
        _close(p.detach(), q.detach(), 2e-5, 1e-7, "after load")
    assert ours.state[ps[1]]["row_var"].shape == (4, 1)


def test_bad_inputs():
    p = torch.zeros(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="relative_step=True"):
        fusedopt.Adafactor([p], lr=1e-3)
    with pytest.raises(ValueError, match="warmup_init=True requires relative_step"):
        fusedopt.Adafactor([p], lr=1e-3, relative_step=False, warmup_init=True)
    with pytest.raises(ValueError, match="needs an explicit lr"):
        fusedopt.Adafactor([p], relative_step=False)
    with pytest.raises(ValueError, match="clip_threshold"):
        fusedopt.Adafactor([p], clip_threshold=0.0)
    with pytest.raises(ValueError, match="beta1"):
        fusedopt.Adafactor([p], beta1=1.0)
    with pytest.raises(ValueError, match="decay_rate"):
        fusedopt.Adafactor([p], decay_rate=0.5)
    with pytest.raises(ValueError, match="eps"):
        fusedopt.Adafactor([p], eps=(1e-30,))
    with pytest.raises(ValueError, match="d"):
        fusedopt.AdafactorTorch([p], d=0.5)
    # sparse and complex grads name the tensor
    e = torch.zeros(5, 3, requires_grad=True)
    opt = fusedopt.Adafactor([p, e])
    p.grad = torch.zeros(3, 4)
    e.grad = torch.zeros(5, 3).to_sparse()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\].*sparse"):
        opt.step()
    c = torch.zeros(4, dtype=torch.complex64, requires_grad=True)
    opt = fusedopt.Adafactor([c])
    c.grad = torch.zeros(4, dtype=torch.complex64)
    with pytest.raises(ValueError, match=r"\['params'\]\[0\] is complex"):
        opt.step()
    # contradictory group edits are caught at step time
    opt = fusedopt.Adafactor([p])
    opt.param_groups[0]["lr"] = 1e-3
    with pytest.raises(ValueError, match="contradictory"):
        opt.step()


def test_kernel_ran_and_no_python_loop_of_torch_ops():
    """One fused op call per (device, dtype) bucket: count the dispatcher ops a step issues."""
    from torch.utils._python_dispatch import TorchDispatchMode

    shapes = [(7,), (4, 9), (3, 4, 5), (2, 3, 4, 5)] * 5
    ps = [p.requires_grad_() for p in _params(shapes)]
    opt = fusedopt.Adafactor(ps, beta1=0.9)
    for p, g in zip(ps, _grads(shapes, 1)):
        p.grad = g
    opt.step()  # state creation

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Count() as c:
        opt.step()
    fused = [o for o in c.ops if "adafactor_" in o]
    assert len(fused) == 1, c.ops
    assert len([o for o in c.ops if "view" not in o and "profiler" not in o]) == 1, c.ops
    assert all(opt.state[p]["step"].item() == 2 for p in ps)
