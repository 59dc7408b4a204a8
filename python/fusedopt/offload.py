"""CPUOffloadOptimizer: optimizer states (and optionally float32 master weights) in CPU memory,
stepped by fusedopt's fused CPU engine, for models on a GPU (in the spirit of ZeRO-Offload, Ren et
al. 2021, and torchao's CPUOffloadOptimizer).

Per step, with the params on a CUDA device:

1. a side stream copies the grads to pinned host buffers, bucket by bucket, one event per bucket;
2. the host waits for bucket k's event and runs the fused CPU step on it (an inner optimizer per
   bucket, over the host copies of its params);
3. a second side stream copies bucket k's updated params back to the device while the host steps
   bucket k+1 and later grads are still arriving;
4. the current stream waits for the last copy, so the next forward sees the new params.

With params on the CPU (no GPU, or for tests) the same code runs with plain copies and no streams.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .optim.adam import AdamW

__all__ = ["CPUOffloadOptimizer"]

_SKIP_KEYS = ("params", "param_names")


class CPUOffloadOptimizer(Optimizer):
    """Optimizer states on the CPU, stepped by the fused CPU engine; params and grads stream
    between the device and pinned host buffers, bucket by bucket, overlapped with the CPU step.
    The scheme is ZeRO-Offload's (Ren et al. 2021, "ZeRO-Offload: Democratizing Billion-Scale Model
    Training"); the API follows torchao's CPUOffloadOptimizer.

    Args:
        params: the model's params (on a CUDA device, or on the CPU) or param groups.
        optimizer_class: a per-element optimizer class (default ``fusedopt.AdamW``); any
            torch.optim-compatible class works, fusedopt's run fused on the CPU.
        master_weights: keep float32 host copies of float16 / bfloat16 params (the optimizer steps
            them; the device params get the rounded result). Without it the host copies have the
            params' dtype.
        bucket_mb: size of a bucket of params, in MB of param data (default 32): the unit of the
            copy / step overlap. ``None`` puts every param in one bucket (no overlap).
        **kwargs: the inner optimizer's arguments (``lr``, ``betas``, ``weight_decay``,
            ``state_bits``, ...).

    ``param_groups`` hold the device params and the inner optimizer's hyperparameters: LR
    schedulers, ``clip_grad_norm_`` and ``torch.amp.GradScaler`` (it unscales the device grads and
    skips steps with inf/NaN before calling ``step()``) work on it as on any optimizer.
    ``state_dict()`` has the format of the inner class (one entry per param, in order, plus
    ``master_param`` with master weights), so it loads into the plain optimizer and back.

    The host copies are made at construction and kept up to date by ``step()``; after changing the
    device params by other means (loading weights into the model), call ``sync_from_device()``
    (``load_state_dict`` does).

    Rules that need every param at once do not fit per-bucket steps: LAMB, and Adan with
    ``max_grad_norm > 0`` (a global grad norm), and KOALA (a global covariance) are refused unless
    ``bucket_mb=None``. States are in ordinary (pageable) host memory: they never cross the bus; the
    host copies of params and grads are pinned.
    """

    def __init__(self, params, optimizer_class: type = AdamW, *, master_weights: bool = False,
                 bucket_mb: Optional[float] = 32.0, **kwargs):
        groups = list(params)
        if not groups:
            raise ValueError("CPUOffloadOptimizer: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        groups = [dict(g, params=list(g["params"])) for g in groups]
        if bucket_mb is not None and not bucket_mb > 0:
            raise ValueError(f"CPUOffloadOptimizer: bucket_mb must be > 0 or None, got {bucket_mb!r}")
        self.optimizer_class = optimizer_class
        self.master_weights = bool(master_weights)
        self._host: dict = {}  # device param -> (host param, pinned staging buffer for the h2d copy or None)
        # buckets of (group index, param) in order, cut at bucket_mb of param bytes
        limit = None if bucket_mb is None else bucket_mb * 2 ** 20
        buckets, cur, size = [], [], 0
        for gi, g in enumerate(groups):
            for p in g["params"]:
                if not isinstance(p, Tensor) or p.is_sparse:
                    raise TypeError(f"CPUOffloadOptimizer: param_groups[{gi}] holds a {type(p).__name__}, not a "
                                    "dense tensor")
                if limit is not None and cur and size + p.numel() * p.element_size() > limit:
                    buckets.append(cur)
                    cur, size = [], 0
                cur.append((gi, p))
                size += p.numel() * p.element_size()
        buckets.append(cur)
        # one inner optimizer per bucket, over host copies, with the groups' hyperparameters
        self._inner: list = []  # (optimizer, [(group index of each inner group)], [device params], [host params])
        for bucket in buckets:
            by_group: dict = {}
            for gi, p in bucket:
                by_group.setdefault(gi, []).append(p)
            inner_groups = []
            for gi, ps in by_group.items():
                hyper = {k: v for k, v in groups[gi].items() if k not in _SKIP_KEYS}
                inner_groups.append({**hyper, "params": [self._host_copy(p) for p in ps]})
            opt = optimizer_class(inner_groups, **kwargs)
            self._check_inner(opt, len(buckets))
            dev = [p for ps in by_group.values() for p in ps]
            self._inner.append((opt, list(by_group), dev, [self._host[p][0] for p in dev]))
        first = self._inner[0][0]
        super().__init__(groups, dict(first.defaults))
        self._streams = None

    # -- set-up -------------------------------------------------------------------------------------
    def _host_copy(self, p: Tensor) -> Tensor:
        if p in self._host:
            raise ValueError("CPUOffloadOptimizer: a param appears twice")
        cuda = p.device.type == "cuda"
        half = p.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if self.master_weights and half else p.dtype
        host = torch.empty(p.shape, dtype=dtype, device="cpu", pin_memory=cuda)
        host.copy_(p.detach())
        host.requires_grad_(p.requires_grad)
        # grads arrive in the param's dtype; with master weights they are cast into a float32 grad
        host.grad = torch.zeros(p.shape, dtype=dtype, device="cpu", pin_memory=cuda and dtype == p.dtype)
        staging = None
        if cuda and dtype != p.dtype:  # the device dtype's rounding is done on the host, then copied
            staging = torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=True)
        grad_stage = None
        if cuda and dtype != p.dtype:
            grad_stage = torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=True)
        self._host[p] = (host, staging, grad_stage)
        return host

    def _check_inner(self, opt: Optimizer, n_buckets: int):
        if n_buckets == 1:
            return
        name = type(opt).__name__
        if hasattr(opt, "predict"):
            raise ValueError(f"CPUOffloadOptimizer: {name} keeps a covariance over all params; per-bucket steps would "
                             "change its math. Use bucket_mb=None (one bucket)")
        wants = getattr(opt, "_wants_global_sumsq", None)
        if getattr(opt, "_global_in", False) and wants is not None and any(wants(g) for g in opt.param_groups):
            raise ValueError(f"CPUOffloadOptimizer: {name} with these settings reads a global grad norm over all params; "
                             "per-bucket steps would change it. Use bucket_mb=None (one bucket), or turn its global "
                             "clipping off (max_grad_norm=0)")

    @torch.no_grad()
    def sync_from_device(self):
        """Copy the device params into their host copies (after the device params were changed by
        something other than step(), e.g. weights loaded into the model)."""
        for p, (host, _, _) in self._host.items():
            host.copy_(p.detach())

    # -- step ---------------------------------------------------------------------------------------
    def _sync_hyper(self):
        for opt, gis, _, _ in self._inner:
            for ig, gi in zip(opt.param_groups, gis):
                for k, v in self.param_groups[gi].items():
                    if k not in _SKIP_KEYS:
                        ig[k] = v

    def _cuda_streams(self, device):
        if self._streams is None or self._streams[0].device != device:
            self._streams = (torch.cuda.Stream(device), torch.cuda.Stream(device))
        return self._streams

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_hyper()
        cuda = [b for b in self._inner if b[2] and b[2][0].device.type == "cuda"]
        if cuda:
            device = cuda[0][2][0].device
            d2h, h2d = self._cuda_streams(device)
            cur = torch.cuda.current_stream(device)
            d2h.wait_stream(cur)  # grads are produced on the current stream
            h2d.wait_stream(cur)
            events = []
            with torch.cuda.stream(d2h):
                for _, _, dev, _ in self._inner:
                    for p in dev:
                        self._grad_to_host(p, non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record(d2h)
                    events.append(ev)
        for k, (opt, _, dev, hosts) in enumerate(self._inner):
            if cuda:
                events[k].synchronize()
                for p in dev:  # grads that came in a staging buffer (master weights): cast on the host
                    _, _, gst = self._host[p]
                    if gst is not None and p.grad is not None:
                        self._host[p][0].grad.copy_(gst)
            else:
                for p in dev:
                    self._grad_to_host(p, non_blocking=False)
            opt.step()
            if cuda:
                with torch.cuda.stream(h2d):
                    for p in dev:
                        self._param_to_device(p, non_blocking=True)
            else:
                for p in dev:
                    self._param_to_device(p, non_blocking=False)
        if cuda:
            cur.wait_stream(h2d)
        self._link_state()
        return loss

    def _grad_to_host(self, p: Tensor, non_blocking: bool):
        host, _, gst = self._host[p]
        if p.grad is None:
            host.grad = None  # the inner optimizer skips it, as it would skip the param
            return
        if host.grad is None:
            host.grad = torch.zeros(host.shape, dtype=host.dtype, device="cpu",
                                    pin_memory=p.device.type == "cuda" and host.dtype == p.dtype)
        if gst is not None:
            gst.copy_(p.grad, non_blocking=non_blocking)  # device dtype over the bus, cast on the host
        else:
            host.grad.copy_(p.grad, non_blocking=non_blocking)

    def _param_to_device(self, p: Tensor, non_blocking: bool):
        host, staging, _ = self._host[p]
        if p.grad is None and host.grad is None:
            return  # not stepped
        if staging is not None:
            staging.copy_(host)  # round the master weights on the host: half the bytes over the bus
            host = staging
        p.detach().copy_(host, non_blocking=non_blocking)

    def _link_state(self):
        for opt, _, dev, hosts in self._inner:
            for p, h in zip(dev, hosts):
                if h in opt.state:
                    self.state[p] = opt.state[h]

    # -- state_dict ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._link_state()
        sd = super().state_dict()
        if self.master_weights:
            ids = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
            for p, (host, staging, _) in self._host.items():
                if host.dtype != p.dtype:
                    entry = dict(sd["state"].get(ids[id(p)], {}))
                    entry["master_param"] = host
                    sd["state"][ids[id(p)]] = entry
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this wrapper or of the inner class (same format). The host copies
        are refreshed from the device params, then master weights from ``master_param`` if saved."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("CPUOffloadOptimizer.load_state_dict: the saved state_dict has "
                             f"{len(saved_groups)} param groups, this optimizer {len(self.param_groups)}")
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in saved_groups for i in g["params"]]
        if len(saved_ids) != len(params):
            raise ValueError("CPUOffloadOptimizer.load_state_dict: the saved state_dict has "
                             f"{len(saved_ids)} params, this optimizer {len(params)}")
        for g, sg in zip(self.param_groups, saved_groups):
            g.update({k: v for k, v in sg.items() if k not in _SKIP_KEYS})
        self.sync_from_device()
        state_of = {id(p): state_dict["state"].get(i) for p, i in zip(params, saved_ids)}
        for opt, gis, dev, hosts in self._inner:
            sub_state, n = {}, 0
            for p, h in zip(dev, hosts):
                st = state_of[id(p)]
                if st is not None:
                    st = dict(st)
                    master = st.pop("master_param", None)
                    if master is not None and h.dtype != p.dtype:
                        h.detach().copy_(master)
                    sub_state[n] = st
                n += 1
            sub_groups, n = [], 0
            for ig, gi in zip(opt.param_groups, gis):
                sub_groups.append({**{k: v for k, v in self.param_groups[gi].items() if k not in _SKIP_KEYS},
                                   "params": list(range(n, n + len(ig["params"])))})
                n += len(ig["params"])
            opt.load_state_dict({"state": sub_state, "param_groups": sub_groups})
        self.state.clear()
        self._link_state()
