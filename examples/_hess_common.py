"""Shared helpers of the curvature / initialisation examples (tables, plots, small local data)."""
from __future__ import annotations

import inspect
import os
import platform
import sys
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def setup(seed=0):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    os.makedirs(RESULTS, exist_ok=True)


def env_line():
    return (f"torch {torch.__version__}, Python {platform.python_version()}, "
            f"{platform.processor() or platform.machine()}, 1 thread, {time.strftime('%Y-%m-%d')}")


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def write_md(name, title, intro, tables, notes=()):
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write(f"# {title}\n\n{intro}\n\nCommand: `{' '.join(['python'] + sys.argv)}` ({env_line()}).\n\n")
        for t in tables:
            f.write(t + "\n\n")
        for n in notes:
            f.write(f"- {n}\n")
    print(open(path).read())
    return path


def fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:
            return "nan"
        if abs(x) == float("inf"):
            return "inf" if x > 0 else "-inf"
        if abs(x) >= 1e4 or (abs(x) < 1e-3 and x != 0):
            return f"{x:.{nd}e}"
        return f"{x:.{nd}f}"
    return str(x)


def stdlib_text():
    """English text that ships with Python: the docstrings of stdlib modules and their members."""
    import argparse, collections, functools, inspect as insp, itertools, json, pathlib, re, string
    import textwrap, typing, os as _os, subprocess, threading, logging, datetime, decimal, fractions
    import statistics, shutil, tempfile, unittest, email, http.client, urllib.request, asyncio
    mods = [argparse, collections, functools, insp, itertools, json, pathlib, re, string, textwrap,
            typing, _os, subprocess, threading, logging, datetime, decimal, fractions, statistics,
            shutil, tempfile, unittest, email, http.client, urllib.request, asyncio]
    parts = []
    for m in mods:
        if m.__doc__:
            parts.append(m.__doc__)
        for name in sorted(dir(m)):
            obj = getattr(m, name, None)
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
            if doc and getattr(obj, "__module__", "") == m.__name__:
                parts.append(doc)
    return "\n\n".join(parts)


def digits(device="cpu"):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    n_tr = 1400
    return (x[:n_tr], y[:n_tr]), (x[n_tr:], y[n_tr:])
