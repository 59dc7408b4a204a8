"""Adam, AdamW, Adamax: drop-in replacements of the torch.optim classes (same arguments,
defaults, param_group keys and state keys), each step one fused kernel per bucket."""
from __future__ import annotations

from .._ops import RULE_FLAG_SHIFT, VARIANT_SHIFT
from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["Adam", "AdamW", "Adamax"]

_FUSED_DOC = """
    fusedopt extras (keyword-only): ``state_dtype`` (None = float32, or torch.bfloat16) and
    ``param_rounding`` ("nearest", or for bfloat16 params "stochastic" / "kahan").
    ``foreach`` is accepted and ignored (always fused); ``fused=False`` and
    ``differentiable=True`` are refused. ``capturable`` is accepted: steps live on the param's
    device and lr / found_inf / grad_scale are read on the device, so every step is capturable.
"""


class Adam(FusedOptimizer):
    __doc__ = "torch.optim.Adam, fused.\n" + _FUSED_DOC
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

    def _active_slots(self, group):
        return (True, True, bool(group["amsgrad"]))

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return [b1, b2, group["eps"], group["weight_decay"]]

    def _rule_flags(self, group):
        flags = (1 << VARIANT_SHIFT) if group["amsgrad"] else 0
        if group.get("decoupled_weight_decay", False):
            flags |= 1 << RULE_FLAG_SHIFT
        return flags


class AdamW(Adam):
    __doc__ = "torch.optim.AdamW, fused.\n" + _FUSED_DOC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, **options)


class Adamax(FusedOptimizer):
    __doc__ = "torch.optim.Adamax, fused.\n" + _FUSED_DOC
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
        return [b1, b2, group["eps"], group["weight_decay"]]
