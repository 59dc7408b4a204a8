"""Adamax (csrc/core/rules/adamax.h): drop-in replacement of torch.optim.Adamax, each step one fused kernel
per bucket."""
from __future__ import annotations

from .base import _FUSED_DOC, FusedOptimizer, _check_scalar, check_betas

__all__ = ["Adamax"]


class Adamax(FusedOptimizer):
    __doc__ = """torch.optim.Adamax, fused: AdaMax (Kingma & Ba 2015, section 7.1 of the Adam paper).

    Arguments and defaults as torch.optim.Adamax: ``lr`` (2e-3), ``betas``, ``eps`` (inside the max:
    ``u = max(beta2 * u, |g| + eps)``), ``weight_decay`` (L2), ``maximize``.
""" + _FUSED_DOC
    _rule = "adamax"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"])
