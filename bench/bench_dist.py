"""Communication a sharded step adds, per rule: collectives and bytes per step (per rank), counted on
FSDP2's layout (every param Shard(0) on a 1-D mesh of `--world` CPU ranks, gloo), with the step time
of the sharded run next to the same step in one process.

    PYTHONPATH=python python bench/bench_dist.py [--world 2] [--layers 4] [--d 512] [--vocab 8192]

Counts come from three places that must agree: torch's CommDebugMode (every c10d and functional
collective of the step, including any a DTensor operation would start), torch.distributed's
all_reduce / all_gather / broadcast / ... wrapped for the step (with the tensors' bytes), and
fusedopt.distributed.STATS (the all-reduces fusedopt issues). Bytes are the payload each rank hands to all_reduce (the wire traffic of a ring all-reduce is
about 2 (world - 1) / world times that). Step times: median of `--steps` steps after 2 warm-ups.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))
import fusedopt  # noqa: E402
from fusedopt import distributed as fdist  # noqa: E402

_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast",
                "send", "recv", "all_to_all_single", "reduce", "gather", "scatter")


def transformer_shapes(layers: int, d: int, vocab: int, ctx: int = 512) -> list:
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return shapes + [(d,), (d,)]


RULES = [
    ("AdamW (per-element)", lambda ps: fusedopt.AdamW(ps, lr=1e-4), None),
    ("AdamW 8-bit (per-element)", lambda ps: fusedopt.AdamW(ps, lr=1e-4, state_bits=8), None),
    ("LAMB (trust ratio + clip)", lambda ps: fusedopt.LAMB(ps, lr=1e-4), None),
    ("LARS (trust ratio)", lambda ps: fusedopt.LARS(ps, lr=1e-2), None),
    ("Adan (max_grad_norm)", lambda ps: fusedopt.Adan(ps, lr=1e-4, max_grad_norm=1.0), None),
    ("Adafactor (factored)", lambda ps: fusedopt.Adafactor(ps), None),
    ("AdafactorTorch", lambda ps: fusedopt.AdafactorTorch(ps), None),
    ("KOALA-M (predict + update)", lambda ps: fusedopt.MomentumKOALA(ps), "koala"),
    ("KOALA-V (predict + update)", lambda ps: fusedopt.VanillaKOALA(ps), "koala"),
    ("clip_grad_norm_ (2-norm)", None, "clip"),
]


def _one_step(opt, params, kind):
    if kind == "clip":
        fusedopt.clip_grad_norm_(params, 1.0)
    elif kind == "koala":
        opt.predict()
        loss = torch.tensor(1.0, dtype=torch.float64)
        opt.step(loss=loss, loss_sq_mean=loss)
    else:
        opt.step()


class _Counter:
    """Wraps torch.distributed's collectives while active: counts calls and tensor bytes."""

    def __init__(self):
        self.calls, self.bytes, self._orig = {}, 0, {}

    def __enter__(self):
        for name in _COLLECTIVES:
            fn = getattr(dist, name, None)
            if fn is None:
                continue
            self._orig[name] = fn

            def wrapped(*a, __fn=fn, __name=name, **k):
                self.calls[__name] = self.calls.get(__name, 0) + 1
                t = a[0] if a and isinstance(a[0], torch.Tensor) else None
                if t is not None:
                    self.bytes += t.numel() * t.element_size()
                return __fn(*a, **k)

            setattr(dist, name, wrapped)
        return self

    def __exit__(self, *exc):
        for name, fn in self._orig.items():
            setattr(dist, name, fn)


def _make(shapes, mesh, seed=0):
    from torch.distributed.tensor import Shard, distribute_tensor

    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=g) * 0.02
        if mesh is None:
            p = torch.nn.Parameter(t)
            p.grad = torch.randn(s, generator=g) * 1e-3
        else:
            p = torch.nn.Parameter(distribute_tensor(t, mesh, [Shard(0)], src_data_rank=None))
            p.grad = distribute_tensor(torch.randn(s, generator=g) * 1e-3, mesh, [Shard(0)], src_data_rank=None)
        out.append(p)
    return out


def _time(opt, params, kind, steps):
    for _ in range(2):
        _one_step(opt, params, kind)
    ts = []
    for _ in range(steps):
        if dist.is_initialized():
            dist.barrier()
        t0 = time.perf_counter()
        _one_step(opt, params, kind)
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def _worker(rank, world, port, args, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode

    mesh = init_device_mesh("cpu", (world,))
    shapes = transformer_shapes(args.layers, args.d, args.vocab)
    rows = []
    for name, make, kind in RULES:
        params = _make(shapes, mesh)
        opt = make(params) if make else None
        _one_step(opt, params, kind)  # states exist, plans built
        before = dict(fdist.STATS)
        with _Counter() as c, CommDebugMode() as cdm:
            _one_step(opt, params, kind)
        assert cdm.get_total_counts() == sum(c.calls.values()), (name, cdm.get_comm_counts(), c.calls)
        ours = fdist.STATS["all_reduce"] - before["all_reduce"]
        ours_bytes = fdist.STATS["bytes"] - before["bytes"]
        ms = _time(opt, params, kind, args.steps)
        rows.append((name, sum(c.calls.values()), dict(c.calls), ours, ours_bytes, c.bytes, ms))
        del opt, params
    if rank == 0:
        queue.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def _single(args) -> dict:
    torch.set_num_threads(args.threads)
    shapes = transformer_shapes(args.layers, args.d, args.vocab)
    out = {}
    for name, make, kind in RULES:
        params = _make(shapes, None)
        opt = make(params) if make else None
        out[name] = _time(opt, params, kind, args.steps)
        del opt, params
    return out


def launch(worker, world: int, *args):
    """worker(rank, world, port, *args, queue) on `world` spawned ranks (127.0.0.1, a free port); returns
    what rank 0 put on the queue."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(worker, args=(world, port, *args, queue), nprocs=world, join=True, start_method="spawn")
    return queue.get()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    shapes = transformer_shapes(args.layers, args.d, args.vocab)
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    rows = launch(_worker, args.world, args)
    single = _single(args)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {len(shapes)} tensors, {numel / 1e6:.1f}M params (transformer: {args.layers} layers, d {args.d}, "
          f"vocab {args.vocab}); Shard(0) on {args.world} CPU ranks (gloo); torch {torch.__version__}, "
          f"{args.threads} threads in all, load {load}")
    print()
    print("| step of | collectives / step (torch.distributed) | of which fusedopt all-reduces | "
          "bytes / step / rank | sharded ms / step | 1 process ms / step |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, calls, ours, ours_bytes, all_bytes, ms in rows:
        detail = ", ".join(f"{k} {v}" for k, v in calls.items()) or "none"
        print(f"| {name} | {n} ({detail}) | {ours} | {all_bytes:,} | {ms:.2f} | {single[name]:.2f} |")
        assert ours == calls.get("all_reduce", 0) and ours_bytes == all_bytes, (name, calls, ours, ours_bytes)


if __name__ == "__main__":
    main()
