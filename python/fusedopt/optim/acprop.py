"""ACProp (Zhuang et al. 2021; csrc/core/rules/acprop.h), fused: AdaBelief's family (adabelief.py), the
official flags and state keys (docs/algorithms.md §8)."""
from __future__ import annotations

from .adabelief import _FUSED_DOC, _BeliefBase

__all__ = ["ACProp"]


class ACProp(_BeliefBase):
    __doc__ = """ACProp (Zhuang et al. 2021, "Momentum Centering and Asynchronous Update for Adaptive Gradient
    Methods"; juntang-zhuang/ACProp-Optimizer optimizers/ACProp.py), fused.

    Arguments and defaults of the official class: lr=1e-3, betas=(0.9, 0.999), eps=1e-16,
    weight_decay=0, amsgrad=False, weight_decouple=True, fixed_decay=False, rectify=True,
    degenerated_to_sgd=True, momentum_update=False. The paper's experiments (the repo's main.py)
    use ``ACProp(params, lr, eps=1e-8, weight_decay=wd, rectify=False, weight_decouple=False,
    amsgrad=False, momentum_update=False)``: that is the configuration to reproduce the paper.

    Per step t: weight decay as AdaBelief; m = b1 m + (1-b1) g; t=1: p -= lr*m/bc1 (= lr*g, an
    SGD step, whatever ``rectify`` says); t>1: s += eps (stored), and the denominator uses this
    s_{t-1}: p -= lr * num / (sqrt(s)/sqrt(1-b2^(t-1)) + eps) with num = g (m/bc1 with
    momentum_update); rectified (rho_t from t, threshold rho_t >= 5 as adabelief-pytorch):
    p -= lr r_t sqrt(1-b2^t)/bc1 * num/(sqrt(s)+eps), num = g*bc1 (m with momentum_update), else
    p -= lr/bc1 * m if degenerated_to_sgd, else no update; finally s = b2 s + (1-b2)(g-m)^2.
    The official file was not retrievable: the semantics are docs/algorithms.md §8's equations. amsgrad
    (max of s after the +eps, used by the unrectified branch only) is chosen by analogy with
    AdaBelief 0.2.1 and is not checked against the official code.
    """ + _FUSED_DOC
    _rule = "acprop"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0, amsgrad=False,
                 weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True,
                 momentum_update=False, *, maximize=False, foreach=None, capturable=False, differentiable=False,
                 fused=None, **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, weight_decouple, fixed_decay, rectify,
                         degenerated_to_sgd, dict(momentum_update=bool(momentum_update)), foreach, maximize,
                         capturable, differentiable, fused, options)
