"""Ablation specs (YAML): steps, variants, grids and the dependencies between steps.

Format (documented with examples in ``ablations/README.md``)::

    name: paper                       # optional label
    common: {seed: 0}                 # given to every step whose notebook declares the name
    steps:
      train:                          # step name (runs are named after it)
        notebook: 03_training         # a notebooks/ name, or a .ipynb path relative to the spec
        params: {epochs: 2}           # the step's base parameters
        variants:                     # optional explicit list, each -> run "<step>-<name>"
          - {name: aggressive, params: {photometric: aggressive}}
        grid: {lr: [0.1, 0.01]}       # optional cartesian product -> run "<step>[-<variant>]-lr=0.1"
        seeds: [0, 1, 2]              # optional: each run once per seed -> "<run>-seed=0" (param seed)
        after: [explore]              # optional extra ordering (no data passed)
      evaluate:
        notebook: 04_error_analysis
        params: {checkpoint: "${train-aggressive-seed=0.checkpoint}"}
    index: {baseline: train, compare: {baseline: train, +aggressive: train-aggressive}}

``${RUN.KEY}`` is replaced by ``KEY`` of run RUN's ``metrics.json`` (RUN may be a step name when
the step has exactly one run, or one run of the consuming run's seed: a seeded run reads the
same-seed run of a seeded step; ``KEY`` may be ``run_dir``, the run's folder). A whole-string
reference keeps the recorded value's type; a relative path recorded by RUN (relative to its run
folder) that exists there is rewritten relative to the consuming run's folder. References and
``after`` define the dependency graph; a run's *stage* is its depth in it. The index compares
steps (or runs): a seeded step is one variant whose runs are its seeds.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from goose_lib.reports.execute import (
    RunSpecError,
    check_params,
    check_run_name,
    declared_params,
    resolve_notebook,
)

REF = re.compile(r"\$\{([^}]+)\}")
_STEP_KEYS = {"notebook", "params", "variants", "grid", "seeds", "after"}
_TOP_KEYS = {"name", "common", "steps", "index"}


@dataclass(frozen=True)
class Run:
    """One notebook execution of an ablation."""

    name: str
    step: str
    notebook: Path
    params: dict[str, Any]  # may hold ${RUN.KEY} references
    deps: tuple[str, ...] = ()  # run names this run waits for
    stage: int = 0
    seed: int | None = None  # set for the runs of a step with ``seeds``


@dataclass(frozen=True)
class AblationSpec:
    path: Path
    name: str
    runs: tuple[Run, ...]  # in execution order (stage, then spec order)
    baseline: str | None = None  # label of the baseline variant (a key of ``compare``)
    compare: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label -> its runs (one per seed), in order

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


def references(value: Any) -> list[tuple[str, str]]:
    """(run, key) pairs referenced by a parameter value (strings only)."""
    if not isinstance(value, str):
        return []
    return [tuple(m.group(1).rsplit(".", 1)) if "." in m.group(1) else (m.group(1), "")
            for m in REF.finditer(value)]


def _fmt(v: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(v))


def _expand(step: str, body: Mapping[str, Any], path: Path) -> list[tuple[str, dict[str, Any], int | None]]:
    base = dict(body.get("params") or {})
    variants = body.get("variants") or [None]
    grid = body.get("grid") or {}
    if not isinstance(grid, Mapping) or not all(isinstance(v, list) and v for v in grid.values()):
        raise RunSpecError(f"{path}: steps.{step}.grid must map parameter names to non-empty lists")
    seeds = body.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                              or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise RunSpecError(f"{path}: steps.{step}.seeds must be a non-empty list of distinct integers")
    if seeds is not None and "seed" in grid:
        raise RunSpecError(f"{path}: steps.{step}: give seeds either as 'seeds' or in 'grid', not both")
    out = []
    for var in variants:
        if var is not None and not (isinstance(var, Mapping) and "name" in var):
            raise RunSpecError(f"{path}: steps.{step}.variants entries need a name: {var!r}")
        vparams = {**base, **(dict(var.get("params") or {}) if var else {})}
        vname = f"{step}-{var['name']}" if var else step
        for combo in itertools.product(*grid.values()):
            params = {**vparams, **dict(zip(grid, combo))}
            suffix = ",".join(f"{k}={_fmt(v)}" for k, v in zip(grid, combo))
            name = f"{vname}-{suffix}" if suffix else vname
            if seeds is None:
                out.append((name, params, None))
            else:
                out += [(f"{name}-seed={k}", {**params, "seed": k}, k) for k in seeds]
    return out


def load_spec(path: str | os.PathLike, *, registry: Mapping[str, type] | None = None) -> AblationSpec:
    """Read and validate a spec: every notebook exists, every parameter name is declared by its
    notebook (types checked where no reference is involved), references name known runs, the
    graph has no cycle. Raises RunSpecError (message starts with the spec path) before anything
    runs."""
    path = Path(path).resolve()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunSpecError(f"{path}: ablation spec not found") from None
    except yaml.YAMLError as exc:
        raise RunSpecError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("steps"), Mapping) or not doc["steps"]:
        raise RunSpecError(f"{path}: a spec needs a non-empty 'steps' mapping")
    if set(doc) - _TOP_KEYS:
        raise RunSpecError(f"{path}: unknown top-level key(s) {sorted(set(doc) - _TOP_KEYS)}")
    common = dict(doc.get("common") or {})
    raw: list[tuple[str, str, Path, dict[str, Any], list[str], int | None]] = []
    used_common: set[str] = set()
    for step, body in doc["steps"].items():
        step = check_run_name(str(step))
        if not isinstance(body, Mapping) or "notebook" not in body:
            raise RunSpecError(f"{path}: steps.{step} needs a 'notebook'")
        if set(body) - _STEP_KEYS:
            raise RunSpecError(f"{path}: steps.{step}: unknown key(s) {sorted(set(body) - _STEP_KEYS)}")
        try:
            notebook = resolve_notebook(body["notebook"], base=path.parent)
        except RunSpecError as exc:
            raise RunSpecError(f"{path}: steps.{step}: {exc}") from None
        declared = declared_params(notebook, registry)
        shared = {k: v for k, v in common.items() if k in declared}
        used_common |= set(shared)
        for name, params, seed in _expand(step, body, path):
            params = {**shared, **params}
            literal = {k: v for k, v in params.items() if not references(v)}
            try:
                check_params(notebook, params, registry=registry, types=False)
                check_params(notebook, literal, registry=registry, types=True)
            except RunSpecError as exc:
                raise RunSpecError(f"{path}: steps.{step} (run {name}): {exc}") from None
            raw.append((check_run_name(name), step, notebook, params, list(body.get("after") or []), seed))
    if set(common) - used_common:
        raise RunSpecError(f"{path}: common parameter(s) {sorted(set(common) - used_common)} are "
                           f"declared by no step's notebook")
    return _graph(path, doc, raw)


def _graph(path: Path, doc: Mapping[str, Any], raw: list) -> AblationSpec:
    names = [r[0] for r in raw]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RunSpecError(f"{path}: duplicate run name(s) {dup}")
    by_step: dict[str, list[str]] = {}
    seed_of = {r[0]: r[5] for r in raw}
    for name, step, *_ in raw:
        by_step.setdefault(step, []).append(name)

    def target(ref: str, where: str, seed: int | None = None) -> list[str]:
        if ref in names:
            return [ref]
        if ref in by_step:
            same = [n for n in by_step[ref] if seed is not None and seed_of[n] == seed]
            return same if len(same) == 1 else by_step[ref]
        raise RunSpecError(f"{path}: {where}: unknown run or step {ref!r}; runs are {names}")

    deps: dict[str, tuple[str, ...]] = {}
    params_out: dict[str, dict[str, Any]] = {}
    for name, step, _nb, params, after, seed in raw:
        d: list[str] = []
        for a in after:
            d += target(str(a), f"steps.{step}.after", seed)
        resolved = {}
        for k, v in params.items():
            for ref, key in references(v):
                runs = target(ref, f"run {name}, parameter {k}", seed)
                if len(runs) != 1 or not key:
                    raise RunSpecError(f"{path}: run {name}, parameter {k}: ${{{ref}.{key}}} must name one "
                                       f"run and a key, e.g. ${{{runs[0]}.checkpoint}}")
                v = v.replace(f"${{{ref}.{key}}}", f"${{{runs[0]}.{key}}}")
                d += runs
            resolved[k] = v
        if name in d:
            raise RunSpecError(f"{path}: run {name} depends on itself")
        deps[name], params_out[name] = tuple(dict.fromkeys(d)), resolved
    stage: dict[str, int] = {}

    def depth(n: str, trail: tuple[str, ...]) -> int:
        if n in trail:
            raise RunSpecError(f"{path}: dependency cycle {' -> '.join(trail + (n,))}")
        if n not in stage:
            stage[n] = 1 + max((depth(d, trail + (n,)) for d in deps[n]), default=-1)
        return stage[n]

    for n in names:
        depth(n, ())
    runs = [Run(name, step, nb, params_out[name], deps[name], stage[name], seed)
            for name, step, nb, _p, _a, seed in raw]
    runs.sort(key=lambda r: (r.stage, names.index(r.name)))
    index = dict(doc.get("index") or {})
    compare: dict[str, tuple[str, ...]] = {}
    for label, ref in dict(index.get("compare") or {}).items():
        compare[str(label)] = tuple(target(str(ref), f"index.compare.{label}"))
    baseline = index.get("baseline")
    if baseline is not None:
        baseline = str(baseline)
        if baseline not in compare:  # a run or step name: the variant of those runs
            runs_of = tuple(target(baseline, "index.baseline"))
            label = next((lbl for lbl, r in compare.items() if r == runs_of), None)
            if label is None:
                compare = {baseline: runs_of, **compare}
                label = baseline
            baseline = label
    return AblationSpec(path, str(doc.get("name") or path.stem), tuple(runs), baseline, compare)


def resolve_params(run: Run, reports_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.params`` with every ``${RUN.KEY}`` replaced from the upstream runs' metrics.json.
    Raises RunSpecError naming the upstream metrics file when a key is missing."""
    from goose_lib.reports.record import METRICS_FILE, load_metrics

    reports_dir = Path(reports_dir).resolve()
    here = reports_dir / run.name
    out: dict[str, Any] = {}
    for k, v in run.params.items():
        refs = references(v)
        for ref, key in refs:
            up = reports_dir / ref
            if key == "run_dir":
                value: Any = os.path.relpath(up, here)
            else:
                metrics = load_metrics(up)
                if key not in metrics:
                    raise RunSpecError(f"{up / METRICS_FILE}: no {key!r} recorded (needed by run "
                                       f"{run.name}, parameter {k}); recorded keys: {sorted(metrics)}")
                value = metrics[key]
                if isinstance(value, str) and not os.path.isabs(value) and (up / value).exists():
                    value = os.path.relpath(up / value, here)
            if v == f"${{{ref}.{key}}}":
                v = value
                break
            v = v.replace(f"${{{ref}.{key}}}", str(value))
        out[k] = v
    return out
