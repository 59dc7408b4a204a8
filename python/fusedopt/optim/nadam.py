"""NAdam: a drop-in replacement of torch.optim.NAdam (state keys step, exp_avg, exp_avg_sq, mu_product)."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["NAdam"]


class NAdam(FusedOptimizer):
    __doc__ = """torch.optim.NAdam, fused: NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam").

    Arguments and defaults as torch.optim.NAdam: ``lr`` (2e-3), ``betas``, ``eps``, ``weight_decay``
    (L2, or decoupled with ``decoupled_weight_decay=True``), ``momentum_decay``, ``maximize``.
    ``mu_product`` is a per-param float32 scalar state, as in torch.
""" + _FUSED_DOC
    _rule = "nadam"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("momentum_decay value", momentum_decay)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum_decay=group["momentum_decay"])

    def _flags(self, group):
        return dict(decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)))
