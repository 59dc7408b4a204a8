"""Learning-rate schedules (torch LRSchedulers) and the batch-size rule for the learning rate.

Step numbering: torch's LRScheduler sets the lr for the first optimizer step at construction and
after each ``scheduler.step()`` for the next one; below, ``t = scheduler.last_epoch + 1`` is the
1-based number of the optimizer step the lr is for (warmups), or ``e = scheduler.last_epoch`` the
0-based epoch (IALR, as the authors' script calls its schedule with the epoch index). Each
schedule multiplies every group's initial lr (``base_lrs``) by a factor, so param groups keep their
ratios; they work on fusedopt's wrappers too (Lookahead, IterateAveraging), whose param_groups are
the inner optimizer's.
"""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import LRScheduler

__all__ = ["LinearWarmup", "InverseSqrtWarmup", "IALR", "scale_lr"]


def _check_count(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"Invalid {name}: {v!r} (an int >= {lo})")
    return v


class _FactorSchedule(LRScheduler):
    def factor(self, n: int) -> float:
        raise NotImplementedError

    def _n(self) -> int:
        return self.last_epoch + 1

    def get_lr(self):
        f = self.factor(self._n())
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.get_lr()


class LinearWarmup(_FactorSchedule):
    """Linear warmup, then constant: ``lr_t = base_lr * min(1, t / warmup_steps)`` for optimizer step
    t = 1, 2, ... (the first step already gets base_lr / warmup_steps, not 0). Post-LN Transformers
    need it (Xiong et al. 2020; docs/algorithms.md §23); Pre-LN ones train without it. Chain a decay after
    it with torch.optim.lr_scheduler.SequentialLR if wanted."""

    def __init__(self, optimizer, warmup_steps: int, last_epoch: int = -1):
        self.warmup_steps = _check_count("warmup_steps", warmup_steps, 1)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        return min(1.0, t / self.warmup_steps)


class InverseSqrtWarmup(_FactorSchedule):
    """The Transformer schedule (Vaswani et al.; the Post-LN setting of Xiong et al. 2020):
    ``lr_t = d_model^-0.5 * min(t^-0.5, t * warmup^-1.5)``, normalised so that base_lr is the peak,
    reached at t = warmup_steps: ``lr_t = base_lr * min(t / warmup, sqrt(warmup / t))``, i.e. a linear
    ramp, then decay as 1/sqrt(t) (fairseq's inverse_sqrt with warmup_init_lr = 0). The paper's
    constant corresponds to ``base_lr = (d_model * warmup_steps) ** -0.5``."""

    def __init__(self, optimizer, warmup_steps: int, last_epoch: int = -1):
        self.warmup_steps = _check_count("warmup_steps", warmup_steps, 1)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        w = self.warmup_steps
        return min(t / w, math.sqrt(w / t))


class IALR(_FactorSchedule):
    """The learning-rate schedule used with iterate averaging (Gadam / GadamX; the authors'
    run_vision.py): with ``s = e / ia_start`` for epoch e = 0, 1, ...: the initial lr for s <= 0.5, a
    linear decay to ``ratio * lr`` between s = 0.5 and 0.9, then ``ratio * lr`` (``ratio`` = the
    script's ia_lr / lr_init; docs/algorithms.md §18 suggests 0.5). Step it once per epoch (or pass
    ``ia_start`` in steps and step it per batch) and start IterateAveraging at ``ia_start``."""

    def __init__(self, optimizer, ia_start: int, ratio: float = 0.5, last_epoch: int = -1):
        self.ia_start = _check_count("ia_start", ia_start, 1)
        if not (0.0 <= float(ratio)):
            raise ValueError(f"Invalid ratio: {ratio!r} (must be >= 0)")
        self.ratio = float(ratio)
        super().__init__(optimizer, last_epoch)

    def _n(self) -> int:
        return self.last_epoch

    def factor(self, e: int) -> float:
        s = e / self.ia_start
        if s <= 0.5:
            return 1.0
        if s <= 0.9:
            return 1.0 - (1.0 - self.ratio) * (s - 0.5) / 0.4
        return self.ratio


def scale_lr(base_lr: float, base_batch: int, batch: int, rule: str = "linear") -> float:
    """The learning rate for batch size ``batch`` given one tuned at ``base_batch`` (Granziol et al.,
    docs/algorithms.md §21): ``"linear"`` (SGD: lr grows as B) or ``"sqrt"`` (adaptive methods such as
    Adam: as sqrt(B)). Both hold only up to a problem-dependent batch size; beyond it the stable lr
    saturates, so check larger factors empirically."""
    if rule not in ("linear", "sqrt"):
        raise ValueError(f"Invalid rule: {rule!r} (one of 'linear', 'sqrt')")
    if not (float(base_lr) >= 0.0):
        raise ValueError(f"Invalid base_lr: {base_lr!r} (must be >= 0)")
    _check_count("base_batch", base_batch, 1)
    _check_count("batch", batch, 1)
    ratio = batch / base_batch
    return float(base_lr) * (ratio if rule == "linear" else math.sqrt(ratio))
