"""Jobs of tests/test_distributed.py, run in spawned processes (gloo on 127.0.0.1, CPU).

Each job compares a sharded run with the same run in one process, on every rank: the same full
grads are drawn on every rank (one generator per step) and laid out as the params, so the two runs
see identical inputs; after every step the gathered params and every gathered state must equal the
unsharded ones (bitwise for per-element rules, within a stated tolerance where a rule sums over a
tensor or over tensors: the sums of the shards are added in another order).
"""
from __future__ import annotations

import copy
import math
import os
import socket
import tempfile
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


def _entry(rank, world, port, name, args):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        globals()[name](rank, world, *args)
        dist.barrier()
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        dist.destroy_process_group()


def spawn(name: str, world: int, *args):
    """Run job `name(rank, world, *args)` on `world` spawned ranks; raises if a rank fails."""
    mp.spawn(_entry, args=(world, free_port(), name, args), nprocs=world, join=True)


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
        ps.grad = distribute(full_g.clone(), ps.device_mesh, ps.placements)


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
