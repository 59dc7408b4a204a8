"""Padam (partially adaptive momentum), fused: the base optimizer of GadamX (docs/algorithms.md §18)."""
from __future__ import annotations

from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["Padam"]


def _exponent_kind(partial: float) -> int:
    """padam.h's variant field "exponent": 0 for exponent 2*partial in (0.5, 1), 2 for 0.25, else 1 (pow)."""
    e = 2.0 * partial
    return 0 if e in (0.5, 1.0) else 2 if e == 0.25 else 1


class Padam(FusedOptimizer):
    """Padam, fused: Chen et al. 2020, "Closing the Generalization Gap of Adaptive Gradient Methods in
    Training Deep Neural Networks" (diegogranziol/Gadam base_optimizers/padam.py semantics).

    Arguments and defaults of the reference: lr=1e-1, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, amsgrad=True, partial=1/4, decoupled_wd=False (GadamX = decoupled_wd=True +
    iterate averaging; its run script's ``--partial`` default is 0.125). ``partial`` must lie in
    (0, 1] (the paper's range is (0, 1/2]; 1/2 is AMSGrad/Adam with epsilon placement E2).

    Per step: decoupled_wd: p *= 1 - lr wd first, else L2 g += wd p; Adam moments m, v;
    amsgrad: vmax = max(vmax, v); p -= lr sqrt(bc2)/bc1 * m / (sqrt(vmax or v) + eps)^(2 partial).
    Epsilon is added to the root BEFORE the power (E2 per docs/algorithms.md §1), and the bias correction
    is sqrt(bc2) whatever ``partial`` is (the reference's choice, kept).
    State keys ``exp_avg``, ``exp_avg_sq`` (+ ``max_exp_avg_sq`` with amsgrad).

    fusedopt extras (keyword-only): ``maximize``, ``state_dtype``, ``param_rounding``;
    ``foreach`` / ``capturable`` accepted, ``fused=False`` and ``differentiable=True`` refused.
    ``decoupled_wd`` is a param_group key here (an object attribute in the reference).
    ``state_bits``, ``min_8bit_size``, ``block_size``: state storage, as in every fusedopt optimizer
    (docs/algorithms.md §19).
    """
    _rule = "padam"

    def __init__(self, params, lr=1e-1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=True, partial=1 / 4,
                 decoupled_wd=False, *, maximize=False, foreach=None, capturable=False, differentiable=False,
                 fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        if not (0.0 < float(partial) <= 1.0):
            raise ValueError(f"Invalid partial: {partial} (must be in (0, 1])")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
                        partial=float(partial), decoupled_wd=bool(decoupled_wd), maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        partial = float(group["partial"])
        if not (0.0 < partial <= 1.0):
            raise ValueError(f"Invalid partial: {partial} (must be in (0, 1])")
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"], partial=partial)

    def _flags(self, group):
        return dict(decoupled_wd=bool(group["decoupled_wd"]))

    def _variant(self, group):
        return dict(amsgrad=bool(group["amsgrad"]), exponent=_exponent_kind(float(group["partial"])))
