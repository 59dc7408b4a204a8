"""Jobs of tests/test_distributed.py, run in spawned processes (gloo on 127.0.0.1, CPU).

Each job compares a sharded run with the same run in one process, on every rank: the same full
grads are drawn on every rank (one generator per step) and laid out as the params, so the two runs
see identical inputs; after every step the gathered params and every gathered state must equal the
unsharded ones (bitwise for per-element rules, within a stated tolerance where a rule sums over a
tensor or over tensors: the sums of the shards are added in another order).
"""
from __future__ import annotations

import copy
import datetime
import math
import os
import socket
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import fusedopt
from fusedopt import distributed as fdist

# ---- process plumbing ----------------------------------------------------------------------------


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _entry(rank, world, port, name, args, done_dir=None):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if "lo" in dict(socket.if_nameindex()).values():  # gloo on the loopback device, whatever the hostname
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    # a rank that fails leaves the others waiting in a collective: they give up after the timeout
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    try:
        globals()[name](rank, world, *args)
        dist.barrier()
        if done_dir is not None:  # the job and the final barrier passed on this rank
            open(os.path.join(done_dir, str(rank)), "w").close()
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        dist.destroy_process_group()


def spawn(name: str, world: int, *args):
    """Run job `name(rank, world, *args)` on `world` spawned ranks; raises if a rank fails.

    A rank that finished its job and the final barrier (it leaves a marker file) but then dies in the
    process group's teardown (seen once in CI: "terminate called without an active exception", a gloo
    thread at exit) has passed: that is reported as a warning, not a failure. A rank that dies before
    its marker fails the test as before."""
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory() as done_dir:
        try:
            mp.spawn(_entry, args=(world, free_port(), name, args, done_dir), nprocs=world, join=True)
        except mp.ProcessExitedException as e:
            if sorted(os.listdir(done_dir)) != sorted(str(r) for r in range(world)):
                raise
            warnings.warn(f"{name}: every rank finished its job, then one died in teardown ({e})")


# ---- sharded vs unsharded runs ---------------------------------------------------------------------

# Rules that sum over tensors: each tensor within CROSS_TOL of its largest magnitude (measured on 2 ranks,
# docs/distributed.md: <= 3.2e-7 after 3 steps, <= 4.8e-7 after 20)
CROSS_TOL = 1e-6

SHAPES = [(6, 512), (5, 33), (7,), (1, 300), (3, 4, 256), (2, 3)]


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def distribute(t, mesh, placements):
    """distribute_tensor with every rank's copy of t (no communication), local shards contiguous (as
    FSDP2 and parallelize_module make them)."""
    d = distribute_tensor(t, mesh, placements, src_data_rank=None)
    return DTensor.from_local(d._local_tensor.contiguous(), mesh, placements, shape=d.shape, stride=d.stride())


def make_pair(shapes, mesh, layout, seed=0, dtype=torch.float32):
    """(sharded params, plain params) with equal values; layout(shape) -> placements."""
    g = torch.Generator().manual_seed(seed)
    base = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    sharded = [torch.nn.Parameter(distribute(b.clone(), mesh, layout(b.shape))) for b in base]
    plain = [torch.nn.Parameter(b.clone()) for b in base]
    return sharded, plain


def set_grads(sharded, plain, step, scale=1.0):
    g = torch.Generator().manual_seed(1000 + step)
    for ps, pp in zip(sharded, plain):
        full_g = (torch.randn(pp.shape, generator=g) * scale).to(pp.dtype)
        pp.grad = full_g.clone()
        ps.grad = distribute(full_g.clone(), ps.device_mesh, ps.placements) if isinstance(ps, DTensor) else full_g.clone()


def _fail(msg, a, b):
    a, b = a.double(), b.double()
    d = (a - b).abs()
    raise AssertionError(f"{msg}: max abs diff {d.max().item() if d.numel() else 0:.3e} "
                         f"(max |ref| {b.abs().max().item() if b.numel() else 0:.3e})")


def check_equal(a, b, msg, tol=None):
    """a (gathered) == b: bitwise when tol is None, else max |a - b| <= tol * max |b| (rounding of sums
    added in another order, relative to the tensor's scale)."""
    a, b = full(a), full(b)
    if a.shape != b.shape:
        a = a.reshape(b.shape)
    if tol is None:
        if a.dtype != b.dtype or not torch.equal(a, b):
            if a.dtype == b.dtype and a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and \
                    torch.equal(a.nan_to_num(), b.nan_to_num()):
                return
            _fail(msg + " (bitwise)", a.float() if a.dtype == torch.uint8 else a, b.float() if b.dtype == torch.uint8 else b)
        return
    if a.dtype == torch.uint8:  # 8-bit codes under a tolerance: codes may move by one step of the map
        if (a.int() - b.int()).abs().max() > 1:
            _fail(msg + " (codes)", a.float(), b.float())
        return
    a, b = a.double(), b.double()
    if b.numel() and not (a - b).abs().max() <= tol * b.abs().max():
        _fail(msg, a, b)


