"""LARS (the paper's form; csrc/core/rules/lars.h): a cross-tensor rule built on the reduction engine
(csrc/core/reduce.h) through FusedOptimizer's reduce-then-element-wise plan."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .base import _FUSED_DOC, FusedOptimizer, _check_scalar

__all__ = ["LARS"]


def _exclude_1d(p: Tensor) -> bool:
    return p.ndim <= 1


class LARS(FusedOptimizer):
    __doc__ = """LARS (layer-wise adaptive rate scaling), fused; the paper's form (You et al. 2017, "Large
    Batch Training of Convolutional Networks").

    Per tensor, from its norms (one fused reduction each of the params and of the unscaled grads):
    ``trust = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)`` when both norms
    are non-zero, else 1; ``trust_clip=True``: ``trust = min(trust / lr, 1)`` (LARC's clipping);
    ``d = g + weight_decay * w``; ``v = momentum * v + lr * trust * d``; ``w -= v``
    (``nesterov``: ``w -= momentum * v + lr * trust * d``). Params for which ``exclude_fn(p)`` is
    true (default: 1-D params, i.e. biases and norm weights) get ``trust = 1`` and no weight
    decay; ``exclude_fn=None`` adapts every param. State ``momentum_buffer`` (none when
    ``momentum == 0``).

    The paper puts ``lr`` inside the momentum (``v`` carries past lrs); with a constant ``lr``
    this is ``buf = momentum * buf + trust * d; w -= lr * buf`` (pytorch_optimizer.LARS with
    ``dampening=0``; its ratio has no eps and keeps ``trust_coefficient / weight_decay`` for a
    zero grad, where ours is 1). ``maximize`` negates the grad first.
""" + _FUSED_DOC
    _rule = "lars"
    _pre_reduce = ("params", "grads")

    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
                 nesterov=False, trust_clip=False, exclude_fn: Optional[Callable[[Tensor], bool]] = _exclude_1d, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 **options):
        _check_scalar("learning rate", lr)
        _check_scalar("momentum value", momentum, 0.0, 1.0)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("trust_coefficient", trust_coefficient)
        _check_scalar("epsilon value", eps)
        if nesterov and float(momentum) <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        self.exclude_fn = exclude_fn
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=bool(nesterov), trust_clip=bool(trust_clip), maximize=maximize)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _tensor_in_extra(self, group, idx, params):
        fn = self.exclude_fn
        return [[0.0 if fn is not None and fn(p) else 1.0 for p in params]]

    def _hyper(self, group):  # the variant "momentum" (a buffer) follows momentum != 0 (lars.h)
        return dict(momentum=group["momentum"], weight_decay=group["weight_decay"],
                    trust_coefficient=group["trust_coefficient"], eps=group["eps"])

    def _flags(self, group):
        return dict(nesterov=bool(group["nesterov"]), trust_clip=bool(group["trust_clip"]))
