"""Shared fixtures: a private GOOSE_SAM3_HOME per test session (so tests never touch the
user's cache), a tiny synthetic dataset and the tiny SAM3 checkpoint, built once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Every test process (xdist workers too) runs, and starts its kernels and subprocesses, with
    the project's malloc settings, as the CLI and the notebooks do (goose_lib.runtime)."""
    from goose_lib.runtime import configure_allocator

    configure_allocator()


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker() -> None:
    """Under ``pytest -n 2`` on 2 cores, two torch threads per worker fight over the cores
    (one teacher call: 72 ms with 1 thread, 1.15 s with 2 under load). Kernels and
    subprocesses started by tests inherit OMP_NUM_THREADS."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def goose_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("goose_home")
    old = os.environ.get("GOOSE_SAM3_HOME")
    os.environ["GOOSE_SAM3_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("GOOSE_SAM3_HOME", None)
    else:
        os.environ["GOOSE_SAM3_HOME"] = old


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic GOOSE root (train/val/test) written by the library itself."""
    from goose_lib.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("goose_tiny") / "root", seed=0,
                           n_train=8, n_val=4, n_test=3)


@pytest.fixture()
def root(tiny_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny synthetic root (to break or change)."""
    import shutil

    return Path(shutil.copytree(tiny_root, tmp_path / "root"))


@pytest.fixture(scope="session")
def tiny_checkpoint(goose_home: Path) -> Path:
    """The embedded tiny random SAM3 checkpoint (facebook/sam3 key layout)."""
    from goose_lib.models.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint()


@pytest.fixture(scope="session")
def tracker(tiny_checkpoint: Path):
    """The tiny SAM3 tracker (teacher), loaded strictly once per session."""
    from goose_lib.models.sam3 import load_tracker

    return load_tracker(tiny_checkpoint)
