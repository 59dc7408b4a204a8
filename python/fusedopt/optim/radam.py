"""RAdam: torch.optim.RAdam's rule by default, or the official repository's with variant="official"."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["RAdam"]

_VARIANTS = ("torch", "official")


class RAdam(FusedOptimizer):
    __doc__ = """torch.optim.RAdam, fused: RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning
    Rate and Beyond").

    Arguments as torch.optim.RAdam: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``maximize``, plus
    ``variant`` and ``degenerated_to_sgd`` (below).

    ``variant="torch"`` (default) is torch.optim.RAdam: rectified when rho_t > 5, otherwise an
    SGD-with-bias-corrected-momentum step; L2 weight decay, or decoupled with
    ``decoupled_weight_decay=True``.

    ``variant="official"`` is the authors' radam.py (LiyuanLucasLiu/RAdam): rectified when
    rho_t >= 5 (with beta2=0.999 both variants first rectify at t=6); before that, no change at all
    unless ``degenerated_to_sgd=True`` (then p -= lr/bc1 * m); weight decay p -= lr*wd*p only on
    steps that update. ``decoupled_weight_decay`` does not apply to it.
    """ + _FUSED_DOC
    _rule = "radam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, variant="torch", degenerated_to_sgd=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        if variant == "torch" and degenerated_to_sgd:
            raise ValueError("degenerated_to_sgd applies to variant='official' (torch's RAdam always takes "
                             "the SGD step before rectification)")
        if variant == "official" and decoupled_weight_decay:
            raise ValueError("variant='official' has its own (decoupled, update-gated) weight decay; "
                             "decoupled_weight_decay applies to variant='torch'")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable, variant=variant, degenerated_to_sgd=degenerated_to_sgd)
        super().__init__(params, defaults, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"])

    def _flags(self, group):
        return dict(decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
                    degenerated_to_sgd=bool(group.get("degenerated_to_sgd", False)))

    def _variant(self, group):
        return dict(variant=group.get("variant", "torch"))
