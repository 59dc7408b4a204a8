"""Adadelta: drop-in replacement of torch.optim.Adadelta (same arguments, defaults, param_group
keys and state keys), each step one fused kernel per bucket."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["Adadelta"]


class Adadelta(FusedOptimizer):
    __doc__ = "torch.optim.Adadelta, fused (lr, rho, eps, L2 weight_decay, maximize): ADADELTA (Zeiler 2012, " \
        "\"ADADELTA: An Adaptive Learning Rate Method\").\n" + _FUSED_DOC + """
    State: ``square_avg``, ``acc_delta`` and ``step``, as torch.
"""
    _rule = "adadelta"

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("rho value", rho, 0.0, 1.0, hi_open=False)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         **options)

    def _hyper(self, group):
        return dict(rho=group["rho"], eps=group["eps"], weight_decay=group["weight_decay"])
