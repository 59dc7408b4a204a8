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

There is one function per rule of the rule table (csrc/core/rule_table.h), generated from what the
rule's header declares (torch.ops.fusedopt.rule_specs()): its state lists (``<state>s``, in the op's
order; a list the chosen variant does not use may be empty), its hyperparameters, flags and variant
fields as keyword arguments with the header's defaults, ``lr`` and ``maximize``. Further keywords go to
`apply` (``grad_scale``, ``found_inf``, ``param_comps``, ``stochastic_rounding``, and ``global_in`` /
``tensor_in`` / ``tensor_out`` for the rules of the reduction engine). ``help(F.adamw)`` shows the
signature.

Example (what an optimizer of another library would do)::

    import fusedopt.functional as F
    F.adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps,
            lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Optional, Sequence, Union

from torch import Tensor

from ._ops import FLAG_MAXIMIZE, FLAG_STOCH_ROUND, RULES, op
from .optim.padam import _exponent_kind

LR = Union[float, Tensor]


def apply(
    rule: str,
    params: Sequence[Tensor],
    grads: Optional[Sequence[Tensor]],
    states: Sequence[Sequence[Tensor]],
    state_steps: Sequence[Tensor],
    *,
    hyper: Union[Sequence[float], Mapping[str, float]],
    lr: LR,
    flags: int = 0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    param_comps: Optional[Sequence[Tensor]] = None,
    grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
    **reduced,
) -> None:
    """Generic entry: `states` holds one list per state list of the rule (empty list = not used),
    followed by one list per per-tensor scalar state (e.g. NAdam's mu_products). `hyper` is the op's
    list, or {name: value} of every hyperparameter of the rule. `grads` is None for the rules that read
    none (lookahead, iterate_avg, koala_predict). `reduced`: the global_in / tensor_in / tensor_out
    arguments of rules that read or write reduced values (csrc/core/reduce.h)."""
    if isinstance(lr, Tensor):
        lr_f, lr_t = 0.0, lr
    else:
        lr_f, lr_t = float(lr), None
    if isinstance(hyper, Mapping):
        hyper = RULES[rule].pack_hyper(hyper)
    flags = int(flags) | (FLAG_MAXIMIZE if maximize else 0) | (FLAG_STOCH_ROUND if stochastic_rounding else 0)
    lists = [list(params)] + ([] if grads is None else [list(grads)])
    op(rule)(
        *lists, *[list(s) for s in states], list(state_steps), list(param_comps or []),
        hyper=[float(h) for h in hyper], lr=lr_f, lr_tensor=lr_t, grad_scale=grad_scale,
        found_inf=found_inf, flags=flags, **reduced,
    )


# ---- the generated functions -------------------------------------------------------------------------
# What differs from the generic form, per rule (today's public names and behaviour):
#   lists:   another argument name for a state list
#   derived: variant fields computed from the other arguments (not arguments themselves)
#   check:   extra argument checks (ValueError)
#   list_check=False: no ValueError for a state list the variant needs but that is short (the op raises)
#   extra:   extra keyword arguments and how they map onto apply's
def _sgd_check(a):
    if a["nesterov"] and (a["momentum"] <= 0 or a["dampening"] != 0):
        raise ValueError("fusedopt.functional.sgd: Nesterov momentum requires a momentum and zero dampening")


def _padam_check(a):
    if not (0.0 < float(a["partial"]) <= 1.0):
        raise ValueError(f"fusedopt.functional.padam: invalid partial {a['partial']} (must be in (0, 1])")


_CUSTOM: dict = {
    "adagrad": dict(lists={"sum": "state_sums"}),
    "sgd": dict(check=_sgd_check),
    "padam": dict(derived=lambda a, lists: dict(exponent=_exponent_kind(float(a["partial"]))), check=_padam_check),
    # beta2 == 0 with an empty exp_avg_sqs list: the variant that keeps no v (signsgd.h); the op checks the lists
    "signsgd": dict(derived=lambda a, lists: dict(no_exp_avg_sq=a["beta2"] == 0.0 and len(lists["exp_avg_sq"]) == 0),
                    list_check=False),
    # global clipping reads the sum of squares of all grads (e.g. fusedopt.reduce.group_sumsq)
    "adan": dict(extra=dict(global_sumsq=None),
                 reduced=lambda a: dict(global_in=a["global_sumsq"] if a["max_grad_norm"] > 0 else None)),
}

