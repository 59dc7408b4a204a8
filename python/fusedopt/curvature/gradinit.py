"""GradInit (Zhu et al. 2021): learn one positive scale per parameter tensor before training.

docs/algorithms.md §20. Each trainable tensor W_i is reparameterised as ``W_i = alpha_i * W_i^0`` (its
direction and initial norm frozen; alpha_i starts at 1). Per iteration, with a batch S (two halves
S0, S1 drawn from ``data``):

1. g = grad of L(S) w.r.t. the W's, kept differentiable (double backprop).
   ``alg="sgd"``: norm = ||g||_2, probe direction A(g) = g (or g/||g||_2 with ``normalize_grad``).
   ``alg="adam"``: norm = ||g||_1, probe direction A(g) = sign(g) (Adam's first step).
2. If norm > ``gamma``: a *constraint step*: decrease the norm w.r.t. the alphas.
3. Else an *objective step*: virtual step W' = W - eta * A(g) (A(g) detached, as the reference),
   loss of W' on S' = (S0, a new half S2), objective L(W')/eta, one step on the alphas.

The alphas are updated by a scalar Adam ("RescaleAdam" of the reference): the scalar gradient
d/d alpha_i = <grad_W_i, W_i^0> is clipped to ``[-grad_clip, grad_clip]``; first and second moments
and step counts are kept separately for constraint and objective steps (the fairseq copy of the
reference, which we read; docs/algorithms.md §20 describes a shared second moment for the CIFAR copy,
which we could not read -- a minor difference), bias
corrected by their own step counts; ``alpha <- max(alpha - step, min_scale)`` with ``min_scale``
for weights (default 0.01) and ``bias_min_scale`` for tensors whose name ends in "bias" (default 0).
Tensors with zero norm (e.g. zero-initialised biases) cannot be rescaled and are left alone.

Decisions (documented): model in eval mode during GradInit (no dropout) except BatchNorm, which
uses batch statistics; all buffers (running stats) are restored afterwards. ``gamma`` defaults to
inf (no constraint), as the reference's default; its CIFAR scripts use 1. After the loop,
``enforce_constraint=True`` (default) takes further constraint steps on the last batch (at most
``max_extra_iters``) until its gradient norm is <= gamma, so the constraint holds on exit for that
batch; a warning is raised if it does not. Everything random (batch order of a shuffling
DataLoader included) draws from the torch RNG seeded with ``seed`` inside a forked RNG state, so the
result is deterministic given the seed and the global RNG is not disturbed.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["gradinit"]


class _Batches:
    """Cycles through an iterable of (inputs, targets) batches (re-iterating it when exhausted)."""

    def __init__(self, data):
        self.data = data
        self.it = iter(data)
        self.count = 0

    def next(self):
        try:
            b = next(self.it)
        except StopIteration:
            if self.count == 0:
                raise ValueError("data yielded no batches")
            self.it = iter(self.data)
            try:
                b = next(self.it)
            except StopIteration:
                raise ValueError("data yielded no batches on re-iteration (a one-shot iterator?); "
                                 "pass a list or a DataLoader") from None
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError("each batch from data must be a pair (inputs, targets)")
        self.count += 1
        return b


def _cat(a, b):
    if isinstance(a, Tensor):
        return torch.cat([a, b])
    if isinstance(a, (tuple, list)):
        return type(a)(_cat(x, y) for x, y in zip(a, b))
    raise TypeError(f"batch elements must be tensors (or tuples of tensors), got {type(a).__name__}")


def _num(name, x, lo=None, lo_open=False, allow_inf=False):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) or (
            math.isinf(x) and not allow_inf):
        raise ValueError(f"{name} must be a finite real number, got {x!r}")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {x}")
    return float(x)


def gradinit(model: nn.Module, data: Iterable, loss_fn: Callable, *, alg: str = "sgd",
             iters: int = 100, eta: float = 0.1, gamma: float = math.inf, lr: float = 1e-2,
             min_scale: float = 0.01, bias_min_scale: float = 0.0, grad_clip: float = 1.0,
             normalize_grad: bool = False, betas=(0.9, 0.999), eps: float = 1e-8, seed: int = 0,
             enforce_constraint: bool = True, max_extra_iters: int = 1000, return_info: bool = False):
    """Rescale ``model``'s parameter tensors in place by GradInit and return the model.

    Args:
        model: the network at its (default) initialisation.
        data: iterable of ``(inputs, targets)`` batches (a DataLoader or a list); cycled. Each
            iteration draws two batches (the halves S0, S1) and, on objective steps, a third (S2).
        loss_fn: criterion, ``loss_fn(model(inputs), targets)`` -> scalar.
        alg: ``"sgd"`` or ``"adam"``: the optimizer whose first step GradInit makes good.
        iters: iterations (each either a constraint or an objective step).
        eta: the virtual step's lr (the reference uses 0.1 for SGD, 1e-3...1e-2 for Adam).
        gamma: the gradient-norm bound (L2 for sgd, L1 for adam); inf = no constraint.
        lr: Adam lr for the scales.
        min_scale / bias_min_scale: lower bounds of the scales of weights / biases.
        grad_clip: clip of each scalar scale gradient (0 = no clipping).
        normalize_grad: sgd only: probe along g/||g||.
        seed: seeds the torch RNG for the duration (a shuffling DataLoader's order and anything else
            drawn from it); the global RNG state is restored afterwards.
        enforce_constraint: after the loop, take constraint steps until the last batch satisfies it.
        return_info: also return a dict with ``scales`` ({param name: alpha}), ``history`` (per
            iteration: kind, gradient norm, loss) and ``constraint_steps``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(outputs, targets)")
    if alg not in ("sgd", "adam"):
        raise ValueError(f"alg must be 'sgd' or 'adam', got {alg!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    eta = _num("eta", eta, 0.0, lo_open=True)
    gamma = _num("gamma", gamma, 0.0, lo_open=True, allow_inf=True)
    lr = _num("lr", lr, 0.0, lo_open=True)
    min_scale = _num("min_scale", min_scale, 0.0)
    bias_min_scale = _num("bias_min_scale", bias_min_scale, 0.0)
    grad_clip = _num("grad_clip", grad_clip, 0.0)
    eps = _num("eps", eps, 0.0)
    b1, b2 = betas
    b1 = _num("betas[0]", b1, 0.0)
    b2 = _num("betas[1]", b2, 0.0)
    if b1 >= 1 or b2 >= 1:
        raise ValueError(f"betas must be in [0, 1), got {betas}")
    if normalize_grad and alg != "sgd":
        raise ValueError("normalize_grad applies to alg='sgd' only")

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters to rescale")
    names = [n for n, _ in named]
    w0 = {n: p.detach().clone() for n, p in named}
    norms0 = {n: float(w.norm()) for n, w in w0.items()}
    scaled = [n for n in names if norms0[n] > 0]  # zero tensors cannot be rescaled
    if not scaled:
        raise ValueError("every trainable tensor is zero; GradInit can only rescale non-zero tensors")
    floor = {n: (bias_min_scale if n.split(".")[-1] == "bias" else min_scale) for n in scaled}
    alphas = {n: torch.ones((), dtype=torch.float64) for n in scaled}
    st = {kind: {"m": {n: 0.0 for n in scaled}, "v": {n: 0.0 for n in scaled}, "t": 0}
          for kind in ("constraint", "objective")}

    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    was_training = model.training
    bn_types = (nn.modules.batchnorm._BatchNorm,)
    history = []

    def weights(alpha_leaves):
        out = {}
        for n in names:
            if n in alpha_leaves:
                out[n] = alpha_leaves[n].to(w0[n].dtype) * w0[n]
            else:  # a zero tensor: not rescaled, but its gradient counts in the norm and the probe
                out[n] = w0[n].clone().requires_grad_()
        return out

    def grads_and_norm(ws, x, y):
        out = functional_call(model, ws, (x,))
        loss = loss_fn(out, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is not finite ({float(loss.detach())}) at the current scales")
        wl = [ws[n] for n in names]
        gs = torch.autograd.grad(loss, wl, create_graph=True, allow_unused=True)
        gs = [torch.zeros_like(w) if g is None else g for g, w in zip(gs, wl)]
        if alg == "adam":
            norm = sum(g.abs().sum() for g in gs)
        else:
            norm = torch.sqrt(sum((g * g).sum() for g in gs))
        return loss, gs, norm

    def adam_step(kind, objective, leaves):
        gs = torch.autograd.grad(objective, [leaves[n] for n in scaled], allow_unused=True)
        s = st[kind]
        s["t"] += 1
        bc1 = 1 - b1 ** s["t"]
        bc2 = 1 - b2 ** s["t"]
        for n, g in zip(scaled, gs):
            gv = 0.0 if g is None else float(g)
            if not math.isfinite(gv):
                raise FloatingPointError(f"non-finite scale gradient for {n!r}")
            if grad_clip > 0:
                gv = max(-grad_clip, min(grad_clip, gv))
            s["m"][n] = b1 * s["m"][n] + (1 - b1) * gv
            s["v"][n] = b2 * s["v"][n] + (1 - b2) * gv * gv
            step = lr / bc1 * s["m"][n] / (math.sqrt(s["v"][n] / bc2) + eps)
            alphas[n] = torch.tensor(max(float(alphas[n]) - step, floor[n]), dtype=torch.float64)

    def leaves_now():
        return {n: alphas[n].clone().requires_grad_() for n in scaled}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        batches = _Batches(data)
        model.eval()
        for m in model.modules():
            if isinstance(m, bn_types):
                m.train()
        try:
            last = None
            for it in range(iters):
                x0, y0 = batches.next()
                x1, y1 = batches.next()
                x, y = _cat(x0, x1), _cat(y0, y1)
                last = (x, y)
                with torch.enable_grad():
                    leaves = leaves_now()
                    ws = weights(leaves)
                    loss, gs, norm = grads_and_norm(ws, x, y)
                    if float(norm.detach()) > gamma:
                        adam_step("constraint", norm, leaves)
                        history.append({"kind": "constraint", "gnorm": float(norm.detach()), "loss": float(loss.detach())})
                        continue
                    if alg == "adam":
                        probe = [g.detach().sign() for g in gs]
                    elif normalize_grad:
                        nd = float(norm.detach())
                        probe = [g.detach() / nd if nd > 0 else g.detach() for g in gs]
                    else:
                        probe = [g.detach() for g in gs]
                    x2, y2 = batches.next()
                    xs, ys = _cat(x0, x2), _cat(y0, y2)
                    ws2 = {n: ws[n] - eta * pr for n, pr in zip(names, probe)}
                    new_loss = loss_fn(functional_call(model, ws2, (xs,)), ys)
                    if not torch.isfinite(new_loss):
                        raise FloatingPointError(
                            f"the loss after the virtual step is not finite ({float(new_loss.detach())}); "
                            "lower eta or set a gradient-norm bound gamma")
                    adam_step("objective", new_loss / eta, leaves)
                    history.append({"kind": "objective", "gnorm": float(norm.detach()), "loss": float(loss.detach()),
                                    "loss_after_step": float(new_loss.detach())})
            extra = 0
            if enforce_constraint and math.isfinite(gamma):
                x, y = last
                while True:
                    with torch.enable_grad():
                        leaves = leaves_now()
                        loss, gs, norm = grads_and_norm(weights(leaves), x, y)
                        if float(norm.detach()) <= gamma:
                            break
                        if extra >= max_extra_iters:
                            warnings.warn(f"gradinit: gradient norm {float(norm.detach()):.4g} still above gamma="
                                          f"{gamma} after {max_extra_iters} extra constraint steps")
                            break
                        adam_step("constraint", norm, leaves)
                        history.append({"kind": "constraint_extra", "gnorm": float(norm.detach()), "loss": float(loss.detach())})
                        extra += 1
        finally:
            model.train(was_training)
            with torch.no_grad():
                for n, b in model.named_buffers():
                    if n in buffers:
                        b.copy_(buffers[n])

    with torch.no_grad():
        params = dict(named)
        for n in scaled:
            params[n].copy_((alphas[n].to(w0[n].dtype) * w0[n]))
    if return_info:
        info = {"scales": {n: float(alphas[n]) for n in scaled},
                "history": history,
                "constraint_steps": st["constraint"]["t"],
                "objective_steps": st["objective"]["t"],
                "skipped_zero_tensors": [n for n in names if n not in alphas]}
        return model, info
    return model
