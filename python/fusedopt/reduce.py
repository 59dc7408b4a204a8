"""Fused reductions over lists of tensors, and a fused ``clip_grad_norm_``.

The ops (csrc/torch/reduce_ops.cpp; the engine and its determinism contract in
csrc/core/reduce.h) take tensors of one device and one dtype:

    per_tensor, total = torch.ops.fusedopt.multi_tensor_sumsq(tensors, grad_scale=None, threads=0)
    per_tensor, total = torch.ops.fusedopt.multi_tensor_norm(tensors, ord, grad_scale=None, threads=0)
    rows, cols = torch.ops.fusedopt.row_col_sums(tensors, add=0.0, square=True, mean=False, threads=0)
    torch.ops.fusedopt.multi_tensor_clip_(tensors, total_norm, max_norm, eps=1e-6)

Outputs are float32 (float64 for float64 inputs) on the inputs' device. Results are bitwise
the same run to run and for any thread count. The helpers below group mixed lists by
(device, dtype) first.
"""
from __future__ import annotations

import math
import types
import warnings
from typing import Iterable, Optional, Union

import torch
from torch import Tensor

from . import distributed as _dist

__all__ = ["clip_grad_norm_", "get_total_norm", "clip_grads_with_norm_", "multi_tensor_sumsq", "group_sumsq"]

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _group(tensors: list, names: list, where: str) -> dict:
    """{(device, dtype): [tensors]} preserving order; checks each tensor with its name."""
    out: dict = {}
    for t, name in zip(tensors, names):
        if t.layout != torch.strided:
            raise RuntimeError(f"fusedopt.{where}: {name} is sparse ({t.layout}); only dense tensors are supported")
        if t.dtype not in _DTYPES:
            raise RuntimeError(f"fusedopt.{where}: {name} has unsupported dtype {t.dtype} "
                               "(supported: float32, float64, float16, bfloat16)")
        out.setdefault((t.device, t.dtype), []).append(t)
    return out


def _group_fast(tensors: list) -> dict:
    """{(device, dtype): [tensors]} preserving order; complex groups as their real views. The ops check
    each tensor (layout, dtype) and name it by its index in the group."""
    out: dict = {}
    for t in tensors:
        key = (t.device, t.dtype)
        lst = out.get(key)
        if lst is None:
            out[key] = lst = []
        lst.append(t)
    return out


def _total_from_groups(groups: dict, norm_type: float, first, out_dtype, where: str) -> Tensor:
    totals = []
    for (_, dtype), ts in groups.items():
        if dtype.is_complex:
            if norm_type != 2.0:
                raise RuntimeError(f"fusedopt.{where}: complex tensors ({dtype}) support only norm_type=2 (the "
                                   "2-norm of a complex tensor is that of its real view)")
            ts = [torch.view_as_real(t) for t in ts]
        _, tot = torch.ops.fusedopt.multi_tensor_norm(ts, norm_type)
        totals.append(tot if tot.device == first else tot.to(first))
    if len(totals) == 1:
        total = totals[0]
    else:
        stacked = torch.stack([t.double() for t in totals])
        if norm_type == 0.0:  # torch: the 0-"norm" of the per-tensor norms counts the non-zero ones
            total = stacked.sum()
        else:
            total = torch.linalg.vector_norm(stacked, norm_type)
    return total if total.dtype == out_dtype else total.to(out_dtype)


def _check_nonfinite(total: Tensor, norm_type: float):
    if torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")


def _clip_groups(groups: dict, max_norm: float, total_norm: Tensor):
    for (dev, dtype), ts in groups.items():
        if dtype.is_complex:
            ts = [torch.view_as_real(t) for t in ts]
            dtype = ts[0].dtype
        if dtype == torch.float64:
            # torch computes the coefficient in float64 here: keep its arithmetic
            coef = torch.clamp(max_norm / (total_norm.to(dev, torch.float64) + 1e-6), max=1.0)
            torch._foreach_mul_(ts, coef)
            continue
        tn = total_norm if total_norm.device == dev and total_norm.dtype == torch.float32 else total_norm.to(
            device=dev, dtype=torch.float32)
        torch.ops.fusedopt.multi_tensor_clip_(ts, tn.reshape(()), max_norm, 1e-6)


