"""Functional API: the call another library uses as its fused backend.

Each function updates lists of tensors in place with one fused kernel call per
(device, dtype) bucket the caller forms. All lists are parallel: tensor i of every
list belongs to param i. Requirements (checked, with errors naming the offending
list and index): one device and one param dtype per call; grads of the param's
dtype, shape and strides; states float32 (or bfloat16; float64 for float64 params);
`state_steps` one-element float32 tensors on the param's device, incremented by the
kernel (not on a skipped step). `lr` may be a float or a one-element tensor (a
device tensor is read on the device: no sync, CUDA-graph safe). `grad_scale` /
`found_inf` (float32 one-element tensors, as torch.amp.GradScaler makes them) unscale
grads in the kernel (written back unscaled) and skip the whole step when found_inf != 0.

Example (what an optimizer of another library would do)::

    import fusedopt.functional as F
    F.adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps,
            lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .optim.padam import _exponent_kind as _padam_exponent_kind
from ._ops import FLAG_MAXIMIZE, FLAG_STOCH_ROUND, RULE_FLAG_SHIFT, VARIANT_SHIFT, op

__all__ = ["apply", "adam", "adamw", "adamax", "radam", "nadam"]
__all__ += ["sgd", "rmsprop", "adagrad", "adadelta"]
__all__ += ["adabelief", "acprop", "diffgrad", "padam", "signsgd"]
__all__ += ["pnm", "adapnm", "adan", "lion"]

LR = Union[float, Tensor]


def apply(
    rule: str,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[Sequence[Tensor]],
    state_steps: Sequence[Tensor],
    *,
    hyper: Sequence[float],
    lr: LR,
    flags: int = 0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    param_comps: Optional[Sequence[Tensor]] = None,
    grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
    **reduced,
) -> None:
    """Generic entry: `states` holds one list per state slot of the rule (empty list = slot unused),
    followed by one list per per-tensor scalar state (e.g. NAdam's mu_products). `reduced`: the
    global_in / tensor_in / tensor_out arguments of rules that read or write reduced values
    (csrc/core/reduce.h)."""
    if isinstance(lr, Tensor):
        lr_f, lr_t = 0.0, lr
    else:
        lr_f, lr_t = float(lr), None
    flags = int(flags) | (FLAG_MAXIMIZE if maximize else 0) | (FLAG_STOCH_ROUND if stochastic_rounding else 0)
    op(rule)(
        list(params), list(grads), *[list(s) for s in states], list(state_steps), list(param_comps or []),
        hyper=[float(h) for h in hyper], lr=lr_f, lr_tensor=lr_t, grad_scale=grad_scale,
        found_inf=found_inf, flags=flags, **reduced,
    )


def _adam_like(rule, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr, beta1, beta2,
               eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, **kw):
    if amsgrad and len(max_exp_avg_sqs) != len(params):
        raise ValueError(f"fusedopt.functional.{rule}: amsgrad=True needs one max_exp_avg_sq per param")
    flags = (1 << VARIANT_SHIFT if amsgrad else 0) | ((1 << RULE_FLAG_SHIFT) if decoupled_weight_decay else 0)
    apply(rule, params, grads, [exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []], state_steps,
          hyper=[beta1, beta2, eps, weight_decay], lr=lr, flags=flags, maximize=maximize, **kw)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr: LR = 1e-3,
         beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
         amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False, **kw) -> None:
    """torch.optim.Adam's update (L2 weight decay unless decoupled_weight_decay)."""
    _adam_like("adam", params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr, beta1=beta1,
               beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
               decoupled_weight_decay=decoupled_weight_decay, **kw)


def adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr: LR = 1e-3,
          beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 1e-2,
          amsgrad: bool = False, maximize: bool = False, **kw) -> None:
    """torch.optim.AdamW's update (p *= 1 - lr*wd before the Adam step)."""
    _adam_like("adamw", params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr, beta1=beta1,
               beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
               decoupled_weight_decay=True, **kw)


def adamax(params, grads, exp_avgs, exp_infs, state_steps, *, lr: LR = 2e-3, beta1: float = 0.9,
           beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False,
           **kw) -> None:
    """torch.optim.Adamax's update (eps inside the max, L2 weight decay)."""
    apply("adamax", params, grads, [exp_avgs, exp_infs], state_steps, hyper=[beta1, beta2, eps, weight_decay],
          lr=lr, maximize=maximize, **kw)


