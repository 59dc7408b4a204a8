"""Loads the extension (which registers torch.ops.fusedopt.*), the rule table and the fake kernels.

Every per-element rule is one mutable list op with the same layout:

    torch.ops.fusedopt.<rule>_(params, grads, <state lists...>, state_steps, param_comps, *,
                               hyper, lr, lr_tensor=None, grad_scale=None, found_inf=None, flags=0)

`RULES` is built from the extension's export, torch.ops.fusedopt.rule_specs(): what each rule's
header (csrc/core/rules/*.h, csrc/core/rule_facts.h) states about its states, hyperparameters, flags
and variant fields. Nothing here repeats a fact of a rule; `Rule.pack_hyper` / `Rule.pack_flags` turn
named values into the op's `hyper` list and `flags` bits.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, NamedTuple, Optional

import torch

try:
    from . import _C  # noqa: F401  (import registers the ops)
except ImportError as e:  # pragma: no cover - a broken install must say so loudly
    raise ImportError(
        "fusedopt: the compiled extension fusedopt._C failed to load "
        f"({e}). Rebuild with `pip install --no-build-isolation .` against the installed torch "
        f"({torch.__version__})."
    ) from e


class Field(NamedTuple):
    """One bit field of a rule's variant index (core/rule_facts.h FieldDecl)."""
    name: str
    bits: int
    shift: int  # within the variant index
    values: tuple  # names of its values ("torch", "official"), or () for a bool / number
    default: int

    def code(self, rule: str, v) -> int:
        if self.values:
            if isinstance(v, str):
                if v not in self.values:
                    raise ValueError(f"fusedopt.{rule}: {self.name} must be one of {self.values}, got {v!r}")
                return self.values.index(v)
        k = int(v)
        if not 0 <= k < (1 << self.bits) or (self.values and k >= len(self.values)):
            raise ValueError(f"fusedopt.{rule}: {self.name}={v!r} is out of range")
        return k


