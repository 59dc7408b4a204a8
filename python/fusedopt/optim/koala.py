"""KOALA (Davtyan et al. 2022): the authors' VanillaKOALA (KOALA-V) and MomentumKOALA (KOALA-M),
fused (csrc/core/rules/koala.h). The global Kalman scalars live on the device of the first param as
float64 tensors and are updated by a few torch ops per step: no host sync."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Optional

import torch
from torch import Tensor

from .. import distributed as _dist
from .._ops import RULES, op
from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["VanillaKOALA", "MomentumKOALA", "KOALA"]

_SKIP_NORM = 1e-9  # a tensor whose ||grad|| is below this is skipped (the authors' self.eps)
_GLOBAL = "koala"  # key of the global scalars in self.state (kept through state_dict as a non-param entry)

_PROTOCOL_DOC = """
    **Step API.** KOALA needs the minibatch loss ``L`` (mean of the per-sample losses) and, to
    estimate the measurement noise ``R`` online (``r=None``), ``S`` = the mean of the *squared*
    per-sample losses (the authors' ``loss_var``). Two equivalent ways, both the authors' protocol
    (``predict()`` before the forward pass, the update after ``backward``):

    * explicit (works with ``torch.amp.GradScaler``)::

          opt.predict()                                   # before the forward pass
          losses = criterion(model(x), y)                 # reduction="none": per-sample losses
          opt.zero_grad(); losses.mean().backward()
          opt.step(loss=losses.mean(), loss_sq_mean=losses.pow(2).mean())

    * closure (``step`` calls ``predict()``, then the closure, then updates; returns the mean loss)::

          def closure():
              opt.zero_grad()
              losses = criterion(model(x), y)             # per-sample, a tensor with >= 1 dim
              losses.mean().backward()
              return losses
          opt.step(closure)

    ``loss`` and ``loss_sq_mean`` may be Python numbers or one-element tensors (detached; tensors
    on the device are read there: no host sync). ``step()`` without a closure or ``loss`` raises a
    TypeError; without ``loss_sq_mean`` while ``r=None`` too; ``step(loss=...)`` without a
    ``predict()`` since the last step raises a RuntimeError (a forgotten predict would silently
    change the algorithm). With a fixed ``r``, ``loss_sq_mean`` may be omitted.

    **AMP.** ``scaler.step(opt, loss=..., loss_sq_mean=...)``: grads are unscaled in the kernel;
    on inf/NaN the update is skipped whole (params, states, step counters, ``P`` and ``R``) without
    a host sync. The ``predict()`` that preceded it stands (it ran before the forward pass).

    **State.** Per param: ``step`` (update steps) and for KOALA-M ``velocity`` and ``param_ema``
    (the authors' ``vt``, ``gt``). Global, in ``state["koala"]`` (float64 tensors on the first
    param's device, saved and loaded by ``state_dict``): ``P`` (KOALA-V: 0-dim; KOALA-M: 2x2),
    ``R`` and for KOALA-M ``qw``. The global hyperparameters (``sigma``, ``q``, ``r``, ``alpha_r``,
    ``sw``, ``sc``, ``sv``, ``a``, ``qw``, ``qv``) are constructor arguments, not per group;
    ``lr`` and ``weight_decay`` are per param group (the authors' ``weight_decay`` is global:
    the same unless groups set their own).

    **Deviations from koala.py** (none change a step of a training run that runs there): a step
    in which no param has a usable grad leaves ``P`` as the predict made it (the authors'
    ``torch.max`` of an empty list raises); the update pass is skipped with GradScaler's
    ``found_inf``; ``P``, ``R`` and ``qw`` are float64 throughout (the authors' KOALA-V sigma and
    ``R`` and KOALA-M's ``qw`` become float32 tensors after the first step, and KOALA-M rounds
    ``P0``, ``F``, ``Q`` and the max ``h`` to float32 through ``torch.Tensor(...)``: their
    ``P - P^2 h`` then keeps only ~1e-7 of the predicted ``P``, ours is float64); the per-tensor norms
    are float64 sums rounded to float32 (torch: float32 norms) and the per-tensor gains are
    handed to the kernel in float32, so float64 params are good to ~1e-7 relative per step; the
    param count of ``qw``'s ``||pbar - p|| / n`` is taken at each ``predict()`` (the authors': at
    construction; differs only after ``add_param_group``).
"""


class _KoalaState(defaultdict):
    """KOALA's `state`: the per-param entries plus the global scalars under "koala". It is true only
    when some param has state, as torch.optim's state before the first step: torch.distributed.checkpoint's
    get/set_optimizer_state_dict create the states of an optimizer whose state is empty with a step."""

    def __bool__(self):
        return any(k != _GLOBAL for k in self)


def _as_scalar(x, name: str, dev: torch.device) -> Tensor:
    """A float64 0-dim tensor on dev from a Python number or a one-element tensor (detached)."""
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name} must be a scalar (one element), got a tensor of shape {tuple(x.shape)}; "
                             "pass the mean over the batch (per-sample losses go through step(closure))")
        if x.is_complex():
            raise ValueError(f"{name} must be real, got {x.dtype}")
        return x.detach().reshape(()).to(device=dev, dtype=torch.float64)
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a one-element tensor, got {type(x).__name__}") from None
    return torch.full((), v, dtype=torch.float64, device=dev)  # a fill kernel: no host-to-device copy


class _KOALABase(FusedOptimizer):
    _rule = "koala"
    _momentum = False
    _supports_8bit = False
    _no_8bit_reason = ("its predict pass reads no grad, and the 8-bit tile walk is for update rules that read "
                       "one")

    def __init__(self, params, lr, weight_decay, *, foreach, fused, capturable, differentiable, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("weight_decay value", weight_decay)
        defaults = dict(lr=lr, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)
        self._predicted = False
        self.state = _KoalaState(dict, self.state)
        self.state[_GLOBAL] = self._initial_global(self._global_device())

    # -- globals --------------------------------------------------------------------------
    def _global_device(self) -> torch.device:
        return self.param_groups[0]["params"][0].device

    def _initial_global(self, dev) -> dict:
        raise NotImplementedError

    def _global(self) -> dict:
        return self.state[_GLOBAL]

    def _r_new(self, glob: dict, loss_sq_mean: Optional[Tensor]) -> Tensor:
        """R for this update: the authors' ExpAverage(alpha_r, 1.0) is updated *before* use."""
        if self.r is not None:
            return glob["R"]
        return self.alpha_r * glob["R"] + (1.0 - self.alpha_r) * loss_sq_mean

    # -- FusedOptimizer hooks ----------------------------------------------------------------
    def _hyper(self, group):  # koala_norms and koala take the same
        return dict(weight_decay=float(group["weight_decay"]))

    def _variant(self, group):
        return dict(momentum=self._momentum)

    # -- step -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self):
        """The Kalman predict; call it before the forward pass of every step (step(closure) does)."""
        self._predict()
        self._predicted = True

    def _predict(self):
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None, *, loss=None, loss_sq_mean=None):
        """One KOALA iteration: ``step(closure)`` or ``step(loss=..., loss_sq_mean=...)`` after
        ``predict()`` and ``backward`` (see the class docstring). Returns the (mean) loss."""
        name = type(self).__name__
        dev = self._global()["P"].device
        if closure is not None:
            if loss is not None or loss_sq_mean is not None:
                raise TypeError(f"fusedopt.{name}.step: pass either a closure or loss=/loss_sq_mean=, not both")
            self.predict()
            with torch.enable_grad():
                losses = closure()
            if not isinstance(losses, Tensor) or losses.dim() == 0 or losses.numel() == 0:
                raise TypeError(f"fusedopt.{name}.step(closure): the closure must return the per-sample losses "
                                "(a tensor with >= 1 dim and >= 1 element, e.g. criterion(..., reduction='none')) "
                                "after calling backward on their mean")
            losses = losses.detach()
            l64 = losses.to(device=dev, dtype=torch.float64)
            self._update(l64.mean(), l64.square().mean())
            return losses.mean()
        if loss is None and self._init_only():
            return None
        if loss is None:
            raise TypeError(f"fusedopt.{name}.step() needs the minibatch loss: call step(loss=..., loss_sq_mean=...) "
                            "after predict() and backward, or step(closure) with a closure that returns the "
                            "per-sample losses")
        if loss_sq_mean is None and self.r is None:
            raise TypeError(f"fusedopt.{name}.step() needs loss_sq_mean (the mean of the squared per-sample losses) "
                            "to estimate R online (r=None); pass it, or construct with a fixed r")
        if not self._predicted:
            raise RuntimeError(f"fusedopt.{name}.step(loss=...): call predict() before the forward pass of each "
                               "step (the authors' protocol), or use step(closure), which does")
        L = _as_scalar(loss, "loss", dev)
        S = None if loss_sq_mean is None else _as_scalar(loss_sq_mean, "loss_sq_mean", dev)
        self._update(L, S)
        return loss

    def _init_only(self) -> bool:
        """step() without a loss while every lr is 0 and every param has a grad: the step that
        torch.distributed.checkpoint's get/set_optimizer_state_dict take (zero grads, lr 0) to create the
        states of a fresh optimizer. It creates them and updates nothing."""
        if any(isinstance(g["lr"], Tensor) or float(g["lr"]) != 0.0 for g in self.param_groups):
            return False
        if any(p.grad is None for g in self.param_groups for p in g["params"]):
            return False
        for gi, group in enumerate(self.param_groups):
            self._group_plan(gi, group, [p.grad for p in group["params"]])
        return True

    def _update(self, L: Tensor, S: Optional[Tensor]):
        glob = self._global()
        P, dev = glob["P"], glob["P"].device
        L, S = _dist.mean_over_ranks(L, S)  # data-parallel ranks: the loss of the global batch
        grad_scale: Optional[Tensor] = getattr(self, "grad_scale", None)
        found_inf: Optional[Tensor] = getattr(self, "found_inf", None)
        compiling = torch.compiler.is_compiling()
        R = self._r_new(glob, S)
        p00 = P[0, 0] if self._momentum else P
        p10 = P[1, 0] if self._momentum else None
        h = None  # max over tensors of ||g~||^2 / s
        norms, update = op("koala_norms"), op("koala")
        for gi, group in enumerate(self.param_groups):
            grads = [p.grad for p in group["params"]]
            plan = self._group_plan(gi, group, grads, compiling)
            if not plan:
                continue
            if plan.dtensor:
                grads = [_dist.local(g) for g in grads]
            hyper = RULES["koala"].pack_hyper(self._hyper(group))
            flags = self._group_flags(group)
            wd = float(group["weight_decay"])
            lr = group["lr"]
            if isinstance(lr, Tensor):
                # a CPU lr for device params is read on the host (no device sync), as the kernels do
                if lr.device.type == "cpu" and dev.type != "cpu":
                    lr = float(lr)
                else:
                    lr = lr.detach().to(device=dev, dtype=torch.float64).reshape(())
            else:
                lr = float(lr)
            for bi, (device, idx, params, states, steps, comps, _) in enumerate(plan):
                bgrads = [grads[i] for i in idx]
                gs = grad_scale if grad_scale is None or grad_scale.device == device else grad_scale.to(device)
                fi = found_inf if found_inf is None or found_inf.device == device else found_inf.to(device)
                sums = torch.zeros((len(params), 3), dtype=torch.float32, device=device)
                try:
                    # pass 1 (read-only, bumps the steps, unscales the grads in place): ||g||^2, ||g~||^2, ||p||^2
                    norms(params, bgrads, steps, comps, hyper=hyper, lr=0.0, grad_scale=gs, found_inf=fi,
                          flags=RULES["koala_norms"].pack_flags(), tensor_out=sums)
                    self._reduced("tensor_sums", sums, plan.rows[bi] if plan.dtensor else None)
                    g2, gt2, p2 = sums.to(device=dev, dtype=torch.float64).unbind(1)
                    active = ~(g2.sqrt() < _SKIP_NORM)
                    s = gt2 * p00 + R
                    layer_loss = L + 0.5 * wd * p2
                    zero = torch.zeros_like(s)
                    if self._momentum:
                        k1 = p00 / s * layer_loss * lr
                        k2 = p10 / s * layer_loss * lr
                    else:
                        k1 = lr * layer_loss * p00 / s
                        k2 = zero
                    gains = torch.stack([torch.where(active, k1, zero), torch.where(active, k2, zero),
                                         active.to(torch.float64)], 1).to(device=device, dtype=torch.float32)
                    # pass 2: the update (inactive tensors are skipped whole)
                    update(params, bgrads, *states, steps, comps, hyper=hyper, lr=0.0, grad_scale=None, found_inf=fi,
                           flags=flags, tensor_in=gains.contiguous())
                except RuntimeError:
                    if not compiling:
                        for pi, p in zip(idx, params):
                            self._validate_param(p, grads[pi], gi, pi, group)
                    raise
                hb = torch.where(active, gt2 / s, zero).max()
                h = hb if h is None else torch.maximum(h, hb)
        if h is None:
            h = torch.zeros((), dtype=torch.float64, device=dev)
        if self._zero_group is not None:  # ZeroRedundancyOptimizer: the max over every rank's params
            h = _dist.all_reduce_(h.reshape(1), _dist.zero_key(self._zero_group), _dist.dist.ReduceOp.MAX).reshape(())
        if self._momentum:
            col = P[:, 0:1]
            P_new = P - (col * h) @ col.T  # P - P diag(h, 0) P^T
        else:
            P_new = P - P * P * h
        if found_inf is not None:
            skip = found_inf.to(dev) != 0
            P_new = torch.where(skip, P, P_new)
            R = torch.where(skip, glob["R"], R)
        P.copy_(P_new)
        if R is not glob["R"]:
            glob["R"].copy_(R)
        self._predicted = False

    # -- state_dict ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """FusedOptimizer's, with the global scalars in ``param_groups[0]["koala"]`` (the "state" entry
        holds per-param entries only, as torch.distributed.checkpoint's get_optimizer_state_dict needs)."""
        sd = super().state_dict()
        state = dict(sd["state"])
        glob = state.pop(_GLOBAL, None)
        sd["state"] = state
        if glob is not None and sd["param_groups"]:
            sd["param_groups"][0][_GLOBAL] = glob
        return sd

    def _load_state(self, state_dict) -> None:
        """As FusedOptimizer's, plus the global scalars (copied, float64, onto the
        first param's device), from ``param_groups[0]["koala"]`` (or ``state["koala"]``, the earlier
        format). A state_dict without them (another optimizer's) starts them afresh."""
        groups = state_dict["param_groups"]
        saved = groups[0].get(_GLOBAL) if groups else None
        if saved is None:
            saved = state_dict["state"].get(_GLOBAL)
        super()._load_state(state_dict)
        for g in self.param_groups:
            g.pop(_GLOBAL, None)
        self.state = _KoalaState(dict, {k: v for k, v in self.state.items() if k != _GLOBAL})
        dev = self._global_device()
        fresh = self._initial_global(dev)
        if isinstance(saved, dict):
            for k, v in fresh.items():
                if k not in saved:
                    raise ValueError(f"fusedopt.{type(self).__name__}.load_state_dict: state['koala'] lacks {k!r}")
                t = torch.as_tensor(saved[k]).to(device=dev, dtype=torch.float64, copy=True)
                if t.shape != v.shape:
                    raise ValueError(f"fusedopt.{type(self).__name__}.load_state_dict: state['koala'][{k!r}] has shape "
                                     f"{tuple(t.shape)}, expected {tuple(v.shape)} (a KOALA-V state_dict into "
                                     "KOALA-M or the reverse?)")
                fresh[k] = t
        self.state[_GLOBAL] = fresh
        self._predicted = False


