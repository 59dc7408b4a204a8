"""LAMB (apex FusedLAMB semantics; csrc/core/rules/lamb.h): a cross-tensor rule built on the reduction
engine (csrc/core/reduce.h) through FusedOptimizer's reduce-then-element-wise plan."""
from __future__ import annotations

from typing import Optional

from .base import _FUSED_DOC, FusedOptimizer, _check_scalar, check_betas

__all__ = ["LAMB", "FusedLAMB"]


class LAMB(FusedOptimizer):
    __doc__ = """LAMB, fused; NVIDIA apex ``FusedLAMB`` semantics (same arguments and defaults: ``lr``,
    ``bias_correction``, ``betas``, ``eps``, ``weight_decay``, ``amsgrad``, ``adam_w_mode``,
    ``grad_averaging``, ``set_grad_none`` (``zero_grad()`` sets grads to None), ``max_grad_norm``,
    ``use_nvlamb``). Paper: You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT
    in 76 minutes".

    Per step: (0) the global grad norm ``G`` over every param with a grad in every group with
    ``max_grad_norm > 0`` (one fused reduction, float64 accumulation, no host sync); (1) a fused
    pass: ``g <- g / (G / max_grad_norm)`` if ``G > max_grad_norm``; with ``adam_w_mode=False``
    ``g <- g + weight_decay * p``; ``m = beta1 m + beta3 g`` (``beta3 = 1 - beta1`` if
    ``grad_averaging`` else 1); ``v = beta2 v + (1 - beta2) g^2``;
    ``u = (m / bc1) / (sqrt(v / bc2) + eps)`` (``bc = 1 - beta^t``, or 1 without
    ``bias_correction``), ``+ weight_decay * p`` with ``adam_w_mode``; and it sums ``p^2`` and
    ``u^2`` per tensor, storing nothing; (2) a fused pass that recomputes ``m``, ``v`` and ``u``
    from the same inputs (bitwise the same values), stores ``m`` and ``v`` and applies
    ``p -= ratio * u`` with ``ratio = lr * ||p|| / ||u||`` when
    (``use_nvlamb`` or ``weight_decay != 0``) and both norms are non-zero, else ``lr``.
    States ``exp_avg``, ``exp_avg_sq``; ``u`` is never stored and ``p.grad`` is not modified
    (apex writes ``u`` into the grad buffer).

    ``state_bits=8`` keeps both states as block-wise 8-bit codes (``exp_avg`` signed map,
    ``exp_avg_sq`` unsigned), as the other rules (docs/algorithms.md §19): pass (1) decodes them, sums
    ``p^2`` and ``u^2`` and stores nothing (the codes and absmax stay bit for bit); pass (2)
    decodes the same codes, so it recomputes bitwise the same ``m``, ``v`` and ``u``, and
    requantizes ``m`` and ``v``. An element whose grad is not finite keeps its param and states
    and adds nothing to the sums.

    Deviations from apex: ``max_grad_norm <= 0`` turns clipping off (apex would divide by zero);
    the step counter is per param (apex: per group, the same unless a param skips steps);
    ``amsgrad=True`` is refused (as apex); ``maximize`` is added.
""" + _FUSED_DOC
    _rule = "lamb1"
    _passes = ("lamb2",)
    _red_out = 2
    _global_in = True

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 amsgrad=False, adam_w_mode=True, grad_averaging=True, set_grad_none=True, max_grad_norm=1.0,
                 use_nvlamb=False, *, maximize=False, foreach=None, capturable=False, differentiable=False,
                 fused=None, **options):
        if amsgrad:
            raise RuntimeError("fusedopt.LAMB does not support the AMSGrad variant (as apex FusedLAMB).")
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("max_grad_norm", max_grad_norm)
        check_betas(betas)
        defaults = dict(lr=lr, bias_correction=bool(bias_correction), betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, adam_w_mode=bool(adam_w_mode), grad_averaging=bool(grad_averaging),
                        max_grad_norm=max_grad_norm, use_nvlamb=bool(use_nvlamb), maximize=maximize)
        self.set_grad_none = set_grad_none
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def zero_grad(self, set_to_none: Optional[bool] = None):
        super().zero_grad(self.set_grad_none if set_to_none is None else set_to_none)

    def _wants_global_sumsq(self, group):
        return float(group["max_grad_norm"]) > 0

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"],
                    max_grad_norm=float(group["max_grad_norm"]))

    def _flags(self, group):
        return {k: bool(group[k]) for k in ("adam_w_mode", "bias_correction", "grad_averaging", "use_nvlamb")}


FusedLAMB = LAMB