def radam(params, grads, exp_avgs, exp_avg_sqs, state_steps, *, lr: LR = 1e-3, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False,
          decoupled_weight_decay: bool = False, variant: str = "torch", degenerated_to_sgd: bool = False,
          **kw) -> None:
    """RAdam: torch.optim.RAdam's update (variant="torch") or the authors' radam.py (variant="official")."""
    if variant not in ("torch", "official"):
        raise ValueError(f"variant must be 'torch' or 'official', got {variant!r}")
    flags = ((1 << VARIANT_SHIFT) if variant == "official" else 0) \
        | ((1 << RULE_FLAG_SHIFT) if decoupled_weight_decay else 0) \
        | ((2 << RULE_FLAG_SHIFT) if degenerated_to_sgd else 0)
    apply("radam", params, grads, [exp_avgs, exp_avg_sqs], state_steps, hyper=[beta1, beta2, eps, weight_decay],
          lr=lr, flags=flags, maximize=maximize, **kw)


def nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, state_steps, *, lr: LR = 2e-3, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
          maximize: bool = False, decoupled_weight_decay: bool = False, **kw) -> None:
    """torch.optim.NAdam's update; `mu_products` are one-element float32 tensors (start at 1.0), advanced
    by the kernel together with the steps."""
    apply("nadam", params, grads, [exp_avgs, exp_avg_sqs, mu_products], state_steps,
          hyper=[beta1, beta2, eps, weight_decay, momentum_decay], lr=lr,
          flags=(1 << RULE_FLAG_SHIFT) if decoupled_weight_decay else 0, maximize=maximize, **kw)


def sgd(params, grads, momentum_buffers, state_steps, *, lr: LR = 1e-3, momentum: float = 0.0,
        dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
        **kw) -> None:
    """torch.optim.SGD's update. momentum == 0: `momentum_buffers` must be empty (no state).
    momentum != 0: one buffer per param; at a param's step 1 (its state_step after the increment)
    the buffer is set to the gradient (torch's first step), later ones accumulate."""
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("fusedopt.functional.sgd: Nesterov momentum requires a momentum and zero dampening")
    if momentum != 0 and len(momentum_buffers) != len(params):
        raise ValueError("fusedopt.functional.sgd: momentum != 0 needs one momentum_buffer per param")
    flags = ((1 << VARIANT_SHIFT) if momentum != 0 else 0) | ((1 << RULE_FLAG_SHIFT) if nesterov else 0)
    apply("sgd", params, grads, [momentum_buffers if momentum != 0 else []], state_steps,
          hyper=[momentum, dampening, weight_decay], lr=lr, flags=flags, maximize=maximize, **kw)


def rmsprop(params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps, *, lr: LR = 1e-2,
            alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
            centered: bool = False, maximize: bool = False, **kw) -> None:
    """torch.optim.RMSprop's update. `momentum_buffers` is used iff momentum > 0 and `grad_avgs`
    iff centered (pass empty lists otherwise)."""
    if momentum > 0 and len(momentum_buffers) != len(params):
        raise ValueError("fusedopt.functional.rmsprop: momentum > 0 needs one momentum_buffer per param")
    if centered and len(grad_avgs) != len(params):
        raise ValueError("fusedopt.functional.rmsprop: centered=True needs one grad_avg per param")
    variant = (1 if momentum > 0 else 0) | (2 if centered else 0)
    apply("rmsprop", params, grads, [square_avgs, momentum_buffers if momentum > 0 else [],
                                     grad_avgs if centered else []], state_steps,
          hyper=[alpha, eps, weight_decay, momentum], lr=lr, flags=variant << VARIANT_SHIFT, maximize=maximize,
          **kw)


def adagrad(params, grads, state_sums, state_steps, *, lr: LR = 1e-2, lr_decay: float = 0.0,
            weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False, **kw) -> None:
    """torch.optim.Adagrad's update (state_sums start at initial_accumulator_value: the caller fills them)."""
    apply("adagrad", params, grads, [state_sums], state_steps, hyper=[lr_decay, weight_decay, eps], lr=lr,
          maximize=maximize, **kw)


