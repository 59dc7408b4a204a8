"""RMSprop: drop-in replacement of torch.optim.RMSprop (same arguments, defaults, param_group
keys and state keys), each step one fused kernel per bucket."""
from __future__ import annotations

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["RMSprop"]


class RMSprop(FusedOptimizer):
    __doc__ = "torch.optim.RMSprop, fused (lr, alpha, eps, L2 weight_decay, momentum, centered, maximize): " \
        "RMSprop (Tieleman & Hinton 2012, lecture 6.5 of \"Neural Networks for Machine Learning\"; the " \
        "centered form from Graves 2013).\n" + \
        _FUSED_DOC + """
    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered), ``step``, as
    torch. The four combinations are four kernel variants (only the states in use are read and
    written).
"""
    _rule = "rmsprop"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("momentum value", momentum)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("alpha value", alpha)
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         **options)

    # Centered RMSprop divides by sqrt(square_avg - grad_avg**2): with 8-bit states that is a difference of
    # two rounded states, and their rounding errors exceed the variance it stands for (on digits every run
    # gave NaN, with nearest and with stochastic rounding). bitsandbytes refuses it too.
    @staticmethod
    def _check_centered_8bit(centered, state_bits):
        if centered and state_bits == 8:
            raise ValueError("fusedopt.RMSprop: centered=True cannot be combined with state_bits=8 (the centered "
                             "denominator sqrt(square_avg - grad_avg**2) cancels two 8-bit states); use "
                             "state_bits=32 or 16 for this param group")

    def add_param_group(self, param_group):
        self._check_centered_8bit(param_group.get("centered", self.defaults["centered"]),
                                  param_group.get("state_bits", self.defaults.get("state_bits", 32)))
        super().add_param_group(param_group)

    def _hyper(self, group):  # the variant "momentum" (a buffer) follows momentum != 0 (rmsprop.h)
        return dict(alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                    momentum=group["momentum"])

    def _variant(self, group):
        self._check_centered_8bit(group["centered"], group.get("state_bits", 32))  # the group may have been edited
        return dict(centered=bool(group["centered"]))
