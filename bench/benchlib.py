"""Shared pieces of the fusedopt benchmarks: workloads, timing, ceilings, byte-model arithmetic,
machine description and markdown rendering.

Methodology (the one of bench/results/cpu-2026-11-24-peers.md): `warmup` untimed calls, then the
median of `timed` individually timed calls. Byte counts are logical (compulsory reads +
writes, no write-allocate traffic); effective GB/s = model bytes / median time.
"""
from __future__ import annotations

import datetime as _dt
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:  # the extension is built in place: fall back to the checkout's python/ dir
    import fusedopt  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(REPO, "python"))
    import fusedopt  # noqa: F401

import torch

# --------------------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------------------

GPT2S_NUMEL = 124_439_808
GPT2S_TENSORS = 148


def gpt2_shapes(n_layer: int = 12, n_embd: int = 768, vocab: int = 50257, n_ctx: int = 1024) -> list:
    """(name, shape) of GPT-2's parameters (HF Conv1D layout: weight is (in, out))."""
    shapes = [("wte", (vocab, n_embd)), ("wpe", (n_ctx, n_embd))]
    for i in range(n_layer):
        h = f"h.{i}."
        shapes += [
            (h + "ln_1.weight", (n_embd,)), (h + "ln_1.bias", (n_embd,)),
            (h + "attn.c_attn.weight", (n_embd, 3 * n_embd)), (h + "attn.c_attn.bias", (3 * n_embd,)),
            (h + "attn.c_proj.weight", (n_embd, n_embd)), (h + "attn.c_proj.bias", (n_embd,)),
            (h + "ln_2.weight", (n_embd,)), (h + "ln_2.bias", (n_embd,)),
            (h + "mlp.c_fc.weight", (n_embd, 4 * n_embd)), (h + "mlp.c_fc.bias", (4 * n_embd,)),
            (h + "mlp.c_proj.weight", (4 * n_embd, n_embd)), (h + "mlp.c_proj.bias", (n_embd,)),
        ]
    shapes += [("ln_f.weight", (n_embd,)), ("ln_f.bias", (n_embd,))]
    return shapes


@dataclass
class Workload:
    name: str
    shapes: list  # [(name, shape)]
    desc: str = ""

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes)

    @property
    def ntensors(self) -> int:
        return len(self.shapes)


def make_workload(name: str, quick: bool = False) -> Workload:
    if name == "gpt2s":
        if quick:
            shapes = gpt2_shapes(n_layer=2, vocab=8192)
            return Workload("gpt2s", shapes, "GPT-2-small-like, quick: 2 layers, vocab 8192")
        shapes = gpt2_shapes()
        n = sum(math.prod(s) for _, s in shapes)
        if n != GPT2S_NUMEL or len(shapes) != GPT2S_TENSORS:
            raise AssertionError(f"gpt2s: {n:,} params in {len(shapes)} tensors, expected "
                                 f"{GPT2S_NUMEL:,} in {GPT2S_TENSORS}")
        return Workload("gpt2s", shapes, "GPT-2 small parameter set")
    if name == "many_small":
        return Workload("many_small", [(f"t{i}", (4096,)) for i in range(2000)], "2,000 tensors of 4,096 elements")
    raise ValueError(f"unknown workload {name!r} (known: gpt2s, many_small)")


def progress_bar(items, desc: str = ""):
    """tqdm over `items` when stderr is a terminal (and tqdm is installed), else `items` unchanged:
    logs and CI output get no progress noise."""
    if not sys.stderr.isatty():
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, leave=False)