class VanillaKOALA(_KOALABase):
    __doc__ = """KOALA-V (Davtyan et al. 2022, "KOALA: A Kalman Optimization Algorithm with Loss Adaptivity"),
    fused; the authors' ``VanillaKOALA`` (Araachie/koala : koala.py; same arguments and
    defaults).

    ``predict()``: ``P += q``. Update, with ``R = alpha_r R + (1 - alpha_r) S`` (``R`` starts at
    1.0 and is updated before use; a fixed ``r`` if given) and per param with a grad and
    ``||grad|| >= 1e-9`` (others are skipped whole): ``g~ = grad + weight_decay p``,
    ``s = P ||g~||^2 + R``, ``L_l = L + weight_decay/2 ||p||^2``,
    ``p -= lr L_l P / s * grad`` (the **raw** grad: the authors' code), and after all params
    ``P -= P^2 max_l(||g~_l||^2 / s_l)``. Kernels: a read-only pass of per-tensor sums of squares,
    a few float64 torch ops for the gains, an update pass.
""" + _PROTOCOL_DOC + _FUSED_DOC

    _momentum = False

    def __init__(self, params, sigma=1.0, q=1.0, r=None, alpha_r=0.9, weight_decay=0.0, lr=1.0, *, foreach=None,
                 fused=None, capturable=False, differentiable=False, **options):
        _check_scalar("sigma", sigma)
        _check_scalar("q", q)
        if r is not None:
            _check_scalar("r", r)
        _check_scalar("alpha_r", alpha_r, 0.0, 1.0, hi_open=False)
        self.sigma, self.q, self.r, self.alpha_r = float(sigma), float(q), None if r is None else float(r), float(alpha_r)
        super().__init__(params, lr, weight_decay, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _initial_global(self, dev) -> dict:
        f64 = dict(dtype=torch.float64, device=dev)
        return {"P": torch.tensor(self.sigma, **f64), "R": torch.tensor(1.0 if self.r is None else self.r, **f64)}

    def _predict(self):
        self._global()["P"].add_(self.q)


class MomentumKOALA(_KOALABase):
    __doc__ = """KOALA-M (Davtyan et al. 2022, "KOALA: A Kalman Optimization Algorithm with Loss Adaptivity"),
    fused; the authors' ``MomentumKOALA`` (Araachie/koala : koala.py; same arguments
    and defaults). The paper's main "KOALA"; ``fusedopt.KOALA`` is this class.

    State per param: ``velocity`` v and ``param_ema`` pbar (both start at 0); one 2x2 float64
    covariance ``P`` (starts ``[[sw, sc], [sc, sv]]``) shared by all params; ``F = [[1, 1], [0, a]]``.

    ``predict()``: ``delta_l = ||pbar_l - p_l||`` (before the move), ``p += v``, ``v *= a`` for every
    param (grad or not); ``qw = 0.9 qw + 0.1 ||(delta_l)_l|| / n`` (n = number of elements of all
    params; ``qw`` starts at the ``qw`` argument); ``P = F P F^T + diag(qw, qv)``.
    Update: ``R`` as KOALA-V; per param with a grad and ``||grad|| >= 1e-9`` (others skipped whole):
    ``g~ = grad + weight_decay p``, ``s = ||g~||^2 P00 + R``, ``L_l = L + weight_decay/2 ||p||^2``,
    ``K1 = P00 / s L_l lr``, ``K2 = P10 / s L_l lr``; ``p -= K1 g~``; ``v -= K2 g~``;
    ``pbar = 0.9 pbar + 0.1 p``; then ``P -= P diag(h, 0) P^T`` with ``h = max_l ||g~_l||^2 / s_l``.
    Kernels: predict is one fused pass (with the per-tensor sums of ``(pbar - p)^2``); the update is a
    read-only pass of per-tensor sums of squares, a few float64 torch ops, and an update pass.
""" + _PROTOCOL_DOC + _FUSED_DOC

    _momentum = True

    def __init__(self, params, sw=1e-1, sc=0.0, sv=1e-1, a=0.9, qw=1e-2, qv=1e-2, r=None, alpha_r=0.9,
                 weight_decay=0.0, lr=1.0, *, foreach=None, fused=None, capturable=False, differentiable=False,
                 **options):
        _check_scalar("sw", sw)
        _check_scalar("sv", sv)
        if not math.isfinite(float(sc)):
            raise ValueError(f"Invalid sc: {sc} (must be finite)")
        _check_scalar("a", a, 0.0, 1.0, hi_open=False)
        _check_scalar("qw", qw)
        _check_scalar("qv", qv)
        if r is not None:
            _check_scalar("r", r)
        _check_scalar("alpha_r", alpha_r, 0.0, 1.0, hi_open=False)
        self.sw, self.sc, self.sv, self.a = float(sw), float(sc), float(sv), float(a)
        self.qw, self.qv = float(qw), float(qv)
        self.r, self.alpha_r = None if r is None else float(r), float(alpha_r)
        self._F = {}
        super().__init__(params, lr, weight_decay, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _initial_global(self, dev) -> dict:
        f64 = dict(dtype=torch.float64, device=dev)
        self._f(dev)  # made here, outside the steps (a host-to-device copy)
        return {"P": torch.tensor([[self.sw, self.sc], [self.sc, self.sv]], **f64),
                "R": torch.tensor(1.0 if self.r is None else self.r, **f64),
                "qw": torch.tensor(self.qw, **f64)}

    def _f(self, dev) -> Tensor:
        F = self._F.get(dev)
        if F is None:  # made once per device: no host-to-device copy per step
            F = self._F[dev] = torch.tensor([[1.0, 1.0], [0.0, self.a]], dtype=torch.float64, device=dev)
        return F

    def _predict_plan(self, gi: int, group) -> list:
        """Buckets of every param of the group (grad or not: the move applies to all), cached."""
        key = ("predict", gi)
        cached = self._plans.get(key)
        if cached is not None and cached[0] == len(group["params"]):
            return cached[1]
        slots_on = self._active_slots(group)
        buckets: dict = {}
        for pi, p in enumerate(group["params"]):
            self._validate_param(p, p, gi, pi, group)  # param checks only (a grad may not exist yet)
            st = self._ensure_state(p, group, slots_on)
            b = buckets.setdefault((p.device, p.dtype), (p.device, [], [[], []], [], [], [], []))
            b[1].append(_dist.local(p))
            b[2][0].append(_dist.local(st["velocity"]))
            b[2][1].append(_dist.local(st["param_ema"]))
            b[3].append(st["step"])
            if group.get("param_rounding") == "kahan":
                b[4].append(_dist.local(st["param_comp"]))
            b[5].append(_dist.reduce_key(p))
            b[6].append(p.numel())  # the global numel of a DTensor
        plan = [b[:5] + (_dist.RowReduce(b[5]) if any(b[5]) else None, sum(b[6])) for b in buckets.values()]
        self._plans[key] = (len(group["params"]), plan)
        return plan

    def _predict(self):
        glob = self._global()
        P, dev = glob["P"], glob["P"].device
        move = op("koala_predict")
        sq = torch.zeros((), dtype=torch.float64, device=dev)
        n = 0
        for gi, group in enumerate(self.param_groups):
            for device, params, states, steps, comps, rows, numel in self._predict_plan(gi, group):
                out = torch.zeros((len(params), 1), dtype=torch.float32, device=device)
                move(params, *states, steps, comps, hyper=RULES["koala_predict"].pack_hyper(dict(a=self.a)), lr=0.0,
                     flags=RULES["koala_predict"].pack_flags() | self._engine_flags(group), tensor_out=out)
                if rows is not None:
                    rows(out)
                sq = sq + out.to(device=dev, dtype=torch.float64).sum()
                n += numel
        if self._zero_group is not None:  # ZeroRedundancyOptimizer: sums over every rank's params
            sn = _dist.all_reduce_(torch.stack([sq, torch.full_like(sq, float(n))]), _dist.zero_key(self._zero_group))
            sq, n = sn[0], float(sn[1])
        norm = sq.sqrt() / n if n > 0 else sq
        qw = glob["qw"]
        qw.copy_(0.9 * qw + (1.0 - 0.9) * norm)  # the authors' ExpAverage(0.9, qw)
        F = self._f(dev)
        P_new = F @ P @ F.T
        P_new[0, 0] += qw
        P_new[1, 1] += self.qv
        P.copy_(P_new)


KOALA = MomentumKOALA
