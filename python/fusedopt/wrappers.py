"""Optimizer wrappers: Lookahead and iterate averaging (Gadam, GadamX), each a fused op per step.

Both wrap any torch.optim or fusedopt optimizer and are torch Optimizers themselves: they expose
the inner optimizer's ``param_groups`` (so LR schedulers and GradScaler work on the wrapper),
``defaults``, ``zero_grad`` and ``add_param_group``; ``state`` holds the wrapper's own per-param
state (slow weights / running means and counters), ``optimizer`` is the inner optimizer.

After every inner step the wrapper calls ONE fused multi-tensor op per (device, dtype) bucket
(``torch.ops.fusedopt.lookahead_`` / ``iterate_avg_``, see csrc/core/rules/lookahead.h and
averaging.h). The op bumps a per-param float64 counter on the param's device and decides there
whether this step syncs / collects: no host sync, so a step stays CUDA-graph capturable; steps that
do not sync touch no element.

Skipped steps (AMP): with an inner optimizer that takes GradScaler's ``found_inf`` (fusedopt
optimizers, torch's fused Adam(W)), the wrapper passes it on and the op is gated on it as well, so
a skipped inner step neither advances the counter nor syncs / collects. With other inner
optimizers GradScaler does not call ``step()`` at all on inf/NaN grads, with the same effect.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict, defaultdict
from typing import Any, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import distributed as _dist
from ._ops import RULES, op
from .optim.base import HookedLoad

__all__ = ["Lookahead", "IterateAveraging", "Gadam", "GadamX", "update_bn"]

_PULLBACK = RULES["lookahead"].fields[0].values  # ("none", "pullback", "reset"): lookahead.h's variant field


def _slow_dtype(p: Tensor) -> torch.dtype:
    """Slow weights / running means are kept in float32 (float64 for float64 params)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class _Wrapper(HookedLoad, Optimizer):
    """Shared plumbing of the wrappers (not public)."""

    _rule = ""
    _state_key = ""  # name of the wrapper's own entry in state_dict()

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        # Optimizer.__init__ is not called: the param groups are the inner optimizer's.
        self.optimizer = optimizer
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.state: defaultdict = defaultdict(dict)

    # -- the torch.optim.Optimizer surface -------------------------------------------------
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def defaults(self):
        return self.optimizer.defaults

    @property
    def _step_supports_amp_scaling(self):  # GradScaler hands found_inf over only if the inner takes it
        return bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))

    def __getstate__(self):
        return dict(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"{type(self).__name__}({self._describe()}, optimizer={self.optimizer!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)  # the wrapper's state is created at the next step

    # -- step ------------------------------------------------------------------------------
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if not self.state[p]:
                    self._init_state(p)
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        inner = self.optimizer
        passed = self._step_supports_amp_scaling and (grad_scale is not None or found_inf is not None)
        if passed:
            inner.grad_scale, inner.found_inf = grad_scale, found_inf
        try:
            loss = inner.step(closure) if closure is not None else inner.step()
        finally:
            if passed:
                del inner.grad_scale, inner.found_inf
        with torch.no_grad():
            for group in self.param_groups:
                self._run_op(group, found_inf)
        return loss

    def _run_op(self, group, found_inf: Optional[Tensor]):
        buckets: dict = {}
        for p in group["params"]:
            key, lists = self._lists_of(p)
            b = buckets.get(key)
            if b is None:
                b = buckets[key] = [[] for _ in lists]
            for acc, t in zip(b, lists):
                if t is not None:
                    acc.append(t)
        kernel = op(self._rule)
        for key, b in buckets.items():
            device = key[0]
            fi = None if found_inf is None else found_inf.to(device)
            self._call(kernel, key, b, fi)

    # -- state_dict ------------------------------------------------------------------------
    def _param_index(self) -> dict:
        """id(param) -> index, in the numbering torch's Optimizer.state_dict() uses."""
        return {id(p): i for i, p in enumerate(self._params_in_order())}

    def state_dict(self) -> dict:
        """The inner optimizer's state_dict with this wrapper's per-param state nested in each param's
        entry under ``self._state_key`` (so torch.distributed.checkpoint's get_optimizer_state_dict,
        which keeps only the per-param entries, carries it), plus ``sd[self._state_key]["settings"]``."""
        sd = dict(self.optimizer.state_dict())
        index = self._param_index()
        state = dict(sd["state"])
        for g in self.param_groups:
            for p in g["params"]:
                if self.state.get(p):
                    i = index[id(p)]
                    state[i] = dict(state.get(i, {}), **{self._state_key: dict(self.state[p])})
        sd["state"] = state
        sd[self._state_key] = {"settings": self._settings()}
        return sd

    def _load_state(self, state_dict: dict) -> None:
        """Loads a state_dict of this wrapper (inner state + slow weights / averages + counters), or a
        plain state_dict of the inner optimizer (the wrapper's state then starts afresh at the next
        step). Tensors are copied onto each param's device in the wrapper's dtypes."""
        sd = dict(state_dict)
        own = sd.pop(self._state_key, None)
        # this format nests the wrapper's state in the per-param entries; an older one keeps it in own["state"]
        saved = dict(own.get("state", {})) if own is not None else {}
        inner = {}
        for i, st in sd["state"].items():
            if isinstance(st, dict) and self._state_key in st:
                st = dict(st)
                saved[i] = st.pop(self._state_key)
            inner[i] = st
        sd["state"] = inner
        self.optimizer.load_state_dict(sd)
        self.state = defaultdict(dict)
        # saved param ids (indices, or names from torch.distributed.checkpoint) in the groups' order
        by_id = dict(zip([i for g in sd["param_groups"] for i in g["params"]],
                         [p for g in self.param_groups for p in g["params"]]))
        for i, st in saved.items():
            p = by_id.get(i)
            if p is None:
                raise ValueError(f"{type(self).__name__}.load_state_dict: the checkpoint has state for param "
                                 f"{i!r} but this optimizer has only {len(by_id)} params")
            self.state[p] = self._load_param_state(p, st)

    def _params_in_order(self) -> list:
        out, seen = [], set()
        for g in self.param_groups:
            for p in g["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def _load_param_state(self, p: Tensor, st: dict) -> dict:
        out = {}
        for k, v in st.items():
            if not isinstance(v, Tensor):
                out[k] = v
            elif k == "step":
                out[k] = v.to(device=p.device, dtype=torch.float64, copy=True).reshape(())
            elif _dist.is_dtensor(p) and v.dim() > 0:  # laid out as the param (sharded or whole saved tensors)
                out[k] = _dist.place_like(v.to(dtype=_slow_dtype(p), copy=True), p)
            elif v.dim() == 0:
                out[k] = v.to(device=p.device, dtype=torch.float32, copy=True)
            else:
                out[k] = v.to(device=p.device, dtype=_slow_dtype(p), copy=True)
        return out

    # -- swapping weights in for evaluation --------------------------------------------------
    def _swap_source(self, p: Tensor) -> Optional[Tensor]:
        raise NotImplementedError

    @contextlib.contextmanager
    def _swap(self):
        backups = []
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    src = self._swap_source(p)
                    if src is None:
                        continue
                    backups.append((p, p.detach().clone()))
                    p.copy_(src)
        try:
            yield self
        finally:
            with torch.no_grad():
                for p, b in backups:
                    p.copy_(b)


class Lookahead(_Wrapper):
    """Lookahead (Zhang et al. 2019) around any torch.optim / fusedopt optimizer.

    Every ``k`` steps of the inner optimizer, in one fused op: ``slow <- slow + alpha (fast - slow)``,
    ``fast <- slow``; with ``pullback_momentum`` also the inner momentum buffers (the state key
    ``momentum_key``, default ``"momentum_buffer"`` of SGD / RMSprop):

    - ``"none"``: inner states are kept across syncs (the paper);
    - ``"reset"``: the buffers are zeroed at each sync;
    - ``"pullback"``: ``buf <- alpha buf + (1 - alpha) cached; cached <- buf`` (cached starts at 0).

    The arithmetic is kozistr/pytorch_optimizer's (``fast.lerp_(slow, 1 - alpha)``, then
    ``slow <- fast``): with float32 params the results are bitwise equal to it. Defaults k=5,
    alpha=0.5 are the paper's (the authors' code defaults to alpha=0.8).

    Differences from the reference implementations, on purpose:

    - the slow weights are created at the first ``step()`` (not at wrap time), from the params as
      they are then, so weights loaded into the model after wrapping are the start point;
    - they are float32 for float16 / bfloat16 params (the reference keeps them in the param dtype);
      with fusedopt's Kahan-compensated bf16 params the sync works on the compensated value;
    - the counter is per param (all params of a group advance together, like kozistr's per-group
      counter; a group added later counts from its own first step), a float64 tensor on the param's
      device, and it counts wrapper steps, whether or not a param had a grad: every param of a group
      syncs on the same step (kozistr skips params whose grad is None at that step);
    - ``pullback``/``reset`` act only on params whose inner state has ``momentum_key`` (kozistr
      creates a zero buffer when missing); a group none of whose params has it is an error.
    - ``state_dict()`` holds the slow weights and counters (the authors' code loses them).
    """

    _rule = "lookahead"
    _state_key = "lookahead"

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5, pullback_momentum: str = "none",
                 momentum_key: str = "momentum_buffer"):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Invalid k: {k!r} (Lookahead syncs every k steps; k must be an int >= 1)")
        alpha_f = float(alpha)
        if not (0.0 <= alpha_f <= 1.0):
            raise ValueError(f"Invalid alpha: {alpha!r} (must be in [0, 1])")
        if pullback_momentum not in _PULLBACK:
            raise ValueError(f"Invalid pullback_momentum: {pullback_momentum!r} (one of {_PULLBACK})")
        super().__init__(optimizer)
        self.k = k
        self.alpha = alpha_f
        self.pullback_momentum = pullback_momentum
        self.momentum_key = momentum_key

    def _describe(self):
        return f"k={self.k}, alpha={self.alpha}, pullback_momentum={self.pullback_momentum!r}"

    def _settings(self):
        return {"k": self.k, "alpha": self.alpha, "pullback_momentum": self.pullback_momentum,
                "momentum_key": self.momentum_key}

    def _init_state(self, p: Tensor):
        st = self.state[p]
        st["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
        st["slow_param"] = p.detach().to(_slow_dtype(p), copy=True)

    def _lists_of(self, p: Tensor):
        st = self.state[p]
        inner = self.optimizer.state.get(p, {})
        buf = inner.get(self.momentum_key) if self.pullback_momentum != "none" else None
        if buf is not None and not isinstance(buf, Tensor):
            buf = None
        if buf is not None and buf.dtype != st["slow_param"].dtype:
            raise ValueError(f"Lookahead(pullback_momentum={self.pullback_momentum!r}): the inner state "
                             f"{self.momentum_key!r} is {buf.dtype} but the slow weights are "
                             f"{st['slow_param'].dtype}; use float32 inner states")
        slow_mom = None
        if buf is not None and self.pullback_momentum == "pullback":
            slow_mom = st.get("slow_momentum")
            if slow_mom is None:
                slow_mom = st["slow_momentum"] = _dist.full_like(buf, 0.0, buf.dtype)
        comp = inner.get("param_comp") if p.dtype == torch.bfloat16 else None
        mode = "none" if buf is None else self.pullback_momentum
        key = (p.device, p.dtype, mode, comp is not None)
        return key, tuple(map(_dist.local, (p, st["slow_param"], buf, slow_mom, st["step"], comp)))

    def _run_op(self, group, found_inf):
        if self.pullback_momentum != "none":
            has = [isinstance(self.optimizer.state.get(p, {}).get(self.momentum_key), Tensor)
                   for p in group["params"]]
            if group["params"] and not any(has) and any(p.grad is not None for p in group["params"]):
                raise ValueError(
                    f"Lookahead(pullback_momentum={self.pullback_momentum!r}): the inner optimizer "
                    f"{type(self.optimizer).__name__} keeps no state {self.momentum_key!r} for this group "
                    "(SGD needs momentum > 0; for Adam-type optimizers pass momentum_key='exp_avg')")
        super()._run_op(group, found_inf)

    def _call(self, kernel, key, b, found_inf):
        _, _, mode, _ = key
        params, slow, bufs, slow_moms, steps, comps = b
        rule = RULES["lookahead"]
        kernel(params, slow, bufs, slow_moms, steps, comps, hyper=rule.pack_hyper(dict(alpha=self.alpha, k=self.k)),
               lr=0.0, found_inf=found_inf, flags=rule.pack_flags(variant=dict(pullback_momentum=mode)))

    def _swap_source(self, p):
        st = self.state.get(p)
        return None if not st else st["slow_param"]

    def swapped(self):
        """Context manager: the slow weights in the params for evaluation, the fast weights (bitwise)
        back on exit. ``with la.swapped(): evaluate(model)``"""
        return self._swap()


class IterateAveraging(_Wrapper):
    """Iterate averaging (Granziol et al. 2020, "Iterate Averaging in the Quest for Best Test Error"; the IA
    of Gadam / GadamX) around any optimizer.

    The iterate after inner step t (t = 1, 2, ... counted by the wrapper) is collected when
    ``t >= start_step`` and ``(t - start_step) % every == 0``, into an equal-weight running mean per
    param, in one fused op: the first collection copies, later ones do ``avg <- avg + (p - avg)/n``
    with n the count including this iterate (the arithmetic of torch.optim.swa_utils.AveragedModel
    on the CPU: bitwise equal to it there; on CUDA AveragedModel uses a lerp, equal up to rounding). The means are float32 (float64 for float64 params);
    ``state[p]`` has ``param_avg``, ``n_averaged`` (float32) and ``step`` (float64).

    Use ``with ia.swapped(): ...`` to evaluate the average (optionally refreshing BatchNorm
    statistics: ``swapped(bn_loader=loader, model=model)``), and ``update_bn`` for the statistics
    pass alone. Collections are per step: to collect once per epoch pass ``every=len(loader)``.
    """

    _rule = "iterate_avg"
    _state_key = "iterate_averaging"

    def __init__(self, optimizer: Optimizer, start_step: int = 0, every: int = 1):
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"Invalid start_step: {start_step!r} (an int >= 0: the first inner step whose "
                             "iterate is collected)")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r} (collect every `every` steps; an int >= 1)")
        super().__init__(optimizer)
        self.start_step = start_step
        self.every = every

    def _describe(self):
        return f"start_step={self.start_step}, every={self.every}"

    def _settings(self):
        return {"start_step": self.start_step, "every": self.every}

    def _init_state(self, p: Tensor):
        st = self.state[p]
        st["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
        st["n_averaged"] = torch.zeros((), dtype=torch.float32, device=p.device)
        st["param_avg"] = _dist.full_like(p, 0.0, _slow_dtype(p))

    def _lists_of(self, p: Tensor):
        st = self.state[p]
        return (p.device, p.dtype), tuple(map(_dist.local, (p, st["param_avg"], st["n_averaged"], st["step"])))

    def _call(self, kernel, key, b, found_inf):
        params, avgs, ns, steps = b
        kernel(params, avgs, ns, steps, [], lr=0.0, found_inf=found_inf,
               hyper=RULES["iterate_avg"].pack_hyper(dict(start_step=self.start_step, every=self.every)))

    def n_averaged(self) -> int:
        """Iterates collected so far (the largest count over params; reads the device)."""
        return max((int(st["n_averaged"].item()) for st in self.state.values() if st), default=0)

    def _swap_source(self, p):
        st = self.state.get(p)
        if not st or float(st["n_averaged"]) == 0.0:
            return None  # nothing collected for this param yet: it keeps its current weights
        return st["param_avg"]

    @contextlib.contextmanager
    def swapped(self, bn_loader: Optional[Iterable] = None, model: Optional[torch.nn.Module] = None,
                device=None):
        """Context manager: the averaged weights in the params, the current ones (bitwise) back on exit.

        With ``bn_loader`` and ``model``, BatchNorm running statistics are recomputed for the
        averaged weights (``update_bn``) inside, and the model's BatchNorm buffers restored on exit.
        Raises if nothing was collected yet."""
        if self.n_averaged() == 0:
            raise RuntimeError("IterateAveraging.swapped(): no iterate collected yet "
                               f"(start_step={self.start_step}, every={self.every})")
        if (bn_loader is None) != (model is None):
            raise ValueError("IterateAveraging.swapped(): pass both bn_loader and model, or neither")
        saved_bn = None
        if model is not None:
            saved_bn = [(b, b.detach().clone()) for m in model.modules()
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
        with self._swap():
            try:
                if model is not None:
                    update_bn(bn_loader, model, device=device)
                yield self
            finally:
                if saved_bn is not None:
                    with torch.no_grad():
                        for b, v in saved_bn:
                            b.copy_(v)


@torch.no_grad()
def update_bn(loader: Iterable, model: torch.nn.Module, device=None) -> None:
    """Recompute BatchNorm running statistics with one pass over ``loader``; the semantics of
    torch.optim.swa_utils.update_bn: running stats reset, cumulative averaging (momentum None)
    over the batches in train mode, momenta and the train/eval mode restored afterwards. A batch is
    a tensor or a list/tuple whose first element is the input. No-op without BatchNorm layers."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = []
    for m in bns:
        m.reset_running_stats()
        momenta.append(m.momentum)
        m.momentum = None
    was_training = model.training
    model.train()
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if device is not None:
                x = x.to(device)
            model(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)


def Gadam(params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.1,
          amsgrad: bool = False, *, start_step: int, every: int = 1, **kwargs) -> IterateAveraging:
    """Gadam (Granziol et al.): fusedopt.AdamW (decoupled weight decay applied before the step, as
    the authors' base_optimizers/adam.py) + iterate averaging from ``start_step``, every ``every``
    steps. Defaults lr=1e-3, weight_decay=0.1 are within the authors' README settings (their
    decoupled decay is large: 0.1-0.3 at lr 1e-3). Other keywords go to fusedopt.AdamW. Pair it
    with ``fusedopt.IALR`` for the paper's schedule."""
    from .optim.adam import AdamW

    inner = AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **kwargs)
    return IterateAveraging(inner, start_step=start_step, every=every)


def GadamX(params, lr: float = 1e-1, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 2.5e-3,
           partial: float = 0.125, amsgrad: bool = True, *, start_step: int, every: int = 1,
           **kwargs) -> IterateAveraging:
    """GadamX (Granziol et al.): fusedopt.Padam with decoupled weight decay (PadamW: p *= 1 - lr wd
    before the step) + iterate averaging. Defaults are the authors' GadamX setting (lr 0.1, decoupled
    wd 2.5e-3) and their run script's ``--partial 0.125``; amsgrad as in their Padam. Other keywords
    go to fusedopt.Padam."""
    from .optim.padam import Padam

    inner = Padam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                  partial=partial, decoupled_wd=True, **kwargs)
    return IterateAveraging(inner, start_step=start_step, every=every)