def _sharded_total_norm(tensors: list, norm_type: float, out_dtype, where: str) -> Tensor:
    """The norm of the per-tensor norms of tensors some of which are DTensors (FSDP2 / TP grads), with
    torch's semantics on DTensors: each tensor's norm is that of the whole tensor. Per tensor, the
    local shard gives a partial value (sum of squares for 2, sum of |x|^p for other finite p, count of
    non-zeros for 0, max / min of |x| for +-inf), all-reduced over the mesh dims that shard the tensor
    (one collective per mesh-dims key); replicated dims are not reduced. Returns a DTensor replicated
    on the first DTensor's mesh, as torch does."""
    keys = [_dist.reduce_key(t) for t in tensors]
    locs = [_real(_dist.local(t), norm_type, f"tensors[{i}]", where) for i, t in enumerate(tensors)]
    vals: list = [None] * len(locs)
    order: dict = {}
    for i, t in enumerate(locs):
        order.setdefault((t.device, t.dtype), []).append(i)
    first = locs[0].device
    for idx in order.values():
        ts = [locs[i] for i in idx]
        if norm_type == 2.0:
            per, _ = torch.ops.fusedopt.multi_tensor_sumsq(ts)
            per = per.double()
        else:
            per, _ = torch.ops.fusedopt.multi_tensor_norm(ts, 0.0 if norm_type == 0.0 else norm_type)
            per = per.double()
            if math.isfinite(norm_type) and norm_type != 0.0:
                per = per.pow(norm_type)
        for j, i in enumerate(idx):
            v = per[j:j + 1].to(first)
            if norm_type == -math.inf and locs[i].numel() == 0:
                v = torch.full_like(v, math.inf)  # an empty shard does not lower the min
            vals[i] = v
    batch = _dist.SumBatch()
    for k, v in zip(keys, vals):
        batch.add(k, v)
    op = None
    if norm_type == math.inf:
        op = _dist.dist.ReduceOp.MAX
    elif norm_type == -math.inf:
        op = _dist.dist.ReduceOp.MIN
    v = torch.cat(batch.run(op))
    if norm_type == 2.0:
        total = v.sum().sqrt()
    elif norm_type == math.inf:
        total = v.max()
    elif norm_type == -math.inf:
        total = v.min()
    elif norm_type == 0.0:
        total = (v != 0).sum().double()
    else:
        total = v.sum().pow(1.0 / norm_type)
    total = total.to(out_dtype)
    from torch.distributed.tensor import DTensor, Replicate

    mesh = next(t.device_mesh for t in tensors if _dist.is_dtensor(t))
    return DTensor.from_local(total, mesh, [Replicate()] * mesh.ndim, run_check=False)


def multi_tensor_sumsq(tensors: list, grad_scale: Optional[Tensor] = None, threads: int = 0):
    """(per-tensor sums of squares, their total) of tensors of one device and dtype (see module doc)."""
    return torch.ops.fusedopt.multi_tensor_sumsq(tensors, grad_scale=grad_scale, threads=threads)


def group_sumsq(tensors: list, device: torch.device, grad_scale: Optional[Tensor] = None,
                where: str = "group_sumsq") -> Tensor:
    """Total sum of squares (float32, 0-dim, on `device`) of tensors of any devices and dtypes:
    one fused reduction per (device, dtype) group, the group totals added in order on `device`.
    No host sync when everything is on one CUDA device."""
    groups = _group(tensors, [f"tensors[{i}]" for i in range(len(tensors))], where)
    total = None
    for (dev, _), ts in groups.items():
        gs = grad_scale if grad_scale is None or grad_scale.device == dev else grad_scale.to(dev)
        _, t = torch.ops.fusedopt.multi_tensor_sumsq(ts, grad_scale=gs)
        t = t.to(device=device, dtype=torch.float32)
        total = t if total is None else total + t
    if total is None:
        total = torch.zeros((), dtype=torch.float32, device=device)
    return total


def _as_list(parameters) -> list:
    if isinstance(parameters, Tensor):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and len(parameters) == 0:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return parameters


def _real(t: Tensor, norm_type: float, name: str, where: str) -> Tensor:
    if t.is_complex():
        if norm_type != 2.0:
            raise RuntimeError(f"fusedopt.{where}: {name} is complex; only norm_type=2 is supported for complex "
                               "tensors (the 2-norm of a complex tensor is that of its real view)")
        return torch.view_as_real(t)
    return t


@torch.no_grad()
def get_total_norm(tensors: Union[Tensor, Iterable[Tensor]], norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: Optional[bool] = None) -> Tensor:
    """Fused ``torch.nn.utils.get_total_norm``: the norm of the per-tensor norms.

    One fused reduction per (device, dtype) group. Accumulation is in float64 (torch accumulates
    float16/bfloat16 norms in their own dtype); the result has torch's dtype (the promoted dtype of
    the tensors) and lives on the first tensor's device. ``foreach`` is accepted and ignored.
    """
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    norm_type = float(norm_type)
    if len(tensors) == 0:
        return torch.tensor(0.0)
    if math.isnan(norm_type):
        raise RuntimeError("fusedopt.get_total_norm: norm_type is NaN")
    names = [f"tensors[{i}]" for i in range(len(tensors))]
    first = tensors[0].device
    out_dtype = tensors[0].dtype
    for t in tensors[1:]:
        out_dtype = torch.promote_types(out_dtype, t.dtype)
    if out_dtype.is_complex:
        out_dtype = out_dtype.to_real()
    if any(_dist.is_dtensor(t) for t in tensors):
        total = _sharded_total_norm(tensors, norm_type, out_dtype, "get_total_norm")
        if error_if_nonfinite:
            _check_nonfinite(total.to_local(), norm_type)
        return total
    reals = [_real(t, norm_type, n, "get_total_norm") for t, n in zip(tensors, names)]
    groups = _group(reals, names, "get_total_norm")
    totals = []
    for (_, _), ts in groups.items():
        _, tot = torch.ops.fusedopt.multi_tensor_norm(ts, norm_type)
        totals.append(tot.to(first))
    if len(totals) == 1:
        total = totals[0]
    else:
        stacked = torch.stack([t.double() for t in totals])
        if norm_type == 0.0:  # torch: the 0-"norm" of the per-tensor norms counts the non-zero ones
            total = stacked.sum()
        else:
            total = torch.linalg.vector_norm(stacked, norm_type)
    total = total.to(out_dtype)
    if error_if_nonfinite and torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    return total


