"""Intra-op threads chosen deliberately, never inherited from torch's default (all cores).

On a busy 2-core machine two torch threads per process fight other work for the cores: OpenMP
threads spin-wait at every parallel region, and a training step measured 3-7x slower with 2
threads under load than with 1. So every entry point (the ``goose`` CLI, the ablation runner's
notebook kernels, the notebooks' setup cell) calls :func:`configure_threads` once.

The thread count, first match wins:

1. the explicit argument (``goose --threads N``),
2. ``$GOOSE_THREADS``,
3. the cores this process may use — ``$GOOSE_CORES`` (the ablation runner gives each of its
   ``workers`` processes ``cores // workers``) or the CPU affinity — minus the data-loading
   worker processes that run beside it, at least 1.

:func:`configure_threads` also exports ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (inherited by
kernels and subprocesses; an explicit count also as ``$GOOSE_THREADS``, so it holds there too)
and ``OMP_WAIT_POLICY=PASSIVE`` unless set (idle OpenMP threads sleep
instead of spinning; it takes effect in processes that load torch afterwards). Importing this
module changes nothing.
"""

from __future__ import annotations

import os
import sys

THREADS_ENV = "GOOSE_THREADS"
CORES_ENV = "GOOSE_CORES"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"${name} must be >= 1, got {value}")
    return value


def available_cores() -> int:
    """Cores this process may run on: ``$GOOSE_CORES`` if set, else the CPU affinity mask."""
    budget = _env_int(CORES_ENV)
    if budget is not None:
        return budget
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def cores_per_process(processes: int, cores: int | None = None) -> int:
    """The core budget of each of ``processes`` processes sharing the machine, at least 1."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    return max(1, (cores if cores is not None else available_cores()) // processes)


def default_threads(data_workers: int = 0, cores: int | None = None, processes: int = 1) -> int:
    """This process's share of ``cores`` (default :func:`available_cores`) among ``processes``
    processes (e.g. torchrun's local world size), minus its ``data_workers``, at least 1."""
    if data_workers < 0:
        raise ValueError(f"data_workers must be >= 0, got {data_workers}")
    return max(1, cores_per_process(processes, cores) - data_workers)


def resolve_threads(threads: int | None = None, *, data_workers: int = 0, processes: int = 1) -> int:
    """The thread count :func:`configure_threads` would set (see the module docstring)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for the default), got {threads}")
        return threads
    from_env = _env_int(THREADS_ENV)
    return from_env if from_env is not None else default_threads(data_workers, processes=processes)


def omp_env(threads: int) -> dict[str, str]:
    """OpenMP / MKL variables for ``threads`` threads (idle threads sleep unless the user chose)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def configure_threads(threads: int | None = None, *, data_workers: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads for this process (now if torch is imported, else through
    ``OMP_NUM_THREADS`` when it is) and export them to its children; return the count. Call once
    at an entry point (see the module docstring for the default)."""
    n = resolve_threads(threads, data_workers=data_workers, processes=processes)
    os.environ.update(omp_env(n))
    if threads is not None:  # an explicit choice also holds in kernels / subprocesses
        os.environ[THREADS_ENV] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    # else torch (OpenMP) reads OMP_NUM_THREADS when it is first imported: no import here
    return n
