"""Distributed training (docs/distributed.md): every optimizer class on DTensor params (FSDP2's Shard(0),
tensor parallel Shard(1), replicated, HSDP and FSDP x TP on 2-D meshes), 8-bit states on shards,
torch.distributed.checkpoint resharding (saved on 2 ranks, loaded on 1 and 4), DDP with no_sync,
ZeroRedundancyOptimizer, clip_grad_norm_ and bad inputs.

Each test spawns 2 or 4 CPU processes (gloo on 127.0.0.1); the work of a test runs in
tests/_dist_jobs.py, which compares the sharded run with the same run in one process after every step
(params and every state; bitwise for per-element rules)."""
from __future__ import annotations

import math
import tempfile
import types

import pytest
import torch

torch_dist = pytest.importorskip("torch.distributed")
if not torch_dist.is_available() or not torch_dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available in this torch build",
                allow_module_level=True)

from fusedopt import distributed as fdist  # noqa: E402
from torch.distributed.tensor import Replicate, Shard  # noqa: E402
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: E402

from . import _dist_jobs as jobs  # noqa: E402


# (job in tests/_dist_jobs.py, its arguments, ranks)
JOBS = {
    # every class (tests/specs.py's rules, LAMB/LARS/Adan clipping, Adafactor(Torch), KOALA-M/V, Lookahead,
    # Gadam) and 8-bit AdamW/Lion/SGD/Adam8bit(block 512)/LAMB on Shard(0) params, uneven and empty shards
    "every_class_shard0_fsdp_layout": ("job_rules", ("fsdp",), 2),
    "every_class_tp_shard1_and_replicated": ("job_rules", ("tp",), 2),
    "hsdp_and_shard0_x_shard1_on_2d_mesh": ("job_mesh2d", (), 4),
    # the placements torch makes for FSDP2 x TP (_StridedShard included)
    "parallelize_module_then_fully_shard": ("job_tp_fsdp", (), 4),
    "fully_shard_backward_get_optimizer_state_dict": ("job_fsdp_backward", (), 2),
    "ddp_with_no_sync_accumulation": ("job_ddp", (), 2),
    "zero_redundancy_optimizer_global_sums": ("job_zero", (), 2),
    "clip_grad_norm_on_dtensor_grads_and_bad_inputs": ("job_clip_and_errors", (), 2),
    "state_dict_conversions_plain_and_sharded": ("job_state_dict_conversions", (), 2),
}


@pytest.mark.parametrize("case", list(JOBS))
def test_sharded_equals_one_process(case):
    job, args, world = JOBS[case]
    jobs.spawn(job, world, *args)


def test_dcp_refuses_8bit_codes_loaded_into_32bit_layout():
    with tempfile.TemporaryDirectory() as ck:
        jobs.spawn("job_q8_layout_change", 2, ck)


def test_dcp_saved_on_2_ranks_resumes_on_1_and_4_as_uninterrupted():
    """get_optimizer_state_dict + dcp.save on 2 ranks, dcp.load + set_optimizer_state_dict on 1 and on
    4 ranks, 3 more steps: bitwise the uninterrupted one-process run for per-element rules (32-bit,
    8-bit with block 256 and 512, bf16 + Kahan, a wrapper); LAMB, Adafactor, KOALA within tolerance."""
    with tempfile.TemporaryDirectory() as ck:
        jobs.spawn("job_dcp", 2, "save", ck, 3, 0)
        jobs.spawn("job_dcp", 1, "load", ck, 3, 3)
        jobs.spawn("job_dcp", 4, "load", ck, 3, 3)


# ---- the 8-bit layout rule, without processes ---------------------------------------------------------

def _fake(shape, placements):
    return types.SimpleNamespace(shape=torch.Size(shape), placements=placements, dim=lambda: len(shape))


@pytest.mark.parametrize("shape, placements, block, expected", [
    ((6, 512), [Shard(0)], 256, (6, 2)),                   # FSDP2 on a matrix: rows of 2 blocks
    ((6, 512), [Replicate(), Shard(0)], 512, (6, 1)),      # HSDP
    ((3, 4, 256), [Shard(0)], 256, (3, 4)),                # rows after dim 0: 4 * 256 elements
    ((3, 4, 256), [Shard(1)], 256, (3, 4, 1)),
    ((3, 4, 256), [_StridedShard(0, split_factor=2), Shard(0)], 256, (3, 4)),
    ((5, 33), [Shard(0)], 256, None),                      # rows of 33: blocks would straddle shards
    ((6, 512), [Shard(1)], 256, None),                     # the last dim sharded (row-wise TP)
    ((4096,), [Shard(0)], 256, None),                      # 1-D under FSDP2
    ((5, 33), [Replicate()], 256, (1,)),                   # replicated: blocked as a plain tensor
    ((4097,), [Replicate()], 256, (17,)),
])
def test_q8_absmax_layout_rule(shape, placements, block, expected):
    assert fdist.q8_absmax_shape(_fake(shape, placements), block) == expected
    if expected is not None and len(expected) > 1:  # the global block grid is the flat one
        assert math.prod(expected) * block == math.prod(shape)
