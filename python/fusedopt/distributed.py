"""Distributed training: DTensor params (FSDP2, tensor parallel, HSDP), ZeRO, batched all-reduces.

The optimizers take DTensor params as they come (``fully_shard``, ``parallelize_module``,
``distribute_tensor``); user code does not change. docs/distributed.md describes the design:

- Per-element rules run on the local shards (``DTensor._local_tensor``: the kernels update the
  DTensor's own storage) and communicate nothing. States are DTensors with the param's mesh and
  placements, so ``state_dict()`` and ``torch.distributed.checkpoint`` see sharded states.
  ``step`` and other per-tensor scalars stay plain tensors (torch.optim's convention).
- Cross-tensor rules sum over the local shard, then all-reduce the partial sums over the mesh dims
  that shard the summed tensor dims (never over Replicate dims). Partial sums are batched: one
  all-reduce per pass and per (mesh, mesh dims) key (:class:`SumBatch`).
- 8-bit states: :func:`q8_absmax_shape` (blocks never straddle a shard boundary).

Only Shard, _StridedShard and Replicate placements are handled; others are refused with the name
of the param.
"""
from __future__ import annotations

import math
import sys
from typing import Optional

import torch
from torch import Tensor

import torch.distributed as dist

__all__ = ["is_dtensor", "local", "q8_absmax_shape", "SumBatch", "zero_group"]

# torch.distributed.tensor is imported by whoever makes DTensors (fully_shard, parallelize_module, ...);
# until then no param can be one, and importing fusedopt does not pay for importing it (~0.5 s).
_DT_MODULE = "torch.distributed.tensor"


def _dtensor_type():
    m = sys.modules.get(_DT_MODULE)
    return None if m is None else getattr(m, "DTensor", None)


def is_dtensor(t) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def local(t):
    """The local shard of a DTensor (the same storage: in-place updates land in the DTensor), else t."""
    cls = _dtensor_type()
    return t._local_tensor if cls is not None and isinstance(t, cls) else t


