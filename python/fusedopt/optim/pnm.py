"""PNM, AdaPNM (Xie et al. 2021, positive-negative momentum), Adan (Xie et al. 2022) and
Lion (Chen et al. 2023): each step one fused kernel per bucket.

Arguments, defaults, param_group keys and state keys follow the official code:
zeke-xie/Positive-Negative-Momentum (pnm_optim/pnm.py, adapnm.py), sail-sg/Adan (adan.py),
lucidrains/lion-pytorch. Deviations are listed in each class docstring.
"""
from __future__ import annotations

from torch import Tensor

from .._ops import RULE_FLAG_SHIFT, VARIANT_SHIFT
from .adam import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar

__all__ = ["PNM", "AdaPNM", "Adan", "Lion"]


def _check_betas_ranges(betas, ranges):
    """Each beta in its range (checked index by index, so an out-of-range value is named before a
    wrong count), then the count. ranges[i] = (lo, hi or None, hi_open)."""
    for i, b in enumerate(betas):
        if isinstance(b, Tensor):
            raise ValueError(f"betas[{i}] as a Tensor is not supported by fusedopt; pass a float")
        if i < len(ranges):
            lo, hi, hi_open = ranges[i]
            _check_scalar(f"beta parameter at index {i}", b, lo, hi, hi_open)
    if len(betas) != len(ranges):
        raise ValueError(f"Invalid betas: {betas} (need {len(ranges)} values)")


_UNIT = (0.0, 1.0, True)  # [0, 1)
_NONNEG = (0.0, None, True)  # >= 0 (beta0 of PNM: default 1.0)


class PNM(FusedOptimizer):
    __doc__ = """Positive-Negative Momentum (SGD form), fused; the authors' pnm_optim/pnm.py semantics.
    Paper: Xie et al. 2021, "Positive-Negative Momentum: Manipulating Stochastic Gradient Noise to Improve
    Generalization".

    Two momentum buffers ``pos_momentum`` / ``neg_momentum``; odd steps update the first and
    use the second as the negative momentum, even steps swap their roles. With
    ``betas = (beta1, beta0)``: ``pos = beta1**2 * pos + (1 - beta1**2) * g`` and
    ``p -= lr * ((1 + beta0) * pos - beta0 * neg) / sqrt((1 + beta0)**2 + beta0**2)``.
    No bias correction. ``decoupled=True`` (default): ``p *= 1 - lr * weight_decay`` before the
    step; ``decoupled=False``: L2, ``g + weight_decay * p`` (the grad itself is not modified,
    unlike the reference). The step parity is counted per param (the reference does the same).

    Deviations from the reference: ``lr`` defaults to 1e-3 (the reference requires it);
    ``maximize`` is added; ``betas[0]`` must be in [0, 1) and ``betas[1]`` >= 0 (the reference
    checks only the first).
""" + _FUSED_DOC
    _rule = "pnm"

    def __init__(self, params, lr=1e-3, betas=(0.9, 1.0), weight_decay=0, decoupled=True, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("weight_decay value", weight_decay)
        _check_betas_ranges(betas, [_UNIT, _NONNEG])
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, decoupled=bool(decoupled),
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b0 = group["betas"]
        return [b1, b0, group["weight_decay"]]

    def _rule_flags(self, group):
        return 0 if group["decoupled"] else (1 << RULE_FLAG_SHIFT)


class AdaPNM(FusedOptimizer):
    __doc__ = """Adaptive Positive-Negative Momentum, fused; the authors' pnm_optim/adapnm.py semantics
    (Xie et al. 2021, the PNM paper).

    ``betas = (beta1, beta2, beta0)``. The PNM buffers (``exp_avg`` / ``neg_exp_avg``, swapping
    roles every step) with an Adam denominator: ``v = beta2 * v + (1 - beta2) * g**2``;
    ``amsgrad=True`` (default) keeps ``max_exp_avg_sq = max(max_exp_avg_sq, v)`` and uses it;
    ``p -= lr / (1 - beta1**t) * pn / (sqrt(v) / sqrt(1 - beta2**t) + eps)``. The bias correction
    is ``1 - beta1**t`` although the momentum EMA uses ``beta1**2``: the authors' code does
    this and we keep it. ``weight_decay`` as in :class:`PNM` (``decoupled``).

    Deviations from the reference: ``maximize`` is added; ``betas[2]`` must be >= 0 (unchecked
    in the reference); the grad is not modified in place by L2 weight decay.
""" + _FUSED_DOC
    _rule = "adapnm"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 1.0), eps=1e-8, weight_decay=0.0, amsgrad=True,
                 decoupled=True, *, foreach=None, maximize=False, capturable=False, differentiable=False,
                 fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        _check_betas_ranges(betas, [_UNIT, _UNIT, _NONNEG])
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
                        decoupled=bool(decoupled), maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _active_slots(self, group):
        return (True, True, True, bool(group["amsgrad"]))

    def _hyper(self, group):
        b1, b2, b0 = group["betas"]
        return [b1, b2, b0, group["eps"], group["weight_decay"]]

    def _rule_flags(self, group):
        flags = (1 << VARIANT_SHIFT) if group["amsgrad"] else 0
        if not group["decoupled"]:
            flags |= 1 << RULE_FLAG_SHIFT
        return flags


