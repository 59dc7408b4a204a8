"""CPUOffloadOptimizer on the CPU: the bucketed copy / step / copy-back logic (several buckets, grad
None params, param groups, a scheduler) gives bitwise the plain optimizer's result; master weights;
state_dict both ways; refusals. The CUDA path (side streams, pinned buffers, events) is written but
has not run here: see bench/bench_offload.py for the GPU check."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fusedopt


def params(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 48), (48,), (100, 30), (7,), (2000,), (33, 5)]
    return [nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def set_grads(ps, t, skip=()):
    g = torch.Generator().manual_seed(100 + t)
    for i, p in enumerate(ps):
        p.grad = None if i in skip else torch.randn(p.shape, generator=g).to(p.dtype)


def groups(ps):
    return [{"params": ps[:3], "weight_decay": 0.1}, {"params": ps[3:], "lr": 3e-3, "weight_decay": 0.0}]


@pytest.mark.parametrize("cls,kw", [(fusedopt.AdamW, {}), (fusedopt.SGD, {"momentum": 0.9}),
                                    (fusedopt.Lion, {}), (fusedopt.AdamW, {"state_bits": 8, "min_8bit_size": 1024})])
def test_bitwise_equal_to_the_plain_optimizer(cls, kw):
    ps, qs = params(), params()
    # 0.01 MB buckets: the params fall into 4 buckets, groups straddle them
    off = fusedopt.CPUOffloadOptimizer(groups(ps), cls, bucket_mb=0.01, lr=1e-2, **kw)
    ref = cls(groups(qs), lr=1e-2, **kw)
    assert len(off._inner) >= 3
    s1 = torch.optim.lr_scheduler.LambdaLR(off, lambda t: 1 / (1 + t))
    s2 = torch.optim.lr_scheduler.LambdaLR(ref, lambda t: 1 / (1 + t))
    for t in range(6):
        skip = (1,) if t == 2 else ()  # a param without grad is skipped (no state change)
        set_grads(ps, t, skip)
        set_grads(qs, t, skip)
        off.step(), ref.step(), s1.step(), s2.step()
        for p, q in zip(ps, qs):
            assert torch.equal(p, q), t
    for p, q in zip(ps, qs):
        for k, v in ref.state[q].items():
            assert torch.equal(off.state[p][k], v), k
    assert off.param_groups[1]["lr"] == ref.param_groups[1]["lr"]


def test_master_weights_bf16():
    """bf16 params with float32 host masters: the masters follow the float32 optimizer on float32
    copies (grads cast up from bf16), and the params are the masters rounded to bf16 each step."""
    ps = params(torch.bfloat16)
    masters = [nn.Parameter(p.detach().float()) for p in ps]
    off = fusedopt.CPUOffloadOptimizer(ps, fusedopt.AdamW, master_weights=True, bucket_mb=0.005, lr=1e-2)
    ref = fusedopt.AdamW(masters, lr=1e-2)
    for t in range(5):
        set_grads(ps, t)
        for p, m in zip(ps, masters):
            m.grad = p.grad.float()
        off.step(), ref.step()
        for p, m in zip(ps, masters):
            assert torch.equal(p, m.detach().to(torch.bfloat16))
            assert torch.equal(off._host[p][0], m.detach())
    # the master weights are saved and restored
    sd = copy.deepcopy(off.state_dict())
    assert all(v["master_param"].dtype == torch.float32 for v in sd["state"].values())
    ps2 = [nn.Parameter(p.detach().clone()) for p in ps]
    off2 = fusedopt.CPUOffloadOptimizer(ps2, fusedopt.AdamW, master_weights=True, bucket_mb=0.005, lr=1e-2)
    off2.load_state_dict(sd)
    for t in range(5, 8):
        set_grads(ps, t)
        set_grads(ps2, t)
        off.step(), off2.step()
    for p, q in zip(ps, ps2):
        assert torch.equal(p, q)


def test_state_dict_both_ways_with_the_plain_optimizer():
    ps, qs = params(), params()
    off = fusedopt.CPUOffloadOptimizer(groups(ps), fusedopt.AdamW, bucket_mb=0.01, lr=1e-2)
    ref = fusedopt.AdamW(groups(qs), lr=1e-2)
    for t in range(3):
        set_grads(ps, t), set_grads(qs, t)
        off.step(), ref.step()
    # the wrapper's state_dict loads into the plain optimizer and the plain one into a new wrapper
    a = fusedopt.AdamW(groups([nn.Parameter(p.detach().clone()) for p in ps]), lr=1e-2)
    a.load_state_dict(copy.deepcopy(off.state_dict()))
    bs = [nn.Parameter(q.detach().clone()) for q in qs]
    b = fusedopt.CPUOffloadOptimizer(groups(bs), fusedopt.AdamW, bucket_mb=0.02, lr=1e-2)
    b.load_state_dict(copy.deepcopy(ref.state_dict()))
    aps = [p for g in a.param_groups for p in g["params"]]
    for t in range(3, 6):
        for lst in (ps, qs, aps, bs):
            set_grads(lst, t)
        off.step(), ref.step(), a.step(), b.step()
    for p, q, x, y in zip(ps, qs, aps, bs):
        assert torch.equal(p, q) and torch.equal(p, x) and torch.equal(p, y)


def test_sync_from_device_and_zero_grad():
    ps = params()
    off = fusedopt.CPUOffloadOptimizer(ps, fusedopt.SGD, lr=0.1)
    with torch.no_grad():
        ps[0].fill_(1.0)  # changed behind the optimizer's back ...
    off.sync_from_device()  # ... and told
    qs = [nn.Parameter(p.detach().clone()) for p in ps]
    ref = fusedopt.SGD(qs, lr=0.1)
    set_grads(ps, 0), set_grads(qs, 0)
    off.step(), ref.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
    assert not torch.equal(ps[0], params()[0] - 0.1 * ps[0].grad)  # the stale copy would give this
    off.zero_grad()
    assert all(p.grad is None for p in ps)


def test_refusals():
    ps = params()
    with pytest.raises(ValueError, match="LAMB.*global grad norm.*bucket_mb=None"):
        fusedopt.CPUOffloadOptimizer(ps, fusedopt.LAMB, bucket_mb=0.01)
    fusedopt.CPUOffloadOptimizer(params(), fusedopt.LAMB, bucket_mb=None)  # one bucket: fine
    fusedopt.CPUOffloadOptimizer(params(), fusedopt.LAMB, bucket_mb=0.01, max_grad_norm=0.0)  # no global norm
    with pytest.raises(ValueError, match="covariance"):
        fusedopt.CPUOffloadOptimizer(params(), fusedopt.KOALA, bucket_mb=0.01)
    with pytest.raises(ValueError, match="bucket_mb must be > 0"):
        fusedopt.CPUOffloadOptimizer(params(), bucket_mb=0)
    p = params()[0]
    with pytest.raises(ValueError, match="appears twice"):
        fusedopt.CPUOffloadOptimizer([p, p])


def test_lamb_single_bucket_equals_plain():
    ps, qs = params(), params()
    off = fusedopt.CPUOffloadOptimizer(ps, fusedopt.LAMB, bucket_mb=None, lr=1e-2)
    ref = fusedopt.LAMB(qs, lr=1e-2)
    for t in range(3):
        set_grads(ps, t), set_grads(qs, t)
        off.step(), ref.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
