"""The oracle of tests/test_koala.py and bench/bench_cross.py: a pure-PyTorch transcription of the
KOALA authors' classes (Araachie/koala : koala.py VanillaKOALA / MomentumKOALA and util.ExpAverage),
written from reading them: the same operations in the same order and dtypes (their float32 norms,
their float32 rounding of P0, F, Q and the max through torch.Tensor(...)), with the call protocol of
training_funcs.py: predict() before the forward pass, update(mean loss, mean squared loss) after
backward. Only the bookkeeping differs (attributes instead of string keys in self.state)."""
from __future__ import annotations

import torch


class ExpAverage:
    """util.ExpAverage: avg <- alpha avg + (1 - alpha) val, from init_val."""

    def __init__(self, alpha, init_val=0.0):
        self.alpha, self.avg = alpha, init_val

    def update(self, val):
        self.avg = self.alpha * self.avg + (1 - self.alpha) * val


class AuthorsVanillaKOALA(torch.optim.Optimizer):
    def __init__(self, params, sigma=1, q=1, r=None, alpha_r=0.9, weight_decay=0.0, lr=1):
        super().__init__(params, {})
        for group in self.param_groups:
            group["lr"] = lr
        self.sigma, self.q, self.wd = sigma, q, weight_decay
        self.r = r if r is not None else ExpAverage(alpha_r, 1.0)

    @torch.no_grad()
    def predict(self):
        self.sigma += self.q

    @torch.no_grad()
    def update(self, loss, loss_var):
        if isinstance(self.r, ExpAverage):
            self.r.update(loss_var)
            cur_r = self.r.avg
        else:
            cur_r = self.r
        entries = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.grad.norm(p=2) < 1e-9:
                    continue
                lg = p.grad + self.wd * p
                lgn = lg.norm(p=2)
                s = self.sigma * lgn ** 2 + cur_r
                layer_loss = loss + 0.5 * self.wd * p.norm(p=2) ** 2
                scale = group["lr"] * layer_loss * self.sigma / s
                p.add_(-scale * p.grad)
                entries.append(lgn ** 2 / s)
        self.sigma = self.sigma - self.sigma ** 2 * torch.max(torch.stack(entries))


class AuthorsMomentumKOALA(torch.optim.Optimizer):
    def __init__(self, params, sw=1e-1, sc=0, sv=1e-1, a=0.9, qw=1e-2, qv=1e-2, r=None, alpha_r=0.9,
                 weight_decay=0.0, lr=1):
        super().__init__(params, {})
        dev = self.param_groups[0]["params"][0].device
        self.n = 0
        for group in self.param_groups:
            group["lr"] = lr
            for p in group["params"]:
                self.state[p]["vt"] = torch.zeros_like(p)
                self.state[p]["gt"] = torch.zeros_like(p)
                self.n += torch.prod(torch.Tensor(list(p.size())).to(dev))
        # torch.Tensor(...) is float32: P0, F and Q are rounded to float32 before the cast to float64
        self.P = torch.Tensor([[sw, sc], [sc, sv]]).to(dev).double()
        self.qw = ExpAverage(0.9, qw)
        self.qv = qv
        self.R = r if r is not None else ExpAverage(alpha_r, 1.0)
        self.F = torch.Tensor([[1, 1], [0, a]]).to(dev).double()
        self.wd = weight_decay

    @torch.no_grad()
    def predict(self):
        F = self.F
        diffs = []
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                diffs.append((st["gt"] - p).norm(p=2))
                p.mul_(F[0, 0])
                p.add_(st["vt"] * F[0, 1])
                st["vt"].mul_(F[1, 1])
                st["vt"].add_(p * F[1, 0])
        self.qw.update(torch.stack(diffs).norm(p=2) / self.n)
        Q = torch.diag(torch.Tensor([self.qw.avg, self.qv])).double()
        self.P = F @ self.P @ F.t() + Q

    @torch.no_grad()
    def update(self, loss, loss_var):
        if isinstance(self.R, ExpAverage):
            self.R.update(loss_var)
            cur_r = self.R.avg
        else:
            cur_r = self.R
        P = self.P
        entries = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.grad.norm(p=2) < 1e-9:
                    continue
                st = self.state[p]
                lg = p.grad + self.wd * p
                lgn = lg.norm(p=2)
                S = lgn ** 2 * P[0, 0] + cur_r
                layer_loss = loss + 0.5 * self.wd * p.norm(p=2) ** 2
                K1 = P[0, 0] / S * layer_loss * group["lr"]
                K2 = P[1, 0] / S * layer_loss * group["lr"]
                p.sub_(K1 * lg)
                st["vt"].sub_(K2 * lg)
                st["gt"].mul_(0.9)
                st["gt"].add_(0.1 * p)
                entries.append(lgn ** 2 / S)
        hh = torch.max(torch.stack(entries))
        HHS = torch.Tensor([[hh, 0], [0, 0]]).double()
        self.P = P - (P @ HHS) @ P.t()