def adadelta(params, grads, square_avgs, acc_deltas, state_steps, *, lr: LR = 1.0, rho: float = 0.9,
             eps: float = 1e-6, weight_decay: float = 0.0, maximize: bool = False, **kw) -> None:
    """torch.optim.Adadelta's update."""
    apply("adadelta", params, grads, [square_avgs, acc_deltas], state_steps, hyper=[rho, eps, weight_decay],
          lr=lr, maximize=maximize, **kw)
def _belief_flags(rule, params, max_exp_avg_vars, amsgrad, weight_decouple, fixed_decay, rectify,
                  degenerated_to_sgd, momentum_update=False):
    if amsgrad and len(max_exp_avg_vars) != len(params):
        raise ValueError(f"fusedopt.functional.{rule}: amsgrad=True needs one max_exp_avg_var per param")
    bits = ((1 if weight_decouple else 0) | (2 if fixed_decay else 0) | (4 if rectify else 0)
            | (8 if degenerated_to_sgd else 0) | (16 if momentum_update else 0))
    return (bits << RULE_FLAG_SHIFT) | ((1 << VARIANT_SHIFT) if amsgrad else 0)


def adabelief(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, state_steps, *, lr: LR = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-16, weight_decay: float = 0.0,
              amsgrad: bool = False, weight_decouple: bool = True, fixed_decay: bool = False, rectify: bool = True,
              degenerated_to_sgd: bool = True, maximize: bool = False, **kw) -> None:
    """adabelief-pytorch 0.2.1's update (eps stored into exp_avg_var; see fusedopt.AdaBelief)."""
    flags = _belief_flags("adabelief", params, max_exp_avg_vars, amsgrad, weight_decouple, fixed_decay, rectify,
                          degenerated_to_sgd)
    apply("adabelief", params, grads, [exp_avgs, exp_avg_vars, max_exp_avg_vars if amsgrad else []], state_steps,
          hyper=[beta1, beta2, eps, weight_decay], lr=lr, flags=flags, maximize=maximize, **kw)


def acprop(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, state_steps, *, lr: LR = 1e-3,
           beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-16, weight_decay: float = 0.0,
           amsgrad: bool = False, weight_decouple: bool = True, fixed_decay: bool = False, rectify: bool = True,
           degenerated_to_sgd: bool = True, momentum_update: bool = False, maximize: bool = False, **kw) -> None:
    """ACProp's update (denominator from s_{t-1}, SGD first step; see fusedopt.ACProp)."""
    flags = _belief_flags("acprop", params, max_exp_avg_vars, amsgrad, weight_decouple, fixed_decay, rectify,
                          degenerated_to_sgd, momentum_update)
    apply("acprop", params, grads, [exp_avgs, exp_avg_vars, max_exp_avg_vars if amsgrad else []], state_steps,
          hyper=[beta1, beta2, eps, weight_decay], lr=lr, flags=flags, maximize=maximize, **kw)


def diffgrad(params, grads, exp_avgs, exp_avg_sqs, previous_grads, state_steps, *, lr: LR = 1e-3,
             beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
             maximize: bool = False, **kw) -> None:
    """diffGrad v2's update (friction sigmoid(|g_prev - g|), E2; see fusedopt.DiffGrad)."""
    apply("diffgrad", params, grads, [exp_avgs, exp_avg_sqs, previous_grads], state_steps,
          hyper=[beta1, beta2, eps, weight_decay], lr=lr, maximize=maximize, **kw)


def padam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr: LR = 1e-1,
          beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
          amsgrad: bool = True, partial: float = 0.25, decoupled_wd: bool = False, maximize: bool = False,
          **kw) -> None:
    """Padam's update (denominator (sqrt(v)+eps)^(2 partial); see fusedopt.Padam)."""
    if amsgrad and len(max_exp_avg_sqs) != len(params):
        raise ValueError("fusedopt.functional.padam: amsgrad=True needs one max_exp_avg_sq per param")
    if not (0.0 < float(partial) <= 1.0):
        raise ValueError(f"fusedopt.functional.padam: invalid partial {partial} (must be in (0, 1])")
    flags = ((1 << VARIANT_SHIFT) if amsgrad else 0) | ((1 << RULE_FLAG_SHIFT) if decoupled_wd else 0)
    flags |= _padam_exponent_kind(float(partial)) << (VARIANT_SHIFT + 1)
    apply("padam", params, grads, [exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []], state_steps,
          hyper=[beta1, beta2, eps, weight_decay, partial], lr=lr, flags=flags, maximize=maximize, **kw)


