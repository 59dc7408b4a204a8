"""Loads the extension (which registers torch.ops.fusedopt.*) and the fake kernels.

Every per-element rule is one mutable list op with the same layout:

    torch.ops.fusedopt.<rule>_(params, grads, <state lists...>, state_steps, param_comps, *,
                               hyper, lr, lr_tensor=None, grad_scale=None, found_inf=None, flags=0)

`RULES` below mirrors csrc/core/rule_table.h (a test checks they agree).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

try:
    from . import _C  # noqa: F401  (import registers the ops)
except ImportError as e:  # pragma: no cover - a broken install must say so loudly
    raise ImportError(
        "fusedopt: the compiled extension fusedopt._C failed to load "
        f"({e}). Rebuild with `pip install --no-build-isolation .` against the installed torch "
        f"({torch.__version__})."
    ) from e


class RuleSpec(NamedTuple):
    op: str
    slots: tuple  # element-wise state keys, in the op's state-list order
    scalars: tuple = ()  # per-tensor scalar state keys (lists after the element states): (key, initial value)


RULES = {
    "adam": RuleSpec("adam", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adamw": RuleSpec("adamw", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adamax": RuleSpec("adamax", ("exp_avg", "exp_inf")),
    "radam": RuleSpec("radam", ("exp_avg", "exp_avg_sq")),
    "nadam": RuleSpec("nadam", ("exp_avg", "exp_avg_sq"), (("mu_product", 1.0),)),
    "sgd": RuleSpec("sgd", ("momentum_buffer",)),
    "rmsprop": RuleSpec("rmsprop", ("square_avg", "momentum_buffer", "grad_avg")),
    "adagrad": RuleSpec("adagrad", ("sum",)),
    "adadelta": RuleSpec("adadelta", ("square_avg", "acc_delta")),
    "adabelief": RuleSpec("adabelief", ("exp_avg", "exp_avg_var", "max_exp_avg_var")),
    "acprop": RuleSpec("acprop", ("exp_avg", "exp_avg_var", "max_exp_avg_var")),
    "diffgrad": RuleSpec("diffgrad", ("exp_avg", "exp_avg_sq", "previous_grad")),
    "padam": RuleSpec("padam", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "signsgd": RuleSpec("signsgd", ("exp_avg", "exp_avg_sq")),
    "pnm": RuleSpec("pnm", ("pos_momentum", "neg_momentum")),
    "adapnm": RuleSpec("adapnm", ("exp_avg", "neg_exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adan": RuleSpec("adan", ("exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad")),
    "lion": RuleSpec("lion", ("exp_avg",)),
    # wrappers' rules: read no grads (the op has no grads list), step counters are float64
    "lookahead": RuleSpec("lookahead", ("slow_param", "momentum_buffer", "slow_momentum")),
    "iterate_avg": RuleSpec("iterate_avg", ("param_avg",), (("n_averaged", 0.0),)),
    "lamb1": RuleSpec("lamb1", ("exp_avg", "exp_avg_sq")),
    "lamb2": RuleSpec("lamb2", ("exp_avg", "exp_avg_sq")),
    "lars": RuleSpec("lars", ("momentum_buffer",)),
    # KOALA: predict move (no grad), read-only norms pass, update pass (python/fusedopt/optim/koala.py)
    "koala_predict": RuleSpec("koala_predict", ("velocity", "param_ema")),
    "koala_norms": RuleSpec("koala_norms", ()),
    "koala": RuleSpec("koala", ("velocity", "param_ema")),
}
NO_GRAD_RULES = ("lookahead", "iterate_avg", "koala_predict")

# flag bits (csrc/core/config.h)
FLAG_MAXIMIZE = 1 << 0
FLAG_STOCH_ROUND = 1 << 1
RULE_FLAG_SHIFT = 8
VARIANT_SHIFT = 16


def _fake(*args, **kwargs):
    # in-place updates of existing tensors: nothing to allocate, nothing to return
    return None


for _name in RULES:
    torch.library.register_fake(f"fusedopt::{_name}_")(_fake)


def _unsigned_states() -> dict:
    """op -> frozenset of its non-negative element states ('+' in csrc/core/rule_table.h, read
    from the extension so there is one declaration)."""
    import json

    out = {}
    for name, states in json.loads(torch.ops.fusedopt.rule_states()).items():
        names = [s.strip() for s in states.split(",")]
        out[name] = frozenset(n[1:] for n in names if n.startswith("+"))
    return out


UNSIGNED_STATES = _unsigned_states()

# A state key means the same thing in every rule, so its sign is a property of the key; this map
# is what dequantize_state_dict uses (it cannot know which rule saved a state_dict).
SIGNED_KEYS: dict = {}
for _name, _spec in RULES.items():
    for _k in _spec.slots:
        _signed = _k not in UNSIGNED_STATES[_name]
        if SIGNED_KEYS.setdefault(_k, _signed) != _signed:  # pragma: no cover - table consistency
            raise ImportError(f"fusedopt: state key {_k!r} is signed in one rule and unsigned in another")


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
                    threads=0):
    return None
