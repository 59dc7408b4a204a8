#!/usr/bin/env python
"""Optimizer step() benchmark: every fusedopt rule against the peers installed here
(torch.optim fused / foreach / for-loop, pytorch_optimizer, adabelief_pytorch, DeepSpeed's CPU
ops when importable), on the same parameter sets in one run.

    python bench/bench_step.py [--workloads gpt2s,many_small] [--rules available|all|adamw,sgd,...]
                               [--device cpu|cuda] [--quick] [--out bench/results/<file>.md]
    python bench/bench_step.py --list          # the registry: rules, hyperparameters, peers

The rules, their hyperparameters, byte models and peers are one declarative registry
(REGISTRY below). A rule whose fusedopt class is not in this build (getattr(fusedopt, name) is
None: merged later) shows as "not available in this build"; by default (--rules available)
its peers are not run; name it in --rules (or --rules all) to measure its peers anyway.

Per workload it measures the memory-bandwidth ceilings (copy_, add_, and for many_small
torch._foreach_add_ over the tensor list), then per rule every contender on fresh copies of
the same fp32 params and grads: `warmup` untimed steps, then the median of `timed` individually
timed step() calls (defaults 3 + 9, as bench/results/cpu-2026-11-24-peers.md). A contender whose steps
would take longer than --max-seconds-per-contender (default 15 s: the for-loop peers on gpt2s
under load) is timed with fewer steps (at least --min-timed); its row says so. It also measures
fusedopt's host overhead (--host-rules, default adamw only): step() over 1-element tensors
(10 ... 10,000 of them), split into the raw op call and the Python around it. The report ends
with one table: every rule, fusedopt's ms, its best peer and the ratio, per workload.

Effective GB/s = byte model x params / median step time, where the byte model counts the
compulsory logical traffic of the rule (fp32: read p, g and the states read, write p and the
states written; Adam: read p,g,m,v, write p,m,v = 28 B).

Run time on the 2-core machine: from the idle step times of bench/results/cpu-2026-11-24-peers.md, the
step() calls of all 18 rules' contenders on gpt2s add up to about 2 minutes, plus about a second
of set-up per contender (~55 of them); on a loaded machine the per-contender cap bounds the slow
rows. Waiting for quiet moments is bounded by --retry-budget (default 300 s for the run);
--retries 0 turns re-measuring off.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402  (also makes `fusedopt` importable from the checkout)
import torch  # noqa: E402

import fusedopt  # noqa: E402
from fusedopt._ops import RULES as OP_RULES, op as fused_op  # noqa: E402

SAMPLE = 256  # elements per tensor kept to compare the contenders' final params
BETAS = (0.9, 0.999)


# --------------------------------------------------------------------------------------
# registry: one record per rule
# --------------------------------------------------------------------------------------

@dataclass
class Peer:
    """A peer implementation of a rule. Its constructor gets the rule's hyperparameters
    (fusedopt's argument names), renamed / dropped / completed for the peer:
    rename: fusedopt name -> peer name, or -> (peer name, value converter);
    drop: names the peer does not take; extra: arguments only the peer gets."""
    module: str  # import path: torch.optim, pytorch_optimizer, adabelief_pytorch, deepspeed.ops.adam
    cls: str
    rename: dict = field(default_factory=dict)
    drop: tuple = ()
    extra: dict = field(default_factory=dict)
    note: str = ""
    devices: tuple = ("cpu", "cuda")
    call: str = ""  # a method to call once made (schedulefree's optimizers need train() before step())

    def make(self, cls, ps, kw):
        opt = cls(ps, **kw)
        if self.call:
            getattr(opt, self.call)()
        return opt

    @property
    def is_torch(self) -> bool:
        return self.module == "torch.optim"

    @property
    def package(self) -> str:
        return self.module.split(".")[0]

    @property
    def kind(self) -> str:  # unique per rule: the key of the per-rule summaries
        return "torch" if self.is_torch else self.package

    def kwargs(self, hp: dict) -> dict:
        out = {}
        for k, v in hp.items():
            if k in self.drop:
                continue
            to = self.rename.get(k, k)
            if isinstance(to, tuple):
                to, conv = to
                v = conv(v)
            out[to] = v
        out.update(self.extra)
        return out

    def mapping_text(self, hp: dict) -> str:
        """What differs from passing fusedopt's arguments unchanged (for the report)."""
        parts = []
        for k, to in self.rename.items():
            if k in hp:
                parts.append(f"{k} -> {to[0]}={self.kwargs(hp)[to[0]]!r}" if isinstance(to, tuple) else f"{k} -> {to}")
        parts += [f"no {k}" for k in self.drop if k in hp]
        parts += [f"+{k}={v!r}" for k, v in self.extra.items()]
        return ", ".join(parts)


def torch_peer(cls: str, **kw) -> Peer:
    """torch.optim's class: expanded into fused=True (where its signature has `fused`),
    foreach=True and foreach=False (the for-loop) contenders."""
    return Peer("torch.optim", cls, **kw)


def po_peer(cls: str, **kw) -> Peer:
    kw.setdefault("note", "package default foreach=None")
    return Peer("pytorch_optimizer", cls, **kw)


@dataclass
class Rule:
    key: str  # what --rules selects
    cls: str  # fusedopt class name (may be missing from this build)
    hp: dict  # hyperparameters of every contender, in fusedopt's argument names
    reads: int  # state tensors read per param per step
    writes: int  # state tensors written per param per step
    model: str  # byte model in words
    peers: list
    note: str = ""

    @property
    def fused_cls(self):
        return getattr(fusedopt, self.cls, None)

    @property
    def available(self) -> bool:
        return self.fused_cls is not None

    @property
    def bytes_per_param(self) -> int:
        return B.model_bytes_per_param(self.reads, self.writes)

    def hp_text(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hp.items())


ADAM_MODEL = "read p,g,m,v; write p,m,v"

REGISTRY = [
    Rule("adamw", "AdamW", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=1e-2), 2, 2, ADAM_MODEL,
         [torch_peer("AdamW"),
          Peer("deepspeed.ops.adam", "DeepSpeedCPUAdam", extra=dict(adamw_mode=True), devices=("cpu",))]),
    Rule("adam", "Adam", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), 2, 2, ADAM_MODEL,
         [torch_peer("Adam"),
          Peer("deepspeed.ops.adam", "DeepSpeedCPUAdam", extra=dict(adamw_mode=False), devices=("cpu",))]),
    Rule("adamax", "Adamax", dict(lr=2e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), 2, 2,
         "read p,g,m,u; write p,m,u",
         [torch_peer("Adamax"), po_peer("AdaMax")]),
    Rule("radam", "RAdam", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), 2, 2, ADAM_MODEL,
         [torch_peer("RAdam"),
          po_peer("RAdam", extra=dict(degenerated_to_sgd=True),
                  note="package default foreach=None; degenerated_to_sgd=True so that it steps while "
                       "rho_t <= 5 as torch does (its default skips those steps)")],
         note="fusedopt variant='torch' (the default)"),
    Rule("nadam", "NAdam", dict(lr=2e-3, betas=BETAS, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3), 2, 2,
         ADAM_MODEL, [torch_peer("NAdam")], note="pytorch_optimizer.NAdam is torch.optim.NAdam"),
    Rule("sgd", "SGD", dict(lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False), 1, 1,
         "read p,g,buf; write p,buf", [torch_peer("SGD")], note="pytorch_optimizer.SGD is torch.optim.SGD"),
    Rule("rmsprop", "RMSprop", dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),
         1, 1, "read p,g,sq; write p,sq (no momentum, not centered)", [torch_peer("RMSprop")],
         note="pytorch_optimizer.RMSprop is torch.optim.RMSprop"),
    Rule("adagrad", "Adagrad", dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                                    eps=1e-10), 1, 1, "read p,g,sum; write p,sum",
         [torch_peer("Adagrad"),
          Peer("deepspeed.ops.adagrad", "DeepSpeedCPUAdagrad", drop=("lr_decay", "initial_accumulator_value"),
               devices=("cpu",))]),
    Rule("adadelta", "Adadelta", dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0), 2, 2,
         "read p,g,sq,acc; write p,sq,acc", [torch_peer("Adadelta"), po_peer("AdaDelta")]),
    Rule("adabelief", "AdaBelief", dict(lr=1e-3, betas=BETAS, eps=1e-16, weight_decay=0.0, amsgrad=False,
                                        weight_decouple=True, rectify=False), 2, 2, "read p,g,m,s; write p,m,s",
         [po_peer("AdaBelief", rename=dict(amsgrad="ams_bound")),
          Peer("adabelief_pytorch", "AdaBelief", extra=dict(print_change_log=False), note="per-param loop")],
         note="rectify=False (pytorch_optimizer's default; the official package defaults to True)"),
    Rule("acprop", "ACProp", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=0.0, weight_decouple=False,
                                  rectify=False), 2, 2, "read p,g,m,s; write p,m,s", [],
         note="the paper's run settings (eps=1e-8, rectify=False, weight_decouple=False); no installed package "
              "implements ACProp"),
    Rule("diffgrad", "DiffGrad", dict(lr=1e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), 3, 3,
         "read p,g,m,v,g_prev; write p,m,v,g_prev", [po_peer("DiffGrad")]),
    Rule("padam", "Padam", dict(lr=1e-1, betas=BETAS, eps=1e-8, weight_decay=0.0, partial=0.25, amsgrad=False),
         2, 2, ADAM_MODEL, [po_peer("PAdam", drop=("amsgrad",))],
         note="amsgrad=False (fusedopt's default is True; pytorch_optimizer.PAdam has no AMSGrad)"),
    Rule("signsgd", "SignSGD", dict(lr=1e-3, betas=(0.9, 0.0), eps=0.0, weight_decay=0.0), 1, 1,
         "read p,g,m; write p,m (signum)",
         [po_peer("SignSGD", rename=dict(betas=("momentum", lambda b: b[0])), drop=("eps",))],
         note="signum setting of the generalized rule (betas=(0.9, 0), eps=0: p -= lr*sign(m)); the generalized "
              "rule also keeps v, so fusedopt moves 28 B/param where the byte model credits 20"),
    Rule("pnm", "PNM", dict(lr=1e-3, betas=(0.9, 1.0), weight_decay=0.0, decoupled=True), 2, 1,
         "read p,g,m_even,m_odd; write p,m_cur",
         [po_peer("PNM", rename=dict(decoupled="weight_decouple"))]),
    Rule("adapnm", "AdaPNM", dict(lr=1e-3, betas=(0.9, 0.999, 1.0), eps=1e-8, weight_decay=0.0, amsgrad=False,
                                  decoupled=True), 3, 2, "read p,g,m_even,m_odd,v; write p,m_cur,v",
         [po_peer("AdaPNM", rename=dict(amsgrad="ams_bound", decoupled="weight_decouple"))],
         note="amsgrad / ams_bound off (both default to on)"),
    Rule("adan", "Adan", dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0),
         4, 4, "read p,g,m,v,n,g_prev; write p,m,v,n,g_prev", [po_peer("Adan")]),
    Rule("lion", "Lion", dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0), 1, 1, "read p,g,m; write p,m",
         [po_peer("Lion"), Peer("deepspeed.ops.lion", "DeepSpeedCPULion", devices=("cpu",))]),
    Rule("ademamix", "AdEMAMix", dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, eps=1e-8, weight_decay=1e-2),
         3, 3, "read p,g,m1,m2,nu; write p,m1,m2,nu",
         [Peer("bitsandbytes.optim", "AdEMAMix", extra=dict(optim_bits=32), note="32-bit states"),
          po_peer("AdEMAMix", extra=dict(weight_decouple=True))]),
    Rule("schedulefree_adamw", "AdamWScheduleFree", dict(lr=2.5e-3, betas=BETAS, eps=1e-8, weight_decay=0.0), 2, 2,
         "read p,g,z,v; write p,z,v", [Peer("schedulefree", "AdamWScheduleFree", call="train",
                                            note="its default foreach=True")]),
]
RULE_BY_KEY = {r.key: r for r in REGISTRY}