class Adan(FusedOptimizer):
    __doc__ = """Adan (adaptive Nesterov momentum), fused; the official sail-sg/Adan adan.py semantics.
    Paper: Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models".

    ``betas = (beta1, beta2, beta3)`` are retention factors (default (0.98, 0.92, 0.99); the
    paper writes them as ``1 - beta``). At a param's first step the previous grad is taken to be
    the current one (first difference 0). ``eps`` is added outside the square root.
    ``no_prox=False`` (default): proximal weight decay ``p = (p - lr * u) / (1 + lr * weight_decay)``;
    ``no_prox=True``: ``p = p * (1 - lr * weight_decay) - lr * u``. States ``exp_avg``,
    ``exp_avg_sq``, ``exp_avg_diff`` and ``neg_pre_grad`` (minus the previous grad, as the
    official code keeps it).

    ``max_grad_norm > 0``: global grad-norm clipping as the official code, before anything else:
    ``G = sqrt(sum of |g|^2 over every param of every group with max_grad_norm > 0)`` (one fused
    reduction, float64 accumulation), ``clip = min(max_grad_norm / (G + eps), 1)`` in float32 on
    the device (no host sync), and every grad is multiplied by ``clip`` inside the kernel, so the
    moments and the stored previous grad see the clipped grad. Unlike the official code ``p.grad``
    itself is left unclipped.

    Deviations from the reference: ``foreach`` / ``fused`` default to None (always fused; ``fused=False`` is refused) where the
    reference defaults to foreach=True, fused=False. The step counter is per param (the reference
    counts per group: the same unless a param skips steps with grad=None). ``maximize`` is added
    (the previous grad is then the negated one). ``restart_opt`` is not provided.
""" + _FUSED_DOC
    _rule = "adan"
    _global_in = True  # global grad sum of squares, read when max_grad_norm > 0

    def _wants_global_sumsq(self, group):
        return float(group.get("max_grad_norm", 0.0)) > 0

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0,
                 no_prox=False, foreach=None, fused=None, *, maximize=False, capturable=False,
                 differentiable=False, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        _check_scalar("max_grad_norm", max_grad_norm)
        _check_betas_ranges(betas, [_UNIT, _UNIT, _UNIT])
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        no_prox=bool(no_prox), foreach=foreach, fused=fused, maximize=maximize,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2, b3 = group["betas"]
        return [b1, b2, b3, group["eps"], group["weight_decay"], float(group.get("max_grad_norm", 0.0))]

    def _rule_flags(self, group):
        return (1 << RULE_FLAG_SHIFT) if group["no_prox"] else 0


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
        return [b1, b2, wd]