def compare(opt_s, opt_p, sharded, plain, label, tol=None, want_dtensor=True):
    """Params and every state of the sharded optimizer (gathered) against the unsharded one (a
    wrapper's inner optimizer too; KOALA's global scalars)."""
    if hasattr(opt_s, "optimizer"):
        compare(opt_s.optimizer, opt_p.optimizer, sharded, plain, label + " (inner)", tol, want_dtensor)
    if "koala" in opt_p.state:
        for k, v in opt_p.state["koala"].items():
            check_equal(opt_s.state["koala"][k], v, f"{label}: koala {k!r}", tol)
    for i, (ps, pp) in enumerate(zip(sharded, plain)):
        check_equal(ps, pp, f"{label}: param {i} {tuple(pp.shape)}", tol)
        sts, stp = opt_s.state.get(ps, {}), opt_p.state.get(pp, {})
        # the unsharded reference keeps 32-bit states where the sharded layout must (register_32bit_state:
        # a recorded fusedopt.override, which a state_dict carries over), so "override" entries may differ
        sts = {k: v for k, v in sts.items() if k != "override"}
        stp = {k: v for k, v in stp.items() if k != "override"}
        assert set(sts) == set(stp), f"{label}: param {i} state keys {sorted(sts)} vs {sorted(stp)}"
        for k, v in stp.items():
            if not torch.is_tensor(v):
                continue
            w = sts[k]
            if want_dtensor and v.dim() > 0:
                assert isinstance(w, DTensor), f"{label}: param {i} state {k!r} is not a DTensor"
            stol = None if (tol is None or k == "step") else tol
            check_equal(w, v, f"{label}: param {i} state {k!r}", stol)


def register_32bit_like(sharded, plain, block=256):
    """The unsharded run keeps 32-bit states where the sharded layout needs them."""
    for ps, pp in zip(sharded, plain):
        if fdist.q8_absmax_shape(ps, block) is None:
            fusedopt.register_32bit_state(pp)


def rule_cases():
    """(label, factory(params), tol): every optimizer class. tol None = bitwise."""
    from .specs import SPECS

    cases = []
    cross = {"lamb", "lars"}
    for spec in SPECS:
        opts = spec.options[-1]
        tol = CROSS_TOL if spec.name in cross else None
        cases.append((f"{spec.name}{opts}", (lambda cls, lr, o: lambda ps: cls(ps, lr=lr, **o))(spec.ours, spec.lr, opts),
                      tol))
    cases += [
        ("adan-clip", lambda ps: fusedopt.Adan(ps, lr=1e-2, max_grad_norm=0.5, weight_decay=0.02), CROSS_TOL),
        ("lamb-default", lambda ps: fusedopt.LAMB(ps, lr=1e-2), CROSS_TOL),
        ("lars-default", lambda ps: fusedopt.LARS(ps, lr=0.1, weight_decay=1e-2, exclude_fn=None), CROSS_TOL),
        ("adafactor", lambda ps: fusedopt.Adafactor(ps), CROSS_TOL),
        ("adafactor-beta1-lr", lambda ps: fusedopt.Adafactor(ps, lr=1e-2, relative_step=False, beta1=0.9,
                                                             weight_decay=0.01, clip_threshold=0.5), CROSS_TOL),
        ("adafactor-torch", lambda ps: fusedopt.AdafactorTorch(ps, lr=1e-2, weight_decay=0.01), CROSS_TOL),
        ("lookahead-adamw", lambda ps: fusedopt.Lookahead(fusedopt.AdamW(ps, lr=1e-2), k=2, alpha=0.5,
                                                          pullback_momentum="pullback", momentum_key="exp_avg"), None),
        ("gadam", lambda ps: fusedopt.Gadam(ps, lr=1e-2, start_step=1), None),
        ("koala-m", lambda ps: fusedopt.MomentumKOALA(ps, weight_decay=1e-3), CROSS_TOL),
        ("koala-v", lambda ps: fusedopt.VanillaKOALA(ps, weight_decay=1e-3), CROSS_TOL),
    ]
    return cases