_DOCS = {
    "adam": "torch.optim.Adam's update (L2 weight decay unless decoupled_weight_decay).",
    "adamw": "torch.optim.AdamW's update (p *= 1 - lr*wd before the Adam step).",
    "adamax": "torch.optim.Adamax's update (eps inside the max, L2 weight decay).",
    "radam": "RAdam: torch.optim.RAdam's update (variant=\"torch\") or the authors' radam.py (variant=\"official\").",
    "nadam": "torch.optim.NAdam's update; `mu_products` are one-element float32 tensors (start at 1.0), "
             "advanced by the kernel together with the steps.",
    "sgd": "torch.optim.SGD's update. momentum == 0: `momentum_buffers` may be empty (no state). momentum != 0: "
           "one buffer per param; at a param's step 1 (its state_step after the increment) the buffer is set to "
           "the gradient (torch's first step), later ones accumulate.",
    "rmsprop": "torch.optim.RMSprop's update. `momentum_buffers` is used iff momentum != 0 and `grad_avgs` iff "
               "centered (pass empty lists otherwise).",
    "adagrad": "torch.optim.Adagrad's update (state_sums start at initial_accumulator_value: the caller fills them).",
    "adadelta": "torch.optim.Adadelta's update.",
    "adabelief": "adabelief-pytorch 0.2.1's update (eps stored into exp_avg_var; see fusedopt.AdaBelief).",
    "acprop": "ACProp's update (denominator from s_{t-1}, SGD first step; see fusedopt.ACProp).",
    "diffgrad": "diffGrad v2's update (friction sigmoid(|g_prev - g|), E2; see fusedopt.DiffGrad).",
    "padam": "Padam's update (denominator (sqrt(v)+eps)^(2 partial); see fusedopt.Padam).",
    "signsgd": "Generalized signSGD's update (v tracks m^2; see fusedopt.SignSGD). With beta2 == 0, exp_avg_sqs may "
               "be an empty list: v is then not kept (it would be m^2).",
    "pnm": "PNM (authors' pnm.py): odd steps update pos_momentums, even steps neg_momentums (parity of each "
           "param's step after the increment); decoupled weight decay unless decoupled=False (L2).",
    "adapnm": "AdaPNM (authors' adapnm.py): PNM buffers, Adam denominator (E1 eps), bias correction 1 - beta1**t; "
              "amsgrad=True needs max_exp_avg_sqs.",
    "adan": "Adan (official adan.py, retention-form betas): at a param's first step neg_pre_grads is taken as "
            "-grad; prox weight decay unless no_prox. Global clipping: with max_grad_norm > 0 pass global_sumsq, "
            "the sum of squares of all grads (e.g. fusedopt.reduce.group_sumsq) as a float32 tensor on the "
            "params' device; grads are scaled by min(max_grad_norm / (sqrt(it) + eps), 1).",
    "lion": "Lion: p *= 1 - lr*wd; p -= lr*sign(beta1*m + (1-beta1)*g); m = beta2*m + (1-beta2)*g.",
    "ademamix": "AdEMAMix (bitsandbytes semantics): Adam's m1 plus alpha times the slow EMA m2, decoupled weight "
                "decay; t_alpha / t_beta3 > 0 turn on the alpha / beta3 schedulers (0: off).",
    "schedulefree_adamw": "Schedule-Free AdamW's step on y (the param), z and exp_avg_sq; `lr` is the scheduled lr "
                          "(warmup applied) and `ckp1` the averaging weight weight/weight_sum of this step, both "
                          "computed by the caller as fusedopt.AdamWScheduleFree does. zs start as copies of the params.",
}


