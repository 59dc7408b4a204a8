"""Shared by the examples: scikit-learn's digits (8x8 images, 10 classes; bundled with scikit-learn,
no download), a fixed 80/20 split standardised on the training part, a small MLP, and evaluation."""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = xtr.mean(0), xtr.std(0)
    std[std < 1e-3] = 1.0  # pixels constant over the training set (blank borders) stay 0-centred, not blown up
    f = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return f(xtr), torch.tensor(ytr), f(xte), torch.tensor(yte)


def mlp(seed: int, hidden: int = 64, bn: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(64, hidden)]
    if bn:
        layers.append(torch.nn.BatchNorm1d(hidden))
    layers += [torch.nn.ReLU(), torch.nn.Linear(hidden, 10)]
    return torch.nn.Sequential(*layers)


def batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]  # drop the last partial batch


@torch.no_grad()
def evaluate(model, x, y):
    was = model.training
    model.eval()
    out = model(x)
    model.train(was)
    loss = torch.nn.functional.cross_entropy(out, y).item()
    acc = (out.argmax(1) == y).float().mean().item()
    return loss, acc


def mean_std(v):
    t = torch.tensor(v, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(v) > 1 else 0.0)
