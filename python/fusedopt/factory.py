"""Build an optimizer from a model and a rule name, and per-parameter overrides.

```python
opt = fusedopt.create_optimizer(model, "adamw", lr=3e-4, weight_decay=0.1, state_bits=8)
fusedopt.override(model.lm_head, state_bits=32)          # before the first step
fusedopt.override(model.encoder.layers[0], lr_scale=0.1)
```

`create_optimizer` puts the params of a module into two param groups: decay, and no decay for
biases, normalisation layers and embeddings (`decay_embeddings=True` decays embeddings too).
`RULES` names every rule; `list_optimizers()` lists the names.

`override` sets per-param options on the params themselves (no global registry, so the order of
calls does not matter and a new model never inherits old settings). A fused optimizer reads them when
it creates the param's state (its first step; Adagrad's constructor), records them in
``state[p]["override"]`` and saves them with ``state_dict()``: a run resumed from a checkpoint keeps
them without calling `override` again.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from .optim.acprop import ACProp
from .optim.adabelief import AdaBelief
from .optim.adadelta import Adadelta
from .optim.adafactor import Adafactor, AdafactorTorch
from .optim.adagrad import Adagrad
from .optim.adam import Adam, AdamW
from .optim.adamax import Adamax
from .optim.adan import Adan
from .optim.ademamix import AdEMAMix
from .optim.base import FusedOptimizer
from .optim.bnb import Adagrad8bit, Adam8bit, AdamW8bit, Lion8bit, RMSprop8bit, SGD8bit
from .optim.diffgrad import DiffGrad
from .optim.koala import MomentumKOALA, VanillaKOALA
from .optim.lamb import LAMB
from .optim.lars import LARS
from .optim.lion import Lion
from .optim.nadam import NAdam
from .optim.padam import Padam
from .optim.pnm import PNM, AdaPNM
from .optim.radam import RAdam
from .optim.rmsprop import RMSprop
from .optim.schedulefree import AdamWScheduleFree
from .optim.sgd import SGD
from .optim.signsgd import SignSGD
from .q8 import OVERRIDE_ATTR

__all__ = ["create_optimizer", "override", "param_groups", "RULES", "RuleInfo", "list_optimizers"]


@dataclass(frozen=True)
class RuleInfo:
    """One rule of the catalogue: its class and what its constructor takes (timm's OptimInfo flags)."""
    cls: type
    description: str
    has_eps: bool = True
    has_betas: bool = True
    num_betas: int = 2
    has_momentum: bool = False
    defaults: dict = field(default_factory=dict)


RULES: dict[str, RuleInfo] = {
    "adam": RuleInfo(Adam, "Adam (torch.optim.Adam semantics)"),
    "adamw": RuleInfo(AdamW, "AdamW (torch.optim.AdamW semantics)"),
    "adamax": RuleInfo(Adamax, "AdaMax (torch.optim.Adamax semantics)"),
    "radam": RuleInfo(RAdam, "RAdam (torch.optim.RAdam, or the authors' variant)"),
    "nadam": RuleInfo(NAdam, "NAdam (torch.optim.NAdam semantics)"),
    "sgd": RuleInfo(SGD, "SGD with momentum / Nesterov (torch.optim.SGD)", has_eps=False, has_betas=False,
                    has_momentum=True),
    "rmsprop": RuleInfo(RMSprop, "RMSprop (torch.optim.RMSprop)", has_betas=False, has_momentum=True),
    "adagrad": RuleInfo(Adagrad, "Adagrad (torch.optim.Adagrad)", has_betas=False),
    "adadelta": RuleInfo(Adadelta, "Adadelta (torch.optim.Adadelta)", has_betas=False),
    "adabelief": RuleInfo(AdaBelief, "AdaBelief (adabelief-pytorch 0.2.1)"),
    "acprop": RuleInfo(ACProp, "ACProp (the authors' ACProp.py)"),
    "diffgrad": RuleInfo(DiffGrad, "diffGrad (the authors' diffGrad_v2.py)"),
    "padam": RuleInfo(Padam, "Padam (partially adaptive momentum)"),
    "signsgd": RuleInfo(SignSGD, "generalized signSGD (signSGD and signum as settings)"),
    "pnm": RuleInfo(PNM, "positive-negative momentum", has_eps=False),
    "adapnm": RuleInfo(AdaPNM, "adaptive positive-negative momentum", num_betas=3),
    "adan": RuleInfo(Adan, "Adan (adaptive Nesterov momentum)", num_betas=3),
    "lion": RuleInfo(Lion, "Lion (sign momentum)", has_eps=False),
    "ademamix": RuleInfo(AdEMAMix, "AdEMAMix (bitsandbytes semantics)", num_betas=3),
    "adamwschedulefree": RuleInfo(AdamWScheduleFree, "Schedule-Free AdamW (the authors' schedulefree; train()/eval())"),
    "lamb": RuleInfo(LAMB, "LAMB (apex FusedLAMB semantics)"),
    "lars": RuleInfo(LARS, "LARS (the paper's form)", has_betas=False, has_momentum=True),
    "adafactor": RuleInfo(Adafactor, "Adafactor (transformers semantics)", has_eps=False, has_betas=False),
    "adafactortorch": RuleInfo(AdafactorTorch, "Adafactor (torch.optim.Adafactor semantics)", has_eps=False,
                               has_betas=False),
    "koala": RuleInfo(MomentumKOALA, "KOALA-M (needs predict() and the loss: see fusedopt.KOALA)",
                      has_eps=False, has_betas=False),
    "vanillakoala": RuleInfo(VanillaKOALA, "KOALA-V (needs predict() and the loss)", has_eps=False,
                             has_betas=False),
    "adam8bit": RuleInfo(Adam8bit, "Adam with 8-bit states (bitsandbytes' Adam8bit names)"),
    "adamw8bit": RuleInfo(AdamW8bit, "AdamW with 8-bit states (bitsandbytes' AdamW8bit names)"),
    "lion8bit": RuleInfo(Lion8bit, "Lion with 8-bit states (bitsandbytes' Lion8bit names)", has_eps=False),
    "sgd8bit": RuleInfo(SGD8bit, "SGD with an 8-bit momentum (bitsandbytes' SGD8bit names)", has_eps=False,
                        has_betas=False, has_momentum=True),
    "rmsprop8bit": RuleInfo(RMSprop8bit, "RMSprop with 8-bit states (bitsandbytes' names)", has_betas=False,
                            has_momentum=True),
    "adagrad8bit": RuleInfo(Adagrad8bit, "Adagrad with an 8-bit sum (bitsandbytes' names)", has_betas=False),
}
_BNB_NAMES = {Adam8bit, AdamW8bit, Lion8bit, SGD8bit, RMSprop8bit, Adagrad8bit}


def list_optimizers() -> list[str]:
    """The rule names `create_optimizer` takes (lower case; a ``lookahead_`` prefix wraps any of them)."""
    return sorted(RULES)


def _rule(name: str) -> RuleInfo:
    key = name.lower().replace("_", "").replace("-", "")
    if key.startswith("fused") and key not in RULES:  # "FusedLAMB", "fusedadamw"
        key = key[len("fused"):]
    info = RULES.get(key)
    if info is None:
        raise ValueError(f"fusedopt: unknown rule {name!r}; known: {', '.join(list_optimizers())}")
    return info


# ---- overrides ---------------------------------------------------------------------------------------
def _params_of(target) -> list:
    if isinstance(target, nn.Module):
        return list(target.parameters())
    if isinstance(target, Tensor):
        return [target]
    try:
        items = list(target)
    except TypeError:
        raise TypeError(f"fusedopt.override: expected a module, a parameter or an iterable of them, got "
                        f"{type(target).__name__}") from None
    return [p for t in items for p in _params_of(t)]


def override(target, *, state_bits: Optional[int] = None, lr_scale: Optional[float] = None):
    """Per-param options for fusedopt optimizers, on a module (all its params), a param, or an
    iterable of them. Returns ``target``.

    - ``state_bits``: 32 (float32 states), 16 (bfloat16) or 8 (block-wise 8-bit; params smaller
      than the group's ``min_8bit_size`` still keep 32-bit states), whatever the param group says.
      ``override(p, state_bits=32)`` is bitsandbytes'
      ``GlobalOptimManager.override_config(p, "optim_bits", 32)``.
    - ``lr_scale``: this param's steps use ``lr * lr_scale`` (the group's lr, scheduled or not),
      as if it were alone in a param group with that lr. Decoupled weight decay scales with it.

    Call it before the optimizer creates the param's state (its first step; the constructor for
    Adagrad). The options are read then, recorded in ``state[p]["override"]`` and saved with
    ``state_dict()``; later calls do not change a state that exists. Options set before are kept
    unless given again. The fused per-element optimizers (``FusedOptimizer`` subclasses) apply
    both options; KOALA takes ``state_bits`` 32/16 only and Adafactor none (it keeps 32-bit states):
    ``create_optimizer`` refuses what a class would not apply.
    """
    if state_bits is None and lr_scale is None:
        raise ValueError("fusedopt.override: give state_bits and/or lr_scale")
    cfg: dict[str, Any] = {}
    if state_bits is not None:
        if isinstance(state_bits, bool) or state_bits not in (8, 16, 32):
            raise ValueError(f"fusedopt.override: state_bits must be 8, 16 or 32, got {state_bits!r}")
        cfg["state_bits"] = int(state_bits)
    if lr_scale is not None:
        if isinstance(lr_scale, (bool, Tensor)) or not math.isfinite(float(lr_scale)) or float(lr_scale) < 0:
            raise ValueError(f"fusedopt.override: lr_scale must be a finite float >= 0, got {lr_scale!r}")
        cfg["lr_scale"] = float(lr_scale)
    params = _params_of(target)
    if not params:
        raise ValueError("fusedopt.override: the target has no parameters")
    for p in params:
        setattr(p, OVERRIDE_ATTR, {**(getattr(p, OVERRIDE_ATTR, None) or {}), **cfg})
    return target


# ---- param groups -------------------------------------------------------------------------------------
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)


