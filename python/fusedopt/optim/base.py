"""FusedOptimizer: the one base class of fusedopt's per-element optimizers.

A subclass names its op (`_rule`, a rule of csrc/core/rule_table.h) and says, per param group, the
values of the hyperparameters, flags and variant fields its rule's header declares, by name
(`_hyper`, `_flags`, `_variant`: dicts). The base class orders and packs them (fusedopt._ops.Rule),
derives the state lists in use from the variant, and does the rest: lazy state, grouping of a param group's tensors by (device, param dtype) into
one op call each, AMP (`grad_scale` / `found_inf` from torch.amp.GradScaler handed to
the kernel), tensor lr, and a state_dict that loads both ways with torch.optim
without casting states to the param dtype.

Cross-tensor rules ("reduce then element-wise", csrc/core/reduce.h) declare up to three things
and the base class wires the reduction engine in:
  _global_in = True      the op takes global_in = sum of squares of the (unscaled) grads of every
                         param with a grad in every group whose _wants_global_sumsq(group) is true;
  _pre_reduce = (...)    per-tensor sums of squares of "params" / "grads" computed before the
                         element-wise pass and handed as tensor_in (plus _tensor_in_extra columns);
  _passes = (...), _red_out = k   multi-pass rules: the first op writes k per-tensor sums into
                         tensor_out, each later op of _passes reads them as tensor_in.
Right after each reduction and before the element-wise pass that reads it, the partial sums of
DTensor params are all-reduced over the mesh dims that shard them (fusedopt.distributed; global sums
under ZeroRedundancyOptimizer over its group), then `reduce_hook` (None by default) is called as
hook(kind, tensor) with kind "global_sumsq" or "tensor_sums".

DTensor params (FSDP2, tensor parallel): the kernels run on the local shards, states are DTensors laid
out as the param (docs/distributed.md).

Per-step host work: after the first step the tensor lists of each bucket are cached
(PlanCache, shared with Adafactor), so a step costs one pass over `p.grad` plus one op call
per bucket. The cache is rebuilt when the set of params with grads changes, or after
load_state_dict / add_param_group.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import distributed as _dist
from .._ops import _VARIANT_SHIFT, FLAG_MAXIMIZE, FLAG_STOCH_ROUND, RULES, SIGNED_KEYS, op
from ..q8 import ABSMAX_SUFFIX, OVERRIDE_ATTR, dequantize_blockwise, quantize_blockwise



def _memory_view(t: Tensor) -> Tensor:
    """A 1-D view of a dense tensor's elements in memory order (the order the kernels walk)."""
    if t.is_contiguous():
        return t.view(-1)
    perm = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    return t.permute(perm).view(-1)


def _dense(t: Tensor) -> bool:
    """Non-overlapping and dense: some permutation of the dims is contiguous."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def new_plan(*args):
    """A kept plan of one bucket (csrc/torch/ops.cpp: Plan); its step() is the bucket's fused op call."""
    return torch.classes.fusedopt.Plan(*args)


class _Plan(list):
    """A group's buckets (a list), plus for DTensor params: `dtensor` (grads are unwrapped to their local
    shards each step) and `rows` (per bucket, the all-reduce of per-tensor partial sums, or None); for the
    fast path (FusedOptimizer._fast_step): `fast`, the params that had no grad (`missing`) and `nparams`."""
    dtensor = False
    rows: list = []
    fast = False
    missing: list = []
    nparams = 0


_PARAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_ROUNDINGS = ("nearest", "stochastic", "kahan")
_STATE_BITS = (8, 16, 32)
_Q8_BLOCKS = (256, 512, 1024, 2048, 4096)
_STORAGE_KEYS = ("state_bits", "min_8bit_size", "block_size")  # power-of-two multiples of the kernels' 256-element tile

# The storage options every fusedopt optimizer takes as keywords (declared once, in FusedOptimizer.__init__'s
# signature; a class's signature lists its own arguments and passes **options on; STORAGE_OPTIONS at the end
# of this module reads their defaults from there):
#   state_dtype     None (float32 states) or torch.bfloat16
#   param_rounding  "nearest"; for bfloat16 params also "stochastic" or "kahan" (a bf16 compensation state)
#   state_bits      32, 16 (bfloat16 states) or 8 (block-wise 8-bit states)
#   min_8bit_size   params with fewer elements keep 32-bit states when state_bits=8
#   block_size      elements per 8-bit block (256 ... 4096, powers of two)
# `capturable` is accepted by every class too (every step is CUDA-graph capturable).

def _check_scalar(name: str, value, lo: float = 0.0, hi: Optional[float] = None, hi_open: bool = True):
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} as a Tensor must have one element, got shape {tuple(value.shape)}")
        return
    v = float(value)
    if not (v >= lo) or (hi is not None and (v >= hi if hi_open else v > hi)):
        rng = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"Invalid {name}: {value} (must be {rng})")


def check_betas(betas, n: int = 2):
    """Each beta in [0, 1) (an out-of-range value is named before a wrong count), then the count."""
    for i, b in enumerate(betas):
        if isinstance(b, Tensor):
            raise ValueError(f"betas[{i}] as a Tensor is not supported by fusedopt; pass a float")
        _check_scalar(f"beta parameter at index {i}", b, 0.0, 1.0)
    if len(betas) != n:
        raise ValueError(f"Invalid betas: {betas} (need {n} values)")


