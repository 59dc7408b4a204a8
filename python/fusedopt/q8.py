"""8-bit block-wise dynamic quantization (docs/algorithms.md §19): the codec, and the helpers around
8-bit optimizer states.

Layout of an 8-bit state in ``optimizer.state[p]`` (for a state key such as ``exp_avg``):

- ``state["exp_avg"]``: ``torch.uint8`` codes, same shape (and strides) as ``p``;
- ``state["exp_avg_absmax"]``: ``torch.float32``, ``ceil(p.numel() / block_size)`` elements: the
  largest finite ``|x|`` of each block of ``block_size`` consecutive elements (memory order);
- value ``x = qmap(signed)[code] * absmax[block]``. Whether a key is signed (momenta) or unsigned
  (second moments, sums) is declared once in csrc/core/rule_table.h (``fusedopt._ops.SIGNED_KEYS``).

``block_size`` is the param group's option (saved with the param groups in a state_dict).

The codec here rounds to the nearest map value (as bitsandbytes and torchao). An optimizer step
requantizes its states stochastically instead (csrc/core/q8.h ``q8_state_code``: each value goes to
its lower or upper map value with the probabilities that make its mean exact; a non-zero momentum
keeps its sign, a second moment in a block whose absmax is not 0 never gets code 0). The codes mean
the same either way, so ``dequantize_blockwise`` reads both.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from ._ops import SIGNED_KEYS

__all__ = ["quantize_blockwise", "dequantize_blockwise", "qmap", "register_32bit_state", "dequantize_state_dict",
           "state_nbytes", "ABSMAX_SUFFIX", "OVERRIDE_ATTR"]

ABSMAX_SUFFIX = "_absmax"
OVERRIDE_ATTR = "_fusedopt_override"  # per-param options set by fusedopt.override (a dict on the Parameter)


def quantize_blockwise(x: Tensor, block_size: int = 256, signed: bool = True) -> tuple[Tensor, Tensor]:
    """Block-wise dynamic 8-bit quantization of ``x`` (float32/float16/bfloat16, CPU or CUDA, any
    length). Returns ``(codes, absmax)``: uint8 codes shaped like ``x`` and float32 absmax with one
    entry per block of ``block_size`` elements (the last block may be partial).

    Each value is encoded as the nearest entry of the signed (or unsigned: values below 0 clamp
    to 0) dynamic map scaled by the block's absmax; an exact midpoint between two entries rounds
    up. absmax is taken over finite values only; a block whose absmax is 0 encodes every value
    as the code of 0. NaN encodes as the code of 0; +-inf saturate to +-absmax (the map's +-1 end;
    the signed map's smallest value is -0.99297, so -inf gets that).
    """
    return torch.ops.fusedopt.quantize_blockwise(x, int(block_size), bool(signed))


def dequantize_blockwise(codes: Tensor, absmax: Tensor, block_size: int = 256, signed: bool = True,
                         dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`quantize_blockwise`: ``qmap(signed)[codes] * absmax[block]`` in ``dtype``."""
    return torch.ops.fusedopt.dequantize_blockwise(codes, absmax, int(block_size), bool(signed), dtype)


_QMAPS: dict = {}


def qmap(signed: bool = True, device="cpu") -> Tensor:
    """The 256 sorted float32 values of the signed or unsigned dynamic map (a cached constant per
    device; the same values as bitsandbytes.functional.create_dynamic_map)."""
    key = (bool(signed), torch.device(device))
    t = _QMAPS.get(key)
    if t is None:
        codes = torch.arange(256, dtype=torch.uint8)
        t = dequantize_blockwise(codes, torch.ones(1), 256, signed).to(device)
        _QMAPS[key] = t
    return t


def register_32bit_state(param: Tensor) -> Tensor:
    """Keep 32-bit optimizer state for ``param`` even in an 8-bit optimizer (bitsandbytes'
    ``GlobalOptimManager.override_config(param, "optim_bits", 32)``); the same as
    ``fusedopt.override(param, state_bits=32)``. Call it before the first step; a param's state
    width is decided when its state is created. Returns ``param``."""
    setattr(param, OVERRIDE_ATTR, {**(getattr(param, OVERRIDE_ATTR, None) or {}), "state_bits": 32})
    param._fusedopt_32bit_state = True
    return param


def is_signed_key(key: str) -> bool:
    if key not in SIGNED_KEYS:
        raise KeyError(f"fusedopt: {key!r} is not a per-element state key of any fusedopt rule")
    return SIGNED_KEYS[key]


def _dequant_entry(st: dict, block_size: int, dtype=torch.float32) -> dict:
    out = dict(st)
    for key, v in st.items():
        if not (isinstance(v, Tensor) and v.dtype == torch.uint8 and (key + ABSMAX_SUFFIX) in st):
            continue
        am = st[key + ABSMAX_SUFFIX]
        from . import distributed as _dist

        if _dist.is_dtensor(v):  # a sharded state: each shard holds whole blocks (distributed.q8_absmax_shape)
            loc = v._local_tensor
            val = dequantize_blockwise(loc.contiguous(), _dist.local(am).reshape(-1), block_size, is_signed_key(key),
                                       dtype).view(loc.shape)
            out[key] = _dist.wrap_like(val, v)
        else:
            out[key] = dequantize_blockwise(v.contiguous(), am.to(v.device), block_size, is_signed_key(key),
                                            dtype).view(v.shape)
        del out[key + ABSMAX_SUFFIX]
        if "state_bits" in out:  # the width a sharded 8-bit optimizer records (FusedOptimizer.state_dict)
            out["state_bits"] = 32
    return out


def dequantize_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A copy of an optimizer state_dict with every 8-bit state turned into a plain float32 tensor
    (and its ``<key>_absmax`` dropped), and every param group's ``state_bits`` set to 32: the result
    loads into torch.optim (e.g. an 8-bit AdamW's into torch.optim.AdamW) or a 32-bit fusedopt
    optimizer. The input is not modified."""
    groups = copy.deepcopy(state_dict["param_groups"])
    block_of = {}
    for g in groups:
        for pid in g["params"]:
            block_of[pid] = int(g.get("block_size", 256))
        if "state_bits" in g:
            g["state_bits"] = 32
    state = {pid: _dequant_entry(st, block_of.get(pid, 256)) for pid, st in state_dict["state"].items()}
    return {"state": state, "param_groups": groups}


def state_nbytes(optimizer) -> int:
    """Bytes held by the optimizer's per-param state tensors (codes, absmax, steps, everything)."""
    total = 0
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, Tensor):
                total += v.numel() * v.element_size()
    return total
