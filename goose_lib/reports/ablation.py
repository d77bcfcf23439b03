"""The ablation runner: executes a spec's runs (see goose_lib.reports.spec) into a reports folder.

- One process (papermill API, one reused HTML exporter) or ``workers`` processes
  (``concurrent.futures``), a run starting once every run it depends on is done. Each of the
  ``workers`` processes gets ``cores // workers`` cores (``$GOOSE_CORES``), which the notebooks'
  ``configure_threads()`` turns into torch threads (goose_lib.runtime).
- A run is skipped when its key is unchanged: sha256 of the notebook file, the resolved
  parameters, the ``goose_lib`` sources (``GOOSE_SAM3_CODE_KEY`` pins this part), the input
  fingerprints (data roots, checkpoints) and the keys of its upstream runs. A run is complete
  only once its ``run.json`` (written last) exists, so a run killed mid-way is redone by the
  next invocation, and only that run. Failed runs are retried.
- A failing notebook is kept with its error (``status: failed``); its dependents get a
  ``status: skipped`` record naming the failed upstream; every other run goes on.
- Runs are guarded by a per-run file lock, and every file is written atomically, so two runners
  on the same folder neither corrupt records nor execute a run twice.
- ``shard=(i, n)``: of each stage's runs (sorted by name), runner i takes every n-th. A run
  whose upstream is neither in the shard nor complete on disk is reported ``blocked`` and left
  alone: on a cluster, run one job array per stage (``stage=k``), each after the previous one.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goose_lib.io import atomic_write_json, sha256_file, sha256_json
from goose_lib.reports import provenance
from goose_lib.reports.execute import (
    RECORD_FILE,
    RunSpecError,
    check_params,
    clear_dir,
    effective_params,
    execute_run,
    input_kinds,
    lock,
    read_record,
)
from goose_lib.reports.kernels import KernelPool
from goose_lib.reports.spec import AblationSpec, Run, resolve_params
from goose_lib.runtime import CORES_ENV, configure_allocator, cores_per_process

OK, FAILED, SKIPPED, CACHED, BLOCKED = "ok", "failed", "skipped", "cached", "blocked"


def select_runs(spec: AblationSpec, *, shard: tuple[int, int] | None = None,
                stage: int | None = None) -> list[Run]:
    """The runs this runner executes, in execution order (deterministic for a given spec)."""
    runs = [r for r in spec.runs if stage is None or r.stage == stage]
    if shard is None:
        return runs
    i, n = shard
    mine: set[str] = set()
    for s in sorted({r.stage for r in runs}):
        names = sorted(r.name for r in runs if r.stage == s)
        mine |= set(names[i::n])
    return [r for r in runs if r.name in mine]


CODE_KEY_ENV = "GOOSE_SAM3_CODE_KEY"
"""When set, its value stands for the code in run keys instead of the hash of the goose_lib
sources: pin it (e.g. to a release tag) to keep an ablation's runs when only code changed."""


def run_key(run: Run, params: Mapping[str, Any], inputs: Mapping[str, Any], upstream: Mapping[str, str]) -> str:
    """The skip key of a run (see module docstring)."""
    code = os.environ.get(CODE_KEY_ENV) or provenance.source_hash()
    return sha256_json({"notebook": sha256_file(run.notebook), "params": dict(params),
                        "code": code, "inputs": dict(inputs),
                        "upstream": dict(sorted(upstream.items()))})


def _warm_up(index: bool) -> None:
    """First-use imports of the runner in a background thread: papermill, the HTML exporter and,
    for the index page, matplotlib's Agg rendering (fonts). The runner mostly waits on kernels,
    so this overlaps with the first run instead of adding to it (~0.5 s a run on the demo)."""
    import threading

    def work() -> None:
        import io

        import papermill  # noqa: F401

        from goose_lib.reports.html import reporter

        reporter()
        if index:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(1, 1))
            fig.add_subplot().set_title("warm-up")
            fig.savefig(io.BytesIO(), format="png")

    threading.Thread(target=work, name="goose-runner-warm-up", daemon=True).start()


def _share_cores(cores: int) -> None:
    """Pool initializer: the notebooks' ``configure_threads()`` in this worker's kernels sees
    ``cores`` as its budget (goose_lib.runtime), so N workers do not run N x all-cores threads;
    and the malloc settings of goose_lib.runtime, however the runner itself was started."""
    os.environ[CORES_ENV] = str(cores)
    configure_allocator()


