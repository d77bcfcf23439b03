"""Kernels started ahead of time, so a sequential ablation hides kernel start-up (~0.5-1 s a run)
behind the previous run's cells.

A kernel's working directory is fixed when it starts, so each pre-started kernel belongs to one
run folder. ``KernelPool.prestart(run_dir)`` launches it (the call returns at once; the kernel
boots in its own process); ``take(run_dir)`` hands it to :func:`execute_run`, which passes it to
papermill through the ``goose-prestarted`` engine (papermill's nbclient engine that also shuts a
given kernel down and closes its channels after the run). A kernel whose folder was replaced or
that died is discarded, and a fresh one is started. The kernel process's own stdout/stderr
(not the cells' output) goes to ``kernel.log`` in the run folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from goose_lib.runtime import allocator_env

ENGINE = "goose-prestarted"
KERNEL_LOG = "kernel.log"  # in the run folder: the kernel process's stdout/stderr


def _engine_class() -> type:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class PrestartedEngine(NBClientEngine):
        """NBClientEngine that accepts ``km`` (a started kernel) and cleans it up afterwards."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                     stdout_file: Any = None, stderr_file: Any = None,
                                     start_timeout: int = 60, execution_timeout: int | None = None,
                                     **kwargs: Any) -> Any:
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs, timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout, kernel_name=kernel_name, log=logger, log_output=log_output,
                stdout_file=stdout_file, stderr_file=stderr_file)
            # cleanup_kc: shut the given kernel down and close its channels, as for an owned one
            return PapermillNotebookClient(nb_man, **final_kwargs).execute(cleanup_kc=True)

    return PrestartedEngine


_REGISTERED: list[str] = []


def register_engine() -> str:
    """Register the ``goose-prestarted`` papermill engine (once per process); returns its name."""
    from papermill.engines import papermill_engines

    if not _REGISTERED:
        papermill_engines.register(ENGINE, _engine_class())
        _REGISTERED.append(ENGINE)
    return ENGINE


class KernelPool:
    """Pre-started kernels, one per run folder."""

    def __init__(self, kernel_name: str = "python3") -> None:
        self.kernel_name = kernel_name
        self._kernels: dict[str, tuple[Any, int]] = {}  # folder -> (AsyncKernelManager, folder inode)

    def prestart(self, run_dir: str | os.PathLike) -> None:
        """Start a kernel whose working directory is ``run_dir`` (created if missing)."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        run_dir = Path(run_dir).resolve()
        if str(run_dir) in self._kernels:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        km = AsyncKernelManager(kernel_name=self.kernel_name)
        # the kernel process's own output (start-up warnings, crash reports) goes to kernel.log;
        # what cells print reaches the notebook through the kernel protocol as usual
        # the malloc settings of goose_lib.runtime from the kernel's first allocation on, also
        # when this process was not started by an entry point that configured them
        env = {**os.environ, **allocator_env()}
        with open(run_dir / KERNEL_LOG, "ab") as log:
            run_sync(km.start_kernel)(cwd=str(run_dir), stdout=log, stderr=log, env=env)
        self._kernels[str(run_dir)] = (km, run_dir.stat().st_ino)

    def take(self, run_dir: str | os.PathLike) -> Any | None:
        """The live kernel started in ``run_dir`` (the same folder, not a replacement), or None."""
        from jupyter_core.utils import run_sync

        run_dir = Path(run_dir).resolve()
        entry = self._kernels.pop(str(run_dir), None)
        if entry is None:
            return None
        km, inode = entry
        same = run_dir.is_dir() and run_dir.stat().st_ino == inode
        if same and run_sync(km.is_alive)():
            return km
        shutdown_kernel(km)
        return None

    def close(self) -> None:
        """Shut down every kernel not taken."""
        while self._kernels:
            km, _ = self._kernels.popitem()[1]
            shutdown_kernel(km)


def shutdown_kernel(km: Any) -> None:
    """Stop a kernel now (no error when it is already gone)."""
    from jupyter_core.utils import run_sync

    try:
        run_sync(km.shutdown_kernel)(now=True)
    except Exception:  # noqa: BLE001, S110 - already gone: nothing to clean up
        pass
