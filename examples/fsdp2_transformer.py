"""FSDP2 + fusedopt: train a small transformer sharded over 2 ranks, save with torch.distributed.checkpoint,
resume on another world size (docs/distributed.md).

A causal transformer learns sequences x[i+1] = (x[i] + k) mod 256 with a step k drawn per sequence (the
model must read k from the context). Every block and the whole model are wrapped with
`torch.distributed.fsdp.fully_shard`; the optimizer is fusedopt.AdamW with 8-bit states (state_bits=8),
gradients are clipped with fusedopt.clip_grad_norm_. Each rank takes its slice of the same global batch,
so the run does not depend on the world size (up to the rounding of the gradient reduction).

1. `--save-world` ranks (2) train `--steps` steps and save model + optimizer with dcp.save;
2. `--resume-world` ranks (1) load it with dcp.load / set_optimizer_state_dict and train `--more` steps;
3. for comparison, `--save-world` ranks train `--steps + --more` steps without interruption.

Run:  PYTHONPATH=python python examples/fsdp2_transformer.py                      # CPU, gloo
      PYTHONPATH=python python examples/fsdp2_transformer.py --device cuda --save-world 2 --resume-world 1  # NCCL
Prints the loss log (written to examples/results/fsdp2_transformer.md by --out).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import fusedopt  # noqa: E402

VOCAB, CTX, D, HEADS, FF, LAYERS, BATCH = 256, 64, 256, 4, 1024, 2, 16


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.randn(CTX, D) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True,
                                                               norm_first=True) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(CTX), persistent=False)

    def forward(self, idx):
        h = self.emb(idx) + self.pos[: idx.shape[1]]
        for blk in self.blocks:
            h = blk(h, src_mask=self.mask[: idx.shape[1], : idx.shape[1]], is_causal=True)
        return self.head(self.norm(h).flatten(0, 1))  # logits of every position, (batch * T, vocab)


def batch(step: int):
    """The global batch of a step (the same on every rank and world size)."""
    g = torch.Generator().manual_seed(step)
    start = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
    k = torch.randint(1, 9, (BATCH, 1), generator=g)
    seq = (start + k * torch.arange(CTX + 1)) % VOCAB
    return seq[:, :-1], seq[:, 1:]


def build(device, mesh):
    torch.manual_seed(0)
    model = TinyLM().to(device)
    for blk in model.blocks:
        fully_shard(blk, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = fusedopt.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01, state_bits=8)
    return model, opt


def train(model, opt, steps, device, rank, world, log, tag):
    lossf = nn.CrossEntropyLoss()
    for step in steps:
        x, y = batch(step)
        lo, hi = rank * BATCH // world, (rank + 1) * BATCH // world
        x, y = x[lo:hi].to(device), y[lo:hi].to(device)
        loss = lossf(model(x), y.flatten())
        loss.backward()
        norm = fusedopt.clip_grad_norm_(model.parameters(), 1.0)  # DTensor grads: the whole model's norm
        opt.step()
        opt.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        if rank == 0 and (step % 10 == 0 or step == steps[-1]):
            log.append(f"| {tag} | {world} | {step} | {float(mean) / world:.4f} | {float(norm.full_tensor()):.3f} |")


def worker(rank, world, port, args, phase, ckdir, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    mesh = init_device_mesh(device.type, (world,))
    model, opt = build(device, mesh)
    log: list = []
    if phase == "save":
        train(model, opt, list(range(1, args.steps + 1)), device, rank, world, log, "train, then save")
        dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                 checkpoint_id=ckdir)
        if rank == 0:  # what the checkpoint holds for one weight: 8-bit codes + absmax, as DTensors
            st = get_optimizer_state_dict(model, opt)["state"]["blocks.0.linear1.weight"]
            log.append(f"note: the checkpoint's blocks.0.linear1.weight: exp_avg {st['exp_avg'].dtype} "
                       f"{tuple(st['exp_avg'].shape)} {st['exp_avg'].placements}, exp_avg_absmax float32 "
                       f"{tuple(st['exp_avg_absmax'].shape)} {st['exp_avg_absmax'].placements}")
    elif phase == "resume":
        sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
        dcp.load(sd, checkpoint_id=ckdir)
        set_model_state_dict(model, sd["model"])
        set_optimizer_state_dict(model, opt, sd["optim"])
        train(model, opt, list(range(args.steps + 1, args.steps + args.more + 1)), device, rank, world, log,
              "resumed")
    else:
        train(model, opt, list(range(1, args.steps + args.more + 1)), device, rank, world, log, "uninterrupted")
    if rank == 0:
        queue.put(log)
    dist.barrier()
    dist.destroy_process_group()


def launch(world, args, phase, ckdir):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world, port, args, phase, ckdir, queue), nprocs=world, join=True,
                       start_method="spawn")
    return queue.get()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--save-world", type=int, default=2)
    ap.add_argument("--resume-world", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--more", type=int, default=20)
    ap.add_argument("--out", default=None, help="also write the log as markdown here")
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as ck:
        log = launch(args.save_world, args, "save", ck)
        log += launch(args.resume_world, args, "resume", ck)
    log += launch(args.save_world, args, "uninterrupted", "")
    head = [f"# FSDP2 + fusedopt.AdamW(state_bits=8): save on {args.save_world} ranks, resume on "
            f"{args.resume_world}",
            "",
            f"Command: `python examples/fsdp2_transformer.py --device {args.device} --save-world {args.save_world} "
            f"--resume-world {args.resume_world} --steps {args.steps} --more {args.more}` (torch {torch.__version__}, "
            f"{'NCCL' if args.device == 'cuda' else 'gloo, CPU, 1 thread per rank'}).",
            f"Model: {LAYERS} pre-LN blocks, d {D}, {HEADS} heads, ff {FF}, vocab {VOCAB}, context {CTX}, global "
            f"batch {BATCH}; loss = mean over the ranks; grad norm before clipping to 1.0.",
            "",
            "| run | ranks | step | loss | grad norm |",
            "|---|---:|---:|---:|---:|"]
    rows = [line for line in log if line.startswith("|")]
    notes = ["- " + line[len("note: "):] for line in log if line.startswith("note: ")]
    text = "\n".join(head + rows + [""] + notes + [f"- Wall time {time.time() - t0:.0f} s."])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
