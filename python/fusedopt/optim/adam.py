"""Adam, AdamW (csrc/core/rules/adam.h): drop-in replacements of the torch.optim classes (same arguments,
defaults, param_group keys and state keys), each step one fused kernel per bucket."""
from __future__ import annotations

from .base import _FUSED_DOC, FusedOptimizer, _check_scalar, check_betas

__all__ = ["Adam", "AdamW"]


class Adam(FusedOptimizer):
    __doc__ = """torch.optim.Adam, fused: Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization").

    Arguments and defaults as torch.optim.Adam: ``lr``, ``betas``, ``eps``, ``weight_decay`` (L2: added
    to the grad; with ``decoupled_weight_decay=True``, ``p *= 1 - lr * weight_decay`` before the step),
    ``amsgrad``, ``maximize``.
""" + _FUSED_DOC
    _rule = "adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"])

    def _flags(self, group):
        return dict(decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)))

    def _variant(self, group):
        return dict(amsgrad=bool(group["amsgrad"]))


class AdamW(Adam):
    __doc__ = """torch.optim.AdamW, fused: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").

    Arguments and defaults as torch.optim.AdamW: ``lr``, ``betas``, ``eps``, ``weight_decay`` (1e-2,
    decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step), ``amsgrad``, ``maximize``.
""" + _FUSED_DOC
    _rule = "adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, **options)

    def _flags(self, group):
        return {}  # the adamw op always decouples