def make_tensors(shapes: Sequence, device, seed: int = 0, scale: float = 1.0) -> list:
    """Deterministic fp32 randn tensors (one generator for the whole list)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _, shape in shapes:
        t = torch.randn(shape, generator=gen, dtype=torch.float32)
        out.append(t.to(device) if str(device) != "cpu" else t)
    return out


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------

@dataclass
class Timing:
    samples_ms: list = field(default_factory=list)
    capped: bool = False  # fewer timed calls than asked for (time_calls' max_seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def min(self) -> float:
        return min(self.samples_ms)

    def extend(self, other: "Timing") -> "Timing":
        self.samples_ms += other.samples_ms
        self.capped = self.capped or other.capped
        return self


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], object], device, warmup: int, timed: int,
               max_seconds: Optional[float] = None, min_timed: int = 3,
               after_call: Optional[Callable[[int], None]] = None) -> Timing:
    """`warmup` untimed calls, then `timed` individually timed calls (ms each).

    max_seconds caps the time spent in calls for a slow contender: after the warm-up, the
    number of timed calls is cut to what fits in the rest of the budget at the last warm-up
    call's speed, but never below min_timed (nor above `timed`). Timing.capped tells.
    after_call(n), if given, runs after the n-th call (warm-up ones included), outside the
    timed window (e.g. to snapshot the params at a step count every contender reaches)."""
    dev = torch.device(device)
    pc = time.perf_counter
    t_start = pc()
    last = None
    calls = 0
    for _ in range(warmup):
        t0 = pc()
        fn()
        sync(dev)
        last = pc() - t0
        calls += 1
        if after_call is not None:
            after_call(calls)
    n = timed
    if max_seconds is not None and last is not None and last > 0:
        left = max_seconds - (pc() - t_start)
        n = max(min(min_timed, timed), min(timed, int(left // last)))
    out = Timing(capped=n < timed)
    if dev.type == "cuda":
        for _ in range(n):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.samples_ms.append(a.elapsed_time(b))
            calls += 1
            if after_call is not None:
                after_call(calls)
    else:
        for _ in range(n):
            t0 = pc()
            fn()
            out.samples_ms.append((pc() - t0) * 1e3)
            calls += 1
            if after_call is not None:
                after_call(calls)
    return out


# --------------------------------------------------------------------------------------
# byte models
# --------------------------------------------------------------------------------------

def model_bytes_per_param(state_reads: int, state_writes: int, param_bytes: int = 4, state_bytes: int = 4) -> int:
    """Compulsory bytes per param per step: read p and g and `state_reads` state tensors, write p
    and `state_writes` of them (PNM reads two momentum buffers and writes one). The rules'
    counts live in bench_step.py's registry."""
    return (3 * param_bytes) + (state_reads + state_writes) * state_bytes


# --------------------------------------------------------------------------------------
# ceilings
# --------------------------------------------------------------------------------------

@dataclass
class Ceiling:
    kernel: str
    floats: int
    bytes_per_float: int
    timing: Timing
    others: float = 0.0  # cores used by other processes meanwhile

    @property
    def gbs(self) -> float:
        return self.floats * self.bytes_per_float / (self.timing.median * 1e-3) / 1e9


def _timed_ceiling(kernel, floats, bpf, fn, device, warmup, timed) -> Ceiling:
    load = OtherLoad().start()
    t = time_calls(fn, device, warmup, timed)
    return Ceiling(kernel, floats, bpf, t, load.stop()[0])


def measure_ceilings(numel: int, device, warmup: int, timed: int, tensor_list_shapes=None) -> dict:
    """copy_ (8 B/float) and add_ (12 B/float) over flat buffers of `numel` floats; with
    tensor_list_shapes also torch._foreach_add_ (12 B/float) over such a list."""
    out = {}
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    dst.fill_(0.0)
    out["copy_"] = _timed_ceiling("dst.copy_(src): read 4 B + write 4 B per float", numel, 8,
                                  lambda: dst.copy_(src), device, warmup, timed)
    del dst
    a = torch.rand(numel, device=device)
    out["add_"] = _timed_ceiling("a.add_(b): read 8 B + write 4 B per float", numel, 12,
                                 lambda: a.add_(src), device, warmup, timed)
    del a, src
    if tensor_list_shapes is not None:
        xs = make_tensors(tensor_list_shapes, device, seed=1)
        ys = make_tensors(tensor_list_shapes, device, seed=2)
        n = sum(t.numel() for t in xs)
        out["foreach_add_"] = _timed_ceiling("torch._foreach_add_(xs, ys) over the workload's tensor list", n, 12,
                                             lambda: torch._foreach_add_(xs, ys), device, warmup, timed)
        del xs, ys
    free()
    return out


# --------------------------------------------------------------------------------------
# machine description
# --------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _l3() -> str:
    try:
        r = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10)
        for line in r.stdout.splitlines():
            if line.strip().startswith("L3 cache"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def git_commit() -> str:
    """$FUSEDOPT_COMMIT when set (run.sh gpu sets it from the prebuilt module's commit), else HEAD of the
    checkout with a note of uncommitted changes."""
    if os.environ.get("FUSEDOPT_COMMIT"):  # set by tools/gpu_run.sh: a device's copy may hold a stale .git
        return os.environ["FUSEDOPT_COMMIT"]
    try:
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10)
        c = r.stdout.strip() or "unknown"
        d = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10)
        changed = [line[3:] for line in d.stdout.splitlines() if line.strip()]
        if changed:
            c += f" (+uncommitted changes in {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''})"
        return c
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


