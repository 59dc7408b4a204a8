"""Lion (Chen et al. 2023; csrc/core/rules/lion.h), fused, with lucidrains/lion-pytorch's arguments,
defaults and state key."""
from __future__ import annotations

from .base import _FUSED_DOC, _UNIT, FusedOptimizer, _check_betas_ranges, _check_scalar

__all__ = ["Lion"]


class Lion(FusedOptimizer):
    __doc__ = """Lion (EvoLved Sign Momentum; Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms"), fused; lucidrains/lion-pytorch semantics.

    ``p *= 1 - lr * weight_decay``; ``p -= lr * sign(beta1 * m + (1 - beta1) * g)``;
    ``m = beta2 * m + (1 - beta2) * g`` (state ``exp_avg``). Defaults lr=1e-4, betas=(0.9, 0.99)
    as in the paper. ``decoupled_weight_decay=True`` divides weight_decay by the constructor's lr
    (lucidrains' option: decay independent of the lr schedule's scale).

    Deviations from the reference: ``use_triton`` is accepted for compatibility and selects
    nothing (the fused kernel always runs; same math); ``maximize`` is added; a "step" counter
    is kept in the state (unused by the update); betas must be in [0, 1) (lucidrains allows 1.0).
""" + _FUSED_DOC
    _rule = "lion"

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=False,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("weight_decay value", weight_decay)
        _check_betas_ranges(betas, [_UNIT, _UNIT])
        if decoupled_weight_decay and not (float(lr) > 0):
            raise ValueError(f"Invalid learning rate: {lr} (decoupled_weight_decay divides by it: must be > 0)")
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                        decoupled_weight_decay=bool(decoupled_weight_decay), maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        wd = group["weight_decay"]
        if group.get("decoupled_weight_decay", False):
            init_lr = self.defaults["lr"]  # the constructor's lr, as lucidrains' _init_lr
            wd = wd / float(init_lr)
        return dict(beta1=b1, beta2=b2, weight_decay=wd)