def _write_marker(reports_dir: Path, run: Run, status: str, error: str, key: str | None = None) -> dict:
    run_dir = reports_dir / run.name
    clear_dir(run_dir)
    record = {"name": run.name, "notebook": run.notebook.stem, "status": status, "error": error,
              "error_cell": None, "key": key}
    atomic_write_json(run_dir / RECORD_FILE, record)
    return record


def process_run(run: Run, reports_dir: str, upstream: Mapping[str, str], force: bool = False,
                registry: Mapping[str, type] | None = None, kernels: KernelPool | None = None) -> dict[str, Any]:
    """Execute one run under its lock unless it is up to date. ``upstream``: dependency run ->
    its key. Returns the record plus ``"outcome"`` (ok / failed / cached)."""
    root = Path(reports_dir).resolve()
    run_dir = root / run.name
    with lock(root, run.name):
        try:
            params = resolve_params(run, root)
            check_params(run.notebook, params, registry=registry, types=True)
            inputs = provenance.input_fingerprints(effective_params(run.notebook, params, registry), run_dir,
                                                   kinds=input_kinds(run.notebook, registry))
        except (RunSpecError, FileNotFoundError, ValueError) as exc:
            return {**_write_marker(root, run, FAILED, str(exc)), "outcome": FAILED}
        key = run_key(run, params, inputs, upstream)
        old = read_record(run_dir)
        if not force and old and old.get("status") == OK and old.get("key") == key:
            return {**old, "outcome": CACHED}
        record = execute_run(run.notebook, run_dir, params, key=key, inputs=inputs, registry=registry,
                             kernels=kernels)
    return {**record, "outcome": record["status"]}


def _prestart(kernels: KernelPool | None, runs: list[Run], results: Mapping[str, dict], root: Path,
              count: int = 2) -> None:
    """Start the kernels of the ``count`` runs likely to execute next (runs not cut off by a failed
    upstream and without a successful record), so they boot while other work goes on."""
    if kernels is None:
        return
    for run in runs:
        if count == 0:
            return
        if any(results.get(d, {}).get("outcome") in (FAILED, SKIPPED, BLOCKED) for d in run.deps):
            continue
        count -= 1
        if (read_record(root / run.name) or {}).get("status") != OK:
            kernels.prestart(root / run.name)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="runs", unit="run", disable=not enabled)


