"""LR schedules (python/fusedopt/schedules.py) and scale_lr: values against their closed forms,
on plain optimizers and on the wrappers, state_dict, bad inputs."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import fusedopt


def _opt(lr=1.0, groups=(1.0,)):
    ps = [torch.zeros(2, requires_grad=True) for _ in groups]
    return torch.optim.SGD([{"params": [p], "lr": lr * f} for p, f in zip(ps, groups)])


def _lrs(sched, opt, n, group=0):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_values():
    opt = _opt(lr=0.4)
    got = _lrs(fusedopt.LinearWarmup(opt, warmup_steps=4), opt, 7)
    assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4])


def test_inverse_sqrt_warmup_is_the_transformer_schedule():
    d_model, w = 512, 4000
    base = (d_model * w) ** -0.5
    opt = _opt(lr=base)
    sched = fusedopt.InverseSqrtWarmup(opt, warmup_steps=w)
    got = _lrs(sched, opt, 9000)
    for t in (1, 2, 100, 3999, 4000, 4001, 8999):
        want = d_model ** -0.5 * min(t ** -0.5, t * w ** -1.5)
        assert got[t - 1] == pytest.approx(want, rel=1e-12), t
    assert max(got) == pytest.approx(base) and got.index(max(got)) == w - 1


def test_ia_schedule_matches_the_authors_formula():
    lr0, ia_start, ia_lr = 0.1, 40, 0.05

    def authors(epoch):  # transcription of diegogranziol/Gadam run_vision.py schedule() with IA on
        t = epoch / ia_start
        r = ia_lr / lr0
        f = 1.0 if t <= 0.5 else (1.0 - (1.0 - r) * (t - 0.5) / 0.4 if t <= 0.9 else r)
        return lr0 * f

    opt = _opt(lr=lr0, groups=(1.0, 2.0))
    sched = fusedopt.IALR(opt, ia_start=ia_start, ratio=ia_lr / lr0)
    got = _lrs(sched, opt, 60)
    assert got == pytest.approx([authors(e) for e in range(60)], rel=1e-12)
    assert opt.param_groups[1]["lr"] == pytest.approx(2 * ia_lr)  # group ratios kept


def test_schedules_drive_the_wrappers_and_round_trip():
    p = [torch.randn(3, requires_grad=True)]
    la = fusedopt.Lookahead(fusedopt.AdamW(p, lr=1e-3), k=2)
    sched = fusedopt.LinearWarmup(la, warmup_steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        for _ in range(2):
            p[0].grad = torch.ones(3)
            la.step()
            sched.step()
    assert la.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    sd = sched.state_dict()
    opt2 = fusedopt.Gadam([torch.zeros(3, requires_grad=True)], lr=1e-3, start_step=0)
    s2 = fusedopt.LinearWarmup(opt2, warmup_steps=3)
    s2.load_state_dict(sd)
    assert s2.last_epoch == 2 and s2.get_lr() == pytest.approx([1e-3])


def test_tensor_lr_is_updated_in_place():
    p = [torch.randn(3, requires_grad=True)]
    opt = fusedopt.AdamW(p, lr=torch.tensor(0.2))
    lr_t = opt.param_groups[0]["lr"]
    sched = fusedopt.InverseSqrtWarmup(opt, warmup_steps=2)
    assert float(lr_t) == pytest.approx(0.1)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr_t and float(lr_t) == pytest.approx(0.2)


def test_scale_lr():
    assert fusedopt.scale_lr(0.1, 128, 512) == pytest.approx(0.4)
    assert fusedopt.scale_lr(4e-4, 128, 256, rule="sqrt") == pytest.approx(4e-4 * math.sqrt(2))
    assert fusedopt.scale_lr(1e-3, 256, 64, rule="sqrt") == pytest.approx(5e-4)


@pytest.mark.parametrize("call,match", [
    (lambda: fusedopt.scale_lr(0.1, 128, 256, rule="cubic"), "Invalid rule"),
    (lambda: fusedopt.scale_lr(0.1, 0, 256), "Invalid base_batch"),
    (lambda: fusedopt.scale_lr(0.1, 128, 2.5), "Invalid batch"),
    (lambda: fusedopt.scale_lr(-1.0, 128, 256), "Invalid base_lr"),
    (lambda: fusedopt.LinearWarmup(_opt(), warmup_steps=0), "Invalid warmup_steps"),
    (lambda: fusedopt.InverseSqrtWarmup(_opt(), warmup_steps=1.5), "Invalid warmup_steps"),
    (lambda: fusedopt.IALR(_opt(), ia_start=0), "Invalid ia_start"),
    (lambda: fusedopt.IALR(_opt(), ia_start=10, ratio=-0.5), "Invalid ratio"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
