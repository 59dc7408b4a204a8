"""Generalized signSGD (Crawshaw et al. 2022), fused (docs/algorithms.md §9)."""
from __future__ import annotations

from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["SignSGD"]


class SignSGD(FusedOptimizer):
    """Generalized signSGD, fused: Crawshaw et al. 2022, "Robustness to Unbounded Smoothness of Generalized
    signSGD" (zhenxun-zhuang/Generalized-SignSGD GeneralizedSignSGD semantics).

    Arguments and defaults of the reference: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0
    (L2 only), use_bias_correction=False. State keys ``exp_avg``, ``exp_avg_sq``.

    Per step: g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) m^2 (the squared MOMENTUM, not the
    gradient); p -= lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m, v_hat = v, or m/bc1, v/bc2 with
    use_bias_correction. The step is bounded by lr/sqrt(1-b2) and reaches it at t=1.

    Settings: ``betas=(beta, 0.0), eps=0.0`` is signum (exactly lr*sign(m) where m != 0; an element
    with m == 0 gets NaN, as in the reference); ``betas=(0.0, 0.0), eps=0.0`` is plain signSGD
    (lr*sign(g)); b2 -> 1 approaches an Adam-like rule on the momentum.

    With ``betas[1] == 0`` the state ``exp_avg_sq`` is not kept: it would equal ``exp_avg**2`` after
    every step, and the kernel squares the momentum instead (same result, one buffer less to store and
    move). A group switched later to ``betas[1] > 0`` starts ``exp_avg_sq`` at ``exp_avg**2``, the value
    the reference holds.

    fusedopt extras (keyword-only): ``maximize``, ``state_dtype``, ``param_rounding``;
    ``foreach`` / ``capturable`` accepted, ``fused=False`` and ``differentiable=True`` refused.
    ``state_bits``, ``min_8bit_size``, ``block_size``: state storage, as in every fusedopt optimizer
    (docs/algorithms.md §19).
    """
    _rule = "signsgd"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, use_bias_correction=False,
                 *, maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 **options):
        _check_scalar("learning rate", lr)
        _check_scalar("epsilon value", eps)
        _check_scalar("weight_decay value", weight_decay)
        check_betas(betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        use_bias_correction=bool(use_bias_correction), maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable, **options)

    def _ensure_state(self, p, group, slots_on):
        st = self.state[p]
        fresh_v = slots_on[1] and "exp_avg_sq" not in st and "exp_avg" in st
        st = super()._ensure_state(p, group, slots_on)
        if fresh_v:  # after beta2 = 0 steps the reference's v is m^2
            st["exp_avg_sq"].copy_(st["exp_avg"] * st["exp_avg"])
        return st

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"])

    def _flags(self, group):
        return dict(use_bias_correction=bool(group["use_bias_correction"]))

    def _variant(self, group):
        return dict(no_exp_avg_sq=float(group["betas"][1]) == 0.0)
