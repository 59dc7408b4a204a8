"""PNM, AdaPNM (Xie et al. 2021, positive-negative momentum; csrc/core/rules/pnm.h): each step one fused
kernel per bucket. Arguments, defaults, param_group keys and state keys follow the official code
(zeke-xie/Positive-Negative-Momentum pnm_optim/pnm.py, adapnm.py); deviations are listed in each class
docstring.
"""
from __future__ import annotations

from .base import _FUSED_DOC, _NONNEG, _UNIT, FusedOptimizer, _check_betas_ranges, _check_scalar

__all__ = ["PNM", "AdaPNM"]


class PNM(FusedOptimizer):
    __doc__ = """Positive-Negative Momentum (SGD form), fused; the authors' pnm_optim/pnm.py semantics.
    Paper: Xie et al. 2021, "Positive-Negative Momentum: Manipulating Stochastic Gradient Noise to Improve
    Generalization".

    Two momentum buffers ``pos_momentum`` / ``neg_momentum``; odd steps update the first and
    use the second as the negative momentum, even steps swap their roles. With
    ``betas = (beta1, beta0)``: ``pos = beta1**2 * pos + (1 - beta1**2) * g`` and
    ``p -= lr * ((1 + beta0) * pos - beta0 * neg) / sqrt((1 + beta0)**2 + beta0**2)``.
    No bias correction. ``decoupled=True`` (default): ``p *= 1 - lr * weight_decay`` before the
    step; ``decoupled=False``: L2, ``g + weight_decay * p`` (the grad itself is not modified,
    unlike the reference). The step parity is counted per param (the reference does the same).

    Deviations from the reference: ``lr`` defaults to 1e-3 (the reference requires it);
    ``maximize`` is added; ``betas[0]`` must be in [0, 1) and ``betas[1]`` >= 0 (the reference
    checks only the first).
""" + _FUSED_DOC
    _rule = "pnm"

    def __init__(self, params, lr=1e-3, betas=(0.9, 1.0), weight_decay=0, decoupled=True, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("weight_decay value", weight_decay)
        _check_betas_ranges(betas, [_UNIT, _NONNEG])
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, decoupled=bool(decoupled),
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b0 = group["betas"]
        return dict(beta1=b1, beta0=b0, weight_decay=group["weight_decay"])

    def _flags(self, group):
        return dict(decoupled=bool(group["decoupled"]))


class AdaPNM(FusedOptimizer):
    __doc__ = """Adaptive Positive-Negative Momentum, fused; the authors' pnm_optim/adapnm.py semantics
    (Xie et al. 2021, the PNM paper).

    ``betas = (beta1, beta2, beta0)``. The PNM buffers (``exp_avg`` / ``neg_exp_avg``, swapping
    roles every step) with an Adam denominator: ``v = beta2 * v + (1 - beta2) * g**2``;
    ``amsgrad=True`` (default) keeps ``max_exp_avg_sq = max(max_exp_avg_sq, v)`` and uses it;
    ``p -= lr / (1 - beta1**t) * pn / (sqrt(v) / sqrt(1 - beta2**t) + eps)``. The bias correction
    is ``1 - beta1**t`` although the momentum EMA uses ``beta1**2``: the authors' code does
    this and we keep it. ``weight_decay`` as in :class:`PNM` (``decoupled``).

    Deviations from the reference: ``maximize`` is added; ``betas[2]`` must be >= 0 (unchecked
    in the reference); the grad is not modified in place by L2 weight decay.
""" + _FUSED_DOC
    _rule = "adapnm"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 1.0), eps=1e-8, weight_decay=0.0, amsgrad=True,
                 decoupled=True, *, foreach=None, maximize=False, capturable=False, differentiable=False,
                 fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        _check_betas_ranges(betas, [_UNIT, _UNIT, _NONNEG])
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
                        decoupled=bool(decoupled), maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2, b0 = group["betas"]
        return dict(beta1=b1, beta2=b2, beta0=b0, eps=group["eps"], weight_decay=group["weight_decay"])

    def _flags(self, group):
        return dict(decoupled=bool(group["decoupled"]))

    def _variant(self, group):
        return dict(amsgrad=bool(group["amsgrad"]))
