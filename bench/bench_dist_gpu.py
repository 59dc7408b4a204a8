"""GPU check of the distributed path (NCCL), for a machine with one or more GPUs: on `--world` ranks
(default 1, one GPU each), every param Shard(0) on the mesh (FSDP2's layout) against the same params
unsharded on the same GPU, for a transformer-shaped parameter set:

1. after `--check-steps` steps the gathered params and every state equal the unsharded ones (bitwise
   for per-element rules, within tests/_dist_jobs.CROSS_TOL of each tensor's scale for rules that sum
   over tensors);
2. the median step time of the sharded run next to the unsharded one.

    PYTHONPATH=python python bench/bench_dist_gpu.py                    # NCCL, 1 GPU
    PYTHONPATH=python python bench/bench_dist_gpu.py --world 2          # NCCL, 2 GPUs
    PYTHONPATH=python python bench/bench_dist_gpu.py --device cpu       # gloo: the same script on the CPU

Needs the CUDA build of the extension. Written without a GPU at hand: the CPU (gloo) form ran here; the
NCCL form has not run yet.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))
import bench_dist as B  # noqa: E402
import fusedopt  # noqa: E402
from tests import _dist_jobs as J  # noqa: E402

# (name, factory, kind for bench_dist._one_step, bitwise?)
CASES = [(name, make, kind, "per-element" in name) for name, make, kind in B.RULES if make is not None] + [
    ("Lookahead(AdamW) (per-element)", lambda ps: fusedopt.Lookahead(fusedopt.AdamW(ps, lr=1e-4), k=2), None, True),
]


def _pair(shapes, mesh, device, seed=0):
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    g = torch.Generator().manual_seed(seed)
    sharded, plain = [], []
    for s in shapes:
        t = (torch.randn(s, generator=g) * 0.02).to(device)
        d = distribute_tensor(t.clone(), mesh, [Shard(0)], src_data_rank=None)
        sharded.append(torch.nn.Parameter(DTensor.from_local(d._local_tensor.contiguous(), mesh, [Shard(0)],
                                                             shape=d.shape, stride=d.stride())))
        plain.append(torch.nn.Parameter(t.clone()))
    return sharded, plain


def _grads(sharded, plain, step, device):
    from torch.distributed.tensor import DTensor, distribute_tensor

    g = torch.Generator().manual_seed(100 + step)
    for ps, pp in zip(sharded, plain):
        full = (torch.randn(pp.shape, generator=g) * 1e-3).to(device)
        pp.grad = full.clone()
        d = distribute_tensor(full.clone(), ps.device_mesh, ps.placements, src_data_rank=None)
        ps.grad = DTensor.from_local(d._local_tensor.contiguous(), ps.device_mesh, ps.placements, shape=d.shape,
                                     stride=d.stride())


def _median_ms(fn, steps, sync):
    for _ in range(2):
        fn()
    ts = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def worker(rank, world, port, args, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world,))
    shapes = B.transformer_shapes(args.layers, args.d, args.vocab)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for name, make, kind, bitwise in CASES:
        sharded, plain = _pair(shapes, mesh, device)
        if "8-bit" in name:
            J.register_32bit_like(sharded, plain)
        opt_s, opt_p = make(sharded), make(plain)
        verdict = "equal (bitwise)" if bitwise else f"equal within {J.CROSS_TOL:g} of scale"
        try:
            for t in range(1, args.check_steps + 1):
                _grads(sharded, plain, t, device)
                B._one_step(opt_s, sharded, kind)
                B._one_step(opt_p, plain, kind)
            J.compare(opt_s, opt_p, sharded, plain, name, None if bitwise else J.CROSS_TOL)
        except AssertionError as e:
            verdict = f"DIFFERS: {str(e)[:120]}"
        ms_s = _median_ms(lambda: B._one_step(opt_s, sharded, kind), args.steps, sync)
        ms_p = _median_ms(lambda: B._one_step(opt_p, plain, kind), args.steps, sync)
        rows.append((name, verdict, ms_s, ms_p))
        del opt_s, opt_p, sharded, plain
        if cuda:
            torch.cuda.empty_cache()
    if rank == 0:
        queue.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--check-steps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    rows = B.launch(worker, args.world, args)
    shapes = B.transformer_shapes(args.layers, args.d, args.vocab)
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"# {len(shapes)} tensors, {numel / 1e6:.1f}M params, Shard(0) on {args.world} rank(s) "
          f"({'NCCL' if args.device == 'cuda' else 'gloo'}, {dev}), torch {torch.__version__}")
    print()
    print("| step of | sharded vs unsharded after "
          f"{args.check_steps} steps | sharded ms / step | unsharded ms / step |")
    print("|---|---|---:|---:|")
    for name, verdict, ms_s, ms_p in rows:
        print(f"| {name} | {verdict} | {ms_s:.2f} | {ms_p:.2f} |")
    if any(v.startswith("DIFFERS") for _, v, _, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