def _is_norm(m: nn.Module) -> bool:
    # transformers' LlamaRMSNorm, T5LayerNorm, ... are not torch classes: go by the class name too
    return isinstance(m, _NORMS) or "norm" in type(m).__name__.lower()


def _is_embedding(m: nn.Module) -> bool:
    return isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or type(m).__name__.endswith("Embedding")


def param_groups(model: nn.Module, weight_decay: float, *, decay_embeddings: bool = False,
                 no_decay: Iterable[str] = ()) -> list[dict]:
    """Two param groups of the trainable params of ``model`` (empty ones dropped), each with
    ``param_names``: ``weight_decay`` for most, 0 for biases (a param named ``bias`` or ``*_bias``),
    the params of normalisation layers (torch's norm classes, or any module whose class name
    contains "Norm"), embeddings (unless ``decay_embeddings``), names matching a pattern of
    ``no_decay`` (fnmatch, e.g. ``"*.pos_embed"``) and the names returned by
    ``model.no_weight_decay()`` if the model has it (timm's convention). A param shared by several
    modules (tied embeddings) is excluded from decay if any of its modules says so."""
    patterns = list(no_decay)
    if hasattr(model, "no_weight_decay"):
        patterns += list(model.no_weight_decay())
    exempt: set = set()
    for _, m in model.named_modules():
        for local, p in m.named_parameters(recurse=False):
            if (local == "bias" or local.endswith("_bias") or _is_norm(m)
                    or (_is_embedding(m) and not decay_embeddings)):
                exempt.add(id(p))
    decay, nodecay = ([], []), ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in exempt or any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
            nodecay[0].append(p), nodecay[1].append(name)
        else:
            decay[0].append(p), decay[1].append(name)
    groups = [{"params": ps, "param_names": ns, "weight_decay": wd}
              for (ps, ns), wd in ((decay, float(weight_decay)), (nodecay, 0.0)) if ps]
    return groups