@torch.no_grad()
def clip_grads_with_norm_(parameters, max_norm: float, total_norm: Tensor, foreach: Optional[bool] = None) -> None:
    """Fused ``torch.nn.utils.clip_grads_with_norm_``: ``g *= min(max_norm / (total_norm + 1e-6), 1)``,
    the coefficient computed in float32 on each device (no host sync on CUDA). ``foreach`` is ignored."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [_dist.local(p.grad) for p in parameters if p.grad is not None]
    if not grads:
        return
    total_norm = _dist.local(total_norm)
    max_norm = float(max_norm)
    names = [f"parameters[{i}].grad" for i, p in enumerate(parameters) if p.grad is not None]
    reals = [_real(g, 2.0, n, "clip_grads_with_norm_") if g.is_complex() else g for g, n in zip(grads, names)]
    for (dev, dtype), ts in _group(reals, names, "clip_grads_with_norm_").items():
        if dtype == torch.float64:
            # torch computes the coefficient in float64 here: keep its arithmetic
            coef = torch.clamp(max_norm / (total_norm.to(dev, torch.float64) + 1e-6), max=1.0)
            torch._foreach_mul_(ts, coef)
            continue
        tn = total_norm.to(device=dev, dtype=torch.float32)
        torch.ops.fusedopt.multi_tensor_clip_(ts, tn.reshape(()), max_norm, 1e-6)


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: Optional[bool] = None) -> Tensor:
    """Fused ``torch.nn.utils.clip_grad_norm_``: same arguments, same result.

    Two passes over the grads (one fused reduction, one fused scale) per (device, dtype) group
    instead of a norm per tensor. Returns the total norm (a tensor on the first grad's device, in
    the grads' promoted dtype). Any ``norm_type`` torch accepts: p > 0, ``inf``, ``-inf``, 0 (the
    count of grads with a non-zero norm, as torch), p < 0 (IEEE: a zero element makes the norm 0).
    ``error_if_nonfinite=True`` costs one host sync, as in torch. ``foreach`` is accepted and
    ignored (always fused). Differences from torch: accumulation in float64 (torch accumulates
    float16 / bfloat16 grads in their dtype), and the clip coefficient of float16 / bfloat16 grads
    is computed in float32 (torch: in the grad dtype); sparse grads are refused.
    """
    parameters = _as_list(parameters)
    grads = []
    for i, p in enumerate(parameters):
        g = p.grad
        if g is not None:
            if g.layout != torch.strided:
                raise RuntimeError(f"fusedopt.clip_grad_norm_: parameters[{i}].grad is sparse ({g.layout}); "
                                   "only dense gradients are supported")
            grads.append(g)
    norm_type = float(norm_type)
    if not grads:
        return torch.tensor(0.0)
    if math.isnan(norm_type):
        raise RuntimeError("fusedopt.clip_grad_norm_: norm_type is NaN")
    sharded = grads if any(_dist.is_dtensor(g) for g in grads) else None
    if sharded is not None:  # DTensor grads: norms over the whole tensors (all-reduced), clip the local shards
        grads = [_dist.local(g) for g in grads]
    groups = _group_fast(grads)  # grouped once, for the norm and for the clip
    out_dtype = None
    for _, dtype in groups:
        out_dtype = dtype if out_dtype is None else torch.promote_types(out_dtype, dtype)
    if out_dtype.is_complex:
        out_dtype = out_dtype.to_real()
    if sharded is not None:
        result = _sharded_total_norm(sharded, norm_type, out_dtype, "clip_grad_norm_")
        total_norm = result.to_local()
    else:
        result = total_norm = _total_from_groups(groups, norm_type, grads[0].device, out_dtype, "clip_grad_norm_")
    if error_if_nonfinite:
        _check_nonfinite(total_norm, norm_type)
    _clip_groups(groups, float(max_norm), total_norm)
    return result
