"""Adagrad: drop-in replacement of torch.optim.Adagrad (same arguments, defaults, param_group
keys and state keys), each step one fused kernel per bucket."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["Adagrad"]


class Adagrad(FusedOptimizer):
    __doc__ = "torch.optim.Adagrad, fused (lr, lr_decay, L2 weight_decay, initial_accumulator_value, eps, " \
        "maximize): Adagrad (Duchi, Hazan & Singer 2011, \"Adaptive Subgradient Methods for Online Learning " \
        "and Stochastic Optimization\").\n" + _FUSED_DOC + """
    State: ``sum`` (starts at initial_accumulator_value) and ``step``, created in the constructor for
    every param as torch does (so ``share_memory()`` works before the first step). Deviation: a param
    group added later, or given its own ``initial_accumulator_value``, starts its sums at that group's
    value (torch uses the constructor's value for every group).
"""
    _rule = "adagrad"

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("lr_decay value", lr_decay)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("initial_accumulator_value value", initial_accumulator_value)
        _check_scalar("epsilon value", eps)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, differentiable=differentiable,
                         **options)
        for group in self.param_groups:
            for p in group["params"]:
                self._ensure_state(p, group, (True,))

    def _state_init_value(self, key, group):
        return float(group["initial_accumulator_value"])

    def _hyper(self, group):
        return dict(lr_decay=group["lr_decay"], weight_decay=group["weight_decay"], eps=group["eps"])

    def share_memory(self) -> None:
        """Calls tensor.share_memory_() on the state sum tensors (as torch.optim.Adagrad)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()
