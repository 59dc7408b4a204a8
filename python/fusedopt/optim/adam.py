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
    ``state_bits`` (32; 16 = bfloat16 states; 8 = block-wise 8-bit states), ``min_8bit_size``
    (4096: smaller params keep 32-bit states) and ``block_size`` (256: elements per 8-bit absmax
    block) choose how states are stored (docs/algorithms.md §19).
"""


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
    __doc__ = """torch.optim.AdamW, fused: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").

    Arguments and defaults as torch.optim.AdamW: ``lr``, ``betas``, ``eps``, ``weight_decay`` (1e-2,
    decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step), ``amsgrad``, ``maximize``.
""" + _FUSED_DOC

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, **options)


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
        return [b1, b2, group["eps"], group["weight_decay"]]