def _check_betas_ranges(betas, ranges):
    """Each beta in its range (checked index by index, so an out-of-range value is named before a
    wrong count), then the count. ranges[i] = (lo, hi or None, hi_open)."""
    for i, b in enumerate(betas):
        if isinstance(b, Tensor):
            raise ValueError(f"betas[{i}] as a Tensor is not supported by fusedopt; pass a float")
        if i < len(ranges):
            lo, hi, hi_open = ranges[i]
            _check_scalar(f"beta parameter at index {i}", b, lo, hi, hi_open)
    if len(betas) != len(ranges):
        raise ValueError(f"Invalid betas: {betas} (need {len(ranges)} values)")


_UNIT = (0.0, 1.0, True)  # [0, 1)
_NONNEG = (0.0, None, True)  # >= 0 (beta0 of PNM: default 1.0)


# The storage options every class documents (its docstring ends with this)
_FUSED_DOC = """
    fusedopt extras (keyword-only): ``state_dtype`` (None = float32, or torch.bfloat16) and
    ``param_rounding`` ("nearest", or for bfloat16 params "stochastic" / "kahan").
    ``foreach`` is accepted and ignored (always fused); ``fused=False`` and
    ``differentiable=True`` are refused. ``capturable`` is accepted: steps live on the param's
    device and lr / found_inf / grad_scale are read on the device, so every step is capturable.
    ``state_bits`` (32; 16 = bfloat16 states; 8 = block-wise 8-bit states), ``min_8bit_size``
    (4096: smaller params keep 32-bit states) and ``block_size`` (256: elements per 8-bit absmax
    block) choose how states are stored (docs/algorithms.md §19).
"""


class HookedLoad:
    """A load_state_dict whose post-hooks see the states as the optimizer keeps them.

    torch.optim's load_state_dict runs the post-hooks at its end, before a subclass converts what it
    loaded (dtypes, 8-bit codes, steps); whatever a hook changed would then be overwritten. Here the
    pre-hooks run first (they may replace the state_dict), then the class's whole conversion
    (`_load_state`), then the post-hooks.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            out = hook(self, state_dict)
            if out is not None:
                state_dict = out
        pre, post = self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        try:
            self._load_state(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = pre, post
        for hook in post.values():
            hook(self)

    def _load_state(self, state_dict: dict[str, Any]) -> None:
        Optimizer.load_state_dict(self, state_dict)


class PlanCache:
    """Per param group, the lists a step hands its ops (a plan: validated params, their states and
    buckets), built once and reused while the group's params with grads, `_plan_key(group)` and (DTensor
    params: FSDP2 may swap a shard's local tensor) the local tensors stay the same. Never cached while
    torch.compile traces. Cleared by add_param_group, __setstate__ and the classes' load_state_dict.
    Subclasses define `_build_plan(gi, group, grads) -> _Plan` and may define `_plan_key(group)`."""

    _plans: dict

    def _plan_key(self, group) -> tuple:
        return ()

    def _build_plan(self, gi: int, group, grads: list) -> "_Plan":
        raise NotImplementedError

    def _group_plan(self, gi: int, group, grads: list, compiling: bool = False) -> list:
        """_build_plan of group gi, cached between steps (see the class docstring)."""
        if compiling:
            return self._build_plan(gi, group, grads)
        mask = (tuple(g is not None for g in grads), self._plan_key(group))
        cached = self._plans.get(gi)
        if cached is not None and cached[1].dtensor:  # FSDP2 may swap a sharded param's local tensor
            mask += (tuple(id(_dist.local(p)) for p in group["params"]),)
        if cached is None or cached[0] != mask:
            plan = self._build_plan(gi, group, grads)
            if plan.dtensor:
                mask = mask[:2] + (tuple(id(_dist.local(p)) for p in group["params"]),)
            cached = (mask, plan)
            self._plans[gi] = cached
        return cached[1]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._plans = {}

    def _begin_step(self, closure) -> tuple:
        """The start of a step(): (the closure's loss, GradScaler's grad_scale and found_inf, whether
        torch.compile is tracing)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        return (loss, getattr(self, "grad_scale", None), getattr(self, "found_inf", None),
                torch.compiler.is_compiling())

    def __setstate__(self, state):
        super().__setstate__(state)
        self._plans = {}


class _Bucket(tuple):
    """One bucket of a plan (see _build_plan) and the lr factor of its params' overrides."""

    def __new__(cls, items, lr_scale: float = 1.0):
        b = super().__new__(cls, items)
        b.lr_scale = lr_scale
        return b