def _shard_dim(pl) -> Optional[int]:
    """The tensor dim a Shard / _StridedShard placement splits, None for Replicate; else raise."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    if isinstance(pl, (Shard, _StridedShard)):
        return pl.dim
    if isinstance(pl, Replicate):
        return None
    raise TypeError(pl)


def check_layout(p: Tensor, where: str) -> None:
    """Placements the optimizers handle: Shard, _StridedShard, Replicate (not Partial)."""
    for i, pl in enumerate(p.placements):
        try:
            _shard_dim(pl)
        except TypeError:
            raise ValueError(f"{where} has placement {type(pl).__name__} ({pl}) on mesh dim {i}; fusedopt "
                             "handles Shard, _StridedShard and Replicate placements (redistribute the param "
                             "first)") from None


def check_grad(p: Tensor, g: Tensor, where: str) -> None:
    """A DTensor param needs a DTensor grad on the same mesh with the same placements."""
    if not is_dtensor(g):
        raise ValueError(f"{where} is a DTensor but its grad is a {type(g).__name__}; mixing DTensor params and "
                         "plain grads is not supported")
    if g.device_mesh != p.device_mesh or tuple(g.placements) != tuple(p.placements):
        raise ValueError(f"{where}: grad placements {tuple(g.placements)} on {g.device_mesh} differ from the "
                         f"param's {tuple(p.placements)} on {p.device_mesh}; redistribute the grad to the param's "
                         "layout before step()")
    if g.shape != p.shape:
        raise ValueError(f"{where}: grad shape {tuple(g.shape)} differs from param shape {tuple(p.shape)}")


def sharded_mesh_dims(p: Tensor, tensor_dims=None) -> tuple:
    """Mesh dims whose placement shards one of `tensor_dims` of p (any dim when None)."""
    out = []
    for i, pl in enumerate(p.placements):
        d = _shard_dim(pl)
        if d is not None and (tensor_dims is None or d % p.dim() in tensor_dims):
            out.append(i)
    return tuple(out)


def reduce_key(p: Tensor, tensor_dims=None):
    """Key of the all-reduce a partial sum of p over `tensor_dims` needs: (mesh, mesh dims), or None
    when those dims are not sharded (a plain tensor, a replicated DTensor): nothing to reduce."""
    if not is_dtensor(p):
        return None
    dims = sharded_mesh_dims(p, tensor_dims)
    return (p.device_mesh, dims) if dims else None


def _groups(key) -> list:
    if key[0] == "zero":
        return [key[1]]
    mesh, dims = key
    return [mesh.get_group(d) for d in dims]


# counters read by bench/bench_dist.py and the tests: collectives and bytes sent by this module
STATS = {"all_reduce": 0, "bytes": 0}


def all_reduce_(t: Tensor, key, op=None) -> Tensor:
    """All-reduce `t` in place over the process groups of `key` (one collective per mesh dim)."""
    for g in _groups(key):
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=g)
        STATS["all_reduce"] += 1
        STATS["bytes"] += t.numel() * t.element_size()
    return t


class SumBatch:
    """Partial sums of one pass, all-reduced together: ``add`` 1-D pieces under a key, ``run()``
    concatenates each key's pieces (per dtype and device), all-reduces once per key and returns the
    reduced pieces in the order they were added (pieces with key None come back as they are)."""

    def __init__(self):
        self._pieces: list = []

    def add(self, key, t: Tensor) -> int:
        self._pieces.append((key, t))
        return len(self._pieces) - 1

    def run(self, op=None) -> list:
        out = [t for _, t in self._pieces]
        buckets: dict = {}
        for i, (key, t) in enumerate(self._pieces):
            if key is not None:
                buckets.setdefault((id(key[0]), key[1], t.dtype, t.device), (key, []))[1].append(i)
        for key, idx in buckets.values():
            flat = torch.cat([out[i].reshape(-1) for i in idx]) if len(idx) > 1 else out[idx[0]].reshape(-1).clone()
            all_reduce_(flat, key, op)
            pos = 0
            for i in idx:
                n = out[i].numel()
                out[i] = flat[pos:pos + n].view(out[i].shape)
                pos += n
        self._pieces = []
        return out


class RowReduce:
    """Per-bucket all-reduce of a [n, k] tensor of per-tensor partial sums (FusedOptimizer's
    tensor_in / tensor_out): rows of tensors sharded on the same mesh dims are reduced together, in
    one collective per key; rows of replicated or plain tensors are left alone."""

    def __init__(self, keys: list):
        groups: dict = {}
        for i, k in enumerate(keys):
            if k is not None:
                groups.setdefault((id(k[0]), k[1]), (k, []))[1].append(i)
        self.parts = [[k, torch.tensor(rows), len(rows) == len(keys)] for k, rows in groups.values()]

    def __call__(self, sums: Tensor, ncols: Optional[int] = None) -> None:
        for part in self.parts:
            key, rows, every = part
            if every and ncols is None:
                all_reduce_(sums, key)  # the common case: every row, every column
                continue
            if rows.device != sums.device:  # moved once, kept on the sums' device
                rows = part[1] = rows.to(sums.device)
            sel = sums.index_select(0, rows)
            if ncols is not None:
                sel = sel[:, :ncols].contiguous()
            all_reduce_(sel, key)
            if ncols is None:
                sums.index_copy_(0, rows, sel)
            else:
                sums[:, :ncols].index_copy_(0, rows, sel)


def reduce_totals(pieces: list) -> Optional[Tensor]:
    """Sum of 0-dim partial totals [(key, total)], each all-reduced over its key first (one
    collective per distinct key); totals are added in list order."""
    if not pieces:
        return None
    batch = SumBatch()
    for key, t in pieces:
        batch.add(key, t.reshape(1))
    vals = batch.run()
    total = vals[0].reshape(())
    for v in vals[1:]:
        total = total + v.reshape(()).to(total.device)
    return total


# ---- ZeRO (torch.distributed.optim.ZeroRedundancyOptimizer) ------------------------------------
def zero_group():
    """The process group of a ZeroRedundancyOptimizer constructing the calling optimizer, or None.

    ZeroRedundancyOptimizer builds ``optimizer_class(partition, **defaults)`` for each rank's
    partition of whole params; a global quantity over all params (LAMB's and Adan's grad norm,
    KOALA's scalars) must then be summed over the ranks. Found by looking up the constructing
    frames (at construction only)."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    zero = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")  # imported by its users
    if zero is None:
        return None
    ZeroRedundancyOptimizer = zero.ZeroRedundancyOptimizer
    f = sys._getframe(1)
    for _ in range(12):
        if f is None:
            break
        obj = f.f_locals.get("self")
        if isinstance(obj, ZeroRedundancyOptimizer):
            return obj.process_group
        f = f.f_back
    return None


