"""Curvature tools built on Hessian-vector products (pure PyTorch autograd, any device).

* :class:`HessianOperator` -- ``v -> H v`` for the Hessian of a loss with respect to a list of
  parameters, by double backprop (Pearlmutter's trick), on flat vectors. The loss may be one closure
  (one fixed batch) or a closure applied to several batches (their HVPs are averaged).
* :func:`hvp` -- one Hessian-vector product on tensors shaped like the parameters.
* :func:`lanczos` -- k steps of Lanczos (optionally with full re-orthogonalisation) on any symmetric
  operator; returns the tridiagonal matrix, its Ritz values, the Gauss-quadrature weights and,
  on request, the Ritz vectors.
* :func:`slq_density` -- stochastic Lanczos quadrature: a Gaussian-broadened spectral density on a
  grid, averaged over several random probes.
* :func:`hutchinson_diagonal` -- ``E[z * H z]`` over Rademacher probes ``z`` (or the exact diagonal
  with the unit basis vectors as probes).
* :func:`r_med` -- the per-layer ``max/median`` statistic of the Hessian diagonal (docs/algorithms.md §22;
  see its docstring for the definition we chose, since the paper's exact one is not confirmed).

Everything works on flattened vectors of length ``n = sum(p.numel())``; ``HessianOperator.split``
maps a flat vector back to tensors shaped like the parameters. Lanczos' scalars (the tridiagonal
matrix) are kept in float64 whatever the parameter dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "HessianOperator",
    "hvp",
    "lanczos",
    "LanczosResult",
    "slq_density",
    "SpectralDensity",
    "hutchinson_diagonal",
    "r_med",
]


def _as_param_list(params, what="params") -> list:
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params:
        raise ValueError(f"{what} is empty: give at least one tensor to differentiate with respect to")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{what}[{i}] is a {type(p).__name__}, not a Tensor")
        if not p.requires_grad:
            raise ValueError(f"{what}[{i}] (shape {tuple(p.shape)}) does not require grad; "
                             "the Hessian needs tensors with requires_grad=True")
        if p.is_complex():
            raise ValueError(f"{what}[{i}] is complex; only real parameters are supported")
    return params


def _check_loss(loss, where="loss_fn()") -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"{where} returned a {type(loss).__name__}; it must return a scalar Tensor")
    if loss.numel() != 1:
        raise ValueError(f"{where} returned a tensor of shape {tuple(loss.shape)}; it must be a scalar "
                         "(reduce the batch, e.g. with .mean())")
    if not loss.requires_grad:
        raise ValueError(f"{where} returned a loss that does not depend on the parameters (no grad_fn)")
    return loss.reshape(())


class HessianOperator:
    """The Hessian of a scalar loss with respect to ``params`` as a linear operator on flat vectors.

    Args:
        loss_fn: a closure. With ``batches=None`` it is called with no argument and returns the
            scalar loss (on one fixed batch). With ``batches`` it is called as ``loss_fn(batch)`` for
            each batch and the HVPs are averaged (each batch weighted equally), so large curvature
            batches can be processed in pieces.
        params: the tensors the Hessian is taken with respect to (all with ``requires_grad``).
        batches: optional sequence of batches (anything ``loss_fn`` accepts).
        cache_graph: with a single closure, keep the first-order gradient's graph alive between
            products (one backward per HVP instead of a forward and two backwards). Set False to
            save memory; ignored with ``batches``.

    ``op(v)`` / ``op.matvec(v)``: ``H v`` for a flat vector ``v`` of length ``op.n`` (it is cast to
    the parameters' dtype and device). ``op.gradient()`` returns the flat gradient. The parameters
    must not change while the operator is in use (the cached graph would be stale): build a new one
    after an optimizer step.
    """

    def __init__(self, loss_fn: Callable, params, batches: Optional[Sequence] = None,
                 cache_graph: bool = True):
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.params = _as_param_list(params)
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"params must share one dtype and one device; got dtypes {sorted(map(str, dtypes))} "
                             f"and devices {sorted(map(str, devices))}")
        self.dtype = self.params[0].dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"params must be floating point, got {self.dtype}")
        self.device = self.params[0].device
        self.loss_fn = loss_fn
        if batches is not None:
            batches = list(batches)
            if not batches:
                raise ValueError("batches is empty: give at least one batch or pass batches=None")
        self.batches = batches
        self.cache_graph = bool(cache_graph) and batches is None
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.n = int(sum(self.numels))
        self.num_hvps = 0
        self._grads = None  # cached first-order grads (with graph)

    # -- flat <-> per-param ---------------------------------------------------------------------
    def split(self, flat: Tensor) -> list:
        """A flat vector of length n as a list of tensors shaped like the parameters (views)."""
        if flat.numel() != self.n:
            raise ValueError(f"vector has {flat.numel()} elements, the operator has n={self.n}")
        return [c.view(s) for c, s in zip(flat.reshape(-1).split(self.numels), self.shapes)]

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        tensors = list(tensors)
        if len(tensors) != len(self.params):
            raise ValueError(f"got {len(tensors)} tensors, expected one per param ({len(self.params)})")
        out = []
        for i, (t, p) in enumerate(zip(tensors, self.params)):
            if t is None:
                t = torch.zeros_like(p)
            if t.shape != p.shape:
                raise ValueError(f"tensor {i} has shape {tuple(t.shape)}, param {i} has {tuple(p.shape)}")
            out.append(t.reshape(-1))
        return torch.cat(out)

    # -- products -------------------------------------------------------------------------------
    def _grads_of(self, loss) -> list:
        gs = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, self.params)]

    def _hvp_from_grads(self, grads, vs, retain) -> list:
        dot = sum((g * v).sum() for g, v in zip(grads, vs) if g.requires_grad)
        if not isinstance(dot, Tensor) or not dot.requires_grad:  # loss linear in every param
            return [torch.zeros_like(p) for p in self.params]
        hs = torch.autograd.grad(dot, self.params, retain_graph=retain, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h for h, p in zip(hs, self.params)]

    def _loss(self, batch=None):
        if self.batches is None:
            return _check_loss(self.loss_fn(), "loss_fn()")
        return _check_loss(self.loss_fn(batch), "loss_fn(batch)")

    def matvec(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a Tensor, got {type(v).__name__}")
        if v.numel() != self.n:
            raise ValueError(f"v has {v.numel()} elements, the Hessian is {self.n} x {self.n}")
        vs = [t.detach() for t in self.split(v.detach().to(self.device, self.dtype))]
        self.num_hvps += 1
        with torch.enable_grad():
            if self.batches is None:
                if self.cache_graph:
                    if self._grads is None:
                        self._grads = self._grads_of(self._loss())
                    hs = self._hvp_from_grads(self._grads, vs, retain=True)
                else:
                    hs = self._hvp_from_grads(self._grads_of(self._loss()), vs, retain=False)
                return self.flatten(hs).detach()
            total = None
            for b in self.batches:
                h = self.flatten(self._hvp_from_grads(self._grads_of(self._loss(b)), vs, retain=False))
                total = h if total is None else total + h
            return (total / len(self.batches)).detach()

    __call__ = matvec

    def gradient(self) -> Tensor:
        """The flat gradient of the loss (averaged over batches when there are several)."""
        with torch.enable_grad():
            if self.batches is None:
                if self.cache_graph:
                    if self._grads is None:
                        self._grads = self._grads_of(self._loss())
                    return self.flatten(self._grads).detach()
                return self.flatten(self._grads_of(self._loss())).detach()
            total = None
            for b in self.batches:
                g = self.flatten(self._grads_of(self._loss(b))).detach()
                total = g if total is None else total + g
            return total / len(self.batches)

    def release(self) -> None:
        """Drop the cached gradient graph (frees the activations it holds)."""
        self._grads = None


def hvp(loss_fn: Callable, params, vectors: Sequence[Tensor]) -> list:
    """One Hessian-vector product: ``H v`` for ``v`` given as tensors shaped like ``params``.

    ``loss_fn()`` returns the scalar loss. Returns a list of tensors shaped like ``params``.
    """
    op = HessianOperator(loss_fn, params, cache_graph=False)
    return op.split(op.matvec(op.flatten(vectors)))


# ---------------------------------------------------------------------------------------------
# Lanczos
# ---------------------------------------------------------------------------------------------

def _as_matvec(op) -> tuple:
    """(matvec, n, dtype, device) for a HessianOperator, a symmetric matrix or (callable, n)."""
    if isinstance(op, HessianOperator):
        return op.matvec, op.n, op.dtype, op.device
    if isinstance(op, Tensor):
        if op.dim() != 2 or op.shape[0] != op.shape[1]:
            raise ValueError(f"a matrix operator must be square, got shape {tuple(op.shape)}")
        if not op.dtype.is_floating_point:
            raise ValueError(f"a matrix operator must be floating point, got {op.dtype}")
        mat = op.detach()
        return (lambda v: mat @ v), mat.shape[0], mat.dtype, mat.device
    if isinstance(op, tuple) and len(op) == 2 and callable(op[0]):
        n = int(op[1])
        if n < 1:
            raise ValueError(f"operator size must be >= 1, got {n}")
        return op[0], n, torch.float64, torch.device("cpu")
    raise TypeError("op must be a HessianOperator, a square matrix Tensor, or a (matvec, n) tuple; "
                    f"got {type(op).__name__}")


@dataclass
class LanczosResult:
    """What :func:`lanczos` returns.

    ritz_values: eigenvalues of T (ascending, float64), the Ritz values.
    weights: squared first components of T's eigenvectors (sum to 1): the Gauss-quadrature weights of
        the spectral measure of the start vector (what SLQ uses).
    T: the m x m tridiagonal matrix (float64); ``alpha`` its diagonal, ``beta`` its off-diagonal.
    ritz_vectors: (m, n) Ritz vectors (rows, unit norm) if requested, else None.
    steps: m, the number of Lanczos steps taken (< k on an invariant-subspace breakdown).
    num_matvecs: operator applications used.
    """
    ritz_values: Tensor
    weights: Tensor
    T: Tensor
    alpha: Tensor
    beta: Tensor
    ritz_vectors: Optional[Tensor]
    steps: int
    num_matvecs: int


def _random_unit(n, dtype, device, generator, kind="rademacher") -> Tensor:
    if kind == "rademacher":
        v = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).to(dtype) * 2 - 1
    elif kind == "gaussian":
        v = torch.randn(n, generator=generator, dtype=torch.float64).to(dtype)
    else:
        raise ValueError(f"probe kind must be 'rademacher' or 'gaussian', got {kind!r}")
    v = v.to(device)
    return v / v.norm()


def lanczos(op, k: int, *, v0: Optional[Tensor] = None, reorth: bool = True,
            generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
            return_vectors: bool = False, tol: float = 1e-10) -> LanczosResult:
    """k steps of the symmetric Lanczos process on ``op``.

    Args:
        op: a :class:`HessianOperator`, a symmetric matrix (Tensor), or ``(matvec, n)``.
        k: number of steps (Krylov dimension), ``1 <= k``; capped at n.
        v0: start vector (length n, any non-zero norm); default a random Rademacher vector from
            ``generator`` (or ``seed``), normalised.
        reorth: full re-orthogonalisation of each new Lanczos vector against all previous ones
            (two passes of classical Gram-Schmidt). Costs k stored vectors, which are kept anyway
            when ``return_vectors`` is set. Without it only the last two vectors are kept and the
            Ritz values can contain spurious copies ("ghosts") once eigenvalues converge.
        return_vectors: also return the Ritz vectors ``Q^T s_j`` (needs the stored basis, so it
            implies storing the basis even with ``reorth=False``).
        tol: the process stops early when ``beta_j <= tol * max(1, |alpha|max)`` (an invariant
            subspace was found; the Ritz values are then exact eigenvalues).

    Vectors are kept in the operator's dtype; the recurrence scalars in float64.
    """
    matvec, n, dtype, device = _as_matvec(op)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    k = min(k, n)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    if v0 is None:
        q = _random_unit(n, dtype, device, generator)
    else:
        if not isinstance(v0, Tensor) or v0.numel() != n:
            raise ValueError(f"v0 must be a Tensor with n={n} elements")
        q = v0.detach().reshape(-1).to(device=device, dtype=dtype).clone()
        nrm = q.norm()
        if not torch.isfinite(nrm) or nrm == 0:
            raise ValueError("v0 must be finite and non-zero")
        q = q / nrm
    store = reorth or return_vectors
    basis = [q] if store else None
    alphas, betas = [], []
    q_prev = torch.zeros_like(q)
    beta_prev = 0.0
    num_mv = 0
    for j in range(k):
        w = matvec(q).reshape(-1).to(dtype)
        num_mv += 1
        if not torch.isfinite(w).all():
            raise FloatingPointError(f"the operator returned non-finite values at Lanczos step {j}")
        a = float(torch.dot(w.double(), q.double()))
        alphas.append(a)
        w = w - a * q - beta_prev * q_prev
        if reorth:
            Q = torch.stack(basis)
            for _ in range(2):
                w = w - Q.t() @ (Q @ w)
        b = float(w.double().norm())
        if j == k - 1:
            break
        scale = max(1.0, max(abs(x) for x in alphas))
        if b <= tol * scale:
            break
        betas.append(b)
        q_prev, q = q, w / b
        beta_prev = b
        if store:
            basis.append(q)
    m = len(alphas)
    alpha_t = torch.tensor(alphas, dtype=torch.float64)
    beta_t = torch.tensor(betas[: m - 1], dtype=torch.float64)
    T = torch.diag(alpha_t)
    if m > 1:
        T = T + torch.diag(beta_t, 1) + torch.diag(beta_t, -1)
    evals, evecs = torch.linalg.eigh(T)
    weights = evecs[0, :] ** 2
    ritz_vectors = None
    if return_vectors:
        Q = torch.stack(basis[:m]).to(torch.float64)
        ritz_vectors = (evecs.t().to(Q.device) @ Q).to(dtype)
    return LanczosResult(evals, weights, T, alpha_t, beta_t, ritz_vectors, m, num_mv)


# ---------------------------------------------------------------------------------------------
# Stochastic Lanczos quadrature
# ---------------------------------------------------------------------------------------------

@dataclass
class SpectralDensity:
    """What :func:`slq_density` returns.

    grid: the evaluation points (float64); density: the broadened density on the grid, averaged
    over probes (integrates to ~1 when the grid covers the nodes by several sigma); nodes, weights:
    (num_probes, m) Ritz values and quadrature weights of each probe (rows of a probe that broke
    down early are padded with weight 0); sigma: the Gaussian width used.
    """
    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float

    def moment(self, p: int) -> float:
        """The p-th moment of the (unbroadened) quadrature measure, averaged over probes:
        an estimate of ``trace(H^p)/n``."""
        return float(((self.nodes ** p) * self.weights).sum(dim=1).mean())


def slq_density(op, k: int = 30, num_probes: int = 4, *, grid: Optional[Tensor] = None,
                num_grid: int = 1000, sigma: Optional[float] = None, reorth: bool = True,
                generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                pad: float = 0.05) -> SpectralDensity:
    """Spectral density of ``op`` by stochastic Lanczos quadrature.

    For each of ``num_probes`` random unit Rademacher vectors v, k Lanczos steps give nodes
    ``theta_j`` (Ritz values) and weights ``w_j`` (squared first components of T's eigenvectors) with
    ``sum_j w_j f(theta_j) ~= v^T f(H) v`` (exact for polynomials of degree < 2k). The density is
    ``phi(x) = mean_probes sum_j w_j N(x; theta_j, sigma^2)``. Since ``E[v^T f(H) v] = trace(f(H))/n``
    for such probes, ``phi`` estimates the eigenvalue density normalised to integrate to 1.

    ``grid``: evaluation points; default ``num_grid`` points spanning [min node, max node] widened by
    ``pad`` of the range plus 5 sigma on each side. ``sigma``: default 1% of the node range (or 1e-3 if
    the range is 0).
    """
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be an int >= 1, got {num_probes!r}")
    if sigma is not None and not (sigma > 0):
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    _, n, dtype, device = _as_matvec(op)
    runs = []
    for _ in range(num_probes):
        v = _random_unit(n, dtype, device, generator)
        runs.append(lanczos(op, k, v0=v, reorth=reorth))
    m = max(r.steps for r in runs)
    nodes = torch.zeros(num_probes, m, dtype=torch.float64)
    weights = torch.zeros(num_probes, m, dtype=torch.float64)
    for i, r in enumerate(runs):
        nodes[i, : r.steps] = r.ritz_values
        weights[i, : r.steps] = r.weights
        if r.steps < m:  # padding: weight 0, placed on an existing node so it does not widen the grid
            nodes[i, r.steps:] = r.ritz_values[-1]
    lo, hi = float(nodes.min()), float(nodes.max())
    span = hi - lo
    if sigma is None:
        sigma = 0.01 * span if span > 0 else 1e-3 * max(1.0, abs(hi))
    if grid is None:
        margin = pad * span + 5 * sigma
        grid = torch.linspace(lo - margin, hi + margin, int(num_grid), dtype=torch.float64)
    else:
        grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    diff = grid[:, None, None] - nodes[None]  # (G, P, m)
    gauss = torch.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (gauss * weights[None]).sum(dim=2).mean(dim=1)
    return SpectralDensity(grid, density, nodes, weights, float(sigma))


# ---------------------------------------------------------------------------------------------
# Hutchinson diagonal
# ---------------------------------------------------------------------------------------------

def hutchinson_diagonal(op, num_probes: int = 100, *, probes: str = "rademacher",
                        generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                        return_std: bool = False):
    """Estimate ``diag(H)`` as the mean over probes of ``z * (H z)``.

    ``probes="rademacher"``: ``num_probes`` vectors with independent +-1 entries; the estimate is
    unbiased and the variance of entry i over one probe is ``sum_{j != i} H_ij^2``.
    ``probes="basis"``: the n unit basis vectors (``num_probes`` is ignored, n products): the exact
    diagonal, for small problems and tests.

    Returns a flat tensor of length n (use ``HessianOperator.split`` for per-parameter shapes); with
    ``return_std`` also the standard error of each entry (zeros for ``"basis"``).
    """
    matvec, n, dtype, device = _as_matvec(op)
    if probes == "basis":
        diag = torch.empty(n, dtype=dtype, device=device)
        e = torch.zeros(n, dtype=dtype, device=device)
        for i in range(n):
            e[i] = 1
            diag[i] = matvec(e).reshape(-1)[i]
            e[i] = 0
        return (diag, torch.zeros_like(diag)) if return_std else diag
    if probes != "rademacher":
        raise ValueError(f"probes must be 'rademacher' or 'basis', got {probes!r}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be an int >= 1, got {num_probes!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    s1 = torch.zeros(n, dtype=torch.float64)
    s2 = torch.zeros(n, dtype=torch.float64)
    for _ in range(num_probes):
        z = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(dtype)
        est = (z.to(device) * matvec(z.to(device)).reshape(-1)).double().cpu()
        s1 += est
        s2 += est * est
    mean = s1 / num_probes
    if not return_std:
        return mean.to(device=device, dtype=dtype)
    var = (s2 / num_probes - mean * mean).clamp_min(0) * num_probes / max(1, num_probes - 1)
    std = (var / num_probes).sqrt()
    return mean.to(device=device, dtype=dtype), std.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# R_med
# ---------------------------------------------------------------------------------------------

def _resolve_layers(model: nn.Module, layers) -> list:
    """[(name, [params])] for the layers asked for (default: every module owning parameters)."""
    named = dict(model.named_modules())
    out = []
    if layers is None:
        for name, mod in model.named_modules():
            ps = [p for p in mod.parameters(recurse=False) if p.requires_grad]
            if ps:
                out.append((name or type(mod).__name__, ps))
        if not out:
            raise ValueError("the model has no trainable parameters")
        return out
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    ids = {id(m): n for n, m in named.items()}
    for i, layer in enumerate(layers):
        if isinstance(layer, str):
            if layer not in named:
                raise ValueError(f"layers[{i}]={layer!r} is not a submodule name of the model "
                                 f"(known: {[n for n in named if n][:20]})")
            name, mod = layer, named[layer]
        elif isinstance(layer, nn.Module):
            if id(layer) not in ids:
                raise ValueError(f"layers[{i}] ({type(layer).__name__}) is not a submodule of the model")
            name, mod = ids[id(layer)] or type(layer).__name__, layer
        else:
            raise TypeError(f"layers[{i}] must be a module name or an nn.Module, got {type(layer).__name__}")
        ps = [p for p in mod.parameters() if p.requires_grad]
        if not ps:
            raise ValueError(f"layer {name!r} has no trainable parameters")
        out.append((name, ps))
    seen = set()
    for name, ps in out:
        for p in ps:
            if id(p) in seen:
                raise ValueError(f"layer {name!r} shares parameters with another listed layer")
            seen.add(id(p))
    return out


def r_med(model: nn.Module, loss_fn: Callable, batch, layers=None, *, mode: str = "hutchinson",
          num_probes: int = 100, seed: int = 0, return_diagonals: bool = False) -> dict:
    """Per-layer ``R = max_i |D_i| / median_i |D_i|`` of the Hessian diagonal D (docs/algorithms.md §22).

    Definition used (the paper's exact definition could not be confirmed, §26): for each layer, D is
    the diagonal of the Hessian of the batch loss with respect to that layer's parameters (all of
    its tensors, weight and bias together, flattened); R is the largest absolute entry divided by the
    median absolute entry (``torch.median``: the lower middle value for an even count). Absolute
    values because the diagonal of a Hessian away from a minimum (and any Hutchinson estimate) can
    have negative entries. ``R_med`` is the median of the per-layer R over layers. A layer whose
    median |D| is 0 gets R = inf.

    Args:
        model: the network; the Hessian is taken at its current parameters.
        loss_fn: criterion called as ``loss_fn(model(inputs), targets)``.
        batch: ``(inputs, targets)``: the fixed batch the Hessian is taken on.
        layers: module names or modules to evaluate; default every module that owns trainable
            parameters directly (its own ``parameters(recurse=False)``).
        mode: ``"hutchinson"`` (``num_probes`` Rademacher probes over all listed layers at once, so
            the cost is ``num_probes`` HVPs) or ``"exact"`` (unit basis probes: one HVP per parameter).
        seed: seeds the probes.

    Returns a dict ``{"per_layer": {name: R}, "r_med": median R, "num_hvps": int}`` (plus
    ``"diagonals": {name: flat |D|}`` with ``return_diagonals``). The model is put in eval mode for
    the evaluation (no dropout; BatchNorm uses running statistics) and restored afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(outputs, targets)")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError("batch must be a pair (inputs, targets)")
    if mode not in ("hutchinson", "exact"):
        raise ValueError(f"mode must be 'hutchinson' or 'exact', got {mode!r}")
    chosen = _resolve_layers(model, layers)
    params = [p for _, ps in chosen for p in ps]
    x, y = batch
    was_training = model.training
    model.eval()
    try:
        op = HessianOperator(lambda: loss_fn(model(x), y), params)
        if mode == "exact":
            diag = hutchinson_diagonal(op, probes="basis")
        else:
            diag = hutchinson_diagonal(op, num_probes, generator=torch.Generator().manual_seed(int(seed)))
        op.release()
    finally:
        model.train(was_training)
    diag = diag.detach().abs().double().cpu()
    per_layer, diags = {}, {}
    start = 0
    for name, ps in chosen:
        cnt = sum(p.numel() for p in ps)
        d = diag[start:start + cnt]
        start += cnt
        med = float(d.median())
        per_layer[name] = float(d.max()) / med if med > 0 else math.inf
        diags[name] = d
    vals = torch.tensor(list(per_layer.values()), dtype=torch.float64)
    out = {"per_layer": per_layer, "r_med": float(vals.median()), "num_hvps": op.num_hvps}
    if return_diagonals:
        out["diagonals"] = diags
    return out
