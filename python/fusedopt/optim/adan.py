"""Adan (Xie et al. 2022; csrc/core/rules/adan.h), fused, with the official sail-sg/Adan adan.py's arguments,
defaults and state keys."""
from __future__ import annotations

from .base import _FUSED_DOC, _UNIT, FusedOptimizer, _check_betas_ranges, _check_scalar

__all__ = ["Adan"]


class Adan(FusedOptimizer):
    __doc__ = """Adan (adaptive Nesterov momentum), fused; the official sail-sg/Adan adan.py semantics.
    Paper: Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models".

    ``betas = (beta1, beta2, beta3)`` are retention factors (default (0.98, 0.92, 0.99); the
    paper writes them as ``1 - beta``). At a param's first step the previous grad is taken to be
    the current one (first difference 0). ``eps`` is added outside the square root.
    ``no_prox=False`` (default): proximal weight decay ``p = (p - lr * u) / (1 + lr * weight_decay)``;
    ``no_prox=True``: ``p = p * (1 - lr * weight_decay) - lr * u``. States ``exp_avg``,
    ``exp_avg_sq``, ``exp_avg_diff`` and ``neg_pre_grad`` (minus the previous grad, as the
    official code keeps it).

    ``max_grad_norm > 0``: global grad-norm clipping as the official code, before anything else:
    ``G = sqrt(sum of |g|^2 over every param of every group with max_grad_norm > 0)`` (one fused
    reduction, float64 accumulation), ``clip = min(max_grad_norm / (G + eps), 1)`` in float32 on
    the device (no host sync), and every grad is multiplied by ``clip`` inside the kernel, so the
    moments and the stored previous grad see the clipped grad. Unlike the official code ``p.grad``
    itself is left unclipped.

    Deviations from the reference: ``foreach`` / ``fused`` default to None (always fused; ``fused=False`` is refused) where the
    reference defaults to foreach=True, fused=False. The step counter is per param (the reference
    counts per group: the same unless a param skips steps with grad=None). ``maximize`` is added
    (the previous grad is then the negated one). ``restart_opt`` is not provided.
""" + _FUSED_DOC
    _rule = "adan"
    _global_in = True  # global grad sum of squares, read when max_grad_norm > 0

    def _wants_global_sumsq(self, group):
        return float(group.get("max_grad_norm", 0.0)) > 0

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0,
                 no_prox=False, foreach=None, fused=None, *, maximize=False, capturable=False,
                 differentiable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("max_grad_norm", max_grad_norm)
        _check_betas_ranges(betas, [_UNIT, _UNIT, _UNIT])
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        no_prox=bool(no_prox), foreach=foreach, fused=fused, maximize=maximize,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2, b3 = group["betas"]
        return dict(beta1=b1, beta2=b2, beta3=b3, eps=group["eps"], weight_decay=group["weight_decay"],
                    max_grad_norm=float(group.get("max_grad_norm", 0.0)))

    def _flags(self, group):
        return dict(no_prox=bool(group["no_prox"]))
