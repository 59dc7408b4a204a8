"""Declarative table of the rules under test: adding a rule adds one RuleSpec here.

Each spec names our class, the torch.optim oracle (or None), the float64 reference,
the option sets to cover, and the state keys the rule keeps (per options).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import fusedopt

from . import reference as ref


@dataclass
class RuleSpec:
    """One rule under test.

    oracle: an independent implementation (torch.optim class, or a PyPI package's class) or None.
    oracle_kwargs: extra constructor kwargs for it (e.g. foreach=False for torch's for-loop).
    oracle_opts: maps one of our option dicts to the oracle's constructor kwargs (argument names
      differ between packages); return None if the oracle cannot express these options.
    oracle_keys: our state key -> the oracle's state key (default: the same names).
    torch_drop_in: the oracle is the torch.optim class we replace: same signature, defaults,
      param_group keys, state keys, and state_dict interchange both ways.
    """

    name: str
    ours: type
    oracle: Optional[type]
    reference: Callable
    options: list
    lr: float = 1e-2
    state_keys: Callable = None  # options -> list of per-element state keys
    defaults: dict = field(default_factory=dict)
    oracle_kwargs: dict = field(default_factory=dict)
    oracle_opts: Optional[Callable] = None
    oracle_keys: dict = field(default_factory=dict)
    torch_drop_in: bool = False
    # Rules whose states sum terms of opposite sign much larger than the result (momentum buffers
    # reach |g|/(1-momentum)) lose absolute precision to the ulp of those terms; and torch's CPU
    # sqrt is not correctly rounded (~0.6% of floats are 1 ulp off; ours is exact), which such a
    # cancellation amplifies. atol_scale multiplies the absolute tolerances of test_rules.py.
    atol_scale: float = 1.0
    # our state -> the oracle's form of it (key, tensor) -> tensor, where the two store the same quantity
    # differently (LARS: the paper's v = lr * the torch-SGD buffer)
    oracle_state: Optional[Callable] = None
    # float64 params against the float64 reference: cross-tensor rules read fp32 norms (fp64-accumulated
    # sums stored in fp32 buffers, core/reduce.h), so their trust ratios are good to ~1e-7 relative
    f64_tol: Optional[dict] = None
    # False: step() reads host values (Schedule-Free's per-group schedule), so torch.compile(fullgraph=True) of
    # it breaks the graph; test_compile.py compiles it with graph breaks and checks the results only
    compile_fullgraph: bool = True

    def tol(self, tol: dict) -> dict:
        return dict(tol, atol=tol["atol"] * self.atol_scale)

    def keys(self, opts):
        return self.state_keys(opts)

    def make_oracle(self, params, lr=None, **opts):
        """The oracle optimizer for our `opts`, or None if there is none for them."""
        if self.oracle is None:
            return None
        mapped = self.oracle_opts(dict(opts)) if self.oracle_opts else dict(opts)
        if mapped is None:
            return None
        return self.oracle(params, lr=self.lr if lr is None else lr, **self.oracle_kwargs, **mapped)

    def oracle_key(self, key):
        return self.oracle_keys.get(key, key)

    def id(self, opts):
        return self.name + ("-" + "-".join(f"{k}={v}" for k, v in opts.items()) if opts else "-default")


def _adam_keys(o):
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if o.get("amsgrad") else [])


import pytorch_optimizer as _po  # noqa: E402  (oracles of PNM, AdaPNM, Adan, Lion)


def _pnm_oracle_opts(o):
    return dict(betas=o.get("betas", (0.9, 1.0)), weight_decay=o.get("weight_decay", 0.0),
                weight_decouple=o.get("decoupled", True), fixed_decay=False, maximize=o.get("maximize", False))


class _AdaPNMOracle(_po.AdaPNM):
    """kozistr's AdaPNM without its extra 1e-15 inside the square root (sqrt(v + 1e-15)), which neither
    the authors' adapnm.py nor we have: it moves elements with tiny v (|g_1| < ~1e-5) by up to 1e-2."""

    @staticmethod
    def apply_ams_bound(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=1e-15):
        return _po.AdaPNM.apply_ams_bound(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=0.0)


def _adapnm_oracle_opts(o):
    if o.get("eps", 1e-8) != 0.0:
        return None  # eps placement differs (see the spec)
    return dict(betas=o.get("betas", (0.9, 0.999, 1.0)), eps=0.0, weight_decay=o.get("weight_decay", 0.0),
                weight_decouple=o.get("decoupled", True), fixed_decay=False, ams_bound=o.get("amsgrad", True),
                maximize=o.get("maximize", False))


def _adan_oracle_opts(o):
    if o.get("maximize", False):
        return None  # its first-step g_prev is the un-negated grad (see the spec)
    return dict(betas=o.get("betas", (0.98, 0.92, 0.99)), eps=o.get("eps", 1e-8),
                weight_decay=o.get("weight_decay", 0.0), weight_decouple=o.get("no_prox", False), max_grad_norm=0.0)


def _lion_oracle_opts(o):
    return dict(betas=o.get("betas", (0.9, 0.99)), weight_decay=o.get("weight_decay", 0.0), weight_decouple=True,
                fixed_decay=bool(o.get("decoupled_weight_decay", False)), maximize=o.get("maximize", False))


SPECS = [
    RuleSpec("adam", fusedopt.Adam, torch.optim.Adam, ref.adam,
             [{}, {"weight_decay": 0.1}, {"amsgrad": True}, {"maximize": True},
              {"decoupled_weight_decay": True, "weight_decay": 0.1},
              {"amsgrad": True, "weight_decay": 0.05, "maximize": True, "betas": (0.8, 0.99), "eps": 1e-6}],
             state_keys=_adam_keys, defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True),
    RuleSpec("adamw", fusedopt.AdamW, torch.optim.AdamW, ref.adamw,
             [{}, {"weight_decay": 0.0}, {"amsgrad": True, "weight_decay": 0.3}, {"maximize": True},
              {"betas": (0.5, 0.9), "eps": 1e-4}],
             state_keys=_adam_keys, defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True),
    RuleSpec("adamax", fusedopt.Adamax, torch.optim.Adamax, ref.adamax,
             [{}, {"weight_decay": 0.1, "eps": 1e-3}, {"maximize": True}, {"betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.01}],
             lr=2e-2, state_keys=lambda o: ["exp_avg", "exp_inf"],
             defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True),
    # 12 steps cover the switch to the rectified update at t = 6 (beta2 = 0.999) and t = 3 (beta2 = 0.9)
    RuleSpec("radam", fusedopt.RAdam, torch.optim.RAdam, ref.radam,
             [{}, {"weight_decay": 0.1}, {"decoupled_weight_decay": True, "weight_decay": 0.1}, {"maximize": True},
              {"betas": (0.8, 0.9), "eps": 1e-6}, {"variant": "official"},
              {"variant": "official", "weight_decay": 0.1},
              {"variant": "official", "degenerated_to_sgd": True, "weight_decay": 0.1, "betas": (0.8, 0.9)}],
             state_keys=lambda o: ["exp_avg", "exp_avg_sq"],
             defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True,
             oracle_opts=lambda o: None if o.get("variant") == "official" else o),
    RuleSpec("nadam", fusedopt.NAdam, torch.optim.NAdam, ref.nadam,
             [{}, {"weight_decay": 0.1}, {"decoupled_weight_decay": True, "weight_decay": 0.1}, {"maximize": True},
              {"momentum_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-6}],
             state_keys=lambda o: ["exp_avg", "exp_avg_sq"],
             defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True),
    # torch.optim SGD / RMSprop / Adagrad / Adadelta: the torch classes are the oracles, every option
    RuleSpec("sgd", fusedopt.SGD, torch.optim.SGD, ref.sgd,
             [{}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.5}, {"weight_decay": 0.1, "maximize": True},
              {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
              {"momentum": 0.5, "dampening": 0.1, "weight_decay": 0.01, "maximize": True},
              {"momentum": 0.7, "nesterov": True, "maximize": True}],
             state_keys=lambda o: ["momentum_buffer"] if o.get("momentum", 0) else [],
             defaults=dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True, atol_scale=4.0),
    RuleSpec("rmsprop", fusedopt.RMSprop, torch.optim.RMSprop, ref.rmsprop,
             # weight decays are powers of two (see adagrad below: g + wd p cancels at a few elements, where
             # centered RMSprop's g/sqrt(v - ga^2) is ill-conditioned); alpha < 0.5 takes lerp's w >= 0.5 form
             [{}, {"momentum": 0.9}, {"centered": True}, {"momentum": 0.9, "centered": True, "weight_decay": 0.125},
              {"maximize": True, "alpha": 0.3, "eps": 1e-4, "momentum": 0.5},
              {"centered": True, "alpha": 0.45, "eps": 1e-3, "maximize": True, "weight_decay": 2.0 ** -7}],
             state_keys=lambda o: (["square_avg"] + (["momentum_buffer"] if o.get("momentum", 0) > 0 else [])
                                   + (["grad_avg"] if o.get("centered") else [])),
             defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True, atol_scale=32.0),
    # Adagrad's first step is lr * sign(g + wd p): weight decays and initial values exactly representable
    # in bf16 (powers of two), so the fp32 / bf16-state runs and the float64 reference see the same
    # hyperparameters where g + wd p cancels (0.1 would be 0.1f in the kernel, as in torch).
    RuleSpec("adagrad", fusedopt.Adagrad, torch.optim.Adagrad, ref.adagrad,
             [{}, {"lr_decay": 0.1}, {"weight_decay": 0.125}, {"initial_accumulator_value": 0.5, "eps": 1e-3},
              {"maximize": True, "lr_decay": 0.05, "weight_decay": 2.0 ** -7, "initial_accumulator_value": 0.125}],
             lr=5e-2, state_keys=lambda o: ["sum"],
             defaults=dict(lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True),
    RuleSpec("adadelta", fusedopt.Adadelta, torch.optim.Adadelta, ref.adadelta,
             [{}, {"weight_decay": 0.1}, {"rho": 0.5, "eps": 1e-3}, {"maximize": True},
              {"rho": 0.99, "weight_decay": 0.05, "maximize": True, "eps": 1e-4}],
             lr=1.0, state_keys=lambda o: ["square_avg", "acc_delta"],
             defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0),
             oracle_kwargs=dict(foreach=False), torch_drop_in=True),
    # ---- PNM / AdaPNM / Adan / Lion: oracle pytorch_optimizer 4.1.0 (kozistr), per-param for-loop path ----
    # PNM: kozistr's PNM equals the authors' pnm.py on every option we have (decoupled -> weight_decouple;
    # its fixed_decay stays False; its lerp vs the authors' mul/add differ by rounding only).
    RuleSpec("pnm", fusedopt.PNM, _po.PNM, ref.pnm,
             [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled": False}, {"maximize": True},
              {"betas": (0.5, 0.7)}, {"betas": (0.8, 0.0), "weight_decay": 0.05}],
             state_keys=lambda o: ["pos_momentum", "neg_momentum"],
             defaults=dict(lr=1e-3, betas=(0.9, 1.0), weight_decay=0, decoupled=True),
             oracle_kwargs=dict(foreach=False), oracle_opts=_pnm_oracle_opts),
    # AdaPNM: kozistr's denominator is (sqrt(v + 1e-15) + eps) / sqrt(bc2) where the authors' adapnm.py
    # (our [REF]) has sqrt(v) / sqrt(bc2) + eps: they agree only for eps = 0 and without the 1e-15
    # (_AdaPNMOracle drops it), so the oracle covers the eps=0 option sets; eps > 0 is pinned by the float64 reference and
    # test_pnm_rules.py::test_adapnm_eps_outside_sqrt_bias_correction.
    RuleSpec("adapnm", fusedopt.AdaPNM, _AdaPNMOracle, ref.adapnm,
             [{}, {"weight_decay": 0.1}, {"amsgrad": False}, {"decoupled": False, "weight_decay": 0.1},
              {"maximize": True}, {"eps": 0.0}, {"eps": 0.0, "amsgrad": False, "weight_decay": 0.05, "decoupled": False},
              {"eps": 0.0, "maximize": True, "weight_decay": 0.1, "betas": (0.8, 0.99, 0.5)}],
             state_keys=lambda o: ["exp_avg", "neg_exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if o.get("amsgrad", True) else []),
             defaults=dict(lr=1e-3, betas=(0.9, 0.999, 1.0), eps=1e-8, weight_decay=0.0, amsgrad=True, decoupled=True),
             oracle_kwargs=dict(foreach=False), oracle_opts=_adapnm_oracle_opts),
    # Adan: kozistr's Adan = official adan.py (retention betas, prox decay by default; its weight_decouple=True
    # is official no_prox=True). Not for maximize: it takes g_prev before its in-place negation, so its first
    # difference is -2*g_1 instead of 0.
    RuleSpec("adan", fusedopt.Adan, _po.Adan, ref.adan,
             [{}, {"weight_decay": 0.02}, {"weight_decay": 0.1, "no_prox": True}, {"maximize": True},
              {"betas": (0.9, 0.8, 0.95), "eps": 1e-6, "weight_decay": 0.05},
              {"maximize": True, "no_prox": True, "weight_decay": 0.05}],
             state_keys=lambda o: ["exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad"],
             defaults=dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0,
                           no_prox=False),
             oracle_kwargs=dict(foreach=False), oracle_opts=_adan_oracle_opts,
             oracle_keys={"neg_pre_grad": "previous_grad"}),
    # Lion: kozistr's Lion (weight_decouple=True) = lucidrains' update; lucidrains' decoupled_weight_decay
    # (wd / initial lr) is kozistr's fixed_decay=True while the lr stays at its initial value (as here).
    RuleSpec("lion", fusedopt.Lion, _po.Lion, ref.lion,
             [{}, {"weight_decay": 0.1}, {"maximize": True},
              {"betas": (0.5, 0.9), "weight_decay": 0.01, "decoupled_weight_decay": True}],
             lr=1e-3, state_keys=lambda o: ["exp_avg"],
             defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
             oracle_kwargs=dict(foreach=False), oracle_opts=_lion_oracle_opts),
]


# ---- AdaBelief / ACProp / DiffGrad / Padam / SignSGD (rules_belief) ------------------------------
import adabelief_pytorch  # noqa: E402
import pytorch_optimizer  # noqa: E402
from pytorch_optimizer.base.optimizer import BaseOptimizer  # noqa: E402


def _belief_keys(o):
    return ["exp_avg", "exp_avg_var"] + (["max_exp_avg_var"] if o.get("amsgrad") else [])


def _adabelief_oracle_opts(o):
    # adabelief-pytorch has no maximize
    return None if o.get("maximize") else o


class _DiffGradV2Oracle(pytorch_optimizer.DiffGrad):
    """pytorch_optimizer's DiffGrad with diffGrad_v2's denominator sqrt(v) + eps: it puts a fixed 1e-15
    inside the root, which moves elements with v < ~1e-10 (tiny gradients) by percents. With that
    removed, weight_decouple=False and rectify=False it is the v2 rule (its non-rectified branch uses the
    friction-scaled m in 4.1.0; DESIGN.md 1.9 records an older release that did not)."""

    @staticmethod
    def apply_ams_bound(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=1e-15):
        return BaseOptimizer.apply_ams_bound(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=0.0)


def _diffgrad_oracle_opts(o):
    return dict(o, weight_decouple=False, rectify=False)


def _padam_oracle_opts(o):
    # pytorch_optimizer.PAdam has no amsgrad (the Gadam default): it covers amsgrad=False only
    if o.get("amsgrad", True):
        return None
    o = dict(o)
    o.pop("amsgrad")
    o["weight_decouple"] = o.pop("decoupled_wd", False)
    return o


# fp32 conditioning: a tiny |g + wd*p| (cancellation) or a tiny s_{t-1} (ACProp) with a tiny eps makes the
# step a ratio of rounding residues; the bf16-state test compares params at rtol 2e-6 / atol 1e-7, so the L2
# and unrectified-ACProp cases use an eps that bounds that ratio (the defaults are covered elsewhere).
SPECS += [
    RuleSpec("adabelief", fusedopt.AdaBelief, adabelief_pytorch.AdaBelief, ref.adabelief,
             # default = rectified (first rectified step t=6), decoupled decay, eps 1e-16 stored in s
             [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "fixed_decay": True},
              {"weight_decouple": False, "weight_decay": 0.1, "rectify": False, "eps": 1e-8},
              {"rectify": False}, {"rectify": False, "amsgrad": True, "eps": 1e-8}, {"amsgrad": True},
              {"degenerated_to_sgd": False, "weight_decay": 0.1},
              {"betas": (0.5, 0.9), "eps": 1e-8, "weight_decouple": False, "weight_decay": 0.05},
              {"maximize": True, "amsgrad": True, "rectify": False}],
             state_keys=_belief_keys,
             defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0),
             oracle_kwargs=dict(print_change_log=False), oracle_opts=_adabelief_oracle_opts),
    RuleSpec("acprop", fusedopt.ACProp, None, ref.acprop,
             [{}, {"eps": 1e-8, "rectify": False, "weight_decouple": False, "weight_decay": 5e-4},  # paper runs
              {"rectify": False, "eps": 1e-4}, {"rectify": False, "momentum_update": True}, {"momentum_update": True},
              {"rectify": False, "amsgrad": True, "eps": 1e-4}, {"degenerated_to_sgd": False},
              {"weight_decay": 0.1, "fixed_decay": True}, {"maximize": True, "weight_decay": 0.1},
              {"betas": (0.5, 0.9), "eps": 1e-8, "amsgrad": True}],
             state_keys=_belief_keys,
             defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0)),
    RuleSpec("diffgrad", fusedopt.DiffGrad, _DiffGradV2Oracle, ref.diffgrad,
             [{}, {"weight_decay": 0.1, "eps": 1e-3}, {"maximize": True}, {"betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.01}],
             state_keys=lambda o: ["exp_avg", "exp_avg_sq", "previous_grad"],
             defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0),
             oracle_kwargs=dict(foreach=False), oracle_opts=_diffgrad_oracle_opts),
    RuleSpec("padam", fusedopt.Padam, pytorch_optimizer.PAdam, ref.padam,
             [{}, {"amsgrad": False}, {"amsgrad": False, "partial": 0.125, "weight_decay": 0.1},
              {"amsgrad": False, "partial": 1.0, "eps": 0.1, "decoupled_wd": True, "weight_decay": 0.1, "maximize": True},
              {"partial": 0.125, "decoupled_wd": True, "weight_decay": 2.5e-3},  # GadamX settings
              {"partial": 0.5}, {"partial": 0.3, "weight_decay": 0.1, "eps": 1e-3, "betas": (0.5, 0.9)}],
             state_keys=lambda o: ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if o.get("amsgrad", True) else []),
             defaults=dict(lr=1e-1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0),
             oracle_kwargs=dict(foreach=False), oracle_opts=_padam_oracle_opts),
    RuleSpec("signsgd", fusedopt.SignSGD, None, ref.signsgd,
             # steps reach lr/sqrt(1-b2) and m/(|m|+eps) amplifies the rounding of a cancelled g + wd*p:
             # with L2 decay the fp32-vs-fp64 cases use an eps that keeps the ratio well conditioned.
             # The signum / signSGD settings (betas=(b, 0), eps=0) are discontinuous at m = 0 (a sign flip
             # of a cancelled m moves p by 2 lr), which the low-precision resync tests cannot tolerate:
             # they are tested in test_belief_rules.py against pytorch_optimizer.SignSGD and torch.sign.
             [{}, {"use_bias_correction": True}, {"weight_decay": 0.1, "maximize": True, "eps": 1e-3},
              {"betas": (0.5, 0.0), "eps": 1e-3},  # near-signum, smooth
              {"betas": (0.9, 0.98), "eps": 1e-4, "weight_decay": 0.1, "use_bias_correction": True}],
             state_keys=lambda o: ["exp_avg"] + (["exp_avg_sq"] if o.get("betas", (0.9, 0.999))[1] != 0 else []),
             defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)),
]

# ---- cross-tensor rules (reduction engine): LAMB, LARS ----------------------------------------------------
class _LambOracle(_po.Lamb):
    """pytorch_optimizer.Lamb without its clamp of ||p|| to 10 (apex has none)."""
    clamp = float("inf")


def _lamb_oracle_opts(o):
    # kozistr's Lamb = apex FusedLAMB when: eps = 0 (it adds eps to ||u|| too), no bias correction (it has none),
    # adam_w_mode (its weight_decouple=False adds wd*p to the update), adam_debias=True (else it divides the
    # step by 1 - beta1^t although v is not corrected), and a trust ratio in use (it always
    # applies one; apex only with weight decay or use_nvlamb). Its pre_norm clipping is max/(G + eps).
    if o.get("eps", 1e-6) != 0.0 or o.get("bias_correction", True) or not o.get("adam_w_mode", True):
        return None
    if not (o.get("use_nvlamb") or o.get("weight_decay", 0.01)):
        return None
    mgn = o.get("max_grad_norm", 1.0)
    return dict(betas=o.get("betas", (0.9, 0.999)), eps=0.0, weight_decay=o.get("weight_decay", 0.01),
                weight_decouple=False, grad_averaging=o.get("grad_averaging", True), max_grad_norm=mgn,
                pre_norm=mgn > 0, maximize=o.get("maximize", False), adam_debias=True)


def _lars_oracle_opts(o):
    # kozistr's LARS (dampening 0) = ours with eps = 0, a constant lr, the default 1-D exclusion, no trust_clip
    if o.get("eps", 1e-8) != 0.0 or o.get("trust_clip"):
        return None
    return dict(momentum=o.get("momentum", 0.9), weight_decay=o.get("weight_decay", 0.0), dampening=0.0,
                trust_coefficient=o.get("trust_coefficient", 1e-3), nesterov=o.get("nesterov", False),
                maximize=o.get("maximize", False))


# KOALA (fusedopt.VanillaKOALA / MomentumKOALA) is not a RuleSpec on purpose: its step() needs the loss
# (predict() before the forward, step(loss=..., loss_sq_mean=...) after backward, or step(closure)), which
# the generic suites never pass. tests/test_koala.py runs the same contracts for it (references, oracle,
# found_inf, grad_scale, tensor lr, state_dict, low-precision params and states, bad input).
_NOCLIP = {"max_grad_norm": 0.0}  # the generic suites compare per tensor: global clipping is in test_lamb_lars.py
SPECS += [
    RuleSpec("lamb", fusedopt.LAMB, _LambOracle, ref.lamb,
             [dict(_NOCLIP), dict(_NOCLIP, weight_decay=0.0), dict(_NOCLIP, adam_w_mode=False),
              dict(_NOCLIP, bias_correction=False, grad_averaging=False, use_nvlamb=True, weight_decay=0.0),
              dict(_NOCLIP, maximize=True, weight_decay=0.1),
              dict(_NOCLIP, eps=0.0, bias_correction=False), dict(_NOCLIP, eps=0.0, bias_correction=False,
                                                                 weight_decay=0.1, betas=(0.8, 0.99), maximize=True),
              dict(_NOCLIP, eps=0.0, bias_correction=False, weight_decay=0.0, use_nvlamb=True, grad_averaging=False)],
             state_keys=lambda o: ["exp_avg", "exp_avg_sq"],
             defaults=dict(lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                           max_grad_norm=1.0),
             oracle_opts=_lamb_oracle_opts, f64_tol=dict(rtol=1e-6, atol=2e-8)),
    RuleSpec("lars", fusedopt.LARS, _po.LARS, ref.lars,
             [{}, {"weight_decay": 0.01}, {"nesterov": True, "weight_decay": 5e-4}, {"momentum": 0.0},
              {"trust_clip": True, "trust_coefficient": 0.02}, {"maximize": True, "weight_decay": 0.1},
              {"eps": 0.0}, {"eps": 0.0, "weight_decay": 0.01, "nesterov": True},
              {"eps": 0.0, "momentum": 0.0, "trust_coefficient": 0.01}],
             state_keys=lambda o: ["momentum_buffer"] if o.get("momentum", 0.9) > 0 else [],
             defaults=dict(lr=1e-3, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8),
             oracle_kwargs=dict(foreach=False), oracle_opts=_lars_oracle_opts,
             oracle_state=lambda k, v: v / 1e-2,  # v = lr * buf (spec lr 1e-2, constant)
             atol_scale=4.0,  # momentum cancellation, as SGD
             f64_tol=dict(rtol=1e-6, atol=2e-8)),
]

# ---- AdEMAMix, Schedule-Free AdamW: their oracles' semantics (docs/algorithms.md §29, §30) ---------------------
# (a machine without the oracle packages, e.g. the GPU machine without bitsandbytes, runs the rest)
try:
    import bitsandbytes as _bnb  # noqa: E402

    class _AdEMAMixOracle(_bnb.optim.AdEMAMix):
        """bitsandbytes' AdEMAMix, 32-bit states on the CPU, its stacked state1 = (m1, m2) and state2 = nu
        shown under our keys."""

        def step(self, closure=None):
            loss = super().step(closure)
            for st in self.state.values():
                if "state1" in st:
                    st["m1"], st["m2"], st["nu"] = st["state1"][0], st["state1"][1], st["state2"]
            return loss
except ImportError:
    _AdEMAMixOracle = None
try:
    import schedulefree as _sf  # noqa: E402

    class _ScheduleFreeOracle(_sf.AdamWScheduleFree):
        """The authors' AdamWScheduleFree (for-loop path), put in train mode as its users must."""

        def __init__(self, params, **kw):
            super().__init__(params, foreach=False, **kw)
            self.train()
except ImportError:
    _ScheduleFreeOracle = None


SPECS += [
    RuleSpec("ademamix", fusedopt.AdEMAMix, _AdEMAMixOracle, ref.ademamix,
             [{}, {"weight_decay": 0.0}, {"t_alpha": 5, "t_beta3": 5}, {"maximize": True},
              {"alpha": 2.0, "betas": (0.8, 0.99, 0.999), "eps": 1e-6, "t_beta3": 20}],
             state_keys=lambda o: ["m1", "m2", "nu"],
             defaults=dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, eps=1e-8, weight_decay=1e-2),
             oracle_kwargs=dict(optim_bits=32), oracle_opts=lambda o: None if o.get("maximize") else o),
    RuleSpec("schedulefree_adamw", fusedopt.AdamWScheduleFree, _ScheduleFreeOracle, ref.schedulefree_adamw,
             [{}, {"weight_decay": 0.1}, {"warmup_steps": 5}, {"maximize": True},
              {"r": 1.0, "weight_lr_power": 1.0, "betas": (0.8, 0.99), "eps": 1e-6}],
             state_keys=lambda o: ["z", "exp_avg_sq"],
             defaults=dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
             oracle_opts=lambda o: None if o.get("maximize") else o, compile_fullgraph=False),
]

CASES = [(s, o) for s in SPECS for o in s.options]
CASE_IDS = [s.id(o) for s, o in CASES]
ORACLE_CASES = [(s, o) for s, o in CASES if s.make_oracle([torch.zeros(1, requires_grad=True)], **o) is not None]
ORACLE_CASE_IDS = [s.id(o) for s, o in ORACLE_CASES]
DROP_IN = [s for s in SPECS if s.torch_drop_in]
DROP_IN_IDS = [s.name for s in DROP_IN]

# absolute/relative tolerances per param dtype against an fp32/fp64 oracle
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-13),
    torch.float32: dict(rtol=4e-6, atol=2e-7),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-6),
}