def rule_title(key: str) -> str:
    return RULE_BY_KEY[key].cls


# --------------------------------------------------------------------------------------
# contenders
# --------------------------------------------------------------------------------------

@dataclass
class Contender:
    name: str
    kind: str  # fusedopt | torch_fused | torch_foreach | torch_forloop | pytorch_optimizer | adabelief_pytorch | deepspeed
    make: Optional[Callable]  # params -> optimizer; None = not available
    note: str = ""


_IMPORTED: dict = {}


def package_version(pkg: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(pkg)
    except Exception:
        try:
            return str(getattr(importlib.import_module(pkg), "__version__", "?"))
        except Exception:
            return "?"


def _import_peer(p: Peer):
    """(class, version text) or (None, why not)."""
    if p.module not in _IMPORTED:
        try:
            mod = importlib.import_module(p.module)
            _IMPORTED[p.module] = (mod, package_version(p.package))
        except Exception as e:  # not installed, or its op cannot be built
            _IMPORTED[p.module] = (None, f"not importable ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
    mod, ver = _IMPORTED[p.module]
    if mod is None:
        return None, ver
    c = getattr(mod, p.cls, None)
    return (c, ver) if c is not None else (None, f"{p.package} {ver} has no {p.cls}")


def contenders(rule: Rule, device: torch.device) -> list:
    hp = rule.hp
    fc = rule.fused_cls
    if fc is not None:
        out = [Contender(f"fusedopt.{rule.cls}", "fusedopt", lambda ps: fc(ps, **hp), f"fusedopt {fusedopt.__version__}")]
    else:
        out = [Contender(f"fusedopt.{rule.cls}", "fusedopt", None,
                         f"not available in this build (fusedopt {fusedopt.__version__} has no {rule.cls})")]
    for p in rule.peers:
        if device.type not in p.devices:
            continue
        cls, ver = _import_peer(p)
        kw = p.kwargs(hp)
        mapped = p.mapping_text(hp)
        if p.is_torch:
            nm = f"torch {p.cls}"
            if cls is None:
                out.append(Contender(nm, "torch_forloop", None, ver))
                continue
            sig = inspect.signature(cls.__init__).parameters
            if "fused" in sig:
                out.append(Contender(f"{nm} fused=True", "torch_fused",
                                     lambda ps, c=cls, k=kw: c(ps, fused=True, **k), mapped))
            else:
                out.append(Contender(f"{nm} fused=True", "torch_fused", None, f"torch {ver} has no fused {p.cls}"))
            out.append(Contender(f"{nm} foreach=True", "torch_foreach",
                                 lambda ps, c=cls, k=kw: c(ps, foreach=True, **k), mapped))
            note = "; ".join(x for x in (mapped, "torch's CPU default" if device.type == "cpu" else "") if x)
            out.append(Contender(f"{nm} foreach=False (for-loop)", "torch_forloop",
                                 lambda ps, c=cls, k=kw: c(ps, foreach=False, **k), note))
        else:
            nm = f"{p.package} {p.cls}"
            if cls is None:
                out.append(Contender(nm, p.kind, None, ver))
                continue
            note = "; ".join(x for x in (f"{p.package} {ver}", p.note, mapped) if x)
            out.append(Contender(nm, p.kind, lambda ps, c=cls, k=kw, p=p: p.make(c, ps, k), note))
    return out


def _path_note(opt) -> str:
    """pytorch_optimizer decides per group whether it takes its foreach path: say which."""
    f = getattr(opt, "_can_use_foreach", None)
    if not callable(f):
        return ""
    try:
        return "foreach path" if f(opt.param_groups[0]) else "per-param path"
    except Exception:
        return ""


def _state_bytes(opt) -> int:
    n = 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                n += v.numel() * v.element_size()
    return n


@dataclass
class Result:
    contender: Contender
    timing: Optional[B.Timing] = None
    sample: Optional[torch.Tensor] = None
    steps: int = 0  # step() calls behind `sample` (Limits.sample_at)
    state_bytes: int = 0
    path: str = ""
    error: str = ""
    others: float = 0.0  # cores other processes used while this contender ran (max over rounds)
    reruns: int = 0  # times it was measured again because the machine was busy
    budget_out: bool = False  # disturbed, but the retry budget was spent


@dataclass
class Limits:
    warmup: int
    timed: int
    max_seconds: Optional[float]  # per contender and round, in step() calls
    min_timed: int = 3

    @property
    def sample_at(self) -> int:
        """Step count at which the params are compared: one every contender reaches."""
        return self.warmup + min(self.min_timed, self.timed) if self.max_seconds else self.warmup + self.timed


def run_one(c: Contender, base_p: list, base_g: list, device, lim: Limits) -> Result:
    """Fresh params (copies of base_p) and grads, a new optimizer, time its step(); frees all."""
    params = [p.detach().clone().requires_grad_(True) for p in base_p]
    for p, g in zip(params, base_g):
        p.grad = g.clone()
    res = Result(c)
    opt = None
    # the params are compared after the number of steps every contender makes, capped or not
    at = lim.sample_at

    def snapshot(n):
        if n == at:
            res.sample = torch.cat([p.detach().reshape(-1)[:SAMPLE].float().cpu() for p in params])
            res.steps = n

    load = B.OtherLoad().start()
    try:
        opt = c.make(params)
        res.path = _path_note(opt)
        res.timing = B.time_calls(opt.step, device, lim.warmup, lim.timed, lim.max_seconds, lim.min_timed,
                                  after_call=snapshot)
        res.others = load.stop()[0]
        res.state_bytes = _state_bytes(opt)
    except Exception as e:  # an unsupported configuration is a row, not a crash
        res.timing = None
        res.error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    del opt, params
    B.free()
    return res


# --------------------------------------------------------------------------------------
# per workload
# --------------------------------------------------------------------------------------

def progress(msg: str) -> None:
    if sys.stderr.isatty():  # progress on a terminal only
        print(f"  [{msg}]", file=sys.stderr, flush=True)


BUSY = 0.2  # others' CPU (cores) above which a measurement counts as disturbed


class RetryBudget:
    """Seconds the whole run may spend waiting for quiet moments and re-measuring."""

    def __init__(self, seconds: float):
        self.left = seconds

    def spend(self, s: float) -> None:
        self.left -= s


def run_calm(c: Contender, base_p, base_g, device, lim: Limits, retries: int, retry_wait: float = 60,
             budget: Optional[RetryBudget] = None) -> Result:
    """run_one; while other processes disturbed it (others' CPU > BUSY), wait for a quiet
    moment (up to retry_wait s) and measure again, up to `retries` times and while the run's
    retry budget lasts; keep the least disturbed."""
    best = run_one(c, base_p, base_g, device, lim)
    n = 0
    while not best.error and best.others > BUSY and n < retries:
        if budget is not None and budget.left <= 0:
            best.budget_out = True
            break
        n += 1
        progress(f"{c.name}: others used {best.others:.2f} cores, measuring again ({n}/{retries})")
        t0 = time.monotonic()
        B.wait_idle(min(retry_wait, max(budget.left, 0)) if budget is not None else retry_wait, BUSY / 2)
        res = run_one(c, base_p, base_g, device, lim)
        if budget is not None:
            budget.spend(time.monotonic() - t0)
        if not res.error and res.others < best.others:
            res.reruns = best.reruns
            best = res
    best.reruns = n
    return best


def _ref_for_dp(cs: list, results: dict):
    """The params every row is compared with: torch's for-loop, else the first peer that ran."""
    for c in cs:
        if c.kind == "torch_forloop" and results[c.name].sample is not None:
            return results[c.name]
    for c in cs:
        if c.kind != "fusedopt" and results[c.name].sample is not None:
            return results[c.name]
    return None


def bench_workload(wl: B.Workload, rules: list, device, lim: Limits, rounds: int, rep: B.Report,
                   retries: int = 0, retry_wait: float = 60, budget: Optional[RetryBudget] = None) -> dict:
    """Ceilings before, every contender of every rule, ceilings after; then the tables."""
    lst = wl.shapes if wl.name == "many_small" else None
    progress(f"{wl.name}: ceilings")
    ceil = B.measure_ceilings(wl.numel, device, lim.warmup, lim.timed, tensor_list_shapes=lst)
    base_p = B.make_tensors(wl.shapes, device, seed=10)
    base_g = B.make_tensors(wl.shapes, device, seed=11)
    measured = {}
    for rule in B.progress_bar(rules, desc=wl.name):
        cs = contenders(rule, torch.device(device))
        results = {c.name: Result(c) for c in cs}
        for r in range(rounds):
            order = cs if r % 2 == 0 else cs[::-1]  # alternate the order between rounds
            for c in order:
                if c.make is None or results[c.name].error:
                    continue
                progress(f"{wl.name}: {c.name}" + (f" (round {r + 1})" if rounds > 1 else ""))
                res = run_calm(c, base_p, base_g, device, lim, retries, retry_wait, budget)
                prev = results[c.name]
                if res.error:
                    prev.error = res.error
                    continue
                prev.timing = res.timing if prev.timing is None else prev.timing.extend(res.timing)
                prev.sample, prev.steps, prev.state_bytes, prev.path = res.sample, res.steps, res.state_bytes, res.path
                prev.others = max(prev.others, res.others)
                prev.reruns += res.reruns
                prev.budget_out = prev.budget_out or res.budget_out
        measured[rule.key] = (rule, cs, results)
    del base_p, base_g
    B.free()
    # the ceilings again at the end: on a shared machine one of the two may be disturbed
    progress(f"{wl.name}: ceilings again")
    ceil_end = B.measure_ceilings(wl.numel, device, lim.warmup, lim.timed, tensor_list_shapes=lst)
    ref_gbs = {k: max(c.gbs, ceil_end[k].gbs) for k, c in ceil.items()}
    copy_gbs, add_gbs = ref_gbs["copy_"], ref_gbs["add_"]

    rep.add(f"## Workload `{wl.name}`: {wl.numel:,} fp32 params in {wl.ntensors:,} tensors ({wl.desc})")
    rep.add()
    rows = []
    for k, c in ceil.items():
        e = ceil_end[k]
        rows.append([c.kernel, f"{c.floats:,}", B.fmt_ms(c.timing.median), B.fmt(c.gbs), B.fmt(c.others),
                     B.fmt_ms(e.timing.median), B.fmt(e.gbs), B.fmt(e.others), B.fmt(ref_gbs[k])])
    rep.add("Ceilings (flat buffers of the workload's size, logical bytes), measured before and after the "
            "contenders; the better of the two is the reference of the % columns:")
    rep.add()
    rep.add(B.md_table(["kernel", "floats", "ms before", "GB/s before", "others' CPU", "ms after", "GB/s after",
                        "others' CPU", "reference GB/s"], rows))
    rep.add()

    out = {"ceilings": ref_gbs, "rules": {}}
    for key, (rule, cs, results) in measured.items():
        bpp = rule.bytes_per_param
        gb = bpp * wl.numel / 1e9
        rep.add(f"### `{wl.name}` / {rule.cls} (`{key}`; byte model {rule.model} = {bpp} B/param, {gb:.3f} GB/step)")
        rep.add()
        rep.add(f"Hyperparameters of every contender: {rule.hp_text()}" + (f"; {rule.note}" if rule.note else "") + ".")
        rep.add()
        ref = results[cs[0].name]
        ref_ms = ref.timing.median if ref.timing else None
        dref = _ref_for_dp(cs, results)
        rows, summary = [], {}
        for c in cs:
            x = results[c.name]
            if x.timing is None:
                note = x.error or c.note or "not run"
                rows.append([c.name, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", note])
                summary[c.kind] = None
                continue
            med = x.timing.median
            eff = gb / (med * 1e-3)
            if c.kind == "fusedopt":
                ratio = "1.00 (ref)"
            else:
                ratio = B.fmt(med / ref_ms) if ref_ms else "-"
            if x is dref:
                diff = "(ref)"
            elif dref is not None and x.sample is not None and x.steps == dref.steps:
                diff = f"{(x.sample - dref.sample).abs().max().item():.1e}"
            elif dref is not None and x.sample is not None:
                diff = f"- ({x.steps} vs {dref.steps} steps)"
            else:
                diff = "-"
            notes = [n for n in (c.note, x.path) if n]
            if x.timing.capped:
                notes.append(f"{len(x.timing.samples_ms)} timed steps (capped at {lim.max_seconds:g} s)")
            if x.reruns:
                notes.append(f"measured {x.reruns + 1}x (busy machine), least disturbed kept")
            if x.budget_out:
                notes.append("disturbed, not re-measured (retry budget spent)")
            rows.append([c.name, B.fmt_ms(med), B.fmt_ms(x.timing.mean), B.fmt_ms(x.timing.min),
                         str(len(x.timing.samples_ms)), B.fmt(eff), B.fmt(100 * eff / copy_gbs, 1),
                         B.fmt(100 * eff / add_gbs, 1), B.fmt(x.state_bytes / wl.numel), ratio, diff,
                         B.fmt(x.others), "; ".join(notes)])
            summary[c.kind] = dict(name=c.name, ms=med, mean=x.timing.mean, gbs=eff,
                                   pct_copy=100 * eff / copy_gbs, pct_add=100 * eff / add_gbs,
                                   ratio=(med / ref_ms) if ref_ms else None, others=x.others)
        rep.add(B.md_table(["contender", "ms/step (median)", "ms mean", "ms min", "timed steps", "eff GB/s",
                            "% of copy_", "% of add_", "state B/param", "peer ms / fusedopt ms",
                            "max abs dp vs ref", "others' CPU", "note"], rows, "lrrrrrrrrrrrl"))
        rep.add()
        if dref is not None:
            rep.add(f"max abs dp: largest difference of the params after {dref.steps} steps (first {SAMPLE} elements "
                    f"of every tensor) from {dref.contender.name}'s.")
            rep.add()
        peers = [v for k, v in summary.items() if k != "fusedopt" and v]
        summary["best_peer"] = min(peers, key=lambda v: v["ms"]) if peers else None
        out["rules"][key] = summary
    return out


# --------------------------------------------------------------------------------------
# host overhead
# --------------------------------------------------------------------------------------

def _raw_op_call(opt):
    """The single fused op call fusedopt's step() ends in, with prebuilt argument lists
    (what is left when the Python of step() is taken away). One group, one bucket."""
    group = opt.param_groups[0]
    params = [p for p in group["params"]]
    grads = [p.grad for p in params]
    slots, on = OP_RULES[opt._rule].slots, opt._active_slots(group)
    states = [[opt.state[p][k] for p in params] if a else [] for k, a in zip(slots, on)]
    steps = [opt.state[p]["step"] for p in params]
    kernel = fused_op(opt._rule)
    hyper = OP_RULES[opt._rule].pack_hyper(opt._hyper(group))
    flags, lr = opt._group_flags(group), float(group["lr"])

    @torch.no_grad()  # as in step(): with grad mode on, the autograd fallback adds its own cost
    def call():
        kernel(params, grads, *states, steps, [], hyper=hyper, lr=lr, lr_tensor=None, grad_scale=None,
               found_inf=None, flags=flags)

    return call


def _fit(ns, ys):
    """y = a + b n through the smallest and the largest count: b = marginal cost per tensor,
    a = what is left at the smallest count (fixed cost per step)."""
    i, j = ns.index(min(ns)), ns.index(max(ns))
    b = (ys[j] - ys[i]) / (ns[j] - ns[i])
    return ys[i] - b * ns[i], b


def _host_peer(rule: Rule, dev: torch.device) -> Optional[Contender]:
    """The peer the host sweep compares with: torch fused, else torch foreach, else the first peer."""
    cs = [c for c in contenders(rule, dev)[1:] if c.make is not None]
    for kind in ("torch_fused", "torch_foreach"):
        for c in cs:
            if c.kind == kind:
                return c
    return cs[0] if cs else None


def bench_host(rules: list, device, counts: list, warmup: int, timed: int, rep: B.Report) -> dict:
    progress("host overhead sweep")
    rep.add("## Host overhead: step() over 1-element fp32 tensors")
    rep.add()
    rep.add("Wall time per step (perf_counter around the call, device synchronized), median of "
            f"{timed} after {warmup} warm-ups. `op only` = the list op `torch.ops.fusedopt.<rule>_` with prebuilt "
            "argument lists (what a library using it as its fused backend pays per call); `Python` = step() - op "
            "only, negative where step() is cheaper than the list op: after its first step, step() keeps each "
            "bucket's lists in C++ (a plan) and passes only the per-step scalars. "
            "Fit: per-tensor cost = slope between the smallest and the largest count, fixed cost = the rest at the "
            "smallest count.")
    rep.add()
    dev = torch.device(device)
    out = {}
    for rule in rules:
        fc = rule.fused_cls
        if fc is None:
            rep.add(f"### fusedopt.{rule.cls}: not available in this build")
            rep.add()
            continue
        peer = _host_peer(rule, dev)
        tname = peer.name if peer else "no peer"
        rows, pts = [], []

        def timed_wall(fn):
            def call():
                fn()
                B.sync(dev)
            return B.time_calls(call, "cpu", warmup, timed).median

        for n in counts:
            def fresh():
                ps = [torch.randn(1, device=dev).requires_grad_(True) for _ in range(n)]
                for p in ps:
                    p.grad = torch.randn(1, device=dev)
                return ps

            ps = fresh()
            opt = fc(ps, **rule.hp)
            step_ms = timed_wall(opt.step)
            try:
                op_ms = timed_wall(_raw_op_call(opt))
            except Exception as e:  # private layout changed: report the step only
                op_ms = float("nan")
                print(f"(op-only timing unavailable: {e})", file=sys.stderr)
            del opt, ps
            t_ms = float("nan")
            if peer is not None:
                ps = fresh()
                try:
                    topt = peer.make(ps)
                    t_ms = timed_wall(topt.step)
                    del topt
                except Exception as e:
                    print(f"({tname} failed in the host sweep: {e})", file=sys.stderr)
                del ps
            B.free()
            pts.append((n, step_ms, op_ms, t_ms))
            rows.append([f"{n:,}", B.fmt(step_ms, 3), B.fmt(op_ms, 3), B.fmt(step_ms - op_ms, 3),
                         B.fmt(1e3 * step_ms / n, 2), B.fmt(t_ms, 3), B.fmt(t_ms / step_ms, 2)])
        ns = [p[0] for p in pts]
        a_s, b_s = _fit(ns, [p[1] for p in pts])
        a_o, b_o = _fit(ns, [p[2] for p in pts])
        a_t, b_t = _fit(ns, [p[3] for p in pts])
        rep.add(f"### fusedopt.{rule.cls}")
        rep.add()
        rep.add(B.md_table(["tensors", "fusedopt step ms", "op only ms", "Python ms", "step us/tensor",
                            f"{tname} ms", "peer ms / fusedopt ms"], rows))
        rep.add()
        rep.add(f"- fit: fusedopt step() = {1e3 * a_s:.1f} us + {1e3 * b_s:.3f} us/tensor "
                f"(op call {1e3 * b_o:.3f} us/tensor, Python {1e3 * (b_s - b_o):.3f} us/tensor); "
                f"{tname} = {1e3 * a_t:.1f} us + {1e3 * b_t:.3f} us/tensor")
        n2k = next((p for p in pts if p[0] == 2000), None)
        if n2k:
            rep.add(f"- host overhead at 2,000 tensors (the many_small count): fusedopt {n2k[1]:.3f} ms/step, "
                    f"{tname} {n2k[3]:.3f} ms/step")
        rep.add()
        out[rule.key] = dict(points=pts, fit_step=(a_s, b_s), fit_op=(a_o, b_o), fit_torch=(a_t, b_t), peer=tname)
    return out


# --------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------

def summarize_targets(res: dict, host: dict, quick: bool, rep: B.Report) -> None:
    rep.add("## Summary vs targets")
    rep.add()
    lines = []
    aw = {w: r["rules"].get("adamw") for w, r in res.items()}
    g = aw.get("gpt2s")
    if g and g.get("fusedopt") and g.get("torch_fused"):
        f, t = g["fusedopt"], g["torch_fused"]
        sp = t["ms"] / f["ms"]
        lines.append(f"- gpt2s AdamW: fusedopt {f['ms']:.2f} ms vs torch fused {t['ms']:.2f} ms -> "
                     f"{sp:.3f}x (target >= 0.97x: {'met' if sp >= 0.97 else 'MISSED'}); "
                     f"{f['pct_add']:.1f}% of the add_ ceiling (target >= 90%: "
                     f"{'met' if f['pct_add'] >= 90 else 'MISSED'})")
    m = aw.get("many_small")
    if m and m.get("fusedopt") and m.get("torch_fused"):
        f, t = m["fusedopt"], m["torch_fused"]
        sp = t["ms"] / f["ms"]
        lines.append(f"- many_small AdamW: fusedopt {f['ms']:.3f} ms vs torch fused {t['ms']:.3f} ms -> "
                     f"{sp:.2f}x (target >= 2x: {'met' if sp >= 2 else 'MISSED'})")
        h = host.get("adamw") if host else None
        n2k = next((p for p in h["points"] if p[0] == 2000), None) if h else None
        if n2k:
            lines.append(f"- many_small AdamW: of fusedopt's {f['ms']:.3f} ms/step, {n2k[1]:.3f} ms is host overhead "
                         f"(same step over 2,000 one-element tensors), so ~{f['ms'] - n2k[1]:.3f} ms is the kernel")
    busy = [f"{w}/{rule}/{x['name']} ({x['others']:.2f})" for w, r in res.items() for rule, sm in r["rules"].items()
            for k, x in sm.items() if x and k != "best_peer" and x["others"] > BUSY]
    if busy:
        shown = ", ".join(busy[:8]) + (f", ... ({len(busy) - 8} more)" if len(busy) > 8 else "")
        lines.append(f"- WARNING: {len(busy)} row(s) ran while other processes used > {BUSY} cores (others' CPU in "
                     f"parentheses), their times are inflated: {shown}. Re-run on an idle machine "
                     "(--wait-idle 600) or with --rounds 3")
    if quick:
        lines.append("- quick mode: fewer timed steps and a smaller gpt2s-like set; not comparable with full runs")
    rep.add("\n".join(lines) if lines else "- (AdamW vs torch fused not measured in this run)")
    rep.add()


def summarize_rules(res: dict, selected: list, rep: B.Report) -> list:
    """One row per registry rule: fusedopt's ms, its best peer and peer ms / fusedopt ms, per workload."""
    wls = list(res)
    rep.add("## Summary: every rule vs its best peer")
    rep.add()
    rep.add("Best peer = the fastest peer row of the rule in this run (median ms/step); ratio = best peer ms / "
            "fusedopt ms (> 1: fusedopt is faster).")
    rep.add()
    header = ["rule", "fusedopt class", "B/param"]
    for w in wls:
        header += [f"{w} fusedopt ms", f"{w} % of add_", f"{w} best peer", f"{w} peer ms", f"{w} ratio"]
    rows = []
    for rule in REGISTRY:
        row = [f"`{rule.key}`", rule.cls, str(rule.bytes_per_param)]
        for w in wls:
            sm = res[w]["rules"].get(rule.key)
            if sm is None:
                why = "not available in this build" if not rule.available else "not run (--rules)"
                row += [why if w == wls[0] else "-", "-", "-", "-", "-"]
                continue
            f, bp = sm.get("fusedopt"), sm.get("best_peer")
            fms = B.fmt_ms(f["ms"]) if f else ("not available in this build" if not rule.available else "failed")
            row += [fms, B.fmt(f["pct_add"], 1) if f else "-", bp["name"] if bp else "no peer",
                    B.fmt_ms(bp["ms"]) if bp else "-",
                    B.fmt(bp["ms"] / f["ms"]) if (f and bp) else "-"]
        rows.append(row)
    rep.add(B.md_table(header, rows, "lll" + "rrlrr" * len(wls)))
    rep.add()
    return rows


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------

def select_rules(spec: str) -> list:
    spec = spec.strip()
    if spec == "available":
        return [r for r in REGISTRY if r.available]
    if spec == "all":
        return list(REGISTRY)
    out = []
    for k in (x.strip() for x in spec.split(",")):
        if not k:
            continue
        if k not in RULE_BY_KEY:
            raise SystemExit(f"unknown rule {k!r} (known: {', '.join(RULE_BY_KEY)}; or 'available', 'all')")
        out.append(RULE_BY_KEY[k])
    return out


def print_registry(device: torch.device) -> None:
    rows = []
    for r in REGISTRY:
        peers = []
        for c in contenders(r, device)[1:]:
            peers.append(c.name + ("" if c.make else " (unavailable)"))
        rows.append([f"`{r.key}`", f"fusedopt.{r.cls}" + ("" if r.available else " (not in this build)"),
                     r.hp_text(), f"{r.model} = {r.bytes_per_param}", "; ".join(peers) or "none installed",
                     "; ".join(x for x in [r.note] + [f"{p.module}.{p.cls}: {p.mapping_text(r.hp)}" for p in r.peers
                                                      if p.mapping_text(r.hp)] if x)])
    print(B.md_table(["rule", "fusedopt", "hyperparameters", "byte model (B/param)", "peers", "notes / mapping"],
                     rows, "llllll"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="gpt2s,many_small")
    ap.add_argument("--rules", default="available",
                    help="'available' (default: every rule of the registry this build has), 'all' (also the peers "
                         f"of rules not in this build), or keys: {','.join(RULE_BY_KEY)}")
    ap.add_argument("--list", action="store_true", help="print the registry (rules, hyperparameters, peers) and exit")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer steps, smaller gpt2s-like set")
    ap.add_argument("--out", default=None, help="also write the markdown report to this file")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3, quick 1)")
    ap.add_argument("--timed", type=int, default=None, help="timed steps (default 9, quick 5)")
    ap.add_argument("--max-seconds-per-contender", type=float, default=15.0, metavar="SECONDS",
                    help="cap on the step() calls of one contender (per round): a slower one gets fewer timed steps "
                         "(default 15; 0 = no cap)")
    ap.add_argument("--min-timed", type=int, default=3, help="timed steps a capped contender still gets (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every contender this many times (fresh state each, alternating order) and take the "
                         "median over all timed steps; helps on a busy machine")
    ap.add_argument("--host-counts", default=None, help="tensor counts of the host-overhead sweep "
                    "(default 10,100,1000,2000,10000; quick 10,100,1000,2000)")
    ap.add_argument("--host-rules", default="adamw",
                    help="rules of the host-overhead sweep (default adamw; 'available' for every rule; 'none')")
    ap.add_argument("--no-host", action="store_true", help="skip the host-overhead sweep")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the report to stdout")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before starting, wait up to this long for other processes to go idle")
    ap.add_argument("--retries", type=int, default=None,
                    help=f"measure a contender again (up to this many times, after waiting for a quiet moment) when "
                         f"other processes used > {BUSY} cores meanwhile; default 2, quick 0")
    ap.add_argument("--retry-wait", type=float, default=60, metavar="SECONDS",
                    help="before such a retry, wait up to this long for a quiet moment (default 60)")
    ap.add_argument("--retry-budget", type=float, default=300, metavar="SECONDS",
                    help="seconds the whole run may spend on such waits and re-measurements (default 300)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    t_run = time.monotonic()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.list:
        print_registry(device)
        return {}
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    if device.type == "cuda" and "cuda" not in fusedopt.build_info().get("backends", ()):
        print("warning: fusedopt was built without CUDA kernels; its rows will show the error", file=sys.stderr)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    timed = a.timed if a.timed is not None else (5 if a.quick else 9)
    lim = Limits(warmup, timed, a.max_seconds_per_contender or None, a.min_timed)
    rules = select_rules(a.rules)
    if a.no_host or a.host_rules.strip() == "none":
        host_rules = []
    else:
        host_rules = [r for r in select_rules(a.host_rules) if r.available]
    wls = [B.make_workload(w.strip(), quick=a.quick) for w in a.workloads.split(",") if w.strip()]
    counts = [int(x) for x in (a.host_counts or ("10,100,1000,2000" if a.quick else "10,100,1000,2000,10000"))
              .split(",")]

    idle = B.wait_idle(a.wait_idle) if a.wait_idle > 0 else B.describe_others(*B.others_now(1.0))
    run_load = B.OtherLoad().start(names=True)
    rep = B.Report(echo=not a.quiet)
    rep.add(f"# fusedopt step() benchmark ({device.type}{', quick' if a.quick else ''})")
    rep.add()
    rep.add("\n".join(B.machine_info(device)))
    vers = []
    for pkg in ("pytorch_optimizer", "adabelief_pytorch", "deepspeed"):
        try:
            importlib.import_module(pkg)
            vers.append(f"{pkg} {package_version(pkg)}")
        except Exception:
            vers.append(f"{pkg} not installed")
    rep.add(f"- peers: torch.optim {torch.__version__}, " + ", ".join(vers))
    missing = [r.cls for r in REGISTRY if not r.available]
    rep.add(f"- rules measured: {', '.join(r.key for r in rules) or 'none'}"
            + (f"; not in this build: {', '.join(missing)}" if missing else ""))
    rep.add(f"- timing: {warmup} warm-up step(s), then median of {timed} individually timed step() calls"
            f"{f' x {a.rounds} rounds' if a.rounds > 1 else ''}; "
            + ("torch.cuda events" if device.type == "cuda" else "time.perf_counter")
            + (f"; a contender whose step() calls would take over {lim.max_seconds:g} s gets fewer timed steps "
               f"(at least {lim.min_timed}; 'timed steps' column)" if lim.max_seconds else ""))
    rep.add("- params: fp32 randn, grads fp32 randn (fixed seeds); every contender gets fresh copies of the same "
            "params and grads and a fresh optimizer, and is freed before the next; hyperparameters: per rule (in "
            "its heading), the same for every contender, mapped to each peer's argument names (note column)")
    rep.add("- eff GB/s = byte model x params / median step time (logical bytes, no write-allocate); "
            "% of copy_ / add_ = of the ceilings measured in this run on buffers of the workload's size (the better "
            "of the measurements before and after the contenders); state B/param = bytes of the optimizer's state "
            "tensors after the run / params; peer ms / fusedopt ms > 1 means fusedopt is faster; max abs dp = "
            f"largest difference of the params (first {SAMPLE} elements of every tensor), after the same number of "
            f"steps ({lim.sample_at}), from the rule's reference row (torch's for-loop, else the first peer; a large "
            "value flags a peer whose mapped hyperparameters do not give the same update); others' CPU = cores used by other processes "
            f"while the contender ran (this machine is shared: a row measured while others used > {BUSY} cores is "
            "measured again, up to --retries times within --retry-budget, and the least disturbed measurement "
            "kept; rows still above that are noisy)")
    rep.add(f"- CPU used by other processes at start: {idle}")
    rep.add()

    results = {}
    budget = RetryBudget(a.retry_budget)
    for wl in wls:
        results[wl.name] = bench_workload(wl, rules, device, lim, max(1, a.rounds), rep,
                                          retries=a.retries if a.retries is not None else (0 if a.quick else 2),
                                          retry_wait=a.retry_wait, budget=budget)
    host = {}
    if host_rules:
        hw, ht = (2, 9) if a.quick else (5, 25)
        host = bench_host(host_rules, device, counts, hw, ht, rep)
    summarize_targets(results, host, a.quick, rep)
    summarize_rules(results, rules, rep)
    rep.add(f"- load average (1/5/15 min) at end: {B.load_avg()}; CPU used by other processes during the run: "
            f"{B.describe_others(*run_load.stop())}; wall time of the run: {time.monotonic() - t_run:.0f} s")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(rep.text())
        print(f"\nwrote {a.out}", file=sys.stderr)
    return dict(results=results, host=host)


if __name__ == "__main__":
    main()