def _make(name: str) -> Callable:
    rule = RULES[name]
    custom = _CUSTOM.get(name, {})
    list_names = [custom.get("lists", {}).get(k, f"{k}s") for k in rule.slots]
    list_names += [f"{k}s" for k, _ in rule.scalars]
    derived_probe = custom.get("derived")
    hidden = set(derived_probe({**rule.hyper_defaults}, {k: [] for k in rule.slots})) if derived_probe else set()
    P = inspect.Parameter
    params = [P("params", P.POSITIONAL_OR_KEYWORD)]
    if rule.reads_grad:
        params.append(P("grads", P.POSITIONAL_OR_KEYWORD))
    params += [P(n, P.POSITIONAL_OR_KEYWORD) for n in list_names] + [P("state_steps", P.POSITIONAL_OR_KEYWORD)]
    kw = [P("lr", P.KEYWORD_ONLY, default=rule.lr, annotation=LR)]
    kw += [P(n, P.KEYWORD_ONLY, default=rule.hyper_defaults[n], annotation=float) for n in rule.hyper]
    fields = [f for f in rule.fields if f.name not in rule.hyper and f.name not in hidden]
    for f in fields:
        default = f.values[f.default] if f.values else (bool(f.default) if f.bits == 1 else f.default)
        kw.append(P(f.name, P.KEYWORD_ONLY, default=default, annotation=str if f.values else type(default)))
    kw += [P(n, P.KEYWORD_ONLY, default=rule.flag_defaults[n], annotation=bool) for n in rule.flags]
    if rule.reads_grad:
        kw.append(P("maximize", P.KEYWORD_ONLY, default=False, annotation=bool))
    kw += [P(n, P.KEYWORD_ONLY, default=v) for n, v in custom.get("extra", {}).items()]
    sig = inspect.Signature(params + kw + [P("kw", P.VAR_KEYWORD)], return_annotation=None)
    nlists = len(rule.slots)
    optional = [not all(rule.slot_masks[v] >> k & 1 for v in range(rule.num_variants)) for k in range(nlists)]

    def fn(*args, **kwargs):
        b = sig.bind(*args, **kwargs)
        b.apply_defaults()
        a = b.arguments
        if "check" in custom:
            custom["check"](a)
        lists = {k: a[n] for k, n in zip(rule.slots, list_names)}
        hyper = {n: a[n] for n in rule.hyper}
        variant = {f.name: a[f.name] for f in fields}
        if derived_probe:
            variant.update(derived_probe(a, lists))
        v = rule.variant_index(variant, hyper)
        used = rule.active_slots(v)
        for k, n in enumerate(list_names[:nlists]):
            if used[k] and optional[k] and custom.get("list_check", True) and len(a[n]) != len(a["params"]):
                why = ", ".join(f"{f.name}={a[f.name]!r}" for f in rule.fields if f.name in a)
                raise ValueError(f"fusedopt.functional.{name}: {why} needs one {rule.slots[k]} per param")
        states = [a[n] if used[k] else [] for k, n in enumerate(list_names[:nlists])] + [a[n] for n in list_names[nlists:]]
        more = dict(a["kw"])
        if "reduced" in custom:
            more.update(custom["reduced"](a))
        flags = rule.pack_flags({n: a[n] for n in rule.flags}, variant, hyper)
        apply(name, a["params"], a["grads"] if rule.reads_grad else None, states, a["state_steps"],
              hyper=[hyper[n] for n in rule.hyper], lr=a["lr"], flags=flags, maximize=a.get("maximize", False),
              **more)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__signature__ = sig
    fn.__doc__ = (_DOCS.get(name, f"The fused `{name}` update (csrc/core/rule_table.h).")
                  + f"\n\nState lists: {', '.join(list_names)}. Generated from the rule's header.")
    return fn


__all__ = ["apply"]
for _name in RULES:
    globals()[_name] = _make(_name)
    __all__.append(_name)
