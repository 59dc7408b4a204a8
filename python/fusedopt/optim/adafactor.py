"""Adafactor (Shazeer & Stern 2018) with fused multi-pass kernels (csrc/core/adafactor.h).

`Adafactor` has the semantics, argument names, defaults and state keys of
transformers.optimization.Adafactor; `AdafactorTorch` those of torch.optim.Adafactor.
One op call per (device, param dtype) bucket of a param group runs every pass of the step
(AMP unscale, RMS(p), row/col means of g^2, factor EMAs, RMS(u), the update); no per-tensor torch ops.
The buckets' lists are validated and built once and cached between steps (base.PlanCache, as every
fused optimizer); a step makes no allocation.
CPU: float32/float64/float16/bfloat16 params. CUDA (csrc/cuda/adafactor.cu, compiled but not yet run
on a GPU): float32/float16/bfloat16 params, every per-tensor scalar on the device, no host sync.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import _ops  # noqa: F401  (registers torch.ops.fusedopt.adafactor_)
from .. import distributed as _dist
from .base import HookedLoad, PlanCache, _Plan

AF_RELATIVE_STEP = 1 << 0
AF_SCALE_PARAMETER = 1 << 1
AF_WARMUP_INIT = 1 << 2
AF_BETA1 = 1 << 3
AF_TORCH = 1 << 4
AF_MAXIMIZE = 1 << 5

_PARAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _num(name: str, v, lo: float = 0.0, lo_open: bool = False, hi: Optional[float] = None, hi_open=True):
    if isinstance(v, Tensor):
        raise ValueError(f"{name} as a Tensor is not supported by fusedopt's Adafactor; pass a float")
    x = float(v)
    bad = x != x or (x <= lo if lo_open else x < lo) or (hi is not None and (x >= hi if hi_open else x > hi))
    if bad:
        lo_s = f"> {lo}" if lo_open else f">= {lo}"
        hi_s = "" if hi is None else (f" and < {hi}" if hi_open else f" and <= {hi}")
        raise ValueError(f"Invalid {name}: {v} (must be {lo_s}{hi_s})")
    return x


class _AdafactorBase(HookedLoad, PlanCache, Optimizer):
    _torch_semantics = False
    _step_supports_amp_scaling = True  # GradScaler hands grad_scale / found_inf to step()
    _row_key, _col_key, _var_key = "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"

    def _where(self, gi: int, pi: int) -> str:
        return f"fusedopt.{type(self).__name__}: param_groups[{gi}]['params'][{pi}]"

    def _validate(self, p: Tensor, g: Tensor, gi: int, pi: int):
        where = self._where(gi, pi)
        if torch.is_complex(p) or torch.is_complex(g):
            raise ValueError(f"{where} is complex ({p.dtype}); Adafactor does not support complex params, "
                             "optimize torch.view_as_real(param) instead")
        if g.is_sparse or g.layout != torch.strided:
            raise ValueError(f"{where} has a sparse gradient; Adafactor takes dense gradients")
        if p.dtype not in _PARAM_DTYPES:
            raise ValueError(f"{where} has unsupported dtype {p.dtype} (float32, float16, bfloat16, float64)")
        if g.dtype != p.dtype:
            raise ValueError(f"{where}: grad dtype {g.dtype} differs from param dtype {p.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"{where}: grad shape {tuple(g.shape)} differs from param shape {tuple(p.shape)}")
        if g.device != p.device:
            raise ValueError(f"{where}: grad is on {g.device} but the param is on {p.device}")
        if not p.is_contiguous():
            raise ValueError(f"{where} is not contiguous (strides {p.stride()}); Adafactor factors the last "
                             "two dims of a contiguous tensor")

    def _state_dtype(self, p: Tensor) -> torch.dtype:
        return torch.float64 if p.dtype == torch.float64 else torch.float32

    def _init_state(self, p: Tensor, group) -> dict:
        st = self.state[p]
        if "step" not in st:
            st.update(self._fresh_state(p, group))
        return st

    def _fresh_state(self, p: Tensor, group) -> dict:
        st: dict = {}
        sdt = self._state_dtype(p)
        st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        if p.dim() >= 2 and _dist.is_dtensor(p):  # DTensors laid out as p (a sharded reduced dim: Replicate)
            keep = self._torch_semantics
            st[self._row_key] = _dist.zeros_reduced(p, self._row_shape(p), -1, keep, sdt)
            st[self._col_key] = _dist.zeros_reduced(p, self._col_shape(p), -2, keep, sdt)
        elif p.dim() >= 2:
            st[self._row_key] = torch.zeros(self._row_shape(p), dtype=sdt, device=p.device)
            st[self._col_key] = torch.zeros(self._col_shape(p), dtype=sdt, device=p.device)
        else:
            st[self._var_key] = _dist.full_like(p, 0.0, sdt)
        self._init_extra(p, st, group)
        return st

    def _row_shape(self, p):
        return p.shape[:-1]

    def _col_shape(self, p):
        return p.shape[:-2] + p.shape[-1:]

    def _init_extra(self, p, st, group):
        pass

    def _hyper_flags(self, group, dtype) -> tuple:
        raise NotImplementedError

    def _init_only(self, group) -> bool:
        """A step that only creates the states (see Adafactor._init_only)."""
        return False

    def _extra_lists(self, group, sts: list, ps: list) -> tuple:
        """The exp_avg and RMS lists of a bucket (made once per plan)."""
        raise NotImplementedError

    def _build_plan(self, gi: int, group, grads: list) -> _Plan:
        """Buckets of one group by (device, dtype, sharded): validated params, their states (created here)
        and the op's lists; a grad list is taken per step (bucket["idx"] indexes the group's params)."""
        buckets: dict = {}
        for pi, (p, g) in enumerate(zip(group["params"], grads)):
            if g is None:
                continue
            sharded = False
            if _dist.is_dtensor(p):
                _dist.check_layout(p, self._where(gi, pi))
                _dist.check_grad(p, g, self._where(gi, pi))
                sharded = bool(_dist.sharded_mesh_dims(p))
            self._validate(_dist.local(p), _dist.local(g), gi, pi)
            st = self._init_state(p, group)
            b = buckets.setdefault((p.device, p.dtype, sharded), dict(idx=[], params=[], states=[]))
            b["idx"].append(pi)
            b["params"].append(p)
            b["states"].append(st)
        plan = _Plan()
        for (dev, dt, sharded), b in buckets.items():
            b.update(device=dev, dtype=dt, sharded=sharded)
            exp_avg, rms = self._extra_lists(group, b["states"], b["params"])
            if not sharded:
                ps, sts = [_dist.local(p) for p in b["params"]], b["states"]
                b["local"] = ps
                b["rows"] = [_dist.local(st[self._row_key] if p.dim() >= 2 else st[self._var_key]).view(
                    p.shape[:-1] if p.dim() >= 2 else p.shape) for p, st in zip(ps, sts)]
                b["cols"] = [_dist.local(st[self._col_key]).view(p.shape[:-2] + p.shape[-1:]) if p.dim() >= 2
                             else st["step"] for p, st in zip(ps, sts)]
                b["exp_avg"] = [_dist.local(m) for m in exp_avg]
                b["steps"] = [st["step"] for st in sts]
                b["rms"] = rms
            plan.append(b)
        plan.dtensor = any(_dist.is_dtensor(p) for p in group["params"])
        return plan

    def _plan_key(self, group) -> tuple:
        return (group.get("beta1") is not None,)  # beta1 switched on later: an exp_avg list

    @torch.no_grad()
    def step(self, closure=None):
        loss, grad_scale, found_inf, compiling = self._begin_step(closure)
        for gi, group in enumerate(self.param_groups):
            grads = [p.grad for p in group["params"]]
            plan = self._group_plan(gi, group, grads, compiling)
            if self._init_only(group):
                continue
            for b in plan:
                dev = b["device"]
                fi = None if found_inf is None else found_inf.to(device=dev, dtype=torch.float32)
                gsc = None if grad_scale is None else grad_scale.to(device=dev, dtype=torch.float32)
                hyper, flags = self._hyper_flags(group, b["dtype"])
                if b["sharded"]:  # sums over the mesh between the passes: the DTensor path
                    items = [(p, grads[i], st) for p, i, st in zip(b["params"], b["idx"], b["states"])]
                    _sharded_step(self, items, hyper, flags, fi, gsc)
                    continue
                gs = [_dist.local(grads[i]) for i in b["idx"]]
                try:
                    torch.ops.fusedopt.adafactor_(b["local"], gs, b["rows"], b["cols"], b["exp_avg"], b["steps"],
                                                  b["rms"], hyper=hyper, flags=flags, found_inf=fi, grad_scale=gsc)
                except RuntimeError:
                    if not compiling:  # a grad that changed since the plan was made: name the param
                        for pi, p in zip(b["idx"], b["params"]):
                            self._validate(_dist.local(p), _dist.local(grads[pi]), gi, pi)
                    raise
        return loss

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # an older state_dict may lack keys added since (e.g. foreach)
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    def _load_state(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this class or of the reference implementation (transformers /
        torch.optim): python-number `step` and `RMS` become float32 tensors, factored and
        unfactored statistics stay float32 (float64 for float64 params) instead of being cast
        to the param dtype."""
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        super()._load_state(state_dict)
        self._plans = {}
        ids = [i for g in saved_groups for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        group_of = {id(p): g for g in self.param_groups for p in g["params"]}
        for pid, p in zip(ids, params):
            if pid not in saved_state:
                continue
            st = self.state[p]
            for key, v in saved_state[pid].items():
                if key in ("step", "RMS"):
                    val = v if isinstance(v, Tensor) else torch.tensor(float(v))
                    st[key] = val.to(device=p.device, dtype=torch.float32, copy=True).reshape(())
                elif isinstance(v, Tensor) and v.is_floating_point():
                    st[key] = v.to(device=p.device, dtype=self._state_dtype(p), copy=True).contiguous()
            if _dist.is_dtensor(p):  # states laid out as a fresh state of p (sharded or whole saved tensors)
                fresh = self._fresh_state(p, group_of[id(p)])
                for key, v in list(st.items()):
                    if isinstance(v, Tensor) and v.dim() > 0 and key in fresh:
                        st[key] = _dist.place_like(v, fresh[key])


class Adafactor(_AdafactorBase):
    """Adafactor with transformers.optimization.Adafactor's semantics and state keys
    (`step`, `exp_avg_sq_row`, `exp_avg_sq_col` or `exp_avg_sq`, `exp_avg` with beta1, `RMS`).

    lr is None with relative_step=True (the step size is min(1e-2 or 1e-6*t with warmup_init,
    1/sqrt(t))); with relative_step=False lr must be given. With scale_parameter the step size
    is multiplied by max(eps[1], RMS(p)). Weight decay is decoupled and scaled by that step size.
    Paper: Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost".

    Arguments and defaults as transformers' class: ``lr`` (None), ``eps`` ((1e-30, 1e-3): added to
    g^2, and the floor of RMS(p)), ``clip_threshold`` (1.0: the update is divided by
    max(1, RMS(u) / clip_threshold)), ``decay_rate`` (-0.8: beta2_t = 1 - t^decay_rate), ``beta1``
    (None: no first moment), ``weight_decay`` (0), ``scale_parameter``, ``relative_step``,
    ``warmup_init``; fusedopt adds ``maximize`` (keyword-only: the grad is negated first) and
    ``capturable`` (accepted: every step reads found_inf and the step counters on the device and
    never syncs with the host, so it can be captured in a CUDA graph).
    """

    def __init__(self, params, lr: Optional[float] = None, eps=(1e-30, 1e-3), clip_threshold: float = 1.0,
                 decay_rate: float = -0.8, beta1: Optional[float] = None, weight_decay: float = 0.0,
                 scale_parameter: bool = True, relative_step: bool = True, warmup_init: bool = False, *,
                 maximize: bool = False, capturable: bool = False):
        if lr is not None and relative_step:
            raise ValueError(f"Adafactor: lr={lr} was given with relative_step=True, which computes its own "
                             "step size and would ignore lr; pass relative_step=False to use lr (e.g. lr=1e-3, "
                             "scale_parameter=False, relative_step=False, warmup_init=False), or lr=None")
        if lr is None and not relative_step:
            raise ValueError("Adafactor: relative_step=False needs an explicit lr (e.g. lr=1e-3)")
        if warmup_init and not relative_step:
            raise ValueError("Adafactor: warmup_init=True requires relative_step=True (it warms up the "
                             "relative step size)")
        if lr is not None:
            _num("lr", lr)
        if len(eps) != 2:
            raise ValueError(f"Adafactor: eps must be a pair (eps1, eps2), got {eps!r}")
        _num("eps[0]", eps[0])
        _num("eps[1]", eps[1])
        _num("clip_threshold", clip_threshold, lo_open=True)
        if isinstance(decay_rate, Tensor) or not float(decay_rate) <= 0.0:
            raise ValueError(f"Invalid decay_rate: {decay_rate} (must be <= 0: beta2_t = 1 - t^decay_rate)")
        if beta1 is not None:
            _num("beta1", beta1, 0.0, hi=1.0)
        _num("weight_decay", weight_decay)
        defaults = dict(lr=lr, eps=tuple(eps), clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
                        weight_decay=weight_decay, scale_parameter=scale_parameter, relative_step=relative_step,
                        warmup_init=warmup_init, maximize=maximize, capturable=capturable)
        super().__init__(params, defaults)

    def _init_extra(self, p, st, group):
        st["RMS"] = torch.zeros((), dtype=torch.float32, device=p.device)
        if group["beta1"] is not None:
            st["exp_avg"] = _dist.full_like(p, 0.0, self._state_dtype(p))

    def _extra_lists(self, group, sts, ps):
        exp_avg = []
        if group["beta1"] is not None:
            for st, p in zip(sts, ps):
                if "exp_avg" not in st:  # beta1 switched on after the state was made
                    st["exp_avg"] = _dist.full_like(p, 0.0, self._state_dtype(p))
                exp_avg.append(st["exp_avg"])
        for st, p in zip(sts, ps):
            if "RMS" not in st:
                st["RMS"] = torch.zeros((), dtype=torch.float32, device=p.device)
        return exp_avg, [st["RMS"] for st in sts]

    def _init_only(self, group) -> bool:
        """relative_step=True with lr set to 0: torch.distributed.checkpoint's get/set_optimizer_state_dict
        take such a step (zero grads, every lr 0) to create the states of a fresh optimizer; the relative
        step ignores lr, so this step only creates the states (no update, the step counters stay)."""
        lr = group["lr"]
        return bool(group["relative_step"]) and lr is not None and float(lr) == 0.0

    def _hyper_flags(self, group, dtype):
        if group["lr"] is not None and group["relative_step"]:
            raise ValueError("Adafactor: param group has lr set and relative_step=True (contradictory)")
        if group["lr"] is None and not group["relative_step"]:
            raise ValueError("Adafactor: param group has relative_step=False and no lr")
        if group["warmup_init"] and not group["relative_step"]:
            raise ValueError("Adafactor: param group has warmup_init=True without relative_step")
        flags = 0
        flags |= AF_RELATIVE_STEP if group["relative_step"] else 0
        flags |= AF_SCALE_PARAMETER if group["scale_parameter"] else 0
        flags |= AF_WARMUP_INIT if group["warmup_init"] else 0
        flags |= AF_BETA1 if group["beta1"] is not None else 0
        flags |= AF_MAXIMIZE if group.get("maximize", False) else 0
        lr = 0.0 if group["lr"] is None else float(group["lr"])
        b1 = 0.0 if group["beta1"] is None else float(group["beta1"])
        hyper = [lr, float(group["eps"][0]), float(group["eps"][1]), float(group["clip_threshold"]),
                 float(group["decay_rate"]), b1, float(group["weight_decay"])]
        return hyper, flags


class AdafactorTorch(_AdafactorBase):
    """Adafactor with torch.optim.Adafactor's semantics and state keys (`step`, `row_var`,
    `col_var` (keepdim shapes [..., R, 1] / [..., 1, C]), `variance`). Paper: Shazeer & Stern 2018,
    "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost".

    Arguments and defaults as torch.optim.Adafactor: ``lr`` (1e-2, the cap of the relative step
    min(lr, 1/sqrt(t))), ``beta2_decay`` (-0.8), ``eps`` ((None, 1e-3): eps1 None is the dtype's
    machine epsilon, used as a clamp; eps2 floors RMS(p)), ``d`` (1.0, the clipping threshold),
    ``weight_decay`` (p *= 1 - lr * weight_decay), ``foreach`` (accepted and ignored), ``maximize``;
    fusedopt adds ``capturable`` (accepted: steps never sync with the host, so they are capturable).
    """

    _torch_semantics = True
    _row_key, _col_key, _var_key = "row_var", "col_var", "variance"

    def __init__(self, params, lr: float = 1e-2, beta2_decay: float = -0.8, eps=(None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: Optional[bool] = None, maximize: bool = False,
                 capturable: bool = False):
        _num("lr", lr)
        if isinstance(beta2_decay, Tensor) or not float(beta2_decay) <= 0.0:
            raise ValueError(f"Invalid beta2_decay: {beta2_decay} (must be <= 0)")
        if len(eps) != 2:
            raise ValueError(f"AdafactorTorch: eps must be a pair (eps1 or None, eps2), got {eps!r}")
        if eps[0] is not None:
            _num("eps[0]", eps[0])
        _num("eps[1]", eps[1])
        _num("d", d, 1.0)
        _num("weight_decay", weight_decay)
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, capturable=capturable)
        super().__init__(params, defaults)

    def _row_shape(self, p):
        return p.shape[:-1] + (1,)

    def _col_shape(self, p):
        return p.shape[:-2] + (1,) + p.shape[-1:]

    def _extra_lists(self, group, sts, ps):
        return [], list(torch.empty(len(ps), dtype=torch.float32, device=ps[0].device).unbind())  # RMS: unused

    def _hyper_flags(self, group, dtype):
        eps1 = group["eps"][0]
        if eps1 is None:
            eps1 = torch.finfo(dtype).eps
        flags = AF_TORCH | (AF_MAXIMIZE if group.get("maximize", False) else 0)
        hyper = [float(group["lr"]), float(eps1), float(group["eps"][1]), float(group["d"]),
                 float(group["beta2_decay"]), 0.0, float(group["weight_decay"])]
        return hyper, flags


# ---- DTensor params sharded on a mesh: the passes of csrc/core/adafactor.h with sums over the mesh ----
def _scalars(hyper, flags, t: float, rms: float) -> tuple:
    """af_scalars of csrc/core/adafactor.h: (beta2t, ema_w, alpha, decay)."""
    lr, eps1, eps2, clip, decay_rate, beta1, wd = hyper
    w = t ** decay_rate
    if flags & AF_TORCH:
        rho = min(lr, 1.0 / math.sqrt(t))
        return 1.0 - w, w, (rms if rms > eps2 else eps2) * rho, 1.0 - lr * wd
    rho = lr
    if flags & AF_RELATIVE_STEP:
        cap = 1e-6 * t if flags & AF_WARMUP_INIT else 1e-2
        rho = min(cap, 1.0 / math.sqrt(t))
    scale = (rms if rms > eps2 else eps2) if flags & AF_SCALE_PARAMETER else 1.0
    alpha = scale * rho
    return 1.0 - w, 1.0 - (1.0 - w), alpha, 1.0 - wd * alpha


def _ema(old: Tensor, x: Tensor, torch_sem: bool, beta2t: float, ema_w: float) -> Tensor:
    if torch_sem:
        return torch.lerp(old, x, ema_w)
    return old * beta2t + x * ema_w


def _sharded_step(opt, items: list, hyper: list, flags: int, found_inf: Optional[Tensor],
                  grad_scale: Optional[Tensor] = None) -> None:
    """One Adafactor step of DTensor params sharded on their meshes (items: (param, grad, state)),
    the math of csrc/core/adafactor.h in torch ops on the local shards. Partial sums go over the mesh
    dims that shard the summed dims, batched into one all-reduce per pass and key: (1) sum p^2, the
    row sums of U (if the last dim is sharded) and the col sums (if dim -2 is); (2) the sums of the
    new R over its rows (if dim -2 is sharded); (3) sum u^2. Sums of local shards are float32 (float64
    accumulation rounded), so a step equals the unsharded one up to rounding (docs/distributed.md).
    Per-tensor scalars are computed on the host (found_inf and the step are read there)."""
    if found_inf is not None and float(found_inf) != 0.0:
        return
    if grad_scale is not None:  # GradScaler's contract: the optimizer unscales (into .grad), as the kernel does
        torch._foreach_div_([_dist.local(g) for _, g, _ in items], grad_scale)
    torch_sem = bool(flags & AF_TORCH)
    lr, eps1, eps2, clip, decay_rate, beta1, wd = hyper
    gsign = -1.0 if flags & AF_MAXIMIZE else 1.0
    use_beta1 = not torch_sem and bool(flags & AF_BETA1)
    rk, ck, vk = opt._row_key, opt._col_key, opt._var_key
    locs = [(_dist.local(p), _dist.local(g)) for p, g, _ in items]
    per, _ = torch.ops.fusedopt.multi_tensor_sumsq([pl for pl, _ in locs])
    fac = [i for i, (p, _, _) in enumerate(items) if p.dim() >= 2]
    rows, cols = torch.ops.fusedopt.row_col_sums([locs[i][1] for i in fac], add=0.0 if torch_sem else eps1,
                                                 square=True, mean=False) if fac else ([], [])
    # pass 1: sum p^2 (all sharded dims), row sums of U (dims sharding the last dim), col sums (dim -2)
    b = _dist.SumBatch()
    for i, (p, _, _) in enumerate(items):
        b.add(_dist.reduce_key(p), per[i:i + 1])
    for j, i in enumerate(fac):
        p = items[i][0]
        b.add(_dist.reduce_key(p, {p.dim() - 1}), rows[j])
        b.add(_dist.reduce_key(p, {p.dim() - 2}), cols[j])
    red = b.run()
    psq, rows, cols = red[:len(items)], red[len(items)::2], red[len(items) + 1::2]
    ctx = []
    for i, (p, g, st) in enumerate(items):
        st["step"] += 1.0
        t = float(st["step"])
        f64 = p.dtype == torch.float64
        rms = math.sqrt(float(psq[i])) / math.sqrt(p.numel())
        if "RMS" in st:
            st["RMS"].fill_(rms)
        ctx.append(_scalars(hyper, flags, t, rms if f64 else float(torch.tensor(rms, dtype=torch.float32))))
    # the factor EMAs; pass 2: the sums of the new R over its rows
    b = _dist.SumBatch()
    for j, i in enumerate(fac):
        p, _, st = items[i]
        beta2t, ema_w, _, _ = ctx[i]
        R, C = _dist.local(st[rk]), _dist.local(st[ck])
        sdt = R.dtype
        rm = (rows[j].double() / p.shape[-1]).to(sdt).view(R.shape)
        cm = (cols[j].double() / p.shape[-2]).to(sdt).view(C.shape)
        R.copy_(_ema(R, rm, torch_sem, beta2t, ema_w))
        C.copy_(_ema(C, cm, torch_sem, beta2t, ema_w))
        lead = R.shape[:p.dim() - 2]
        b.add(_dist.reduce_key(p, {p.dim() - 2}), R.double().reshape(lead + (math.prod(R.shape[len(lead):]),)).sum(-1).reshape(-1))
    rsum = b.run()
    # u and pass 3: sum u^2 (all sharded dims)
    us, b = [], _dist.SumBatch()
    for i, (p, g, st) in enumerate(items):
        pl, gl = locs[i]
        beta2t, ema_w, _, _ = ctx[i]
        T = torch.float64 if p.dtype == torch.float64 else torch.float32
        gf = gl.to(T) * gsign
        if p.dim() >= 2:
            j = fac.index(i)
            R = _dist.local(st[rk]).reshape(pl.shape[:-1])
            C = _dist.local(st[ck]).reshape(pl.shape[:-2] + pl.shape[-1:])
            mean = (rsum[j] / p.shape[-2]).to(T).reshape(pl.shape[:-2] + (1,))
            if torch_sem:
                v = (R.unsqueeze(-1) * C.unsqueeze(-2)) / torch.clamp(mean, min=eps1).unsqueeze(-1)
                u = (1.0 / torch.sqrt(torch.clamp(v, min=eps1 * eps1))) * gf
            else:
                rf = 1.0 / torch.sqrt(R / mean)
                cf = 1.0 / torch.sqrt(C)
                u = (rf.unsqueeze(-1) * cf.unsqueeze(-2)) * gf
        else:
            V = _dist.local(st[vk])
            gg = gl.to(T) * gl.to(T)
            V.copy_(_ema(V, gg if torch_sem else gg + eps1, torch_sem, beta2t, ema_w))
            Vc = torch.clamp(V, min=eps1 * eps1) if torch_sem else V
            u = (1.0 / torch.sqrt(Vc)) * gf
        us.append(u)
        b.add(_dist.reduce_key(p), u.double().square().sum().reshape(1))
    usq = b.run()
    for i, (p, g, st) in enumerate(items):
        pl, u = locs[i][0], us[i]
        _, _, alpha, decay = ctx[i]
        rms_u = math.sqrt(float(usq[i])) / math.sqrt(p.numel())
        d = rms_u / clip
        clipdiv = d if (d > 1.0 or d != d) else 1.0
        pf = pl.to(u.dtype)
        if torch_sem:
            new = pf * decay + u * (-(alpha / clipdiv))
        else:
            upd = (u / clipdiv) * alpha
            if use_beta1:
                m = _dist.local(st["exp_avg"])
                upd = m * beta1 + upd * (1.0 - beta1)
                m.copy_(upd)
            new = pf * decay - upd
        pl.copy_(new)
