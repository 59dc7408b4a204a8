"""DiffGrad (Dubey et al. 2019), fused: the authors' diffGrad_v2.py semantics (docs/algorithms.md §10)."""
from __future__ import annotations

from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["DiffGrad"]


class DiffGrad(FusedOptimizer):
    """diffGrad, fused: Dubey et al. 2019, "diffGrad: An Optimization Method for Convolutional Neural
    Networks" (shivram1987/diffGrad diffGrad_v2.py: the fixed version).

    Arguments and defaults of the reference: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0
    (L2, added into the gradient, hence into ``previous_grad``). State keys ``exp_avg``,
    ``exp_avg_sq``, ``previous_grad``.

    Per step: g += wd p; Adam moments m, v; xi = sigmoid(|previous_grad - g|); previous_grad = g
    (a copy: the v1 file kept an alias of p.grad, so xi was 0.5 forever with in-place zero_grad);
    p -= lr sqrt(bc2)/bc1 * xi m / (sqrt(v) + eps) (epsilon placement E2).
    pytorch_optimizer.DiffGrad differs: weight_decouple=True by default, sqrt(v + 1e-15) in the
    denominator, and rectify / ams_bound options the reference does not have (not offered here).

    fusedopt extras (keyword-only): ``maximize`` (g negated first), ``state_dtype``,
    ``param_rounding``; ``foreach`` / ``capturable`` accepted, ``fused=False`` and
    ``differentiable=True`` refused.
    ``state_bits``, ``min_8bit_size``, ``block_size``: state storage, as in every fusedopt optimizer
    (docs/algorithms.md §19).
    """
    _rule = "diffgrad"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *, maximize=False,
                 foreach=None, capturable=False, differentiable=False, fused=None, **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"])
