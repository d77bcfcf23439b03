"""Per-process runtime settings: torch threads chosen deliberately, malloc without churn.

Threads are never inherited from torch's default (all cores). On a busy 2-core machine two torch
threads per process fight other work for the cores: OpenMP threads spin-wait at every parallel
region, and a training step measured 3-7x slower with 2 threads under load than with 1. So every
entry point (the ``goose`` CLI, the ablation runner's notebook kernels, the notebooks' setup
cell) calls :func:`configure_threads` once.

The thread count, first match wins:

1. the explicit argument (``goose --threads N``),
2. ``$GOOSE_THREADS``,
3. the cores this process may use — ``$GOOSE_CORES`` (the ablation runner gives each of its
   ``workers`` processes ``cores // workers``) or the CPU affinity — minus the data-loading
   worker processes that run beside it, at least 1.

:func:`configure_threads` also exports ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (inherited by
kernels and subprocesses; an explicit count also as ``$GOOSE_THREADS``, so it holds there too)
and ``OMP_WAIT_POLICY=PASSIVE`` unless set (idle OpenMP threads sleep
instead of spinning; it takes effect in processes that load torch afterwards).

Allocator: :func:`configure_threads` first calls :func:`configure_allocator`, so the same entry
points keep glibc malloc from churning. By default glibc serves each allocation above its mmap
threshold (dynamic, at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, so every
training step faults its working set in again. :func:`configure_allocator` sets
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt``; this also turns the dynamic threshold
off) to :data:`MALLOC_THRESHOLD`, 1 GiB: tensors up to 1 GiB come from the heap and are reused,
and up to 1 GiB of free heap top stays mapped. Measured (``goose --threads 1 train --steps 30
--val-interval 0``, tiny model, 2 busy cores): minor faults 2.29 M -> 0.18 M, sys 4.3 s -> 0.6 s,
wall 22.2 s -> 19.2 s, user +0.7 s, max RSS 0.67 -> 0.82 GB (the price: freed heap stays mapped),
the same weights bit for bit (``benchmarks/bench_allocator.py``); Debian's jemalloc, preloaded,
churned as much as glibc's default. It also exports ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_``, which glibc reads when a process starts, so children (notebook
kernels, spawned workers, subprocesses) have the settings from their first allocation; forked
children (DataLoader workers by default) inherit them anyway. The project's DataLoaders also apply
them in each worker (``worker_init_fn=``:func:`worker_init`), the ablation runner in its worker
processes, and the report runner passes the variables to the kernels it starts
(goose_lib.reports.kernels). Overrides:

- ``$GOOSE_MALLOC=off``: leave malloc alone (nothing set, nothing exported; glibc's defaults or
  your own ``GLIBC_TUNABLES`` / ``MALLOC_*_`` variables act alone); ``on`` (or unset): the default;
- ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set by you (bytes) replace the default
  one by one (``mallopt`` takes an ``int``: above 2 GiB - 1 it is capped in this process; children
  get your value as given).

Not on glibc (musl, macOS): nothing is done. Importing this module changes nothing.
"""

from __future__ import annotations

import os
import sys

THREADS_ENV = "GOOSE_THREADS"
CORES_ENV = "GOOSE_CORES"
ALLOCATOR_ENV = "GOOSE_MALLOC"
MALLOC_THRESHOLD = 1 << 30
"""Default mmap and trim thresholds (bytes): above the largest tensor of a training step."""
# glibc's variables -> the mallopt parameter of the same setting (<malloc.h>)
MALLOPT_PARAMS = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}  # M_MMAP_/M_TRIM_THRESHOLD
_INT_MAX = 2**31 - 1


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


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):  # not glibc / not POSIX
        return False


def allocator_env() -> dict[str, str]:
    """The glibc malloc variables this process and its children should run with (see the module
    docstring): ``{}`` under ``$GOOSE_MALLOC=off`` or off glibc; values you set win."""
    mode = os.environ.get(ALLOCATOR_ENV, "").strip().lower()
    if mode not in ("", "on", "off"):
        raise ValueError(f"${ALLOCATOR_ENV}={os.environ[ALLOCATOR_ENV]!r}: use 'on' or 'off'")
    if mode == "off" or not _is_glibc():
        return {}
    env = {}
    for name in MALLOPT_PARAMS:
        raw = os.environ.get(name, "").strip()
        if raw and not (raw.isdigit() and int(raw) > 0):
            raise ValueError(f"${name}={raw!r} is not a positive number of bytes")
        env[name] = raw or str(MALLOC_THRESHOLD)
    return env


def configure_allocator() -> dict[str, int]:
    """Apply :func:`allocator_env` to this process's malloc (``mallopt``) and export it to its
    children; return the settings applied (``{}``: none). Called by :func:`configure_threads`."""
    env = allocator_env()
    if not env:
        return {}
    import ctypes

    os.environ.update(env)
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = {}
    for name, value in env.items():
        capped = min(int(value), _INT_MAX)
        if mallopt(MALLOPT_PARAMS[name], capped) == 1:
            applied[name] = capped
    return applied


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the project's DataLoaders: :func:`configure_allocator` in the worker
    (forked workers inherit it anyway; this holds for any start method)."""
    configure_allocator()


def configure_threads(threads: int | None = None, *, data_workers: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads for this process (now if torch is imported, else through
    ``OMP_NUM_THREADS`` when it is) and export them to its children; return the count. Call once
    at an entry point (see the module docstring for the default). Also applies
    :func:`configure_allocator` (the same entry points)."""
    configure_allocator()
    n = resolve_threads(threads, data_workers=data_workers, processes=processes)
    os.environ.update(omp_env(n))
    if threads is not None:  # an explicit choice also holds in kernels / subprocesses
        os.environ[THREADS_ENV] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    # else torch (OpenMP) reads OMP_NUM_THREADS when it is first imported: no import here
    return n
