"""AdaBelief (Zhuang et al. 2020; csrc/core/rules/adabelief.h) and the base of its family (ACProp, acprop.py):
fused, with the official packages' arguments and state keys.

docs/algorithms.md §7 (AdaBelief: adabelief-pytorch 0.2.1 semantics) and §8 (ACProp). Both keep
`exp_avg`, `exp_avg_var` (+ `max_exp_avg_var` with amsgrad); eps is added into `exp_avg_var` in
place every step, as the official code does.
"""
from __future__ import annotations

from .._ops import RULES
from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["AdaBelief"]


_FUSED_DOC = """
    fusedopt extras (keyword-only): ``maximize``, ``state_dtype`` (None = float32, or
    torch.bfloat16), ``param_rounding`` ("nearest", or for bfloat16 params "stochastic" /
    "kahan"); ``foreach`` is accepted and ignored (always fused), ``fused=False`` and
    ``differentiable=True`` are refused, ``capturable`` is accepted (every step is capturable).
    The official package keeps weight_decouple / fixed_decay / rectify / degenerated_to_sgd on the
    optimizer object; here they are param_group keys (same names), so groups may differ.
    Steps are float32 tensors (the official code keeps a Python int).
    ``state_bits`` (32; 16 = bfloat16 states; 8 = block-wise 8-bit states), ``min_8bit_size``
    (4096: smaller params keep 32-bit states) and ``block_size`` (256: elements per 8-bit absmax
    block) choose how states are stored (docs/algorithms.md §19).
"""


class _BeliefBase(FusedOptimizer):
    def __init__(self, params, lr, betas, eps, weight_decay, amsgrad, weight_decouple, fixed_decay, rectify,
                 degenerated_to_sgd, extra, foreach, maximize, capturable, differentiable, fused, options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
                        weight_decouple=bool(weight_decouple), fixed_decay=bool(fixed_decay),
                        rectify=bool(rectify), degenerated_to_sgd=bool(degenerated_to_sgd), maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
                        **extra)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"])

    def _flags(self, group):  # ACProp adds momentum_update
        return {k: bool(group[k]) for k in RULES[self._rule].flags}

    def _variant(self, group):
        return dict(amsgrad=bool(group["amsgrad"]))


class AdaBelief(_BeliefBase):
    __doc__ = """adabelief_pytorch.AdaBelief (v0.2.1), fused: AdaBelief (Zhuang et al. 2020, "AdaBelief
    Optimizer: Adapting Stepsizes by the Belief in Observed Gradients").

    Arguments and defaults of the official package: lr=1e-3, betas=(0.9, 0.999), eps=1e-16,
    weight_decay=0, amsgrad=False, weight_decouple=True, fixed_decay=False, rectify=True,
    degenerated_to_sgd=True (note: pytorch_optimizer's port defaults rectify=False).

    Per step: decoupled decay p *= 1 - lr*wd (1 - wd with fixed_decay; applied even on a step the
    rectified branch skips) or L2 g += wd*p; m = b1 m + (1-b1) g; s = b2 s + (1-b2)(g-m)^2 + eps
    (eps stored in s); not rectified: p -= lr/bc1 * m / (sqrt(s_or_smax)/sqrt(bc2) + eps);
    rectified: RAdam rule with threshold rho_t >= 5 (first rectified step t=6 at beta2=0.999):
    p -= lr r_t sqrt(bc2)/bc1 * m/(sqrt(s)+eps) (amsgrad's max is not used in this branch), else
    p -= lr/bc1 * m if degenerated_to_sgd, else no update.
    ``print_change_log`` is accepted for signature compatibility; nothing is printed.
    """ + _FUSED_DOC
    _rule = "adabelief"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0, amsgrad=False,
                 weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True,
                 print_change_log=True, *, maximize=False, foreach=None, capturable=False, differentiable=False,
                 fused=None, **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, weight_decouple, fixed_decay, rectify,
                         degenerated_to_sgd, {}, foreach, maximize, capturable, differentiable, fused, options)
