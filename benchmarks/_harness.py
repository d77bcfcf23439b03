"""Shared benchmark harness: warm-up + repeats, medians with min/max, one JSON line per run.

Each ``bench_*.py`` builds a :class:`Bench`, times with :func:`measure` / :func:`interleave`,
declares its targets with :meth:`Bench.target` and ends with ``sys.exit(bench.finish())``:
that prints a target / measured / met table, appends one JSON line to
``benchmarks/results/<bench>.jsonl`` (machine, threads, load average before and after,
commit, timings, targets) and returns 1 if a target was missed. ``benchmarks/run_all.py``
(``make bench``) runs every script and prints the table of all of them.

Timings on a shared machine are noisy: compare ratios measured side by side (``interleave``
alternates the contenders, so load changes hit them alike) and read the recorded load average.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SESSION_ENV = "GOOSE_BENCH_SESSION"  # set by run_all.py: groups the lines of one `make bench`
OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}


@dataclass(frozen=True)
class Timing:
    """Seconds over ``n`` repeats (after the warm-up)."""

    median: float
    min: float
    max: float
    n: int

    def ms(self) -> str:
        return f"{self.median * 1e3:.2f} ms (min {self.min * 1e3:.2f}, max {self.max * 1e3:.2f}, n={self.n})"

    def s(self) -> str:
        return f"{self.median:.3f} s (min {self.min:.3f}, max {self.max:.3f}, n={self.n})"


def timing(samples: list[float]) -> Timing:
    return Timing(statistics.median(samples), min(samples), max(samples), len(samples))


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1,
            sync: Callable[[], None] = lambda: None) -> Timing:
    """Wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
    return interleave({"x": fn}, repeats, warmup, sync)["x"]


def interleave(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
               sync: Callable[[], None] = lambda: None) -> dict[str, Timing]:
    """Time several contenders in alternation (a b c a b c ...), so a busy machine hurts all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - t)
    return {k: timing(v) for k, v in samples.items()}


def _busy() -> None:  # pragma: no cover - runs in the competing process
    while True:
        pass


@contextmanager
def competing_load(processes: int = 1) -> Iterator[None]:
    """``processes`` CPU-bound processes running for the duration of the block (a busy machine)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_busy, daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # let them get scheduled
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def _commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def machine() -> dict[str, Any]:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


class Bench:
    """One benchmark run: its timings, its targets, its JSON line (see the module docstring)."""

    def __init__(self, name: str, args: Any = None) -> None:
        self.name = name
        self.args = vars(args) if args is not None and hasattr(args, "__dict__") else (args or {})
        self.load_before = os.getloadavg()
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.timings: dict[str, dict[str, Any]] = {}
        self.targets: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def record(self, key: str, t: Timing, **extra: Any) -> Timing:
        self.timings[key] = {**asdict(t), **extra}
        return t

    def note(self, text: str) -> None:
        print(text)
        self.notes.append(text)

    def target(self, what: str, measured: float, op: str, threshold: float, unit: str = "",
               detail: str = "") -> bool:
        """Declare one target ``measured OP threshold`` (e.g. ``ratio <= 1.1``); returns met."""
        met = bool(OPS[op](measured, threshold)) and not math.isnan(measured)
        self.targets.append({"what": what, "measured": measured, "op": op, "threshold": threshold,
                             "unit": unit, "met": met, "detail": detail})
        return met

    def finish(self) -> int:
        line = {"bench": self.name, "started": self.started, "session": os.environ.get(SESSION_ENV),
                **_commit(), "machine": machine(), "load_avg_before": list(self.load_before),
                "load_avg_after": list(os.getloadavg()), "args": self.args, "timings": self.timings,
                "targets": self.targets, "notes": self.notes}
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        with open(RESULTS_DIR / f"{self.name}.jsonl", "a") as f:
            f.write(json.dumps(line, default=str) + "\n")
        print_table(self.name, self.targets, line["load_avg_before"], line["load_avg_after"],
                    line["machine"]["torch_threads"])
        return 0 if all(t["met"] for t in self.targets) else 1


def _fmt(v: float, unit: str) -> str:
    return f"{v:.3g}{(' ' + unit) if unit else ''}"


def print_table(name: str, targets: list[dict[str, Any]], load_before: list[float] | None = None,
                load_after: list[float] | None = None, threads: int | None = None, file=None) -> None:
    file = file or sys.stdout
    head = f"== {name}"
    if load_before is not None:
        head += f" (load avg {load_before[0]:.2f} -> {load_after[0]:.2f}, {threads} torch threads)"
    print(head, file=file)
    if not targets:
        print("   (no targets)", file=file)
    for t in targets:
        print(f"   {'met ' if t['met'] else 'MISS'}  {t['what']:<58s} {_fmt(t['measured'], t['unit']):>12s}  "
              f"target {t['op']} {_fmt(t['threshold'], t['unit'])}", file=file)