Q8_CASES = [
    ("adamw8", lambda ps: fusedopt.AdamW(ps, lr=1e-2, state_bits=8, min_8bit_size=0), None),
    ("lion8", lambda ps: fusedopt.Lion(ps, lr=1e-3, state_bits=8, min_8bit_size=0), None),
    ("sgd8", lambda ps: fusedopt.SGD(ps, lr=1e-2, momentum=0.9, state_bits=8, min_8bit_size=0), None),
    ("adam8-512", lambda ps: fusedopt.Adam8bit(ps, lr=1e-2, min_8bit_size=0, block_size=512), None),
    ("lamb8", lambda ps: fusedopt.LAMB(ps, lr=1e-2, state_bits=8, min_8bit_size=0), CROSS_TOL),
]


def _step(opt, step):
    if isinstance(opt, fusedopt.optim.koala._KOALABase):
        opt.predict()
        loss = torch.tensor(0.7 + 0.1 * step, dtype=torch.float64)
        return opt.step(loss=loss, loss_sq_mean=loss * loss + 0.05)
    return opt.step()


def run_cases(mesh, layout, cases, steps=3, shapes=SHAPES, label="", q8=False):
    for name, make, tol in cases:
        sharded, plain = make_pair(shapes, mesh, layout)
        if q8:
            register_32bit_like(sharded, plain, 512 if "512" in name else 256)
        opt_s, opt_p = make(sharded), make(plain)
        for t in range(1, steps + 1):
            set_grads(sharded, plain, t)
            _step(opt_s, t)
            _step(opt_p, t)
            compare(opt_s, opt_p, sharded, plain, f"{label} {name} step {t}", tol)
        if q8:  # the 8-bit path really ran on the shards that admit it
            n8 = sum(1 for p in sharded for v in opt_s.state[p].values()
                     if isinstance(v, DTensor) and v.dtype == torch.uint8)
            assert n8 > 0, f"{label} {name}: no 8-bit state"


def fsdp_layout(shape):
    return [Shard(0)] if len(shape) else [Replicate()]


def job_rules(rank, world, which):
    """Every class on Shard(0) (FSDP2's layout), Shard(1) (TP), Replicate; 8-bit on Shard(0)."""
    mesh = init_device_mesh("cpu", (world,))
    if which == "fsdp":
        run_cases(mesh, fsdp_layout, rule_cases(), label="Shard(0)")
        run_cases(mesh, fsdp_layout, Q8_CASES, label="Shard(0) 8-bit", q8=True)
    elif which == "tp":
        run_cases(mesh, lambda s: [Shard(1)] if len(s) >= 2 else [Replicate()], rule_cases(), label="Shard(1)")
        run_cases(mesh, lambda s: [Shard(1)] if len(s) >= 2 else [Replicate()], Q8_CASES, label="Shard(1) 8-bit",
                  q8=True)
        run_cases(mesh, lambda s: [Replicate()], rule_cases()[:3] + Q8_CASES[:1], label="Replicate", q8=False)
    else:
        raise ValueError(which)


def job_mesh2d(rank, world):
    """HSDP (Replicate, Shard(0)) and FSDP x TP (Shard(0), Shard(1)) on a 2 x 2 mesh."""
    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    cases = rule_cases()
    run_cases(mesh, lambda s: [Replicate(), Shard(0)], cases, label="HSDP")
    run_cases(mesh, lambda s: [Replicate(), Shard(0)], Q8_CASES, label="HSDP 8-bit", q8=True)
    two = lambda s: [Shard(0), Shard(1)] if len(s) >= 2 else [Shard(0), Replicate()]  # noqa: E731
    run_cases(mesh, two, [c for c in cases if c[0].startswith(("adamw", "lamb", "adafactor", "koala"))],
              label="Shard(0)xShard(1)")


# ---- torch.distributed.checkpoint: save on some ranks, load on others -------------------------------

DCP_SHAPES = {"w1": (6, 512), "b1": (6,), "w2": (5, 33), "b2": (7,), "w3": (3, 4, 256), "e": (1, 300)}


