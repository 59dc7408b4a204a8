"""A tensor of more than 2^31 elements on the CPU engines (64-bit offsets everywhere): the element pass
(first step through the op, second through the kept plan) and the reduction engine reach the elements
on both sides of 2^31 and the last one, and touch nothing else. bf16 params, plain SGD: 8.6 GB for the
param and its grad; skipped when the machine has less memory than that to spare."""
import pytest
import torch

import fusedopt

N = 2**31 + 1
HOT = [0, 2**31 - 1, N - 1]  # elements with a grad of 1 (the last one is element 2^31)
COLD = [1, 2**31 - 2]        # neighbours, grad 0


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def test_more_than_2_31_elements_cpu():
    if _available_gib() < 14.0:  # checked when it runs (other tests may run beside it)
        pytest.skip("needs about 9 GB of free memory for a 2^31 + 1 element param and its grad "
                    "(MemAvailable below 14 GiB)")
    p = torch.zeros(N, dtype=torch.bfloat16, requires_grad=True)
    g = torch.zeros(N, dtype=torch.bfloat16)
    g[HOT] = 1.0
    p.grad = g
    opt = fusedopt.SGD([p], lr=0.5)
    opt.step()  # the op path
    assert p[HOT].float().tolist() == [-0.5] * len(HOT)
    opt.step()  # the kept plan
    assert all(getattr(b, "handle", None) is not None for _, plan in opt._plans.values() for b in plan), \
        "the kept plan did not run"
    assert p[HOT].float().tolist() == [-1.0] * len(HOT)
    assert p[COLD].float().tolist() == [0.0] * len(COLD)
    step = 2**28  # nothing else moved (counted in slices: a full-size temporary would double the memory)
    with torch.no_grad():
        assert sum(int(torch.count_nonzero(p[i:i + step])) for i in range(0, N, step)) == len(HOT)
    per, total = torch.ops.fusedopt.multi_tensor_sumsq([g])  # the reduction engine
    assert float(per[0]) == float(len(HOT)) and float(total) == float(len(HOT))