def signsgd(params, grads, exp_avgs, exp_avg_sqs, state_steps, *, lr: LR = 1e-3, beta1: float = 0.9,
            beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, use_bias_correction: bool = False,
            maximize: bool = False, **kw) -> None:
    """Generalized signSGD's update (v tracks m^2; see fusedopt.SignSGD). With beta2 == 0, exp_avg_sqs may
    be an empty list: v is then not kept (it would be m^2)."""
    flags = (1 << RULE_FLAG_SHIFT) if use_bias_correction else 0
    if beta2 == 0.0 and len(exp_avg_sqs) == 0:
        flags |= 1 << VARIANT_SHIFT
    apply("signsgd", params, grads, [exp_avgs, exp_avg_sqs], state_steps, hyper=[beta1, beta2, eps, weight_decay],
          lr=lr, flags=flags, maximize=maximize, **kw)


def pnm(params, grads, pos_momentums, neg_momentums, state_steps, *, lr: LR = 1e-3, beta1: float = 0.9,
        beta0: float = 1.0, weight_decay: float = 0.0, decoupled: bool = True, maximize: bool = False,
        **kw) -> None:
    """PNM (authors' pnm.py): odd steps update pos_momentums, even steps neg_momentums (parity of each
    param's step after the increment); decoupled weight decay unless decoupled=False (L2)."""
    apply("pnm", params, grads, [pos_momentums, neg_momentums], state_steps, hyper=[beta1, beta0, weight_decay],
          lr=lr, flags=0 if decoupled else (1 << RULE_FLAG_SHIFT), maximize=maximize, **kw)


def adapnm(params, grads, exp_avgs, neg_exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr: LR = 1e-3,
           beta1: float = 0.9, beta2: float = 0.999, beta0: float = 1.0, eps: float = 1e-8,
           weight_decay: float = 0.0, amsgrad: bool = True, decoupled: bool = True, maximize: bool = False,
           **kw) -> None:
    """AdaPNM (authors' adapnm.py): PNM buffers, Adam denominator (E1 eps), bias correction 1 - beta1**t;
    amsgrad=True needs max_exp_avg_sqs."""
    if amsgrad and len(max_exp_avg_sqs) != len(params):
        raise ValueError("fusedopt.functional.adapnm: amsgrad=True needs one max_exp_avg_sq per param")
    flags = (1 << VARIANT_SHIFT if amsgrad else 0) | (0 if decoupled else (1 << RULE_FLAG_SHIFT))
    apply("adapnm", params, grads, [exp_avgs, neg_exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []],
          state_steps, hyper=[beta1, beta2, beta0, eps, weight_decay], lr=lr, flags=flags, maximize=maximize,
          **kw)


def adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, state_steps, *, lr: LR = 1e-3,
         beta1: float = 0.98, beta2: float = 0.92, beta3: float = 0.99, eps: float = 1e-8,
         weight_decay: float = 0.0, no_prox: bool = False, maximize: bool = False, max_grad_norm: float = 0.0,
         global_sumsq: Optional[Tensor] = None, **kw) -> None:
    """Adan (official adan.py, retention-form betas): at a param's first step neg_pre_grads is taken
    as -grad; prox weight decay unless no_prox. Global clipping: with max_grad_norm > 0 pass
    global_sumsq, the sum of squares of all grads (e.g. fusedopt.reduce.group_sumsq) as a float32
    tensor on the params' device; grads are scaled by min(max_grad_norm / (sqrt(it) + eps), 1)."""
    apply("adan", params, grads, [exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads], state_steps,
          hyper=[beta1, beta2, beta3, eps, weight_decay, max_grad_norm], lr=lr,
          flags=(1 << RULE_FLAG_SHIFT) if no_prox else 0, maximize=maximize,
          global_in=global_sumsq if max_grad_norm > 0 else None, **kw)


def lion(params, grads, exp_avgs, state_steps, *, lr: LR = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
         weight_decay: float = 0.0, maximize: bool = False, **kw) -> None:
    """Lion: p *= 1 - lr*wd; p -= lr*sign(beta1*m + (1-beta1)*g); m = beta2*m + (1-beta2)*g."""
    apply("lion", params, grads, [exp_avgs], state_steps, hyper=[beta1, beta2, weight_decay], lr=lr,
          maximize=maximize, **kw)
