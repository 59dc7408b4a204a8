from __future__ import annotations

import torch

SHAPES = [(0,), (1,), (7,), (4097,), (3, 5, 7), (70000,)]


def make_params(shapes=SHAPES, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype).requires_grad_() for s in shapes]


def clone_params(params, dtype=None):
    return [p.detach().clone().to(dtype or p.dtype).requires_grad_() for p in params]


def set_grads(param_lists, step, seed=1, scale=1.0):
    """The same random grads (drawn in fp32, cast per list) for every list of params."""
    g = torch.Generator().manual_seed(seed * 100003 + step)
    base = [torch.randn(p.shape, generator=g) * scale for p in param_lists[0]]
    for plist in param_lists:
        for p, b in zip(plist, base):
            p.grad = b.to(device=p.device, dtype=p.dtype)


def assert_close(actual, expected, msg="", **tol):
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{msg}\n{m}", **tol)


def snapshot(opt, params):
    """Bitwise copy of params, grads and every state tensor."""
    out = []
    for p in params:
        st = {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
        out.append((p.detach().clone(), None if p.grad is None else p.grad.clone(), st))
    return out


def assert_bitwise_equal(a, b):
    for (p1, g1, s1), (p2, g2, s2) in zip(a, b):
        assert torch.equal(p1.view(torch.uint8) if p1.numel() else p1, p2.view(torch.uint8) if p2.numel() else p2)
        if g1 is not None:
            assert torch.equal(g1, g2)
        assert s1.keys() == s2.keys()
        for k in s1:
            assert torch.equal(s1[k], s2[k]), k


def assert_mostly_close(actual, expected, msg="", rtol=0.0, atol=0.0, max_frac=1e-4, outlier_rtol=None):
    """optimi-style: at most `max_frac` of the elements may exceed rtol/atol (fp32-vs-fp64 cancellation
    near a rounding boundary of a low-precision store), and those only within `outlier_rtol`."""
    a, e = actual.double(), expected.double()
    bad = (a - e).abs() > atol + rtol * e.abs()
    nbad = int(bad.sum())
    assert nbad <= max(1, int(max_frac * a.numel())), f"{msg}: {nbad}/{a.numel()} elements beyond tolerance"
    if nbad and outlier_rtol is not None:
        assert_close(a[bad], e[bad], msg=f"{msg} (outliers)", rtol=outlier_rtol, atol=atol)


def check_compiled_step(spec, device, backend, steps=5, opts=None):
    """torch.compile(fullgraph=True, backend=backend) of opt.step() on a small MLP equals eager steps bit for
    bit (the first step runs eager: it creates the state), and changing the tensor lr in place between steps
    does not recompile (one frame). A spec with compile_fullgraph=False (graph breaks by design) compiles
    without fullgraph and is checked for equality only."""
    import copy

    import torch._dynamo.testing

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(device)
    model2 = copy.deepcopy(model)
    opts = dict(opts or {})
    opt = spec.ours(model.parameters(), lr=torch.tensor(spec.lr, device=device), **opts)
    eager = spec.ours(model2.parameters(), lr=torch.tensor(spec.lr, device=device), **opts)
    x, y = torch.randn(32, 8, device=device), torch.randn(32, 1, device=device)
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)

    @torch.compile(fullgraph=spec.compile_fullgraph, backend=counter)
    def compiled_step():
        opt.step()

    for i in range(steps):
        for m, o, step in ((model, opt, compiled_step if i else opt.step), (model2, eager, eager.step)):
            o.param_groups[0]["lr"].fill_(spec.lr * 0.7 ** i)
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            step()
        for p, q in zip(model.parameters(), model2.parameters()):
            assert torch.equal(p, q), f"step {i}"
    if spec.compile_fullgraph:
        assert counter.frame_count == 1, "changing the tensor lr must not recompile"
    assert all(opt.state[p]["step"].item() == steps for p in model.parameters())