def run_ablation(spec: AblationSpec, reports_dir: str | os.PathLike, *, workers: int = 1,
                 shard: tuple[int, int] | None = None, stage: int | None = None, force: bool = False,
                 progress: bool = True, registry: Mapping[str, type] | None = None,
                 index: bool = True) -> dict[str, dict[str, Any]]:
    """Run the selected runs of ``spec`` into ``reports_dir``; returns run name -> record with
    ``"outcome"`` in ok / failed / cached / skipped / blocked. Writes the index page when
    ``index`` is set."""
    root = Path(reports_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    todo = select_runs(spec, shard=shard, stage=stage)
    selected = {r.name for r in todo}
    results: dict[str, dict[str, Any]] = {}
    pool = None
    if workers > 1:  # each worker (and the kernels it starts) gets its share of the cores
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_share_cores, initargs=(cores_per_process(workers),))
    in_flight: dict[cf.Future, Run] = {}
    kernels = KernelPool() if pool is None else None
    if todo:
        provenance.warm_up()
        _warm_up(index)
    bar = _progress(len(todo), progress)

    def finish(run: Run, result: dict[str, Any]) -> None:
        results[run.name] = result
        bar.update(1)
        bar.set_postfix_str(f"{run.name}: {result['outcome']}")

    def upstream_state(run: Run) -> tuple[str, dict[str, str]]:
        """('wait'|'ok'|SKIPPED|BLOCKED, dep -> key)."""
        keys: dict[str, str] = {}
        for d in run.deps:
            if d in selected:
                if d not in results:
                    return "wait", keys
                res = results[d]
                if res["outcome"] not in (OK, CACHED):
                    return (BLOCKED if res["outcome"] == BLOCKED else SKIPPED), {d: ""}
            else:
                res = read_record(root / d) or {}
                if res.get("status") != OK:
                    return BLOCKED, {d: ""}
            keys[d] = res.get("key") or ""
        return "ok", keys

    try:
        pending = list(todo)
        while pending or in_flight:
            for run in list(pending):
                state, keys = upstream_state(run)
                if state == "wait" or (state == "ok" and pool is not None and len(in_flight) >= workers):
                    continue
                pending.remove(run)
                if state == SKIPPED:
                    dep = next(iter(keys))
                    with lock(root, run.name):
                        rec = _write_marker(root, run, SKIPPED, f"upstream run {dep} did not succeed")
                    finish(run, {**rec, "outcome": SKIPPED})
                elif state == BLOCKED:
                    dep = next(iter(keys))
                    finish(run, {"name": run.name, "outcome": BLOCKED, "status": BLOCKED,
                                 "error": f"upstream run {dep} is not complete in {root} (run its stage first)"})
                elif pool is None:
                    _prestart(kernels, [run, *pending], results, root)  # this run's and the next
                    finish(run, process_run(run, str(root), keys, force, registry, kernels))
                    break  # re-scan from the top: order is the spec's
                else:
                    in_flight[pool.submit(process_run, run, str(root), keys, force, registry)] = run
            if in_flight:
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    run = in_flight.pop(fut)
                    try:
                        finish(run, fut.result())
                    except Exception as exc:  # noqa: BLE001 - a worker that died: record it, go on
                        with lock(root, run.name):
                            rec = _write_marker(root, run, FAILED, f"{type(exc).__name__}: {exc}")
                        finish(run, {**rec, "outcome": FAILED})
    finally:
        bar.close()
        if kernels is not None:
            kernels.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if index:
        from goose_lib.reports.index import build_index, save_settings

        save_settings(root, baseline=spec.baseline, compare=spec.compare, spec=str(spec.path), name=spec.name)
        build_index(root)
    return results


def run_single(notebook: Path, params: Mapping[str, Any], reports_dir: str | os.PathLike, *, name: str,
               registry: Mapping[str, type] | None = None, index: bool = True) -> dict[str, Any]:
    """``goose run``: check the parameters (before anything runs), execute the notebook into
    ``<reports_dir>/<name>`` under its lock and update the index page. Always executes."""
    check_params(notebook, params, registry=registry, types=True)
    root = Path(reports_dir).resolve()
    with lock(root, name):
        record = execute_run(notebook, root / name, params, registry=registry)
    if index:
        from goose_lib.reports.index import build_index

        build_index(root)
    return record


def summarise(results: Mapping[str, Mapping[str, Any]]) -> tuple[str, bool]:
    """(one line per run: outcome, name, error or warnings; whether every run is ok or cached)."""
    lines, ok = [], True
    for name, rec in results.items():
        outcome = rec.get("outcome", rec.get("status"))
        good = outcome in (OK, CACHED)
        ok &= good
        err = f"  {rec['error']}" if rec.get("error") and not good else ""
        lines.append(f"{outcome:8s} {name}{err}")
        lines += [f"         warning: {w}" for w in (rec.get("warnings", []) if outcome == OK else [])]
    return "\n".join(lines), ok


def run_demo(reports_dir: str | os.PathLike, *, workers: int = 1, force: bool = False,
             progress: bool = True) -> dict[str, dict[str, Any]]:
    """The main job: vendor the offline widget renderer into ``reports_dir``, make sure the embedded
    defaults exist (written on first use, said on stderr), and run ``ablations/paper.yaml``."""
    import sys

    from goose_lib.data.embedded import resolve_data_root
    from goose_lib.models.embedded import resolve_sam3_checkpoint
    from goose_lib.paths import EMBEDDED, repo_root
    from goose_lib.reports.html import vendor
    from goose_lib.reports.spec import load_spec

    spec = load_spec(repo_root() / "ablations" / "paper.yaml")
    vendor(Path(reports_dir), repo_root() / "vendor")
    print(f"embedded data: {resolve_data_root(EMBEDDED)}", file=sys.stderr, flush=True)
    print(f"embedded SAM3 checkpoint: {resolve_sam3_checkpoint(EMBEDDED)}", file=sys.stderr, flush=True)
    return run_ablation(spec, reports_dir, workers=workers, force=force, progress=progress)