def dcp_cases():
    """(name, factory, tol): per-element rules (bitwise), 32-bit and 8-bit; a wrapper; cross-tensor rules."""
    return [
        ("adamw", lambda ps: fusedopt.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True), None),
        ("adamw8", lambda ps: fusedopt.AdamW(ps, lr=1e-2, state_bits=8, min_8bit_size=0), None),
        ("lion8-512", lambda ps: fusedopt.Lion(ps, lr=1e-3, state_bits=8, min_8bit_size=0, block_size=512), None),
        ("sgd-kahan-bf16", lambda ps: fusedopt.SGD(ps, lr=1e-2, momentum=0.9, param_rounding="kahan"), None),
        ("lookahead", lambda ps: fusedopt.Lookahead(fusedopt.RAdam(ps, lr=1e-2), k=3), None),
        ("lamb", lambda ps: fusedopt.LAMB(ps, lr=1e-2), CROSS_TOL),
        ("adafactor", lambda ps: fusedopt.Adafactor(ps), CROSS_TOL),
        ("koala-m", lambda ps: fusedopt.MomentumKOALA(ps), CROSS_TOL),
    ]


class _Net(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        for name, shape in DCP_SHAPES.items():
            setattr(self, name, torch.nn.Parameter(torch.randn(shape, generator=g)))


def _shard0_32bit(plain_params, block):
    """The unsharded run keeps 32-bit states where Shard(0) does (distributed.q8_absmax_shape)."""
    for p in plain_params:
        if p.dim() < 2 or math.prod(p.shape[1:]) % block:
            fusedopt.register_32bit_state(p)


def _grads_for(params, step):
    g = torch.Generator().manual_seed(5000 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def _set(params, fulls):
    for p, fg in zip(params, fulls):
        p.grad = distribute(fg.clone(), p.device_mesh, p.placements) if isinstance(p, DTensor) else fg.clone()


def job_dcp(rank, world, phase, ckdir, n_before, n_after):
    """phase "save": n_before steps on a FSDP2 model (fully_shard), DCP save. phase "load": a fresh
    FSDP2 model + optimizer on this world size, DCP load, n_after steps; compared with one process
    that ran n_before + n_after steps uninterrupted."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    n_before, n_after = int(n_before), int(n_after)
    for name, make, tol in dcp_cases():
        block = 512 if "512" in name else 256
        bf16 = "bf16" in name
        net = _Net(seed=1 if phase == "load" else 0)  # the load overwrites the weights: start elsewhere
        if bf16:
            net.to(torch.bfloat16)
        fully_shard(net, mesh=mesh)
        params = list(net.parameters())
        opt = make(params)
        path = os.path.join(ckdir, name)
        if phase == "save":
            for t in range(1, n_before + 1):
                _set(params, [g.to(params[0].dtype) for g in _grads_for(params, t)])
                _step(opt, t)
            dcp.save({"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)},
                     checkpoint_id=path)
            continue
        sd = {"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}
        dcp.load(sd, checkpoint_id=path)
        set_model_state_dict(net, sd["model"])
        set_optimizer_state_dict(net, opt, sd["optim"])
        inner = getattr(opt, "optimizer", opt)
        if "8" in name:  # states came back as 8-bit DTensor codes + absmax
            assert any(isinstance(v, DTensor) and v.dtype == torch.uint8 for st in inner.state.values()
                       for v in st.values()), name
        # the uninterrupted run, in this process
        ref_net = _Net(seed=0)
        if bf16:
            ref_net.to(torch.bfloat16)
        ref_params = list(ref_net.parameters())
        if "8" in name:
            _shard0_32bit(ref_params, block)
        ref = make(ref_params)
        for t in range(1, n_before + n_after + 1):
            fulls = [g.to(ref_params[0].dtype) for g in _grads_for(ref_params, t)]
            _set(ref_params, fulls)
            _step(ref, t)
            if t > n_before:
                _set(params, fulls)
                _step(opt, t)
        compare(opt, ref, params, ref_params, f"DCP {name} saved on 2, loaded on {world}", tol)


# ---- real models: fully_shard + backward, parallelize_module, DDP, no_sync, ZeRO ----------------------


def _mlp(seed=0, d=64, h=512):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, d), torch.nn.GELU(),
                               torch.nn.Linear(d, 4))


def _batch(step, n=16, d=64):
    g = torch.Generator().manual_seed(7000 + step)
    return torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)


def _close_models(a, b, tol, label):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        check_equal(p, q, f"{label}: {name}", tol)


def job_fsdp_backward(rank, world):
    """fully_shard on a real MLP with backward: each rank takes its half of the global batch; equal to
    one process on the whole batch up to the rounding of the gradient reduction; states are DTensors;
    get_optimizer_state_dict gives DTensor states (8-bit: codes + absmax)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for name, make in [("adamw", lambda ps: fusedopt.AdamW(ps, lr=1e-3)),
                       ("adamw8", lambda ps: fusedopt.AdamW(ps, lr=1e-3, state_bits=8, min_8bit_size=0)),
                       ("lamb", lambda ps: fusedopt.LAMB(ps, lr=1e-3)),
                       ("adafactor", lambda ps: fusedopt.Adafactor(ps))]:
        net, ref = _mlp(), _mlp()
        for layer in (net[0], net[2], net[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(net, mesh=mesh)
        if name == "adamw8":
            for p, q in zip(net.parameters(), ref.parameters()):
                if fdist.q8_absmax_shape(p, 256) is None:
                    fusedopt.register_32bit_state(q)
        opt, ropt = make(list(net.parameters())), make(list(ref.parameters()))
        lossf = torch.nn.CrossEntropyLoss()
        for t in range(1, 4):
            x, y = _batch(t)
            lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
            lossf(net(x[lo:hi]), y[lo:hi]).backward()
            opt.step()
            opt.zero_grad()
            lossf(ref(x), y).backward()
            ropt.step()
            ropt.zero_grad()
        # the grads differ by the rounding of their reduction; Adam-type updates amplify it where a grad
        # element is ~0; with 8-bit states a block whose new absmax moves by that rounding re-draws its
        # stochastic rounding (core/q8.h q8_block_stream), so its elements may each land one code
        # step apart, not only at near-ties (measured: 6e-3 of max |p| after 3 steps of lr 1e-3, whose
        # moves are up to 6e-2 of it): loose bounds. Exactness with equal grads: job_rules.
        _close_models(net, ref, 2e-2 if name == "adamw8" else 1e-4, f"fully_shard+backward {name}")
        osd = get_optimizer_state_dict(net, opt)
        st = osd["state"]["0.weight"]
        assert isinstance(st["step"], torch.Tensor) and not isinstance(st["step"], DTensor)
        key = "exp_avg" if "adam" in name or name == "lamb" else "exp_avg_sq_row"
        assert isinstance(st[key], DTensor), (name, type(st[key]))
        if name == "adamw8":
            # 0.weight (512, 64): rows of 64 elements are not whole blocks, it keeps 32-bit states
            assert st["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in st
            st2 = osd["state"]["2.weight"]  # (64, 512): 8-bit, absmax (64, 2) laid out as the weight
            assert st2["exp_avg"].dtype == torch.uint8 and tuple(st2["exp_avg_absmax"].shape) == (64, 2)
            assert st2["exp_avg_absmax"].placements == st2["exp_avg"].placements


def job_tp_fsdp(rank, world):
    """parallelize_module (ColwiseParallel / RowwiseParallel) on the "tp" mesh dim, then fully_shard on
    "dp": the placements torch makes for FSDP2 x TP (_StridedShard, Shard(0), Shard(1))."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    seen = set()
    cases = [c for c in rule_cases() if c[0].startswith(("adamw", "lamb-default", "adafactor", "lars-default"))]
    for name, make, tol in cases + Q8_CASES[:1]:
        net = _mlp(d=64, h=512)
        parallelize_module(net, mesh["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
        fully_shard(net, mesh=mesh["dp"])
        sharded = list(net.parameters())
        seen.update(str(p.placements) for p in sharded)
        plain = [torch.nn.Parameter(full(p).detach().clone()) for p in sharded]
        if name.endswith("8"):
            register_32bit_like(sharded, plain)
        opt_s, opt_p = make(sharded), make(plain)
        for t in range(1, 4):
            set_grads(sharded, plain, t)
            _step(opt_s, t)
            _step(opt_p, t)
            compare(opt_s, opt_p, sharded, plain, f"TP x FSDP2 {name} step {t}", tol)
    assert any("_S(" in s or "StridedShard" in s for s in seen), seen  # the strided layout was exercised


def job_ddp(rank, world):
    """DDP (whole params on every rank): every class trains as in one process on the global batch;
    no_sync gradient accumulation; the replicas stay bitwise equal."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    lossf = torch.nn.CrossEntropyLoss()
    for name, make in [("adamw", lambda ps: fusedopt.AdamW(ps, lr=1e-3)), ("lamb", lambda ps: fusedopt.LAMB(ps, lr=1e-3)),
                       ("adafactor", lambda ps: fusedopt.Adafactor(ps)),
                       ("koala", lambda ps: fusedopt.KOALA(ps, lr=0.1))]:
        net, ref = DDP(_mlp(d=16, h=32)), _mlp(d=16, h=32)
        opt, ropt = make(list(net.parameters())), make(list(ref.parameters()))
        for t in range(1, 4):
            x, y = _batch(t, d=16)
            lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
            # two micro-batches: the first without the all-reduce
            mid = (lo + hi) // 2
            if isinstance(opt, fusedopt.optim.koala._KOALABase):
                opt.predict()
                ropt.predict()
            with net.no_sync():
                (lossf(net(x[lo:mid]), y[lo:mid]) * 0.5).backward()
            (lossf(net(x[mid:hi]), y[mid:hi]) * 0.5).backward()
            (lossf(ref(x), y)).backward()
            if isinstance(opt, fusedopt.optim.koala._KOALABase):
                with torch.no_grad():
                    loc, full_loss = lossf(net(x[lo:hi]), y[lo:hi]), lossf(ref(x), y)
                opt.step(loss=loc, loss_sq_mean=loc * loc)  # each rank's loss: KOALA averages it over the ranks
                ropt.step(loss=full_loss, loss_sq_mean=_mean_sq(loc))
            else:
                opt.step()
                ropt.step()
            opt.zero_grad()
            ropt.zero_grad()
        _close_models(net.module, ref, 1e-4, f"DDP+no_sync {name}")
        for p in net.parameters():  # replicas identical
            others = [torch.empty_like(p) for _ in range(world)]
            dist.all_gather(others, p.detach())
            assert all(torch.equal(o, p) for o in others), f"DDP {name}: replicas differ"


def _mean_sq(loc):
    """The mean over the ranks of each rank's loss^2 (KOALA's S for the reference)."""
    s = (loc * loc).detach().reshape(1).double()
    dist.all_reduce(s)
    return (s / dist.get_world_size()).float().reshape(())


def job_zero(rank, world):
    """ZeroRedundancyOptimizer(optimizer_class=fusedopt.X): each rank steps its partition of whole
    params; the global grad norm of LAMB / Adan clipping and KOALA's scalars are summed over the
    ranks (found from the constructing frames), so the result is the one-process result."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    shapes = [(6, 512), (5, 33), (7,), (64, 8), (300,), (3, 4, 16)]
    for name, cls, kw, tol in [("adamw", fusedopt.AdamW, dict(lr=1e-2), None),
                               ("lamb", fusedopt.LAMB, dict(lr=1e-2, max_grad_norm=0.5), CROSS_TOL),
                               ("adan", fusedopt.Adan, dict(lr=1e-2, max_grad_norm=0.5), CROSS_TOL),
                               ("koala-m", fusedopt.MomentumKOALA, dict(), CROSS_TOL)]:
        g = torch.Generator().manual_seed(3)
        base = [torch.randn(s, generator=g) for s in shapes]
        ps = [torch.nn.Parameter(b.clone()) for b in base]
        qs = [torch.nn.Parameter(b.clone()) for b in base]
        zero = ZeroRedundancyOptimizer(ps, optimizer_class=cls, **kw)
        assert zero.optim._zero_group is not None, name
        ref = cls(qs, **kw)
        for t in range(1, 4):
            gen = torch.Generator().manual_seed(100 + t)
            for p, q in zip(ps, qs):
                gg = torch.randn(p.shape, generator=gen) * 3.0  # norms above max_grad_norm: clipping is on
                p.grad, q.grad = gg.clone(), gg.clone()
            if name.startswith("koala"):
                zero.optim.predict()
                ref.predict()
                loss = torch.tensor(0.5 + t, dtype=torch.float64)
                zero.step(loss=loss, loss_sq_mean=loss * loss)
                ref.step(loss=loss, loss_sq_mean=loss * loss)
            else:
                zero.step()
                ref.step()
        for i, (p, q) in enumerate(zip(ps, qs)):
            check_equal(p, q, f"ZeRO {name}: param {i}", tol)


def job_clip_and_errors(rank, world):
    """clip_grad_norm_ / get_total_norm / clip_grads_with_norm_ on DTensor grads (Shard(0), Shard(1),
    Replicate and plain mixed) against fusedopt and torch on the whole grads; bad inputs name the param."""
    from torch.distributed.tensor import Partial

    mesh = init_device_mesh("cpu", (world,))
    layouts = [[Shard(0)], [Shard(1)], [Replicate()], None, [Shard(0)], [Shard(0)]]
    shapes = [(6, 10), (5, 33), (4, 4), (9,), (7,), (1, 300)]
    for norm_type in (2.0, 1.0, 3.5, math.inf, -math.inf, 0.0):
        g = torch.Generator().manual_seed(11)
        base = [torch.randn(s, generator=g) for s in shapes]
        base[-1][0, :] = 0.0  # a zero grad (its 0-"norm" is 0); rank 1 holds an empty shard of it
        ps, qs, ts = [], [], []
        for b, lay in zip(base, layouts):
            p = torch.nn.Parameter(distribute(b.clone(), mesh, lay) if lay else b.clone())
            p.grad = distribute(b.clone() * 2, mesh, lay) if lay else b.clone() * 2
            q, tq = torch.nn.Parameter(b.clone()), torch.nn.Parameter(b.clone())
            q.grad, tq.grad = b.clone() * 2, b.clone() * 2
            ps.append(p), qs.append(q), ts.append(tq)
        tot_f = fusedopt.get_total_norm([p.grad for p in ps], norm_type)
        n_s = fusedopt.clip_grad_norm_(ps, 1.0, norm_type)
        n_q = fusedopt.clip_grad_norm_(qs, 1.0, norm_type)
        n_t = torch.nn.utils.clip_grad_norm_(ts, 1.0, norm_type)
        assert isinstance(n_s, DTensor) and isinstance(tot_f, DTensor), type(n_s)  # torch's result type on DTensors
        for a in (n_s, tot_f):
            check_equal(a, n_q, f"clip_grad_norm_ total (norm {norm_type})", 1e-6)
            check_equal(a, n_t, f"clip_grad_norm_ vs torch (norm {norm_type})", 1e-6)
        for i, (p, q) in enumerate(zip(ps, qs)):
            check_equal(p.grad, q.grad, f"clipped grad {i} (norm {norm_type})", 1e-6)
        fusedopt.clip_grads_with_norm_(ps, 0.5, n_s)  # the DTensor total from above
        fusedopt.clip_grads_with_norm_(qs, 0.5, n_q)
        for i, (p, q) in enumerate(zip(ps, qs)):
            check_equal(p.grad, q.grad, f"clip_grads_with_norm_ grad {i} (norm {norm_type})", 1e-6)

    # one group mixing two meshes, Shard(0), Shard(1), Replicate and plain params: each tensor is reduced
    # over its own mesh dims, the global grad norm sums them all
    mesh_b = init_device_mesh("cpu", (world,), mesh_dim_names=("b",))
    lays = [(mesh, [Shard(0)]), (mesh_b, [Shard(1)]), (mesh_b, [Replicate()]), (None, None), (mesh_b, [Shard(0)])]
    g = torch.Generator().manual_seed(5)
    base = [torch.randn(s, generator=g) for s in [(6, 10), (5, 33), (4, 4), (9,), (7, 3)]]
    sharded = [torch.nn.Parameter(distribute(b.clone(), m, lay) if m is not None else b.clone())
               for b, (m, lay) in zip(base, lays)]
    plain = [torch.nn.Parameter(b.clone()) for b in base]
    for cls in (fusedopt.LAMB, fusedopt.LARS):
        ss, pp = [torch.nn.Parameter(x.detach().clone()) for x in sharded], [torch.nn.Parameter(x.detach().clone())
                                                                             for x in plain]
        opt_s, opt_p = cls(ss, lr=1e-2), cls(pp, lr=1e-2)
        for t in (1, 2):
            set_grads(ss, pp, t, scale=4.0)
            opt_s.step()
            opt_p.step()
            compare(opt_s, opt_p, ss, pp, f"{cls.__name__} on two meshes + plain, step {t}", CROSS_TOL,
                    want_dtensor=False)

    def raises(fn, *patterns):
        try:
            fn()
        except (ValueError, RuntimeError) as e:
            for pat in patterns:
                assert pat in str(e), (pat, str(e))
            return
        raise AssertionError(f"no error; expected {patterns}")

    base = torch.randn(6, 4)
    for cls in (fusedopt.AdamW, fusedopt.LAMB, fusedopt.Adafactor):
        # grad laid out differently from its param
        p = torch.nn.Parameter(distribute(base.clone(), mesh, [Shard(0)]))
        p.grad = distribute(base.clone(), mesh, [Shard(1)])
        raises(lambda: cls([p], lr=1e-3) .step() if cls is not fusedopt.Adafactor else cls([p]).step(),
               "['params'][0]", "grad placements")
        # a Partial param
        p = torch.nn.Parameter(DTensor.from_local(base.clone(), mesh, [Partial()]))
        p.grad = DTensor.from_local(base.clone(), mesh, [Partial()])
        raises(lambda: cls([p], lr=1e-3).step() if cls is not fusedopt.Adafactor else cls([p]).step(),
               "['params'][0]", "Partial")
        # a plain grad for a DTensor param, named through param_names
        p = torch.nn.Parameter(distribute(base.clone(), mesh, [Shard(0)]))
        p.grad = base.clone()
        if cls is fusedopt.Adafactor:
            raises(lambda: cls([p]).step(), "['params'][0]", "plain grads")
        else:
            raises(lambda: cls([{"params": [p], "param_names": ["layer.w"]}], lr=1e-3).step(), "'layer.w'",
                   "plain grads")


def job_state_dict_conversions(rank, world):
    """Plain <-> sharded state_dicts without DCP: an unsharded 8-bit state_dict (1-D absmax, the earlier
    format) loads into a sharded optimizer, a sharded one (DTensor states) into an unsharded optimizer;
    both continue bitwise as the uninterrupted run. A 32-bit state_dict loads into an 8-bit sharded one."""
    mesh = init_device_mesh("cpu", (world,))
    make = Q8_CASES[0][1]
    sharded, plain = make_pair(SHAPES, mesh, fsdp_layout)
    register_32bit_like(sharded, plain)
    opt_p = make(plain)
    for t in (1, 2):
        set_grads(sharded, plain, t)
        opt_p.step()
    sd = opt_p.state_dict()
    assert any(v.dim() == 1 and k.endswith("_absmax") for st in sd["state"].values() for k, v in st.items())
    opt_s = make(sharded)
    with torch.no_grad():
        for ps, pp in zip(sharded, plain):
            ps.copy_(distribute(pp.detach().clone(), ps.device_mesh, ps.placements))
    opt_s.load_state_dict(copy.deepcopy(sd))
    # back to one process: a fresh unsharded optimizer from the sharded state_dict
    plain2 = [torch.nn.Parameter(p.detach().clone()) for p in plain]
    register_32bit_like(sharded, plain2)
    opt_p2 = make(plain2)
    for t in (3, 4):
        set_grads(sharded, plain, t)
        set_grads(sharded, plain2, t)
        opt_s.step()
        opt_p.step()
        if t == 3:  # the sharded run's params and states after step 3 into the fresh unsharded optimizer
            with torch.no_grad():
                for p2, ps in zip(plain2, sharded):
                    p2.copy_(ps.full_tensor())
            opt_p2.load_state_dict(opt_s.state_dict())  # gathers the DTensor states (a collective)
        else:
            opt_p2.step()
        compare(opt_s, opt_p, sharded, plain, f"legacy 8-bit state_dict -> sharded, step {t}")
    compare(opt_p2, opt_p, plain2, plain, "sharded state_dict -> unsharded", want_dtensor=False)


def job_q8_layout_change(rank, world, ckdir):
    """An 8-bit checkpoint of a replicated 1-D param (8-bit) loaded by DCP where the param is Shard(0)
    (32-bit states under the layout rule) is refused with the param's name, not read as values; after
    fusedopt.dequantize_state_dict (a plain state_dict) it loads."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    mesh = init_device_mesh("cpu", (world,))
    base = torch.randn(1024, generator=torch.Generator().manual_seed(0))

    def model(placements):
        m = torch.nn.Module()
        m.b = torch.nn.Parameter(distribute(base.clone(), mesh, placements))
        return m

    src = model([Replicate()])
    opt = fusedopt.AdamW(src.parameters(), lr=1e-2, state_bits=8, min_8bit_size=0)
    src.b.grad = distribute(base.clone(), mesh, [Replicate()])
    opt.step()
    assert opt.state[src.b]["exp_avg"].dtype == torch.uint8
    dcp.save({"optim": get_optimizer_state_dict(src, opt)}, checkpoint_id=ckdir)
    dst = model([Shard(0)])
    opt2 = fusedopt.AdamW(dst.parameters(), lr=1e-2, state_bits=8, min_8bit_size=0)
    sd = {"optim": get_optimizer_state_dict(dst, opt2)}
    assert sd["optim"]["state"]["b"]["exp_avg"].dtype == torch.float32  # 1-D under Shard(0): 32-bit
    dcp.load(sd, checkpoint_id=ckdir)
    try:
        set_optimizer_state_dict(dst, opt2, sd["optim"])
    except ValueError as e:
        assert "8-bit states" in str(e) and "['params'][0]" in str(e) and "dequantize_state_dict" in str(e), e
    else:
        raise AssertionError("an 8-bit checkpoint loaded as 32-bit values was not refused")
    plain = fusedopt.dequantize_state_dict(opt.state_dict())
    opt2.load_state_dict(plain)
    ref = fusedopt.dequantize_blockwise(opt.state[src.b]["exp_avg"].full_tensor(),
                                        opt.state[src.b]["exp_avg_absmax"].full_tensor(), 256)
    check_equal(opt2.state[dst.b]["exp_avg"], ref, "dequantized 8-bit state into a 32-bit sharded one")
