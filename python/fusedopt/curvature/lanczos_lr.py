"""LanczosLR: set lr (and momentum / beta1) from the batch Hessian's extremal eigenvalues.

docs/algorithms.md §21. Every ``interval`` calls of :meth:`LanczosLR.step`, starting with the first,
k Lanczos steps on the Hessian of a fixed curvature batch give Ritz values; from them

* ``L``  = the largest |Ritz value|,
* ``mu`` = the smallest Ritz value above ``rel_threshold * L`` (the near-zero bulk and negative
  curvature are skipped); if there is none, ``mu = rel_threshold * L`` (a floor),

and a policy turns (L, mu) into a learning rate and, for the momentum policies, a momentum:

=============  ==============================================  =====================================
policy         lr                                              momentum (SGD ``momentum`` / ``betas[0]``)
=============  ==============================================  =====================================
``gd``         ``2 / (L + mu)`` (optimal fixed step for a       not touched
               quadratic with spectrum in [mu, L])
``heavy_ball`` ``4 / (sqrt(L) + sqrt(mu))^2``                  ``((sqrt(L)-sqrt(mu))/(sqrt(L)+sqrt(mu)))^2``
``ssgdmn``     ``sqrt(mu / L) = 1/sqrt(kappa)`` (the author's   ``(1 - lr) / (1 + lr)``
               code's most used variant; dimensionless: it
               assumes a curvature scale of about 1)
``line_search`` ``g^T g / g^T H g`` on the curvature batch      not touched
               (exact line search along -g; one HVP, no
               Lanczos; if ``g^T H g <= 0`` the lr is left
               unchanged)
callable       ``policy(L, mu, ritz_values) -> (lr, momentum or None)``
=============  ==============================================  =====================================

Deviations from the author's code, chosen and documented here (§21 "for us"): ``gd`` uses ``mu``
(textbook) where one code variant uses the median Ritz value; ``heavy_ball`` uses the textbook
momentum (the code has a typo); ``mu`` is the smallest Ritz value above a relative threshold rather
than "drop the node with weight > 0.5". Added on top of the code (all off by default except the
floor): ``safety`` multiplies the policy's lr; ``ema`` smooths L and mu (for ``line_search`` the
Rayleigh quotient ``g^T H g / g^T g`` plays L) across estimates; ``min_lr``/``max_lr`` and
``min_momentum``/``max_momentum`` clamp the results. Order: smooth the curvature, apply the policy,
multiply by ``safety``, clamp.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .hessian import HessianOperator, lanczos

__all__ = ["LanczosLR"]

_POLICIES = ("gd", "heavy_ball", "ssgdmn", "line_search")


def _num(name, x, lo=None, hi=None, lo_open=False):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) or x == -math.inf:
        raise ValueError(f"{name} must be a real number, got {x!r}")
    x = float(x)
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {x}")
    if hi is not None and x > hi:
        raise ValueError(f"{name} must be <= {hi}, got {x}")
    return x


class LanczosLR:
    """Curvature-driven lr / momentum for any optimizer with ``lr`` (and ``momentum`` or ``betas``).

    Args:
        optimizer: the optimizer whose ``param_groups`` are written.
        loss_fn: closure returning the scalar loss on a fixed curvature batch at the current
            parameters (called again at every estimate). With ``batches``, ``loss_fn(batch)``.
            It must be deterministic: the HVPs of one estimate must see the same function, so a
            model with dropout should be in eval mode inside it (BatchNorm in train mode on a
            fixed batch is deterministic and is what the author's code uses; eval mode also works).
        policy: ``"gd"``, ``"heavy_ball"``, ``"ssgdmn"``, ``"line_search"`` or a callable (see module doc).
        interval: estimate every ``interval`` calls of :meth:`step` (the first call estimates).
        k: Lanczos steps (Krylov dimension).
        safety: factor multiplying the policy's lr (``0 < safety``; 1 = the policy as is).
        min_lr, max_lr: clamp of the lr written.
        min_momentum, max_momentum: clamp of the momentum written (momentum policies only).
        ema: smoothing of the curvature estimates across calls, ``L <- ema*L + (1-ema)*L_new``
            (0 = no smoothing; the first estimate is taken as is).
        rel_threshold: Ritz values at or below ``rel_threshold * L`` count as the bulk for ``mu``;
            also the floor of ``mu``.
        params: the tensors whose Hessian is used; default every param of the optimizer with
            ``requires_grad``.
        groups: indices of the param groups to write; default all.
        reorth: full re-orthogonalisation in Lanczos.
        seed: seeds the Lanczos start vectors (a new draw at each estimate, deterministic overall).
        batches: optional list of batches for a batched closure (HVPs averaged).

    After each estimate, ``last`` (and ``history``) holds a dict with ``step``, ``L``, ``mu`` (raw),
    ``L_smooth``, ``mu_smooth``, ``lr``, ``momentum`` (or None), ``ritz_values``, ``weights`` (the
    SLQ quadrature of the start vector) and ``num_hvps``.
    """

    def __init__(self, optimizer, loss_fn: Callable, *, policy="gd", interval: int = 100, k: int = 20,
                 safety: float = 1.0, min_lr: float = 0.0, max_lr: float = math.inf,
                 min_momentum: float = 0.0, max_momentum: float = 0.999, ema: float = 0.0,
                 rel_threshold: float = 1e-3, params=None, groups=None, reorth: bool = True,
                 seed: int = 0, batches=None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be a callable returning the scalar loss on the curvature batch")
        if not (callable(policy) or policy in _POLICIES):
            raise ValueError(f"policy must be one of {_POLICIES} or a callable, got {policy!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an int >= 1, got {interval!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.safety = _num("safety", safety, 0.0, lo_open=True)
        self.min_lr = _num("min_lr", min_lr, 0.0)
        self.max_lr = _num("max_lr", max_lr, 0.0)
        if self.max_lr < self.min_lr:
            raise ValueError(f"max_lr ({max_lr}) must be >= min_lr ({min_lr})")
        self.min_momentum = _num("min_momentum", min_momentum, 0.0, 1.0)
        self.max_momentum = _num("max_momentum", max_momentum, 0.0, 1.0)
        if self.max_momentum < self.min_momentum:
            raise ValueError(f"max_momentum ({max_momentum}) must be >= min_momentum ({min_momentum})")
        self.ema = _num("ema", ema, 0.0, 1.0)
        if self.ema == 1.0:
            raise ValueError("ema must be < 1 (ema=1 would never use a new estimate)")
        self.rel_threshold = _num("rel_threshold", rel_threshold, 0.0, 1.0, lo_open=True)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.policy = policy
        self.interval = interval
        self.k = k
        self.reorth = bool(reorth)
        self.seed = int(seed)
        self.batches = batches
        n_groups = len(optimizer.param_groups)
        if groups is None:
            groups = list(range(n_groups))
        groups = list(groups)
        for gi in groups:
            if not isinstance(gi, int) or not 0 <= gi < n_groups:
                raise ValueError(f"groups has {gi!r}; the optimizer has {n_groups} param group(s)")
        self.groups = groups
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        self.params = list(params)
        if not self.params:
            raise ValueError("no parameters with requires_grad to take the Hessian with respect to")
        if policy in ("heavy_ball", "ssgdmn"):
            for gi in groups:
                g = optimizer.param_groups[gi]
                if "momentum" not in g and "betas" not in g:
                    raise ValueError(f"policy {policy!r} sets a momentum, but param group {gi} of "
                                     f"{type(optimizer).__name__} has neither 'momentum' nor 'betas'")
        self.num_calls = 0
        self.num_estimates = 0
        self._L = None
        self._mu = None
        self.last: Optional[dict] = None
        self.history: list = []

    # -- estimation -----------------------------------------------------------------------------
    def _operator(self):
        return HessianOperator(self.loss_fn, self.params, batches=self.batches)

    def _spectrum(self):
        op = self._operator()
        gen = torch.Generator().manual_seed(self.seed * 1000003 + self.num_estimates)
        res = lanczos(op, self.k, reorth=self.reorth, generator=gen)
        op.release()
        ritz = res.ritz_values
        L = float(ritz.abs().max())
        above = ritz[ritz > self.rel_threshold * L]
        mu = float(above.min()) if above.numel() else self.rel_threshold * L
        mu = max(mu, self.rel_threshold * L)
        return L, mu, ritz, res.weights, op.num_hvps

    def _rayleigh(self):
        op = self._operator()
        g = op.gradient()
        gg = float(torch.dot(g.double(), g.double()))
        if gg == 0.0:
            op.release()
            return None, None, 1
        gHg = float(torch.dot(op.matvec(g).double(), g.double()))
        op.release()
        return gHg / gg, gHg, op.num_hvps

    def _smooth(self, old, new):
        if old is None or self.ema == 0.0:
            return new
        return self.ema * old + (1.0 - self.ema) * new

    def estimate(self) -> dict:
        """Estimate the curvature now, write lr (and momentum) into the param groups, return the record."""
        rec = {"step": self.num_calls, "ritz_values": None, "weights": None, "momentum": None}
        momentum = None
        if self.policy == "line_search":
            c, gHg, nh = self._rayleigh()
            rec.update(L=c, mu=None, num_hvps=nh)
            if c is None or c <= 0:  # zero gradient or non-positive curvature along it: keep lr
                rec.update(L_smooth=self._L, mu_smooth=None, lr=None)
                return self._finish(rec, None, None)
            self._L = self._smooth(self._L, c)
            lr = 1.0 / self._L
            rec.update(L_smooth=self._L, mu_smooth=None)
        else:
            L, mu, ritz, weights, nh = self._spectrum()
            rec.update(L=L, mu=mu, ritz_values=ritz, weights=weights, num_hvps=nh)
            if L == 0.0:  # a flat loss: nothing to learn from
                rec.update(L_smooth=self._L, mu_smooth=self._mu, lr=None)
                return self._finish(rec, None, None)
            self._L = self._smooth(self._L, L)
            self._mu = min(self._smooth(self._mu, mu), self._L)
            rec.update(L_smooth=self._L, mu_smooth=self._mu)
            lr, momentum = self._policy(self._L, self._mu, ritz)
        lr = min(max(self.safety * lr, self.min_lr), self.max_lr)
        if momentum is not None:
            momentum = min(max(momentum, self.min_momentum), self.max_momentum)
        return self._finish(rec, lr, momentum)

    def _policy(self, L, mu, ritz):
        if callable(self.policy):
            out = self.policy(L, mu, ritz)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("a callable policy must return (lr, momentum or None)")
            lr, m = out
            lr = _num("policy lr", lr, 0.0, lo_open=True)
            return lr, (None if m is None else _num("policy momentum", m, 0.0, 1.0))
        if self.policy == "gd":
            return 2.0 / (L + mu), None
        sL, smu = math.sqrt(L), math.sqrt(mu)
        if self.policy == "heavy_ball":
            return 4.0 / (sL + smu) ** 2, ((sL - smu) / (sL + smu)) ** 2
        # ssgdmn
        a = smu / sL
        return a, (1.0 - a) / (1.0 + a)

    def _finish(self, rec, lr, momentum):
        rec["lr"] = lr
        rec["momentum"] = momentum
        if lr is not None:
            for gi in self.groups:
                g = self.optimizer.param_groups[gi]
                if isinstance(g["lr"], Tensor):
                    g["lr"].fill_(lr)  # keep the tensor (no recompiles of a compiled step)
                else:
                    g["lr"] = lr
                if momentum is not None:
                    if "momentum" in g:
                        g["momentum"] = momentum
                    else:
                        b = g["betas"]
                        g["betas"] = (momentum, b[1]) + tuple(b[2:])
        self.num_estimates += 1
        self.last = rec
        self.history.append(rec)
        return rec

    def step(self) -> Optional[dict]:
        """Call once per optimizer step; estimates on calls 0, interval, 2*interval, ..."""
        rec = None
        if self.num_calls % self.interval == 0:
            rec = self.estimate()
        self.num_calls += 1
        return rec

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"num_calls": self.num_calls, "num_estimates": self.num_estimates, "L": self._L, "mu": self._mu}

    def load_state_dict(self, state: dict) -> None:
        missing = {"num_calls", "num_estimates", "L", "mu"} - set(state)
        if missing:
            raise KeyError(f"LanczosLR state_dict lacks {sorted(missing)}")
        self.num_calls = int(state["num_calls"])
        self.num_estimates = int(state["num_estimates"])
        self._L = state["L"]
        self._mu = state["mu"]
