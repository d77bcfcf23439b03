"""The malloc settings of goose_lib.runtime are in effect where the project runs code: its entry
points, DataLoader workers, notebook kernels started by the report runner (and not on import).

Measured, not read back: glibc has no getter for its thresholds, so every check counts the minor
page faults of allocating and freeing a 64 MiB tensor (:func:`heap_faults`). With the default
malloc each allocation is a fresh mmap whose every page faults (16,384 pages of 4 KiB); with the
settings it is reused from the heap and faults nothing.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from goose_lib import runtime

MIB = 2**20
TENSOR_PAGES = 64 * MIB // resource.getpagesize()
MEASURED = 10
ON_MAX = TENSOR_PAGES // 2  # with the settings: MEASURED cycles fault less than half a tensor
OFF_MIN = int(0.9 * MEASURED * TENSOR_PAGES)  # without: every cycle faults (nearly) every page
GLIBC_ENV = tuple(runtime.MALLOPT_PARAMS)


def heap_faults(mb: int = 64, warmup: int = 20, measured: int = 10) -> int:
    """Minor page faults of ``measured`` allocate-fill-free cycles of an ``mb`` MiB float tensor,
    after ``warmup`` cycles (glibc 2.36's memalign, which torch's allocator uses, grows the heap
    for a few cycles before it finds a chunk it can reuse)."""
    import resource

    import torch

    n = mb * 2**20 // 4
    for _ in range(warmup):
        torch.ones(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(measured):
        torch.ones(n)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


PROBE = inspect.getsource(heap_faults)


def _env_without_settings(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*GLIBC_ENV, runtime.ALLOCATOR_ENV)}
    return {**env, **extra}


# --- the settings ------------------------------------------------------------------------------


@pytest.fixture()
def no_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*GLIBC_ENV, runtime.ALLOCATOR_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults_and_overrides(no_settings: pytest.MonkeyPatch) -> None:
    default = str(runtime.MALLOC_THRESHOLD)
    assert runtime.allocator_env() == {"MALLOC_MMAP_THRESHOLD_": default, "MALLOC_TRIM_THRESHOLD_": default}
    no_settings.setenv("MALLOC_TRIM_THRESHOLD_", "4294967296")  # yours win, one at a time
    assert runtime.allocator_env()["MALLOC_TRIM_THRESHOLD_"] == "4294967296"
    assert runtime.allocator_env()["MALLOC_MMAP_THRESHOLD_"] == default
    no_settings.setenv(runtime.ALLOCATOR_ENV, "Off")
    assert runtime.allocator_env() == {}
    no_settings.setenv(runtime.ALLOCATOR_ENV, "on")
    assert len(runtime.allocator_env()) == 2


@pytest.mark.parametrize("name,value", [(runtime.ALLOCATOR_ENV, "jemalloc"), ("MALLOC_MMAP_THRESHOLD_", "1G"),
                                        ("MALLOC_TRIM_THRESHOLD_", "0")])
def test_bad_settings_are_named(no_settings: pytest.MonkeyPatch, name: str, value: str) -> None:
    no_settings.setenv(name, value)
    with pytest.raises(ValueError, match=rf"\${name}="):
        runtime.allocator_env()
    with pytest.raises(ValueError, match=rf"\${name}="):  # the CLI reports it as `goose VERB: ...`
        runtime.configure_threads(torch.get_num_threads())


def test_configure_applies_and_exports(no_settings: pytest.MonkeyPatch) -> None:
    # the defaults, as conftest already applied them to this process
    assert runtime.configure_allocator() == dict.fromkeys(GLIBC_ENV, runtime.MALLOC_THRESHOLD)
    assert all(os.environ[name] == str(runtime.MALLOC_THRESHOLD) for name in GLIBC_ENV)


# --- known answer: in effect after the entry point, not on import, not under the override ------


def test_known_answer_entry_point_override_and_import() -> None:
    """One fresh process: after importing the modules that apply the settings (no call), every
    cycle faults its 64 MiB; after ``configure_threads`` under ``$GOOSE_MALLOC=off``, still;
    after ``configure_threads`` (what the CLI and the notebooks call), almost nothing."""
    code = PROBE + (
        "import json, os\n"
        "import goose_lib.cli, goose_lib.reports.kernels, goose_lib.reports.ablation, goose_lib.train.loop\n"
        "from goose_lib.runtime import configure_threads\n"
        "out = {'import_env': sorted(k for k in os.environ if k.startswith('MALLOC_')),\n"
        "       'import': heap_faults()}\n"
        "os.environ['GOOSE_MALLOC'] = 'off'; configure_threads(1)\n"
        "out['off_env'] = sorted(k for k in os.environ if k.startswith('MALLOC_'))\n"
        "out['off'] = heap_faults()\n"
        "os.environ['GOOSE_MALLOC'] = 'on'; configure_threads(1)\n"
        "out['on_env'] = {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}\n"
        "out['on'] = heap_faults()\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env_without_settings(), check=True,
                          capture_output=True, text=True)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["import_env"] == [] and out["off_env"] == []
    assert out["import"] >= OFF_MIN and out["off"] >= OFF_MIN, out
    assert out["on"] <= ON_MAX, out
    assert out["on_env"] == dict.fromkeys(GLIBC_ENV, str(runtime.MALLOC_THRESHOLD))


def test_in_effect_in_the_test_process() -> None:
    """conftest applies the settings, as the CLI does (and tests' subprocesses inherit them)."""
    assert heap_faults() <= ON_MAX
    assert all(os.environ.get(name) for name in GLIBC_ENV)


# --- DataLoader workers -------------------------------------------------------------------------


class ProbeDataset(torch.utils.data.Dataset):
    """One item, measured inside the worker that loads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        return {"pid": os.getpid(), "faults": heap_faults(),
                "env": {name: os.environ.get(name) for name in GLIBC_ENV}}


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_in_effect_in_a_dataloader_worker(context: str, no_settings: pytest.MonkeyPatch) -> None:
    """A loader built as the project's are (goose_lib.train.loop, goose_lib.infer.evaluate), its
    parent's environment without the variables: a forked worker (the default) inherits this
    process's settings, a spawned one gets them from ``worker_init`` alone."""
    loader = torch.utils.data.DataLoader(ProbeDataset(), batch_size=None, num_workers=1,
                                         worker_init_fn=runtime.worker_init, multiprocessing_context=context)
    (item,) = list(loader)
    assert item["pid"] != os.getpid()
    assert item["faults"] <= ON_MAX, item
    assert item["env"] == dict.fromkeys(GLIBC_ENV, str(runtime.MALLOC_THRESHOLD))


# --- notebook kernels ----------------------------------------------------------------------------


@pytest.mark.slow
def test_in_effect_in_a_runner_kernel(tmp_path: Path, no_settings: pytest.MonkeyPatch) -> None:
    """A notebook run through the project's own execution path (execute_run: a pre-started
    kernel, papermill) measures itself. The runner's environment here lacks the variables, as
    when a script (not the CLI) drives the runner: the kernel gets them from the runner, and the
    notebook calls nothing (the project's notebooks also call configure_threads())."""
    from goose_lib.reports.execute import execute_run

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell(PROBE), new_code_cell(
        "import json, os\n"
        "print(json.dumps({'faults': heap_faults(), 'env': {k: v for k, v in os.environ.items() "
        "if k.startswith('MALLOC_')}}))")]
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    record = execute_run(path, tmp_path / "reports" / "probe", {}, registry={})
    assert record["status"] == "ok", record
    ran = nbformat.read(tmp_path / "reports" / "probe" / "notebook.ipynb", as_version=4)
    out = json.loads(ran.cells[-1].outputs[0]["text"].strip().splitlines()[-1])
    assert out["faults"] <= ON_MAX, out
    assert out["env"] == dict.fromkeys(GLIBC_ENV, str(runtime.MALLOC_THRESHOLD))