class Rule:
    """One rule of the table, as its header declares it (torch.ops.fusedopt.rule_specs())."""

    def __init__(self, d: dict):
        self.op: str = d["op"]
        element = [s for s in d["states"] if not s["scalar"]]
        self.slots: tuple = tuple(s["name"] for s in element)  # element-state keys, in the op's list order
        self.scalars: tuple = tuple((s["name"], float(s["init"])) for s in d["states"] if s["scalar"])
        self.signed: dict = {s["name"]: s["signed"] for s in element}
        self.inits: dict = {s["name"]: s["init"] for s in element}  # a number, or "param" (a copy of the param)
        self.hyper: tuple = tuple(h["name"] for h in d["hyper"])
        self.hyper_defaults: dict = {h["name"]: float(h["default"]) for h in d["hyper"]}
        self.lr: float = d["lr"]
        self.flags: tuple = tuple(f["name"] for f in d["flags"])
        self.flag_defaults: dict = {f["name"]: f["default"] for f in d["flags"]}
        fields, shift = [], 0
        for f in d["variant"]:
            fields.append(Field(f["name"], f["bits"], shift, tuple(f["values"]), f["default"]))
            shift += f["bits"]
        self.fields: tuple = tuple(fields)
        self.num_variants: int = d["num_variants"]
        self.slot_masks: tuple = tuple(d["slot_masks"])
        self.reads_grad: bool = d["reads_grad"]
        self.global_in: int = d["global_in"]
        self.red_in: int = d["red_in"]
        self.red_out: int = d["red_out"]

    def __repr__(self) -> str:
        return f"Rule({self.op!r}, slots={self.slots}, hyper={self.hyper}, flags={self.flags})"

    def _check_names(self, what: str, given: Mapping, names) -> None:
        unknown = sorted(set(given) - set(names))
        missing = [n for n in names if n not in given]
        if unknown or missing:
            raise ValueError(f"fusedopt.{self.op}: {what} " + "; ".join(
                ([f"unknown {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else []))
                + f" (the rule's {what}: {list(names)})")

    def pack_hyper(self, values: Mapping[str, Any]) -> list:
        """The op's `hyper` list from {name: value}: every hyperparameter of the header, no other."""
        if len(values) != len(self.hyper) or any(n not in values for n in self.hyper):
            self._check_names("hyperparameters", values, self.hyper)
        return [float(values[n]) for n in self.hyper]

    def variant_index(self, values: Mapping[str, Any], hyper: Optional[Mapping[str, Any]] = None) -> int:
        """The variant index from {field: value}. A field named as a hyperparameter may be left out: it is
        set when that hyperparameter (in `hyper`) is non-zero."""
        given = dict(values)
        for f in self.fields:
            if f.name not in given and hyper is not None and f.name in hyper:
                given[f.name] = float(hyper[f.name]) != 0.0
        if len(given) != len(self.fields) or any(f.name not in given for f in self.fields):
            self._check_names("variant fields", given, [f.name for f in self.fields])
        v = 0
        for f in self.fields:
            v |= f.code(self.op, given[f.name]) << f.shift
        if v >= self.num_variants:
            raise ValueError(f"fusedopt.{self.op}: variant fields {given} select variant {v}, the rule has "
                             f"{self.num_variants}")
        return v

    def pack_flags(self, flags: Mapping[str, Any] = {}, variant: Mapping[str, Any] = {},
                   hyper: Optional[Mapping[str, Any]] = None) -> int:
        """The op's `flags` from named rule flags and variant fields (engine flags not included)."""
        if len(flags) != len(self.flags) or any(n not in flags for n in self.flags):
            self._check_names("flags", flags, self.flags)
        bits = 0
        for i, n in enumerate(self.flags):
            if flags[n]:
                bits |= 1 << i
        return (bits << _RULE_FLAG_SHIFT) | (self.variant_index(variant, hyper) << _VARIANT_SHIFT)

    def active_slots(self, variant: int) -> tuple:
        """Which element-state lists variant `variant` uses (the header's slot_mask)."""
        m = self.slot_masks[variant]
        return tuple(bool(m >> k & 1) for k in range(len(self.slots)))


_SPEC = json.loads(torch.ops.fusedopt.rule_specs())
FLAG_MAXIMIZE: int = _SPEC["flag_bits"]["maximize"]
FLAG_STOCH_ROUND: int = _SPEC["flag_bits"]["stochastic_rounding"]
_RULE_FLAG_SHIFT: int = _SPEC["rule_flag_shift"]
_VARIANT_SHIFT: int = _SPEC["variant_shift"]

RULES: dict = {d["op"]: Rule(d) for d in _SPEC["rules"]}
NO_GRAD_RULES = tuple(name for name, r in RULES.items() if not r.reads_grad)
# op -> frozenset of its non-negative element states ('+' in the header: the unsigned 8-bit map)
UNSIGNED_STATES = {name: frozenset(k for k in r.slots if not r.signed[k]) for name, r in RULES.items()}

# A state key means the same thing in every rule, so its sign is a property of the key; this map
# is what dequantize_state_dict uses (it cannot know which rule saved a state_dict).
SIGNED_KEYS: dict = {}
for _r in RULES.values():
    for _k in _r.slots:
        if SIGNED_KEYS.setdefault(_k, _r.signed[_k]) != _r.signed[_k]:  # pragma: no cover - table consistency
            raise ImportError(f"fusedopt: state key {_k!r} is signed in one rule and unsigned in another")


def _fake(*args, **kwargs):
    # in-place updates of existing tensors: nothing to allocate, nothing to return
    return None


for _name in RULES:
    torch.library.register_fake(f"fusedopt::{_name}_")(_fake)


@torch.library.register_fake("fusedopt::quantize_blockwise")
def _quantize_fake(x, block_size=256, signed=True):
    n = x.numel()
    return (torch.empty(x.shape, dtype=torch.uint8, device=x.device),
            torch.empty(((n + block_size - 1) // block_size,), dtype=torch.float32, device=x.device))


@torch.library.register_fake("fusedopt::dequantize_blockwise")
def _dequantize_fake(codes, absmax, block_size=256, signed=True, dtype=torch.float32):
    return torch.empty(codes.shape, dtype=dtype, device=codes.device)


def op(name: str):
    return getattr(torch.ops.fusedopt, f"{name}_")


# ---- reduction ops (csrc/torch/reduce_ops.cpp): fake kernels give shapes / dtypes / devices ----
def _red_out(tensors):
    dev = tensors[0].device if len(tensors) else torch.device("cpu")
    dt = torch.float64 if len(tensors) and tensors[0].dtype == torch.float64 else torch.float32
    return torch.empty(len(tensors), dtype=dt, device=dev), torch.empty((), dtype=dt, device=dev)


@torch.library.register_fake("fusedopt::multi_tensor_sumsq")
def _fake_sumsq(tensors, *, grad_scale=None, threads=0):
    return _red_out(tensors)


@torch.library.register_fake("fusedopt::multi_tensor_norm")
def _fake_norm(tensors, ord=2.0, *, grad_scale=None, threads=0):
    return _red_out(tensors)


@torch.library.register_fake("fusedopt::row_col_sums")
def _fake_row_col(tensors, *, add=0.0, square=True, mean=False, threads=0):
    rows = [torch.empty(t.shape[:-1], dtype=torch.float32, device=t.device) for t in tensors]
    cols = [torch.empty(t.shape[:-2] + t.shape[-1:], dtype=torch.float32, device=t.device) for t in tensors]
    return rows, cols


@torch.library.register_fake("fusedopt::multi_tensor_clip_")
def _fake_clip(tensors, total_norm, max_norm, eps=1e-6):
    return None


# ---- Adafactor's fused step (csrc/torch/adafactor_ops.cpp): mutates its lists, returns nothing ----
@torch.library.register_fake("fusedopt::adafactor_")
def _fake_adafactor(params, grads, row_or_var, col, exp_avg, steps, rms, *, hyper, flags, found_inf=None,
                    threads=0, grad_scale=None):
    return None