class FusedOptimizer(HookedLoad, PlanCache, Optimizer):
    """Base of every fused per-element optimizer (see module docstring)."""

    _rule: str = ""  # op name in fusedopt._ops.RULES
    _step_supports_amp_scaling = True
    # cross-tensor rules (see the module docstring)
    _global_in: bool = False
    _pre_reduce: tuple = ()
    _passes: tuple = ()
    _red_out: int = 0
    reduce_hook = None

    # The storage options are this signature's keywords after differentiable: declared here once (a
    # subclass passes **options on; signature introspection, e.g. LightningCLI's, follows it here).
    def __init__(self, params, defaults: dict, *, foreach=None, fused=None, capturable: bool = False,
                 differentiable: bool = False, state_dtype=None, param_rounding: str = "nearest",
                 state_bits: int = 32, min_8bit_size: int = 4096, block_size: int = 256):
        name = type(self).__name__
        if fused is False:
            raise ValueError(f"fusedopt.{name} is always fused; fused=False asks for torch.optim.{name} instead")
        if differentiable:
            raise ValueError(f"fusedopt.{name} does not support differentiable=True (its kernels are not "
                             f"differentiable); use torch.optim.{name}")
        if "lr" in defaults:
            _check_scalar("learning rate", defaults["lr"])
        if state_bits == 16 and state_dtype is None:
            state_dtype = torch.bfloat16  # state_bits=16 is state_dtype=torch.bfloat16
        self._check_8bit_supported(state_bits)
        self._check_state_options(state_dtype, param_rounding, state_bits, min_8bit_size, block_size)
        defaults = dict(defaults)
        defaults.setdefault("foreach", foreach)
        defaults.setdefault("fused", fused)
        defaults.setdefault("capturable", capturable)
        defaults.setdefault("differentiable", False)
        defaults["state_dtype"] = state_dtype
        defaults["param_rounding"] = param_rounding
        defaults["state_bits"] = state_bits
        defaults["min_8bit_size"] = min_8bit_size
        defaults["block_size"] = block_size
        self._plans: dict = {}
        self._zero_group = _dist.zero_group()  # built by ZeroRedundancyOptimizer: global sums over its group
        super().__init__(params, defaults)

    # -- subclass hooks ---------------------------------------------------------------
    def _hyper(self, group) -> dict:
        """{name: value} of every hyperparameter of the rule's header (kHyper) for this group."""
        raise NotImplementedError

    def _flags(self, group) -> dict:
        """{name: bool} of every rule flag of the header (kFlags)."""
        return {}

    def _variant(self, group) -> dict:
        """{name: value} of the header's variant fields (kVariant); a field named as a hyperparameter may be
        left out: it is set when that hyperparameter is non-zero (SGD's momentum)."""
        return {}

    def _step_lr(self, group):
        """Called once per group and step, before its op calls: the lr the kernels get (default the
        group's; Schedule-Free advances its per-group schedule here and returns the scheduled lr)."""
        return group["lr"]

    def _active_slots(self, group) -> tuple:
        """Which of the rule's state lists this group uses: those of its variant (the header's slot_mask)."""
        spec = RULES[self._rule]
        return spec.active_slots(spec.variant_index(self._variant(group), self._hyper(group)))

    def _wants_global_sumsq(self, group) -> bool:
        """Whether this group's op reads the global grad sum of squares (global_in)."""
        return False

    def _tensor_in_extra(self, group, idx: list, params: list) -> list:
        """Extra per-tensor columns of tensor_in after the _pre_reduce sums (float lists)."""
        return []

    def _global_sumsq(self, grad_scale):
        """Sum of squares of the unscaled grads of every group that wants it, on the first grad's
        device (a 0-dim float32 tensor), or None."""
        from ..reduce import group_sumsq

        params = [p for g in self.param_groups if self._wants_global_sumsq(g) for p in g["params"] if p.grad is not None]
        if not params:
            return None
        where = type(self).__name__
        grads = [_dist.local(p.grad) for p in params]
        keys = self._global_keys(params)
        if keys is not None:
            # partial sums of sharded grads (ZeRO: of this rank's params), all-reduced per mesh dims
            parts: dict = {}
            for k, g in zip(keys, grads):
                parts.setdefault(None if k is None else (id(k[0]), k[1]), (k, []))[1].append(g)
            total = _dist.reduce_totals([(k, group_sumsq(gs, grads[0].device, grad_scale, where=where))
                                         for k, gs in parts.values()])
        else:
            total = group_sumsq(grads, grads[0].device, grad_scale, where=where)
        if self.reduce_hook is not None:
            self.reduce_hook("global_sumsq", total)
        return total

    def _global_keys(self, params: list):
        """Per param, the all-reduce key of its partial sum of squares (distributed.reduce_key; ZeRO: the
        ZeroRedundancyOptimizer's group), or None when nothing is distributed; cached per param list."""
        ids = tuple(map(id, params))
        cached = self.__dict__.get("_gkeys")
        if cached is not None and cached[0] == ids:
            return cached[1]
        keys = None
        if self._zero_group is not None or any(_dist.is_dtensor(p) for p in params):
            names = {id(p): self._pname(gi, pi, g) for gi, g in enumerate(self.param_groups)
                     for pi, p in enumerate(g["params"])}
            for p in params:
                if _dist.is_dtensor(p):
                    _dist.check_layout(p, f"fusedopt.{type(self).__name__}: {names[id(p)]}")
            keys = [_dist.reduce_key(p) if _dist.is_dtensor(p) else _dist.zero_key(self._zero_group) for p in params]
        self._gkeys = (ids, keys)
        return keys

    def _state_init_value(self, key: str, group):
        """Value a new per-element state starts at: the header's (0, or "param": a copy of the param;
        Adagrad's sum: initial_accumulator_value)."""
        return RULES[self._rule].inits[key]

    # -- options ------------------------------------------------------------------------
    _supports_8bit = True  # False: a rule whose passes cannot keep 8-bit states (KOALA) ...
    _no_8bit_reason = ""   # ... and why, for the error

    def _check_8bit_supported(self, state_bits):
        if state_bits == 8 and not self._supports_8bit:
            raise ValueError(f"fusedopt.{type(self).__name__} does not support state_bits=8 ({self._no_8bit_reason}); "
                             "use state_bits=32 or 16")

    @staticmethod
    def _check_state_options(state_dtype, param_rounding, state_bits=32, min_8bit_size=4096, block_size=256):
        if state_dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"state_dtype must be None (float32), torch.float32 or torch.bfloat16, got {state_dtype}")
        if param_rounding not in _ROUNDINGS:
            raise ValueError(f"param_rounding must be one of {_ROUNDINGS}, got {param_rounding!r}")
        if isinstance(state_bits, bool) or state_bits not in _STATE_BITS:
            raise ValueError(f"state_bits must be 8, 16 or 32, got {state_bits!r}")
        if state_bits == 16 and state_dtype != torch.bfloat16:
            raise ValueError(f"state_bits=16 means bfloat16 states; it contradicts state_dtype={state_dtype}")
        if isinstance(block_size, bool) or block_size not in _Q8_BLOCKS:
            raise ValueError(f"block_size must be one of {_Q8_BLOCKS} (a power-of-two multiple of the kernels' "
                             f"256-element tile), got {block_size!r}")
        if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) or min_8bit_size < 0:
            raise ValueError(f"min_8bit_size must be a non-negative int, got {min_8bit_size!r}")
        if state_bits == 8 and param_rounding != "nearest":
            raise ValueError(f"param_rounding={param_rounding!r} cannot be combined with state_bits=8")

    def _fill_defaults(self, group):
        for k, v in self.defaults.items():
            group.setdefault(k, v)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._check_8bit_supported(param_group.get("state_bits", self.defaults.get("state_bits", 32)))
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        if g.get("state_bits") == 16 and g.get("state_dtype") is None:
            g["state_dtype"] = torch.bfloat16
        self._check_state_options(g.get("state_dtype"), g.get("param_rounding", "nearest"), g.get("state_bits", 32),
                                  g.get("min_8bit_size", 4096), g.get("block_size", 256))

    def __setstate__(self, state):
        super().__setstate__(state)
        for g in self.param_groups:
            self._fill_defaults(g)

    # -- state --------------------------------------------------------------------------
    def _pname(self, gi: int, pi: int, group) -> str:
        names = group.get("param_names")
        s = f"param_groups[{gi}]['params'][{pi}]"
        if names and pi < len(names):
            s += f" ({names[pi]!r})"
        return s

    def _state_dtype_for(self, p: Tensor, group) -> torch.dtype:
        if p.dtype == torch.float64:
            return torch.float64
        bits = self._override(p).get("state_bits")
        if bits is not None:
            return torch.bfloat16 if bits == 16 else torch.float32
        return group.get("state_dtype") or torch.float32

    @classmethod
    def _applies_lr_scale(cls) -> bool:
        """Whether this class's step() is FusedOptimizer's (the one that applies lr_scale overrides);
        torch wraps step() per class, hence the unwrap."""
        return inspect.unwrap(cls.step) is inspect.unwrap(FusedOptimizer.step)

    def _override(self, p: Tensor) -> dict:
        """p's per-param options (fusedopt.override): those recorded in its state when the state was
        created (saved and loaded with it), else those set on p now."""
        st = self.state.get(p)
        if st and "override" in st:
            return st["override"]
        return getattr(p, OVERRIDE_ATTR, None) or {}

    def _validate_param(self, p: Tensor, g: Tensor, gi: int, pi: int, group):
        where = f"fusedopt.{type(self).__name__}: {self._pname(gi, pi, group)}"
        gp = p  # as the user sees it (a DTensor under FSDP2 / TP): its global numel decides 8-bit states
        if _dist.is_dtensor(p):
            _dist.check_layout(p, where)
            _dist.check_grad(p, g, where)
            p, g = p._local_tensor, g._local_tensor  # the kernels see the local shards
        elif _dist.is_dtensor(g):
            raise ValueError(f"{where} is a plain tensor but its grad is a DTensor")
        if torch.is_complex(p):
            raise ValueError(f"{where} is complex ({p.dtype}); complex params are not supported, "
                             "optimize torch.view_as_real(param) instead")
        if p.dtype not in _PARAM_DTYPES:
            raise ValueError(f"{where} has unsupported dtype {p.dtype} (supported: float32, float16, bfloat16, "
                             "float64 on the CPU)")
        if p.dtype == torch.float64 and p.device.type != "cpu":
            raise ValueError(f"{where}: float64 params are supported on the CPU only")
        if g.is_sparse or g.layout != torch.strided:
            raise ValueError(f"{where} has a sparse gradient; fusedopt optimizers take dense gradients "
                             "(see torch.optim.SparseAdam)")
        if g.dtype != p.dtype:
            raise ValueError(f"{where}: grad dtype {g.dtype} differs from param dtype {p.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"{where}: grad shape {tuple(g.shape)} differs from param shape {tuple(p.shape)}")
        if g.device != p.device:
            raise ValueError(f"{where}: grad is on {g.device} but the param is on {p.device}")
        if p.numel() and not p.is_contiguous() and not _dense(p):
            raise ValueError(f"{where} is a non-dense view (strides {p.stride()}); fusedopt updates dense "
                             "tensors in place, pass the base tensor instead")
        if p.numel() and g.stride() != p.stride():
            raise ValueError(f"{where}: grad strides {g.stride()} differ from param strides {p.stride()}")
        ov = self._override(gp)
        if ov.get("state_bits") == 8 and not self._supports_8bit:
            raise ValueError(f"{where} has a state_bits=8 override (fusedopt.override), but fusedopt.{type(self).__name__} "
                             f"does not support 8-bit states ({self._no_8bit_reason})")
        if ov.get("lr_scale", 1.0) != 1.0 and not self._applies_lr_scale():
            raise ValueError(f"{where} has an lr_scale override (fusedopt.override), which fusedopt.{type(self).__name__} "
                             "does not apply; put the param in its own param group with the scaled lr instead")
        if ov.get("state_bits") == 8 and group.get("param_rounding", "nearest") != "nearest":
            raise ValueError(f"{where} has a state_bits=8 override (fusedopt.override), which cannot be combined with "
                             f"param_rounding={group['param_rounding']!r}")
        if p.dtype == torch.float64 and self._wants_8bit(gp, group):
            raise ValueError(f"{where}: state_bits=8 needs float32, float16 or bfloat16 params (this one is "
                             "float64); put it in a param group with state_bits=32")
        if group.get("param_rounding", "nearest") != "nearest" and p.dtype != torch.bfloat16:
            raise ValueError(f"{where}: param_rounding={group['param_rounding']!r} applies to bfloat16 params "
                             f"only, this one is {p.dtype}")

    def _wants_8bit(self, p: Tensor, group) -> bool:
        """8-bit states for this param: its state_bits (a fusedopt.override, e.g. register_32bit_state
        or StableEmbedding, else the group's) is 8 and it has at least min_8bit_size elements. A DTensor
        param (global numel) also needs shard boundaries on block boundaries (distributed.q8_absmax_shape)."""
        bits = self._override(p).get("state_bits", group.get("state_bits", 32))
        return (bits == 8 and p.numel() >= group.get("min_8bit_size", 4096)
                and (not _dist.is_dtensor(p) or _dist.q8_absmax_shape(p, group.get("block_size", 256)) is not None))

    def _is_8bit(self, p: Tensor, group) -> bool:
        """Whether p's states are 8-bit: fixed when the state is created, read back from it."""
        st = self.state.get(p)
        if st:
            for key in RULES[self._rule].slots:
                if key in st:
                    return st[key].dtype == torch.uint8
        return self._wants_8bit(p, group)

    @staticmethod
    def _quantized_state(src: Tensor, p: Tensor, key: str, block: int) -> tuple:
        """(codes, absmax) of the float values `src` for the state `key` of `p` (codes keep p's
        strides: blocks follow the memory order, as the kernels walk it). For a DTensor p: DTensors, from
        `src`'s values on p's local shard (a DTensor laid out as p, or a local tensor)."""
        if _dist.is_dtensor(p):
            codes, am = FusedOptimizer._quantized_state(_dist.local(src), p._local_tensor, key, block)
            return _dist.wrap_like(codes, p), _dist.wrap_absmax(am, p, block)
        codes = torch.empty_like(p, dtype=torch.uint8, memory_format=torch.preserve_format)
        flat = src.to(device=p.device, dtype=torch.float32)
        # the values in memory order of codes (same strides as p)
        ordered = torch.empty_like(codes, dtype=torch.float32)
        ordered.copy_(flat)
        c, am = quantize_blockwise(_memory_view(ordered), block, SIGNED_KEYS[key])
        _memory_view(codes).copy_(c)
        return codes, am

    @torch.no_grad()
    def _lerp_to_state(self, group, key: str, weight: float) -> None:
        """p <- lerp(p, state[key], weight) for every param of the group that has the state (8-bit codes
        decoded; DTensors on their local shards): Schedule-Free's train() / eval()."""
        for p in group["params"]:
            st = self.state.get(p)
            if not st or key not in st:
                continue
            pl, v = _dist.local(p), _dist.local(st[key])
            if v.dtype == torch.uint8:
                am = _dist.local(st[key + ABSMAX_SUFFIX]).reshape(-1)
                vals = dequantize_blockwise(_memory_view(v), am, group.get("block_size", 256), SIGNED_KEYS[key])
                v = torch.empty_like(pl, dtype=torch.float32)
                _memory_view(v).copy_(vals)
            pl.lerp_(v.to(pl.dtype), weight)

    def _ensure_state(self, p: Tensor, group, slots_on: tuple) -> dict:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            if getattr(p, OVERRIDE_ATTR, None):  # recorded with the new state, saved by state_dict
                state["override"] = dict(getattr(p, OVERRIDE_ATTR))
        q8 = self._is_8bit(p, group)
        sdt = self._state_dtype_for(p, group)
        for key, on in zip(RULES[self._rule].slots, slots_on):
            if on and key not in state:
                value = self._state_init_value(key, group)
                init = p.detach().to(dtype=sdt, copy=True) if value == "param" else _dist.full_like(p, value, sdt)
                if q8:
                    state[key], state[key + ABSMAX_SUFFIX] = self._quantized_state(init, p, key,
                                                                                   group.get("block_size", 256))
                else:
                    state[key] = init
        for key, init in RULES[self._rule].scalars:
            if key not in state:
                state[key] = torch.full((), init, dtype=torch.float32, device=p.device)
        if group.get("param_rounding") == "kahan" and "param_comp" not in state:
            state["param_comp"] = _dist.full_like(p, 0.0, p.dtype)
        return state

    # -- step ---------------------------------------------------------------------------
    def _build_plan(self, gi: int, group, grads: list) -> list:
        """Buckets of one group: [(device, [indices], [params], [[state lists], [scalar-state lists]],
        [steps], [comps], absmax)]; the state lists are passed to the op in that order. absmax is None
        for float states, else per state slot the list of `<key>_absmax` tensors (8-bit states)."""
        slots_on = self._active_slots(group)
        kahan = group.get("param_rounding") == "kahan"
        buckets: dict = {}
        rkeys: dict = {}  # per bucket: each tensor's all-reduce key of partial sums (DTensor params)
        L = _dist.local   # the kernels see local shards; a plain tensor stays itself
        for pi, (p, g) in enumerate(zip(group["params"], grads)):
            if g is None:
                continue
            self._validate_param(p, g, gi, pi, group)
            st = self._ensure_state(p, group, slots_on)
            q8 = st[next(k for k, on in zip(RULES[self._rule].slots, slots_on) if on)].dtype == torch.uint8 \
                if any(slots_on) else False
            key = (p.device, p.dtype, q8, float(self._override(p).get("lr_scale", 1.0)))
            b = buckets.get(key)
            scalars = RULES[self._rule].scalars
            if b is None:
                b = buckets[key] = (p.device, [], [], [[] for _ in range(len(slots_on) + len(scalars))], [], [],
                                    [[] for _ in slots_on] if q8 else None)
            b[1].append(pi)
            b[2].append(L(p))
            rkeys.setdefault(key, []).append(_dist.reduce_key(p))
            for k, (skey, on) in enumerate(zip(RULES[self._rule].slots, slots_on)):
                if on:
                    b[3][k].append(L(st[skey]))
                    if q8:
                        b[6][k].append(L(st[skey + ABSMAX_SUFFIX]))
            for k, (skey, _) in enumerate(scalars):
                b[3][len(slots_on) + k].append(st[skey])
            b[4].append(st["step"])
            if kahan:
                b[5].append(L(st["param_comp"]))
        plan = _Plan(_Bucket(b, k[3]) for k, b in buckets.items())
        plan.dtensor = any(_dist.is_dtensor(p) for p in group["params"])
        if plan.dtensor:
            plan.rows = [_dist.RowReduce(ks) if any(ks) else None for ks in rkeys.values()]
        # the fast path of step() (_fast_step): single-pass rules on plain tensors
        plan.fast = (not plan.dtensor and not self._global_in and not self._pre_reduce and not self._passes
                     and not self._red_out and self._zero_group is None)
        plan.missing = [p for p, g in zip(group["params"], grads) if g is None]
        plan.nparams = len(group["params"])
        return plan

    def _plan_key(self, group) -> tuple:
        # the slots in use are part of the key: a group may switch on momentum / amsgrad later
        return self._active_slots(group)

    def _group_flags(self, group, hyper: Optional[dict] = None) -> int:
        """The op's flags: the rule's flags and variant (packed from the header's names), maximize and
        stochastic rounding."""
        return RULES[self._rule].pack_flags(self._flags(group), self._variant(group),
                                            self._hyper(group) if hyper is None else hyper) | self._engine_flags(group)

    @staticmethod
    def _engine_flags(group) -> int:
        """The engine's flags of a group (config.h): maximize, stochastic rounding."""
        flags = 0
        if group.get("maximize", False):
            flags |= FLAG_MAXIMIZE
        if group.get("param_rounding") == "stochastic":
            flags |= FLAG_STOCH_ROUND
        return flags

    @torch.no_grad()
    def step(self, closure=None):
        loss, grad_scale, found_inf, compiling = self._begin_step(closure)
        gsq = self._global_sumsq(grad_scale) if self._global_in else None
        for gi, group in enumerate(self.param_groups):
            lr = self._step_lr(group)
            if not compiling and self._fast_step(gi, group, lr, grad_scale, found_inf):
                continue
            grads = [p.grad for p in group["params"]]
            plan = self._group_plan(gi, group, grads, compiling)
            if not plan:
                continue
            if plan.dtensor:
                grads = [_dist.local(g) for g in grads]
            named = self._hyper(group)
            hyper = RULES[self._rule].pack_hyper(named)
            flags = self._group_flags(group, named)
            if isinstance(lr, Tensor):
                lr_f0, lr_t0 = 0.0, lr
            else:
                lr_f0, lr_t0 = float(lr), None
            kernel = op(self._rule)
            block = group.get("block_size", 256)
            for bi, bucket in enumerate(plan):
                device, idx, params, states, steps, comps, absmax = bucket
                rows = plan.rows[bi] if plan.dtensor else None
                lr_f, lr_t = (lr_f0, lr_t0) if bucket.lr_scale == 1.0 else (
                    lr_f0 * bucket.lr_scale, None if lr_t0 is None else lr_t0 * bucket.lr_scale)
                # 8-bit states: one flat absmax list, list-major over the state lists in use
                flat_absmax = None if absmax is None else [t for lst in absmax for t in lst]
                bgrads = [grads[i] for i in idx]
                gs = grad_scale if grad_scale is None or grad_scale.device == device else grad_scale.to(device)
                fi = found_inf if found_inf is None or found_inf.device == device else found_inf.to(device)
                lt = lr_t
                if lt is not None and lt.device != device and lt.device.type != "cpu":
                    lt = lt.to(device)
                extra = {}
                if self._global_in:
                    extra["global_in"] = None if gsq is None or not self._wants_global_sumsq(group) else (
                        gsq if gsq.device == device else gsq.to(device))
                if self._pre_reduce:
                    extra["tensor_in"] = self._pre_reduced(group, bucket, bgrads, gs, rows, compiling)
                if self._red_out:
                    extra["tensor_out"] = torch.empty((len(params), self._red_out), dtype=torch.float32,
                                                      device=device)
                try:
                    kernel(params, bgrads, *states, steps, comps, hyper=hyper, lr=lr_f, lr_tensor=lt,
                           grad_scale=gs, found_inf=fi, flags=flags, state_absmax=flat_absmax, block_size=block,
                           **extra)
                    sums = extra.get("tensor_out")
                    for later in self._passes:
                        self._reduced("tensor_sums", sums, rows)
                        # grads were unscaled in place by the first pass: no grad_scale here
                        more = {"global_in": extra["global_in"]} if "global_in" in extra else {}
                        op(later)(params, bgrads, *states, steps, comps, hyper=hyper, lr=lr_f, lr_tensor=lt,
                                  grad_scale=None, found_inf=fi, flags=flags, state_absmax=flat_absmax,
                                  block_size=block, tensor_in=sums, **more)
                except RuntimeError:
                    if not compiling:
                        for pi, p in zip(idx, params):
                            self._validate_param(p, grads[pi], gi, pi, group)
                    raise
        return loss

    def _fast_step(self, gi: int, group, lr, grad_scale, found_inf) -> bool:
        """The step of group gi through its buckets' kept plans (csrc/torch/ops.cpp: Plan), if it can take
        one: the group's plan exists (one slow step made it), the rule is single-pass on plain tensors,
        the slots in use are the same and no param that had no grad has one now. Each bucket's lists
        crossed into C++ once; a step passes the per-step scalars, and C++ reads every grad from its
        param (a param without a grad takes no step, as on the slow path). Returns whether it stepped."""
        cached = self._plans.get(gi)
        if cached is None:
            return False
        plan = cached[1]
        if (not plan.fast or plan.nparams != len(group["params"]) or cached[0][1] != self._plan_key(group)
                or any(p.grad is not None for p in plan.missing)):
            return False
        named = self._hyper(group)
        hyper = [float(h) for h in RULES[self._rule].pack_hyper(named)]
        flags = self._group_flags(group, named)
        lr_f0, lr_t0 = (0.0, lr) if isinstance(lr, Tensor) else (float(lr), None)
        block = group.get("block_size", 256)
        nslots = len(RULES[self._rule].slots)
        fixed = flags & ~((1 << _VARIANT_SHIFT) - 1 - FLAG_STOCH_ROUND)  # variant and rounding: fixed in a plan
        for bucket in plan:  # every bucket's plan first: a step is taken whole or not at all
            if getattr(bucket, "handle_fixed", fixed) != fixed:
                bucket.handle = None  # the group switched variant or rounding: a new plan
            if getattr(bucket, "handle", None) is None:
                device, idx, params, states, steps, comps, absmax = bucket
                grads = [p.grad for p in params]
                if any(g is None for g in grads):
                    return False  # made from a step where every param of the bucket has a grad
                flat_absmax = [] if absmax is None else [t for lst in absmax for t in lst]
                bucket.handle = new_plan(
                    self._rule, params, grads, [t for lst in states[:nslots] for t in lst],
                    [len(lst) for lst in states[:nslots]], states[nslots] if len(states) > nslots else [], steps,
                    comps, flat_absmax, block, flags)
                bucket.handle_fixed = fixed
        for bucket in plan:
            device, handle = bucket[0], bucket.handle
            lr_f, lr_t = (lr_f0, lr_t0) if bucket.lr_scale == 1.0 else (
                lr_f0 * bucket.lr_scale, None if lr_t0 is None else lr_t0 * bucket.lr_scale)
            gs = grad_scale if grad_scale is None or grad_scale.device == device else grad_scale.to(device)
            fi = found_inf if found_inf is None or found_inf.device == device else found_inf.to(device)
            if lr_t is not None and lr_t.device != device and lr_t.device.type != "cpu":
                lr_t = lr_t.to(device)
            handle.step(None, hyper, lr_f, lr_t, gs, fi, flags)
        return True

    def _reduced(self, kind: str, sums: Tensor, rows=None, ncols=None):
        """After a reduction: all-reduce the partial sums of sharded params (`rows`, a
        distributed.RowReduce; the first `ncols` columns), then the user's reduce_hook."""
        if rows is not None:
            rows(sums, ncols)
        if self.reduce_hook is not None:
            self.reduce_hook(kind, sums)

    def _pre_reduced(self, group, bucket, grads, grad_scale, rows=None, compiling=False):
        """tensor_in of a rule with _pre_reduce: [n, k] float32 per-tensor sums of squares of the
        named lists (grads unscaled by grad_scale), then the _tensor_in_extra columns."""
        idx, params = bucket[1], bucket[2]
        cols = []
        for name in self._pre_reduce:
            lst = params if name == "params" else grads
            per, _ = torch.ops.fusedopt.multi_tensor_sumsq(lst, grad_scale=grad_scale if name == "grads" else None)
            cols.append(per.float())
        # the extra columns depend on the params only: kept on the (cached) bucket, so a step makes no
        # host-to-device copy; rebuilt inside a torch.compile trace, where plans are not cached
        extra_cols = getattr(bucket, "extra_cols", None)
        if extra_cols is None:
            extra = self._tensor_in_extra(group, idx, [group["params"][i] for i in idx])
            extra_cols = [torch.tensor(c, dtype=torch.float32, device=params[0].device) for c in extra]
            if not compiling:
                bucket.extra_cols = extra_cols
        cols += extra_cols
        out = torch.stack(cols, 1).contiguous()
        self._reduced("tensor_sums", out, rows, len(self._pre_reduce) if extra_cols else None)
        return out

    # -- state_dict ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state_dict; a DTensor param of a state_bits=8 group also records the width of
        its states ("state_bits": 8 or 32), so that a checkpoint loaded by torch.distributed.checkpoint
        into a layout that keeps the other width (distributed.q8_absmax_shape) is refused by
        load_state_dict instead of reading 8-bit codes as values."""
        sd = super().state_dict()
        pid = 0
        for g in self.param_groups:
            for p in g["params"]:
                if g.get("state_bits") == 8 and _dist.is_dtensor(p) and pid in sd["state"]:
                    sd["state"][pid] = dict(sd["state"][pid], state_bits=8 if self._is_8bit(p, g) else 32)
                pid += 1
        return sd

    def _load_state(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this class or of the torch.optim equivalent (load_state_dict).

        Unlike torch.optim, states are not cast to the param dtype: each lands in the dtype
        this optimizer keeps it in (float32 by default, bfloat16 if state_dtype says so,
        float64 for float64 params), and `step` (a tensor, or a Python number as older
        torch.optim state_dicts keep it) becomes a float32 tensor on the param's device.
        """
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        # state storage (state_bits, min_8bit_size, block_size) stays this optimizer's choice; the
        # saved states are converted to it below (saved codes are read with the saved block size)
        storage = [{k: g[k] for k in _STORAGE_KEYS if k in g} for g in self.param_groups]
        super()._load_state(state_dict)
        self._plans = {}
        saved_block = {}
        for g, own, sg in zip(self.param_groups, storage, saved_groups):
            g.update(own)
            for pid in sg["params"]:
                saved_block[pid] = int(sg.get("block_size", 256))
        for g in self.param_groups:
            self._fill_defaults(g)
        ids = [i for g in saved_groups for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        group_of = {id(p): g for g in self.param_groups for p in g["params"]}
        index_of = {id(p): (gi, pi) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])}
        scalar_keys = {k for k, _ in RULES[self._rule].scalars}
        slot_keys = set(RULES[self._rule].slots)
        for pid, p in zip(ids, params):
            if pid not in saved_state:
                continue
            st = self.state[p]
            group = group_of[id(p)]
            saved = saved_state[pid]
            if _dist.is_dtensor(p):  # sharded or whole saved tensors -> this rank's part (wrapped below)
                saved = _dist.localize_saved(saved, p, saved_block.get(pid, 256), slot_keys, ABSMAX_SUFFIX)
            elif any(_dist.is_dtensor(v) for v in saved.values()):  # a sharded state into a plain param
                saved = {k: _dist.full_value(v) for k, v in saved.items()}
                saved = {k: v.reshape(-1) if k.endswith(ABSMAX_SUFFIX) else v for k, v in saved.items()}
            # 8-bit or not is this optimizer's decision for this param (state_bits, min_8bit_size,
            # register_32bit_state); saved states are converted to it: 8-bit codes + absmax are
            # kept byte for byte, float states are quantized, 8-bit states dequantized.
            q8 = self._wants_8bit(p, group) and p.dtype != torch.float64
            block = group.get("block_size", 256)
            st.pop("state_bits", None)
            if saved.get("state_bits") == 8 and not any(k.endswith(ABSMAX_SUFFIX) for k in saved):
                raise ValueError(f"fusedopt.{type(self).__name__}.load_state_dict: the checkpoint holds 8-bit states "
                                 f"for {self._pname(*index_of[id(p)], group)} but they were loaded "
                                 "without their absmax (torch.distributed.checkpoint into a layout that keeps "
                                 "32-bit states for it; see docs/distributed.md): convert the checkpoint with "
                                 "fusedopt.dequantize_state_dict or load it into the layout it was saved from")
            for key in [k for k in st if k in slot_keys or k.endswith(ABSMAX_SUFFIX)]:
                del st[key]  # super() put the saved (possibly cast) tensors here
            for key, v in saved.items():
                if (key == "step" or key in scalar_keys) and isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = torch.tensor(float(v))  # torch.optim's older format: a Python number
                if not isinstance(v, Tensor) or key.endswith(ABSMAX_SUFFIX):
                    continue
                # copy=True: the optimizer must never alias (and later mutate) the caller's tensors
                if key == "step" or key in scalar_keys:
                    nv = v.to(device=p.device, dtype=torch.float32, copy=True).reshape(())
                elif key in slot_keys:
                    am = saved.get(key + ABSMAX_SUFFIX)
                    is_codes = v.dtype == torch.uint8 and am is not None
                    sblock = saved_block.get(pid, 256)
                    if is_codes and q8 and sblock == block:
                        st[key] = v.to(device=p.device, copy=True)
                        st[key + ABSMAX_SUFFIX] = am.to(device=p.device, dtype=torch.float32, copy=True)
                        continue
                    if is_codes:
                        v = dequantize_blockwise(v.contiguous(), am.to(v.device), sblock, SIGNED_KEYS[key]).view(v.shape)
                    if q8:
                        st[key], st[key + ABSMAX_SUFFIX] = self._quantized_state(v, p, key, block)
                        continue
                    nv = v.to(device=p.device, dtype=self._state_dtype_for(p, group), copy=True)
                elif v.is_floating_point() and key != "param_comp":
                    nv = v.to(device=p.device, dtype=self._state_dtype_for(p, group), copy=True)
                else:
                    nv = v.to(device=p.device, copy=True)
                st[key] = nv
            if _dist.is_dtensor(p):
                for key, v in st.items():
                    if isinstance(v, Tensor) and not _dist.is_dtensor(v) and v.dim() > 0:
                        st[key] = (_dist.wrap_absmax(v, p, block) if key.endswith(ABSMAX_SUFFIX)
                                   else _dist.wrap_like(v, p))


# name -> default of the storage options, read from FusedOptimizer's signature (their one declaration)
STORAGE_OPTIONS = {k: v.default for k, v in inspect.signature(FusedOptimizer.__init__).parameters.items()
                   if k in ("state_dtype", "param_rounding", "state_bits", "min_8bit_size", "block_size")}
