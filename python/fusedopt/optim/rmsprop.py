"""RMSprop: drop-in replacement of torch.optim.RMSprop (same arguments, defaults, param_group
keys and state keys), each step one fused kernel per bucket."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["RMSprop"]


class RMSprop(FusedOptimizer):
    __doc__ = "torch.optim.RMSprop, fused (lr, alpha, eps, L2 weight_decay, momentum, centered, maximize): " \
        "RMSprop (Tieleman & Hinton 2012, lecture 6.5 of \"Neural Networks for Machine Learning\"; the " \
        "centered form from Graves 2013).\n" + \
        _FUSED_DOC + """
    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered), ``step``, as
    torch. The four combinations are four kernel variants (only the states in use are read and
    written).
"""
    _rule = "rmsprop"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("momentum value", momentum)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("alpha value", alpha)
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         **options)

    def _hyper(self, group):  # the variant "momentum" (a buffer) follows momentum != 0 (rmsprop.h)
        return dict(alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum=group["momentum"])

    def _variant(self, group):
        return dict(centered=bool(group["centered"]))
