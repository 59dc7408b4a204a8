"""Schedule-Free AdamW (csrc/core/rules/schedulefree.h), fused: the authors' AdamWScheduleFree."""
from __future__ import annotations

import torch

from .base import _FUSED_DOC
from .base import FusedOptimizer, _check_scalar, check_betas

__all__ = ["AdamWScheduleFree", "ScheduleFreeBase"]


class ScheduleFreeBase(FusedOptimizer):
    """What every Schedule-Free rule shares (the authors' schedulefree package): the per-group schedule
    (``warmup_steps``, ``r``, ``weight_lr_power``; group keys ``k``, ``lr_max``, ``weight_sum``,
    ``scheduled_lr``, ``train_mode``), the weight ``ckp1`` of each step, and ``train()`` / ``eval()``, which
    move the params between y and x through the state ``z``. A rule adds its constructor and ``_hyper``
    (``self._ckp1(group)`` there) and names its momentum in ``_sf_beta``."""

    _sf_defaults = dict(k=0, train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)

    def _sf_beta(self, group) -> float:
        return group["betas"][0]

    def _step_lr(self, group):  # the authors' per-group schedule, advanced once per (not skipped) step
        if not group["train_mode"]:
            raise RuntimeError(f"fusedopt.{type(self).__name__}.step() in eval mode: call optimizer.train() first")
        found_inf = getattr(self, "found_inf", None)
        if found_inf is None or float(found_inf) == 0.0:
            k = group["k"]
            lr = group["scheduled_lr"] = float(group["lr"]) * ((k + 1) / group["warmup_steps"]
                                                              if k < group["warmup_steps"] else 1.0)
            group["lr_max"] = max(lr, group["lr_max"])
            group["weight_sum"] += (k + 1) ** group["r"] * group["lr_max"] ** group["weight_lr_power"]
            group["k"] = k + 1
        return group["scheduled_lr"]

    @staticmethod
    def _ckp1(group) -> float:  # the weight of this step (k advanced) over the weights' sum
        weight = group["k"] ** group["r"] * group["lr_max"] ** group["weight_lr_power"]
        return weight / group["weight_sum"] if group["weight_sum"] else 0.0

    def _load_state(self, state_dict):
        super()._load_state(state_dict)
        for g in self.param_groups:  # the authors keep no per-param step: theirs is the group's k
            for p in g["params"]:
                if "z" in self.state.get(p, {}) and "step" not in self.state[p]:
                    self.state[p]["step"] = torch.full((), float(g["k"]), device=p.device)

    @torch.no_grad()
    def train(self, mode: bool = True):
        """Params to y (mode=True) or, as eval(), to x = y + (1 - 1/beta) (z - y)."""
        for group in self.param_groups:
            if group["train_mode"] != mode:
                b = self._sf_beta(group)
                self._lerp_to_state(group, "z", 1 - b if mode else 1 - 1 / b)
                group["train_mode"] = mode

    def eval(self):
        self.train(False)


class AdamWScheduleFree(ScheduleFreeBase):
    __doc__ = """Schedule-Free AdamW, fused: Defazio et al. 2024, "The Road Less Scheduled"; the authors'
    schedulefree.AdamWScheduleFree (docs/algorithms.md §30): ``lr``, ``betas``, ``eps``, ``weight_decay``
    (at y), ``warmup_steps``, ``r``, ``weight_lr_power``; param_group keys ``k``, ``lr_max``, ``weight_sum``,
    ``scheduled_lr``, ``train_mode``; states ``z``, ``exp_avg_sq``. The params hold y while training;
    ``eval()`` moves them to x (evaluate, save), ``train()`` back. Unlike the authors' class it starts in
    train mode; ``foreach`` is ignored; ``maximize`` is added. The schedule is host arithmetic, as the
    authors': a tensor lr (and found_inf) is read on the host each step.
""" + _FUSED_DOC
    _rule = "schedulefree_adamw"

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0, r=0.0,
                 weight_lr_power=2.0, foreach=None, *, maximize=False, **options):
        check_betas(betas)
        for name, v in (("learning rate", lr), ("epsilon value", eps), ("weight_decay value", weight_decay)):
            _check_scalar(name, v)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, r=r,
                                      warmup_steps=warmup_steps, weight_lr_power=weight_lr_power, maximize=maximize,
                                      **self._sf_defaults), foreach=foreach, **options)

    def _hyper(self, group):
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"], ckp1=self._ckp1(group))
