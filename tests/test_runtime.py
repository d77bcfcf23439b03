"""Thread count resolution: explicit > $GOOSE_THREADS > core budget minus data workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from goose_lib import runtime


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (runtime.THREADS_ENV, runtime.CORES_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_resolution_order(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(runtime.CORES_ENV, "6")
    assert runtime.available_cores() == 6
    assert runtime.resolve_threads() == 6
    assert runtime.resolve_threads(data_workers=2) == 4
    assert runtime.resolve_threads(data_workers=9) == 1  # never below 1
    clean_env.setenv(runtime.THREADS_ENV, "3")
    assert runtime.resolve_threads(data_workers=2) == 3
    assert runtime.resolve_threads(5) == 5


def test_cores_per_process_and_defaults() -> None:
    assert runtime.cores_per_process(2, cores=8) == 4
    assert runtime.cores_per_process(3, cores=2) == 1
    assert runtime.default_threads(1, cores=2) == 1
    with pytest.raises(ValueError, match="processes"):
        runtime.cores_per_process(0)


@pytest.mark.parametrize("name,value", [(runtime.THREADS_ENV, "two"), (runtime.THREADS_ENV, "0"),
                                        (runtime.CORES_ENV, "-1")])
def test_bad_environment_is_named(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        runtime.resolve_threads()


def test_configure_sets_torch_and_exports(clean_env: pytest.MonkeyPatch) -> None:
    old = torch.get_num_threads()
    try:
        clean_env.setenv(runtime.CORES_ENV, "2")
        assert runtime.configure_threads(data_workers=1) == 1
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert runtime.THREADS_ENV not in os.environ  # a default is not pinned for children
        assert runtime.configure_threads(2) == 2 and torch.get_num_threads() == 2
        assert os.environ[runtime.THREADS_ENV] == "2"  # an explicit choice is
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError, match="threads"):
        runtime.configure_threads(0)


def test_import_changes_nothing() -> None:
    code = ("import os, torch; n = torch.get_num_threads(); import goose_lib.runtime; "
            "assert torch.get_num_threads() == n and 'OMP_WAIT_POLICY' not in os.environ")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_configure_before_torch_is_imported() -> None:
    """The CLI configures before any verb imports torch: the count must hold once it is."""
    code = ("import sys; from goose_lib.runtime import configure_threads; configure_threads(1); "
            "assert 'torch' not in sys.modules; import torch; assert torch.get_num_threads() == 1, "
            "torch.get_num_threads()")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_cli_threads_flag_and_data_workers(clean_env: pytest.MonkeyPatch) -> None:
    from goose_lib.cli import _configure_threads, build_parser

    old = torch.get_num_threads()
    try:
        clean_env.setenv(runtime.CORES_ENV, "4")
        args = build_parser().parse_args(["train", "--out-dir", "x", "--num-workers", "3"])
        assert _configure_threads(args) == 1 and torch.get_num_threads() == 1  # 4 cores - 3 workers
        args = build_parser().parse_args(["synth", "out"])
        assert _configure_threads(args) == 4
        args = build_parser().parse_args(["--threads", "2", "train", "--out-dir", "x", "--num-workers", "3"])
        assert _configure_threads(args) == 2 and os.environ[runtime.THREADS_ENV] == "2"
        clean_env.setenv("LOCAL_WORLD_SIZE", "2")
        clean_env.delenv(runtime.THREADS_ENV)
        args = build_parser().parse_args(["train", "--out-dir", "x"])
        assert _configure_threads(args) == 2  # torchrun: 4 cores shared by 2 local processes
    finally:
        torch.set_num_threads(old)
