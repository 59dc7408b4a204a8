"""SGD: drop-in replacement of torch.optim.SGD (same arguments, defaults, param_group keys and
state key `momentum_buffer`), each step one fused kernel per bucket."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["SGD"]


class SGD(FusedOptimizer):
    __doc__ = "torch.optim.SGD, fused (lr, momentum, dampening, nesterov, L2 weight_decay, maximize); " \
        "Nesterov momentum as in Sutskever et al. 2013 (\"On the importance of initialization and momentum " \
        "in deep learning\").\n" + _FUSED_DOC + """
    State: ``momentum_buffer`` (only when momentum != 0), as torch, plus ``step`` (a float32 tensor
    that torch.optim.SGD does not keep). The kernel uses it to tell the buffer's first step
    (buffer = the gradient, as torch's "buffer is None" branch) from the later ones
    (buffer = momentum * buffer + (1 - dampening) * gradient) without a branch per element.
    ``step`` counts the steps since the momentum buffer was created: it restarts when momentum is
    switched on for a param that already took steps. A torch.optim.SGD state_dict (momentum_buffer,
    no step) loads as step 1 (the buffer exists, so the next step is not a first step); torch.optim.SGD
    ignores the extra ``step`` key of ours. ``weight_decay`` may be a one-element Tensor (read on the
    host each step).
"""
    _rule = "sgd"

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("momentum value", momentum)
        _check_scalar("weight_decay value", weight_decay)
        if isinstance(momentum, Tensor) or isinstance(dampening, Tensor):
            raise ValueError("momentum / dampening as a Tensor are not supported by fusedopt; pass floats")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, differentiable=differentiable,
                         **options)

    def _hyper(self, group):  # the variant "momentum" (a buffer) follows momentum != 0 (sgd.h)
        return dict(momentum=float(group["momentum"]), dampening=float(group["dampening"]),
                    weight_decay=float(group["weight_decay"]))

    def _flags(self, group):
        return dict(nesterov=bool(group["nesterov"]))

    def _ensure_state(self, p, group, slots_on):
        state = self.state[p]
        restart = slots_on[0] and "momentum_buffer" not in state and "step" in state
        state = super()._ensure_state(p, group, slots_on)
        if restart:  # a new buffer: its first step copies the gradient, as torch's `buf is None`
            state["step"].zero_()
        return state

    def _load_state(self, state_dict) -> None:
        super()._load_state(state_dict)
        for st in self.state.values():
            buf = st.get("momentum_buffer")
            if isinstance(buf, Tensor) and "step" not in st:  # torch.optim.SGD keeps no step
                st["step"] = torch.ones((), dtype=torch.float32, device=buf.device)