def zero_key(group):
    return None if group is None else ("zero", group)


# ---- states of DTensor params ---------------------------------------------------------------
def wrap_like(t_local: Tensor, p: Tensor) -> Tensor:
    """A DTensor with p's mesh, placements, global shape and strides around the local tensor."""
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(t_local, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                              stride=p.stride())


def full_like(p: Tensor, value: float, dtype) -> Tensor:
    """torch.full_like(p, value, dtype) keeping p's strides; a DTensor laid out as p for a DTensor p."""
    if not is_dtensor(p):
        return torch.full_like(p, value, dtype=dtype, memory_format=torch.preserve_format)
    return wrap_like(torch.full_like(p._local_tensor, value, dtype=dtype, memory_format=torch.preserve_format), p)


def _contiguous_stride(shape) -> tuple:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(out))


def q8_absmax_shape(p: Tensor, block: int, local_shape=None) -> Optional[tuple]:
    """Shape of the absmax of an 8-bit state of the DTensor p (its global shape, or the local one for
    `local_shape`), or None when p must keep 32-bit states.

    The kernels quantize each local shard in blocks of `block` elements in memory order. With k = 1 +
    the largest tensor dim any placement shards (0 when none), every shard boundary is a block
    boundary for any world size exactly when the row length R = prod(shape[k:]) is a multiple of
    `block`: then the blocks of the global tensor (row-major) are those of the shards, and absmax is
    the DTensor of shape shape[:k] + (R // block,) with p's placements (bitwise resharding).
    A param whose last dim is sharded (k = ndim: 1-D params under FSDP, row-wise TP weights) or whose
    R is not a multiple of `block` keeps 32-bit states. Unsharded (replicated) DTensors are blocked
    as plain tensors: absmax has ceil(numel / block) elements."""
    shape = tuple(p.shape) if local_shape is None else tuple(local_shape)
    dims = [_shard_dim(pl) for pl in p.placements]
    dims = [d % p.dim() for d in dims if d is not None]
    if not dims:
        n = math.prod(shape)
        return ((n + block - 1) // block,)
    k = max(dims) + 1
    if k >= p.dim():
        return None
    row = math.prod(shape[k:])
    if row % block:
        return None
    return shape[:k] + (row // block,)


def wrap_absmax(am_local: Tensor, p: Tensor, block: int) -> Tensor:
    """The absmax DTensor of an 8-bit state of p from its local (1-D or shaped) absmax."""
    from torch.distributed.tensor import DTensor

    gshape = q8_absmax_shape(p, block)
    lshape = q8_absmax_shape(p, block, p._local_tensor.shape)
    return DTensor.from_local(am_local.reshape(lshape), p.device_mesh, p.placements, run_check=False,
                              shape=torch.Size(gshape), stride=_contiguous_stride(gshape))


def to_local_of(v: Tensor, p: Tensor) -> Tensor:
    """The part of a saved value `v` (a DTensor of any layout, or a plain tensor with p's global shape)
    that belongs to this rank's shard of p: a plain tensor shaped like p's local shard."""
    from torch.distributed.tensor import distribute_tensor

    if is_dtensor(v):
        if v.device_mesh != p.device_mesh or tuple(v.placements) != tuple(p.placements):
            v = v.redistribute(p.device_mesh, p.placements)
        return v._local_tensor
    if v.shape != p.shape:
        raise ValueError(f"saved state of shape {tuple(v.shape)} for a param of shape {tuple(p.shape)}")
    return distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)._local_tensor


def full_value(v: Tensor) -> Tensor:
    """A plain tensor with the whole value (a DTensor is gathered: a collective)."""
    return v.full_tensor() if is_dtensor(v) else v


def localize_saved(saved: dict, p: Tensor, block: int, slot_keys, absmax_suffix: str) -> dict:
    """A saved per-param state for a DTensor param p, with every per-element tensor replaced by this
    rank's local part (plain tensors), so that FusedOptimizer.load_state_dict converts it as it
    converts an unsharded state. 8-bit codes + absmax stay codes when p's layout admits 8-bit blocks
    of the saved `block` size: the absmax of any layout, flattened, is the list of the whole tensor's
    blocks in row-major order, so it is reshaped to p's layout (a legacy 1-D absmax too). Otherwise
    they are dequantized from the gathered whole tensor."""
    from ._ops import SIGNED_KEYS
    from .q8 import dequantize_blockwise

    gshape = q8_absmax_shape(p, block)
    out = {}
    for key, v in saved.items():
        if key.endswith(absmax_suffix) and key[:-len(absmax_suffix)] in saved:
            continue  # with its codes, below
        if not isinstance(v, Tensor) or v.dim() == 0:
            out[key] = v
            continue
        am = saved.get(key + absmax_suffix) if key in slot_keys else None
        if am is not None and v.dtype == torch.uint8:
            if gshape is not None and am.numel() == math.prod(gshape):
                out[key] = to_local_of(v, p)
                out[key + absmax_suffix] = _absmax_local(am, p, gshape)
            else:
                codes, amf = full_value(v), full_value(am)
                val = dequantize_blockwise(codes.contiguous(), amf.reshape(-1).to(codes.device), block,
                                           SIGNED_KEYS[key]).view(codes.shape)
                out[key] = to_local_of(val, p)
            continue
        out[key] = to_local_of(v, p)
    return out


def _absmax_local(am: Tensor, p: Tensor, gshape: tuple) -> Tensor:
    from torch.distributed.tensor import distribute_tensor

    if is_dtensor(am) and tuple(am.shape) == tuple(gshape):
        if am.device_mesh != p.device_mesh or tuple(am.placements) != tuple(p.placements):
            am = am.redistribute(p.device_mesh, p.placements)
        return am._local_tensor
    am = full_value(am).reshape(gshape)
    return distribute_tensor(am.to(p.device), p.device_mesh, p.placements, src_data_rank=None)._local_tensor


def zeros_reduced(p: Tensor, shape, dim: int, keepdim: bool, dtype) -> Tensor:
    """Zeros for a statistic of p reduced over tensor dim `dim` (Adafactor's row / col factors):
    a DTensor on p's mesh whose placements follow p's (a placement sharding `dim` becomes Replicate:
    every rank holds the whole reduced statistic, kept equal by all-reducing its partial sums)."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    nd = p.dim()
    dim = dim % nd
    pls = []
    for pl in p.placements:
        d = _shard_dim(pl)
        if d is None or d % nd == dim:
            pls.append(Replicate())
            continue
        nd_ = d % nd if keepdim or d % nd < dim else d % nd - 1
        pls.append(_StridedShard(nd_, split_factor=pl.split_factor) if isinstance(pl, _StridedShard) else Shard(nd_))
    loc = list(p._local_tensor.shape)
    if keepdim:
        loc[dim] = 1
    else:
        del loc[dim]
    t = torch.zeros(loc, dtype=dtype, device=p.device)
    return DTensor.from_local(t, p.device_mesh, pls, run_check=False, shape=torch.Size(shape),
                              stride=_contiguous_stride(shape))


def place_like(v: Tensor, like: Tensor) -> Tensor:
    """A saved value v (DTensor of any layout, or a plain whole tensor) laid out as the DTensor `like`."""
    from torch.distributed.tensor import DTensor

    if is_dtensor(v) and v.device_mesh == like.device_mesh and tuple(v.placements) == tuple(like.placements):
        return v
    return DTensor.from_local(to_local_of(v, like), like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=like.stride())


def mean_over_ranks(L: Tensor, S: Optional[Tensor]):
    """(L, S) averaged over every rank of the default process group when torch.distributed runs with
    more than one rank (KOALA: the loss of the global batch, whatever the parallelism; equal per-rank
    batches assumed). One all-reduce of both values."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return L, S
    world = dist.get_world_size()
    both = torch.stack([L.reshape(()), (L if S is None else S).reshape(()).to(L.dtype)])
    dist.all_reduce(both)
    STATS["all_reduce"] += 1
    STATS["bytes"] += both.numel() * both.element_size()
    both = both / world
    return both[0], (None if S is None else both[1])