class OtherLoad:
    """CPU used by processes other than this one over a window, in cores (from /proc/stat's
    busy jiffies minus this process's own), plus the names of the busiest other processes.
    The machine is shared: a compile running beside a 2-thread benchmark halves its cores
    and makes OpenMP barriers wait for a descheduled thread."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _total_busy() -> int:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
        except (OSError, ValueError):
            return 0

    @staticmethod
    def _proc_jiffies(pid) -> tuple:
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            return "", 0
        r = s.rfind(")")
        fields = s[r + 2:].split()
        return s[s.find("(") + 1:r], int(fields[11]) + int(fields[12])  # utime + stime

    def _per_proc(self) -> dict:
        me = os.getpid()
        out = {}
        try:
            pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
        except OSError:
            return out
        for pid in pids:
            if pid != me:
                out[pid] = self._proc_jiffies(pid)
        return out

    def start(self, names: bool = False) -> "OtherLoad":
        self.names = names
        self.t0 = time.monotonic()
        self.busy0 = self._total_busy()
        self.own0 = self._proc_jiffies("self")[1]
        self.procs0 = self._per_proc() if names else {}
        return self

    def stop(self) -> tuple:
        """(cores used by others on average, [(name, cores)] of the busiest, names mode only)."""
        dt = max(time.monotonic() - self.t0, 1e-9)
        others = (self._total_busy() - self.busy0) - (self._proc_jiffies("self")[1] - self.own0)
        cores = max(others, 0) / self.HZ / dt
        top = []
        if self.names:
            agg: dict = {}
            for pid, (name, j) in self._per_proc().items():
                d = j - self.procs0.get(pid, (name, 0))[1] if pid in self.procs0 else j
                if d > 0:
                    agg[name] = agg.get(name, 0) + d
            top = sorted(((n, j / self.HZ / dt) for n, j in agg.items()), key=lambda x: -x[1])[:3]
        return cores, top


def others_now(seconds: float = 1.0) -> tuple:
    ol = OtherLoad().start(names=True)
    time.sleep(seconds)
    return ol.stop()


def describe_others(cores: float, top: list) -> str:
    s = f"{cores:.2f} cores"
    named = [f"{n} {c:.2f}" for n, c in top if c >= 0.01]
    if named:
        s += " (busiest: " + ", ".join(named) + ")"
    return s


def wait_idle(max_s: float, threshold: float = 0.15) -> str:
    """Wait (up to max_s seconds) until other processes use under `threshold` cores."""
    t0 = time.monotonic()
    while True:
        cores, top = others_now(1.0)
        if cores < threshold or time.monotonic() - t0 >= max_s:
            waited = time.monotonic() - t0
            return f"{describe_others(cores, top)} after waiting {waited:.0f} s"
        print(f"(machine busy: {describe_others(cores, top)}; waiting)", file=sys.stderr, flush=True)


def machine_info(device) -> list:
    """Markdown bullet lines describing the run."""
    import fusedopt

    dev = torch.device(device)
    lines = [
        f"- date: {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"- fusedopt commit: {git_commit()} (`git rev-parse --short HEAD` of {REPO})",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores, L3 {_l3()}, RAM {_mem_total()}",
        f"- torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, Python {platform.python_version()}",
        f"- fusedopt.build_info(): `{fusedopt.build_info()}`",
    ]
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        lines.append(f"- GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}")
    lines.append(f"- load average (1/5/15 min) at start: {load_avg()}")
    return lines


# --------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------

def md_table(header: Sequence[str], rows: Sequence[Sequence], align: Optional[str] = None) -> str:
    """align: one char per column, 'l' or 'r' (default: first column left, rest right)."""
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def fmt(x, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}"


def fmt_ms(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


class Report:
    """Collects markdown; prints each piece as it comes (so a long run shows progress)."""

    def __init__(self, echo: bool = True):
        self.parts: list = []
        self.echo = echo

    def add(self, text: str = "") -> None:
        self.parts.append(text)
        if self.echo:
            print(text, flush=True)

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"
