"""Float64 references written from the equations (docs/algorithms.md §3-5), one param at a time.

Each takes float64 tensors p, g and a dict of float64 states, the 1-based step t,
and the hyperparameters; it updates p and the states in place. Independent of
torch.optim's code: only the equations.
"""
from __future__ import annotations

import math

import torch


def adam(p, g, st, t, *, lr, betas, eps, weight_decay, amsgrad=False, maximize=False,
         decoupled_weight_decay=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    if weight_decay:
        if decoupled_weight_decay:
            p.mul_(1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    st["exp_avg"].copy_(b1 * st["exp_avg"] + (1 - b1) * g)
    st["exp_avg_sq"].copy_(b2 * st["exp_avg_sq"] + (1 - b2) * g * g)
    v = st["exp_avg_sq"]
    if amsgrad:
        st["max_exp_avg_sq"].copy_(torch.maximum(st["max_exp_avg_sq"], v))
        v = st["max_exp_avg_sq"]
    m_hat = st["exp_avg"] / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def adamw(p, g, st, t, *, lr, betas, eps, weight_decay, amsgrad=False, maximize=False):
    adam(p, g, st, t, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
         decoupled_weight_decay=True)


def adamax(p, g, st, t, *, lr, betas, eps, weight_decay, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    if weight_decay:
        g = g + weight_decay * p
    st["exp_avg"].copy_(b1 * st["exp_avg"] + (1 - b1) * g)
    st["exp_inf"].copy_(torch.maximum(b2 * st["exp_inf"], g.abs() + eps))
    p.sub_(lr / (1 - b1 ** t) * st["exp_avg"] / st["exp_inf"])


def radam(p, g, st, t, *, lr, betas, eps, weight_decay, maximize=False, decoupled_weight_decay=False,
          variant="torch", degenerated_to_sgd=False):
    """docs/algorithms.md §6: rho_t = rho_inf - 2 t b2^t / (1 - b2^t); torch rectifies when rho_t > 5,
    the official code when rho_t >= 5 (and then skips the whole update, decay included, unless
    degenerated_to_sgd)."""
    b1, b2 = betas
    g = -g if maximize else g.clone()
    official = variant == "official"
    if weight_decay and not official:
        if decoupled_weight_decay:
            p.mul_(1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    st["exp_avg"].copy_(b1 * st["exp_avg"] + (1 - b1) * g)
    st["exp_avg_sq"].copy_(b2 * st["exp_avg_sq"] + (1 - b2) * g * g)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / bc2
    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) if rho > 4 else 0.0
    rectified = rho >= 5 if official else rho > 5
    if rectified:
        update = lr * r * math.sqrt(bc2) / bc1 * m / (v.sqrt() + eps)
    elif official and not degenerated_to_sgd:
        return  # the official code leaves the param (and its weight decay) alone
    else:
        update = lr / bc1 * m
    if official and weight_decay:
        p.mul_(1 - lr * weight_decay)
    p.sub_(update)


def nadam(p, g, st, t, *, lr, betas, eps, weight_decay, momentum_decay=4e-3, maximize=False,
          decoupled_weight_decay=False):
    """NAdam with torch's momentum schedule mu_t = b1 (1 - 0.5 * 0.96^(t psi)); the running product
    of mu lives in st['mu_product'] (a float64 scalar here)."""
    b1, b2 = betas
    g = -g if maximize else g.clone()
    if weight_decay:
        if decoupled_weight_decay:
            p.mul_(1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    # torch (and fusedopt) keep mu_product as a float32 scalar: the product is rounded to float32
    # each step (fp32 * fp32), the rest of the math is in float64 here
    st["mu_product"] = torch.tensor(st.get("mu_product", 1.0), dtype=torch.float32).mul(
        torch.tensor(mu, dtype=torch.float32)).item()
    st["exp_avg"].copy_(b1 * st["exp_avg"] + (1 - b1) * g)
    st["exp_avg_sq"].copy_(b2 * st["exp_avg_sq"] + (1 - b2) * g * g)
    denom = (st["exp_avg_sq"] / (1 - b2 ** t)).sqrt() + eps
    p.sub_(lr * (1 - mu) / (1 - st["mu_product"]) * g / denom)
    p.sub_(lr * mu_next / (1 - st["mu_product"] * mu_next) * st["exp_avg"] / denom)


def sgd(p, g, st, t, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    """SGD (torch.optim.SGD): L2; buffer = g at its first step, then mom*buf + (1-damp)*g; Nesterov g + mom*buf."""
    g = -g if maximize else g.clone()
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        buf = st["momentum_buffer"]
        buf.copy_(g if t == 1 else momentum * buf + (1 - dampening) * g)
        g = g + momentum * buf if nesterov else buf.clone()
    p.sub_(lr * g)


def rmsprop(p, g, st, t, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    """RMSprop (torch.optim.RMSprop): v = a v + (1-a) g^2; centered: subtract the square of the EMA of g;
    eps added after the sqrt; optional heavy-ball buffer of g/avg."""
    g = -g if maximize else g.clone()
    if weight_decay:
        g = g + weight_decay * p
    v = st["square_avg"]
    v.copy_(alpha * v + (1 - alpha) * g * g)
    if centered:
        ga = st["grad_avg"]
        ga.copy_(alpha * ga + (1 - alpha) * g)
        avg = (v - ga * ga).sqrt() + eps
    else:
        avg = v.sqrt() + eps
    if momentum > 0:
        buf = st["momentum_buffer"]
        buf.copy_(momentum * buf + g / avg)
        p.sub_(lr * buf)
    else:
        p.sub_(lr * g / avg)


def adagrad(p, g, st, t, *, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
            maximize=False):
    """Adagrad (Duchi et al.; torch.optim.Adagrad): sum starts at initial_accumulator_value (the harness
    hands zero states: the initial value is set at t == 1), lr / (1 + (t-1) lr_decay), eps after the sqrt."""
    g = -g if maximize else g.clone()
    if weight_decay:
        g = g + weight_decay * p
    s = st["sum"]
    if t == 1:
        s.fill_(initial_accumulator_value)
    s.add_(g * g)
    clr = lr / (1 + (t - 1) * lr_decay)
    p.sub_(clr * g / (s.sqrt() + eps))


def adadelta(p, g, st, t, *, lr, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    """Adadelta (Zeiler 2012, torch.optim.Adadelta): delta = RMS[dx]_{t-1} / RMS[g]_t * g, eps inside both
    roots; the step is scaled by lr (1.0 = the paper)."""
    g = -g if maximize else g.clone()
    if weight_decay:
        g = g + weight_decay * p
    v, u = st["square_avg"], st["acc_delta"]
    v.copy_(rho * v + (1 - rho) * g * g)
    delta = (u + eps).sqrt() / (v + eps).sqrt() * g
    u.copy_(rho * u + (1 - rho) * delta * delta)
    p.sub_(lr * delta)

# ---- AdaBelief / ACProp / diffGrad / Padam / generalized signSGD (docs/algorithms.md §7-10, §18) ----

def _rect(b1, b2, t):
    """RAdam rectification as in adabelief-pytorch: (rectified?, r_t*sqrt(1-b2^t)/(1-b1^t))."""
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho < 5:
        return False, 0.0
    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return True, r * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)


def _belief_decay(p, g, lr, weight_decay, weight_decouple, fixed_decay):
    if weight_decouple:
        p.mul_(1 - (weight_decay if fixed_decay else lr * weight_decay))
        return g
    return g + weight_decay * p


def adabelief(p, g, st, t, *, lr, betas, eps, weight_decay, amsgrad=False, weight_decouple=True,
              fixed_decay=False, rectify=True, degenerated_to_sgd=True, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    g = _belief_decay(p, g, lr, weight_decay, weight_decouple, fixed_decay)
    m = b1 * st["exp_avg"] + (1 - b1) * g
    s = b2 * st["exp_avg_var"] + (1 - b2) * (g - m) ** 2 + eps  # eps enters the stored state
    st["exp_avg"].copy_(m)
    st["exp_avg_var"].copy_(s)
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    if amsgrad:
        st["max_exp_avg_var"].copy_(torch.maximum(st["max_exp_avg_var"], s))
    if not rectify:
        sd = st["max_exp_avg_var"] if amsgrad else s
        p.sub_(lr / bc1 * m / (sd.sqrt() / math.sqrt(bc2) + eps))
        return
    ok, k = _rect(b1, b2, t)
    if ok:
        p.sub_(lr * k * m / (s.sqrt() + eps))
    elif degenerated_to_sgd:
        p.sub_(lr / bc1 * m)


def acprop(p, g, st, t, *, lr, betas, eps, weight_decay, amsgrad=False, weight_decouple=True,
           fixed_decay=False, rectify=True, degenerated_to_sgd=True, momentum_update=False, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    g = _belief_decay(p, g, lr, weight_decay, weight_decouple, fixed_decay)
    m = b1 * st["exp_avg"] + (1 - b1) * g
    st["exp_avg"].copy_(m)
    bc1 = 1 - b1 ** t
    s = st["exp_avg_var"]
    if t == 1:
        p.sub_(lr * m / bc1)  # SGD first step: s_0 = 0 carries no information
    else:
        s.add_(eps)  # s_{t-1} + eps, stored
        if amsgrad:
            st["max_exp_avg_var"].copy_(torch.maximum(st["max_exp_avg_var"], s))
        if not rectify:
            sd = st["max_exp_avg_var"] if amsgrad else s
            num = m / bc1 if momentum_update else g
            p.sub_(lr * num / (sd.sqrt() / math.sqrt(1 - b2 ** (t - 1)) + eps))
        else:
            ok, k = _rect(b1, b2, t)
            if ok:
                num = m if momentum_update else g * bc1
                p.sub_(lr * k * num / (s.sqrt() + eps))
            elif degenerated_to_sgd:
                p.sub_(lr * m / bc1)
    s.copy_(b2 * s + (1 - b2) * (g - m) ** 2)  # after the update: the next step's denominator


def diffgrad(p, g, st, t, *, lr, betas, eps, weight_decay, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    g = g + weight_decay * p
    m = b1 * st["exp_avg"] + (1 - b1) * g
    v = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
    xi = torch.sigmoid((st["previous_grad"] - g).abs())
    st["exp_avg"].copy_(m)
    st["exp_avg_sq"].copy_(v)
    st["previous_grad"].copy_(g)
    p.sub_(lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * xi * m / (v.sqrt() + eps))


def padam(p, g, st, t, *, lr, betas, eps, weight_decay, amsgrad=True, partial=0.25, decoupled_wd=False,
          maximize=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    if decoupled_wd:
        p.mul_(1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = b1 * st["exp_avg"] + (1 - b1) * g
    v = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
    st["exp_avg"].copy_(m)
    st["exp_avg_sq"].copy_(v)
    if amsgrad:
        st["max_exp_avg_sq"].copy_(torch.maximum(st["max_exp_avg_sq"], v))
        v = st["max_exp_avg_sq"]
    p.sub_(lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps) ** (2 * partial))


def signsgd(p, g, st, t, *, lr, betas, eps, weight_decay, use_bias_correction=False, maximize=False):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    g = g + weight_decay * p
    m = b1 * st["exp_avg"] + (1 - b1) * g
    if "exp_avg_sq" in st:
        v = b2 * st["exp_avg_sq"] + (1 - b2) * m * m  # the squared momentum
        st["exp_avg_sq"].copy_(v)
    else:  # fusedopt keeps no v at beta2 = 0
        assert b2 == 0
        v = m * m
    st["exp_avg"].copy_(m)
    bc1, bc2 = (1 - b1 ** t, 1 - b2 ** t) if use_bias_correction else (1.0, 1.0)
    p.sub_(lr * (m / bc1) / ((v / bc2).sqrt() + eps))


_FROM_PARAM = {"z"}  # Schedule-Free's base sequence starts at the param (the authors' clone of y)


def init_state(keys, p, state_dtype=None):
    """Fresh states: zeros, or the param (rounded to the states' dtype: bf16 states store z rounded)."""
    return {k: p.detach().to(state_dtype or p.dtype).double().clone() if k in _FROM_PARAM
            else torch.zeros_like(p, dtype=torch.float64) for k in keys}


assert math.isfinite(1.0)


# ---- PNM / AdaPNM (docs/algorithms.md §11, §25.6), Adan (§12, §25.7), Lion (Chen et al. 2023) ----

def _pnm_buffers(st, t, pos_key, neg_key):
    """Odd t: (pos, neg) = (first, second buffer); even t: swapped."""
    return (st[pos_key], st[neg_key]) if t % 2 == 1 else (st[neg_key], st[pos_key])


def pnm(p, g, st, t, *, lr, betas, weight_decay, decoupled=True, maximize=False):
    b1, b0 = betas
    g = -g if maximize else g.clone()
    if decoupled:
        p.mul_(1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    pos, neg = _pnm_buffers(st, t, "pos_momentum", "neg_momentum")
    pos.copy_(b1 ** 2 * pos + (1 - b1 ** 2) * g)
    delta = ((1 + b0) * pos - b0 * neg) / math.sqrt((1 + b0) ** 2 + b0 ** 2)
    p.sub_(lr * delta)


def adapnm(p, g, st, t, *, lr, betas, eps, weight_decay, amsgrad=True, decoupled=True, maximize=False):
    b1, b2, b0 = betas
    g = -g if maximize else g.clone()
    if decoupled:
        p.mul_(1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    pos, neg = _pnm_buffers(st, t, "exp_avg", "neg_exp_avg")
    pos.copy_(b1 ** 2 * pos + (1 - b1 ** 2) * g)
    st["exp_avg_sq"].copy_(b2 * st["exp_avg_sq"] + (1 - b2) * g * g)
    v = st["exp_avg_sq"]
    if amsgrad:
        st["max_exp_avg_sq"].copy_(torch.maximum(st["max_exp_avg_sq"], v))
        v = st["max_exp_avg_sq"]
    delta = ((1 + b0) * pos - b0 * neg) / math.sqrt((1 + b0) ** 2 + b0 ** 2)
    bc1 = 1 - b1 ** t  # not 1 - b1**(2t): the authors' code (kept)
    bc2 = 1 - b2 ** t
    p.sub_(lr / bc1 * delta / (v.sqrt() / math.sqrt(bc2) + eps))


def adan(p, g, st, t, *, lr, betas, eps, weight_decay, max_grad_norm=0.0, no_prox=False, maximize=False, clip=1.0):
    """clip: the global clip coefficient min(max_grad_norm / (G + eps), 1) of the step (computed by the
    caller over all params: see tests/test_lamb_lars.py)."""
    b1, b2, b3 = betas
    g = (-g if maximize else g.clone()) * clip
    g_prev = g if t == 1 else -st["neg_pre_grad"]
    diff = g - g_prev
    st["exp_avg"].copy_(b1 * st["exp_avg"] + (1 - b1) * g)
    st["exp_avg_diff"].copy_(b2 * st["exp_avg_diff"] + (1 - b2) * diff)
    z = g + b2 * diff
    st["exp_avg_sq"].copy_(b3 * st["exp_avg_sq"] + (1 - b3) * z * z)
    denom = st["exp_avg_sq"].sqrt() / math.sqrt(1 - b3 ** t) + eps
    u = (st["exp_avg"] / (1 - b1 ** t) + b2 * st["exp_avg_diff"] / (1 - b2 ** t)) / denom
    if no_prox:
        p.copy_(p * (1 - lr * weight_decay) - lr * u)
    else:
        p.copy_((p - lr * u) / (1 + lr * weight_decay))
    st["neg_pre_grad"].copy_(-g)


def lion(p, g, st, t, *, lr, betas, weight_decay, decoupled_weight_decay=False, use_triton=False,
         maximize=False, init_lr=None):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    wd = weight_decay / (init_lr or lr) if decoupled_weight_decay else weight_decay
    p.mul_(1 - lr * wd)
    m = st["exp_avg"]
    p.sub_(lr * torch.sign(b1 * m + (1 - b1) * g))
    m.copy_(b2 * m + (1 - b2) * g)


# ---- cross-tensor rules (docs/algorithms.md §14, §15): the per-tensor norms are of this tensor; the global
# grad norm (clipping) is the caller's (passed as global_norm) -------------------------------------------
def lamb(p, g, st, t, *, lr, betas, eps, weight_decay, bias_correction=True, adam_w_mode=True,
         grad_averaging=True, max_grad_norm=1.0, use_nvlamb=False, maximize=False, global_norm=None):
    b1, b2 = betas
    g = -g if maximize else g.clone()
    if max_grad_norm > 0 and global_norm is not None and global_norm > max_grad_norm:
        g = g / (global_norm / max_grad_norm)
    if not adam_w_mode:
        g = g + weight_decay * p
    b3 = 1 - b1 if grad_averaging else 1.0
    st["exp_avg"].copy_(b1 * st["exp_avg"] + b3 * g)
    st["exp_avg_sq"].copy_(b2 * st["exp_avg_sq"] + (1 - b2) * g * g)
    bc1 = 1 - b1 ** t if bias_correction else 1.0
    bc2 = 1 - b2 ** t if bias_correction else 1.0
    u = (st["exp_avg"] / bc1) / ((st["exp_avg_sq"] / bc2).sqrt() + eps)
    if adam_w_mode:
        u = u + weight_decay * p
    pn, un = p.norm().item(), u.norm().item()
    ratio = lr * pn / un if (use_nvlamb or weight_decay != 0) and pn != 0 and un != 0 else lr
    p.sub_(ratio * u)


def lars(p, g, st, t, *, lr, momentum, weight_decay, trust_coefficient, eps, nesterov=False, trust_clip=False,
         exclude=None, maximize=False):
    """exclude: whether this param is excluded from adaptation and decay (default: 1-D)."""
    g = -g if maximize else g.clone()
    adapt = not (p.dim() <= 1 if exclude is None else exclude)
    wd = weight_decay if adapt else 0.0
    trust = 1.0
    if adapt:
        wn, gn = p.norm().item(), g.norm().item()
        if wn > 0 and gn > 0:
            trust = trust_coefficient * wn / (gn + wd * wn + eps)
        if trust_clip and lr > 0:
            trust = min(trust / lr, 1.0)
    d = g + wd * p
    inc = lr * trust * d
    if momentum > 0:
        v = momentum * st["momentum_buffer"] + inc
        st["momentum_buffer"].copy_(v)
        p.sub_(momentum * v + inc if nesterov else v)
    else:
        p.sub_(inc)


# ---- KOALA (docs/algorithms.md §16): whole-list references (the covariance P is global) -------------------
# glob: {"P": float (V) or 2x2 float64 tensor (M), "R": float, "qw": float (M)}; params / grads: float64
# tensors (grad None: no update); groups: per param (lr, weight_decay). Python floats for the scalars.
def koala_v_predict(glob, *, q):
    glob["P"] = glob["P"] + q


def koala_m_predict(params, st, glob, *, a, qv):
    n = sum(p.numel() for p in params)
    delta = math.sqrt(sum(float((s["param_ema"] - p).pow(2).sum()) for p, s in zip(params, st)))
    for p, s in zip(params, st):
        p.add_(s["velocity"])
        s["velocity"].mul_(a)
    glob["qw"] = 0.9 * glob["qw"] + 0.1 * (delta / n if n else 0.0)
    F = torch.tensor([[1.0, 1.0], [0.0, a]], dtype=torch.float64)
    glob["P"] = F @ glob["P"] @ F.T + torch.diag(torch.tensor([glob["qw"], qv], dtype=torch.float64))


def _koala_r(glob, S, r, alpha_r):
    if r is None:
        glob["R"] = alpha_r * glob["R"] + (1 - alpha_r) * S
    else:
        glob["R"] = r
    return glob["R"]


def koala_v_update(params, grads, glob, L, S, *, hyper, r=None, alpha_r=0.9):
    """hyper[i] = (lr, weight_decay) of param i."""
    R = _koala_r(glob, S, r, alpha_r)
    P = glob["P"]
    h = 0.0
    for p, g, (lr, wd) in zip(params, grads, hyper):
        if g is None or g.norm().item() < 1e-9:
            continue
        gt2 = (g + wd * p).pow(2).sum().item()
        s = P * gt2 + R
        Ll = L + 0.5 * wd * p.pow(2).sum().item()
        p.sub_(lr * Ll * P / s * g)  # the raw grad
        h = max(h, gt2 / s)
    glob["P"] = P - P * P * h


def koala_m_update(params, grads, st, glob, L, S, *, hyper, r=None, alpha_r=0.9):
    R = _koala_r(glob, S, r, alpha_r)
    P = glob["P"]
    h = 0.0
    for p, g, s_, (lr, wd) in zip(params, grads, st, hyper):
        if g is None or g.norm().item() < 1e-9:
            continue
        gt = g + wd * p
        gt2 = gt.pow(2).sum().item()
        s = gt2 * P[0, 0].item() + R
        Ll = L + 0.5 * wd * p.pow(2).sum().item()
        p.sub_(lr * Ll * P[0, 0].item() / s * gt)
        s_["velocity"].sub_(lr * Ll * P[1, 0].item() / s * gt)
        s_["param_ema"].copy_(0.9 * s_["param_ema"] + 0.1 * p)
        h = max(h, gt2 / s)
    H = torch.tensor([[h, 0.0], [0.0, 0.0]], dtype=torch.float64)
    glob["P"] = P - P @ H @ P.T


# ---- AdEMAMix (Pagliardini et al. 2024), Schedule-Free AdamW (Defazio et al. 2024): docs/algorithms.md §29, §30 ----

def ademamix(p, g, st, t, *, lr, betas, alpha, eps, weight_decay, t_alpha=None, t_beta3=None, maximize=False):
    """Algorithm 1 of the paper with decoupled weight decay, the schedulers as bitsandbytes writes them:
    alpha_t = min(t alpha / T_alpha, alpha); beta3_t = min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + (t/T) ln b1)), b3)."""
    b1, b2, b3 = betas
    g = -g if maximize else g
    a = min(t * alpha / t_alpha, alpha) if t_alpha else alpha
    if t_beta3:
        s = t / t_beta3
        b3 = min(math.exp(math.log(b1) * math.log(b3) / ((1 - s) * math.log(b3) + s * math.log(b1))), b3)
    p.mul_(1 - lr * weight_decay)
    st["m1"].copy_(b1 * st["m1"] + (1 - b1) * g)
    st["m2"].copy_(b3 * st["m2"] + (1 - b3) * g)
    st["nu"].copy_(b2 * st["nu"] + (1 - b2) * g * g)
    denom = st["nu"].sqrt() / math.sqrt(1 - b2 ** t) + eps
    p.sub_(lr * (st["m1"] / (1 - b1 ** t) + a * st["m2"]) / denom)


def schedulefree_adamw(p, g, st, t, *, lr, betas, eps, weight_decay, warmup_steps=0, r=0.0, weight_lr_power=2.0,
                       maximize=False):
    """The paper's Algorithm 1 (AdamW form) with a constant base lr: y = p, z, x = (y - (1 - b1) z) / b1.
    Step t uses lr_t = lr min(t / warmup, 1) and c = w_t / sum_{i<=t} w_i with w_i = i^r max_{j<=i}(lr_j)^power."""
    b1, b2 = betas
    g = -g if maximize else g
    lr_at = [lr * (i / warmup_steps if i <= warmup_steps else 1.0) for i in range(1, t + 1)]
    w = [i ** r * max(lr_at[:i]) ** weight_lr_power for i in range(1, t + 1)]
    c, lr_t = w[-1] / sum(w), lr_at[-1]
    v = st["exp_avg_sq"]
    v.copy_(b2 * v + (1 - b2) * g * g)
    gn = g / ((v / (1 - b2 ** t)).sqrt() + eps) + weight_decay * p
    z = st["z"]
    x = (p - (1 - b1) * z) / b1  # the average the param's y interpolates
    z_new = z - lr_t * gn
    x_new = (1 - c) * x + c * z_new
    p.copy_((1 - b1) * z_new + b1 * x_new)
    z.copy_(z_new)
