"""Training on scikit-learn's digits with 32-bit and 8-bit optimizer states (tests/test_q8.py and
bench/q8_digits.py): the task, and one optimizer of every rule that takes 8-bit states."""
from __future__ import annotations

import torch

import fusedopt


_DATA = []


def digits_loss(make_opt, steps=200, seed=0):
    """Full-batch training of a 64-128-10 MLP on scikit-learn's digits (deterministic). Returns the final
    loss and whether the optimizer kept uint8 states. Runs on one thread (about 0.5 s; on a shared
    2-core machine two OpenMP threads can take 20x longer)."""
    if not _DATA:
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        _DATA.extend([torch.tensor(X, dtype=torch.float32) / 16.0, torch.tensor(y)])
    X, y = _DATA
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        opt = make_opt(model.parameters())
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            final = float(torch.nn.functional.cross_entropy(model(X), y))
    finally:
        torch.set_num_threads(threads)
    q8 = any(v.dtype == torch.uint8 for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return final, q8


# Every rule that takes 8-bit states, at its defaults (lr included). Where the defaults keep no state
# (SGD) or train chaotically (RMSprop) the entry says what differs. At their default lr SGD, PNM, LARS
# and Lion barely move the loss in 200 steps (2.30 -> 1.9 .. 2.3), so each also runs at an lr where it
# trains ("-lr..." entries). The README table lists the same runs over seeds 0-4 (bench/q8_digits.py).
F = fusedopt
DIGITS_RULES = {
    "adam": lambda ps, **kw: F.Adam(ps, **kw),
    "adamw": lambda ps, **kw: F.AdamW(ps, **kw),
    "adamax": lambda ps, **kw: F.Adamax(ps, **kw),
    "radam": lambda ps, **kw: F.RAdam(ps, **kw),
    "nadam": lambda ps, **kw: F.NAdam(ps, **kw),
    "sgd-momentum0.9": lambda ps, **kw: F.SGD(ps, momentum=0.9, **kw),  # momentum 0 (the default) keeps no state
    "sgd-momentum0.9-lr0.05": lambda ps, **kw: F.SGD(ps, lr=0.05, momentum=0.9, **kw),
    # lr 1e-2 (the default) trains at the edge of stability: loss spikes make the final loss move by -12% .. +25%
    # when the initial weights move by 1e-6 (32-bit states), so the 2% bound is checked at lr 1e-3
    "rmsprop-lr1e-3": lambda ps, **kw: F.RMSprop(ps, lr=1e-3, **kw),
    "adagrad": lambda ps, **kw: F.Adagrad(ps, **kw),
    "adadelta": lambda ps, **kw: F.Adadelta(ps, **kw),
    "adabelief": lambda ps, **kw: F.AdaBelief(ps, print_change_log=False, **kw),
    "acprop": lambda ps, **kw: F.ACProp(ps, **kw),
    "diffgrad": lambda ps, **kw: F.DiffGrad(ps, **kw),
    "padam": lambda ps, **kw: F.Padam(ps, **kw),
    "signsgd": lambda ps, **kw: F.SignSGD(ps, **kw),
    "pnm": lambda ps, **kw: F.PNM(ps, **kw),
    "pnm-lr0.5": lambda ps, **kw: F.PNM(ps, lr=0.5, **kw),
    "adapnm": lambda ps, **kw: F.AdaPNM(ps, **kw),
    "adan": lambda ps, **kw: F.Adan(ps, **kw),
    "lion": lambda ps, **kw: F.Lion(ps, **kw),
    "lion-lr1e-3": lambda ps, **kw: F.Lion(ps, lr=1e-3, **kw),
    "lamb": lambda ps, **kw: F.LAMB(ps, **kw),
    # lr 1e-2: the setting of the 8-bit issue (nearest rounding: +60% .. +69%); here 1% less lr is 6% more loss
    "lamb-lr1e-2": lambda ps, **kw: F.LAMB(ps, lr=1e-2, **kw),
    "ademamix": lambda ps, **kw: F.AdEMAMix(ps, **kw),
    "schedulefree_adamw": lambda ps, **kw: F.AdamWScheduleFree(ps, **kw),
    "lars": lambda ps, **kw: F.LARS(ps, **kw),
    "lars-lr1": lambda ps, **kw: F.LARS(ps, lr=1.0, **kw),
}
