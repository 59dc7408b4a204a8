"""AdEMAMix (csrc/core/rules/ademamix.h), fused: bitsandbytes' AdEMAMix arguments, defaults and update."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["AdEMAMix"]


class AdEMAMix(FusedOptimizer):
    __doc__ = """AdEMAMix, fused: Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older";
    bitsandbytes.optim.AdEMAMix semantics (docs/algorithms.md §29). ``lr``, ``betas`` = (beta1, beta2,
    beta3): the fast EMA ``m1`` (bias-corrected), the second moment ``nu``, the slow EMA ``m2`` weighted by
    ``alpha``; ``t_alpha`` / ``t_beta3``: steps of the alpha / beta3 warmup schedulers (None: off); ``eps``;
    ``weight_decay`` (decoupled, first). fusedopt adds ``maximize``; ``state_bits=8`` is AdEMAMix8bit.
""" + _FUSED_DOC
    _rule = "ademamix"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, t_alpha=None, t_beta3=None,
                 eps=1e-8, weight_decay=1e-2, *, maximize=False, **options):
        check_betas(betas, 3)
        for name, v in (("learning rate", lr), ("epsilon value", eps), ("weight_decay value", weight_decay),
                        ("alpha", alpha), ("t_alpha", t_alpha or 0), ("t_beta3", t_beta3 or 0)):
            _check_scalar(name, v)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), alpha=alpha, t_alpha=t_alpha, t_beta3=t_beta3,
                                      eps=eps, weight_decay=weight_decay, maximize=maximize), **options)

    def _hyper(self, group):
        b1, b2, b3 = group["betas"]
        return dict(beta1=b1, beta2=b2, beta3=b3, alpha=group["alpha"], t_alpha=group["t_alpha"] or 0,
                    t_beta3=group["t_beta3"] or 0, eps=group["eps"], weight_decay=group["weight_decay"])