# ---- the factory --------------------------------------------------------------------------------------
def _check_overrides(cls: type, params: list):
    """Refuse overrides that `cls` would not apply (it is not a FusedOptimizer, or it is KOALA)."""
    applies_lr = issubclass(cls, FusedOptimizer) and cls._applies_lr_scale()
    for p in params:
        ov = getattr(p, OVERRIDE_ATTR, None) or {}
        bits = ov.get("state_bits")
        if ov.get("lr_scale", 1.0) != 1.0 and not applies_lr:
            raise ValueError(f"fusedopt.create_optimizer: a param of shape {tuple(p.shape)} has an lr_scale override, "
                             f"which {cls.__name__} does not apply; give it its own param group instead")
        if bits in (8, 16) and not issubclass(cls, FusedOptimizer):
            raise ValueError(f"fusedopt.create_optimizer: a param of shape {tuple(p.shape)} has a state_bits={bits} "
                             f"override, but {cls.__name__} keeps 32-bit states only")


def create_optimizer(model_or_params, name: str, lr: Optional[float] = None, weight_decay: float = 0.0, *,
                     state_bits: Optional[int] = None, decay_embeddings: bool = False, no_decay: Iterable[str] = (),
                     **kwargs) -> torch.optim.Optimizer:
    """The fusedopt optimizer ``name`` (see `list_optimizers`; case, ``_`` and a ``fused`` prefix are
    ignored, so "AdamW", "FusedLAMB" and "adam_w" work) over a model or params.

    - A model's params go into the two groups of `param_groups` (decay / no decay); params or param
      groups are passed through, with ``weight_decay`` as the default.
    - ``lr=None`` keeps the class's default lr.
    - ``state_bits`` (8, 16, 32) is passed to the class (``optim_bits`` for the bitsandbytes names);
      Adafactor refuses anything but 32.
    - ``"lookahead_<name>"`` wraps the optimizer in ``fusedopt.Lookahead`` (fused slow-weight sync).
    - Other keywords go to the class (``betas``, ``eps``, ``momentum``, ``min_8bit_size``, ...).
    """
    lookahead = name.lower().startswith("lookahead_")
    info = _rule(name[len("lookahead_"):] if lookahead else name)
    cls = info.cls
    if isinstance(model_or_params, nn.Module):
        groups = param_groups(model_or_params, weight_decay, decay_embeddings=decay_embeddings, no_decay=no_decay)
        if not groups:
            raise ValueError("fusedopt.create_optimizer: the model has no trainable parameters")
        params = [p for g in groups for p in g["params"]]
    else:
        groups = list(model_or_params)
        params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
        kwargs.setdefault("weight_decay", weight_decay)
    _check_overrides(cls, params)
    if lr is not None:
        kwargs["lr"] = lr
    if state_bits is not None:
        if cls in _BNB_NAMES:
            kwargs["optim_bits"] = state_bits
        elif issubclass(cls, FusedOptimizer):
            kwargs["state_bits"] = state_bits
        elif state_bits != 32:
            raise ValueError(f"fusedopt.create_optimizer: {cls.__name__} keeps 32-bit states (state_bits={state_bits})")
    opt = cls(groups, **kwargs)
    if lookahead:
        from .wrappers import Lookahead

        opt = Lookahead(opt)
    return opt
