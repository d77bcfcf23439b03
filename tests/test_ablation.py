"""goose_lib.reports.spec / ablation: spec validation, expansion, sharding, and the runner's
behaviour under faults (failing variant, killed run, two concurrent runners)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from reports_fakes import write_notebook, write_spec

from goose_lib.config import parse_shard
from goose_lib.reports.ablation import run_ablation, select_runs
from goose_lib.reports.execute import RunSpecError, read_record
from goose_lib.reports.spec import Run, load_spec, resolve_params

SPEC_HEAD = "steps:\n  a:\n    notebook: fake.ipynb\n"


def _spec(tmp_path: Path, text: str) -> Path:
    write_notebook(tmp_path / "fake.ipynb")
    (tmp_path / "s.yaml").write_text(text)
    return tmp_path / "s.yaml"


@pytest.mark.parametrize("text, message", [
    ("steps:\n  a:\n    notebook: 99_missing\n", r"steps\.a: .*99_missing\.ipynb: notebook not found"),
    (SPEC_HEAD + "    params: {alpah: 1}\n", r"steps\.a \(run a\): .*unknown parameter\(s\) \['alpah'\]"),
    (SPEC_HEAD + "    variants: [{name: v, params: {nope: 1}}]\n", r"run a-v\).*unknown parameter"),
    (SPEC_HEAD + "    grid: {betta: [1, 2]}\n", r"unknown parameter\(s\) \['betta'\]"),
    ("common: {seeed: 1}\n" + SPEC_HEAD, r"common parameter\(s\) \['seeed'\] are declared by no step"),
    (SPEC_HEAD + "    params: {checkpoint: '${zz.checkpoint}'}\n", r"unknown run or step 'zz'"),
    (SPEC_HEAD + "    params: {checkpoint: '${a.checkpoint}'}\n", r"run a depends on itself"),
    (SPEC_HEAD + "    after: [b]\n  b:\n    notebook: fake.ipynb\n    after: [a]\n", r"dependency cycle"),
    (SPEC_HEAD + "    grid: {alpha: [1, 2]}\n  b:\n    notebook: fake.ipynb\n"
     "    params: {checkpoint: '${a.checkpoint}'}\n", r"must name one run"),
    (SPEC_HEAD + "index: {baseline: nobody}\n", r"index.baseline: unknown run or step 'nobody'"),
    ("stepz: {}\n", r"needs a non-empty 'steps'"),
])
def test_bad_specs_are_rejected_before_anything_runs(tmp_path: Path, text: str, message: str) -> None:
    spec = _spec(tmp_path, text)
    with pytest.raises(RunSpecError, match=message) as info:
        load_spec(spec, registry={})
    assert str(info.value).startswith(str(spec))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.ipynb", "s.yaml"]  # nothing ran


def test_registered_parameter_types_are_checked(tmp_path: Path) -> None:
    from reports_fakes import FakeParams

    spec = _spec(tmp_path, SPEC_HEAD + "    params: {fail: maybe}\n")
    with pytest.raises(RunSpecError, match=r"FakeParams\.fail: expected"):
        load_spec(spec, registry={"fake": FakeParams})


def test_variants_grid_dependencies_and_stages(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, """
common: {log_file: l.txt}
steps:
  train:
    notebook: fake.ipynb
    params: {alpha: 1}
    variants: [{name: std}, {name: agg, params: {alpha: 2}}]
    grid: {fail: [false, true]}
  ev:
    notebook: fake.ipynb
    params: {checkpoint: "${train-agg-fail=False.checkpoint}", block_file: "${train-std-fail=True.run_dir}/x"}
  late:
    notebook: fake.ipynb
    after: [ev]
"""), registry={})
    names = [r.name for r in spec.runs]
    assert names == ["train-std-fail=False", "train-std-fail=True", "train-agg-fail=False",
                     "train-agg-fail=True", "ev", "late"]
    agg = spec.run("train-agg-fail=True")
    assert agg.params == {"log_file": "l.txt", "alpha": 2, "fail": True} and agg.stage == 0
    assert spec.run("ev").deps == ("train-agg-fail=False", "train-std-fail=True") and spec.run("ev").stage == 1
    assert spec.run("late").stage == 2 and spec.name == "s"


def test_shards_partition_each_stage_deterministically(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, SPEC_HEAD + "    grid: {alpha: [1, 2, 3, 4, 5]}\n  b:\n"
                                        "    notebook: fake.ipynb\n    after: [a]\n"), registry={})
    shards = [select_runs(spec, shard=(i, 3)) for i in range(3)]
    flat = [r.name for s in shards for r in s]
    assert sorted(flat) == sorted(r.name for r in spec.runs) and len(flat) == len(set(flat))
    assert [r.name for r in shards[0]] == ["a-alpha=1", "a-alpha=4", "b"]
    assert shards == [select_runs(spec, shard=(i, 3)) for i in range(3)]
    assert [r.name for r in select_runs(spec, stage=1)] == ["b"]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1-2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_references_resolve_from_upstream_metrics(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "up" / "ckpt").mkdir(parents=True)
    (reports / "up" / "metrics.json").write_text(json.dumps({"checkpoint": "ckpt", "classes": [3, 5]}))
    run = Run("down", "down", tmp_path / "x.ipynb",
              {"checkpoint": "${up.checkpoint}", "sel": "${up.classes}", "cache": "${up.run_dir}/cache", "n": 2})
    assert resolve_params(run, reports) == {"checkpoint": "../up/ckpt", "sel": [3, 5],
                                            "cache": "../up/cache", "n": 2}
    with pytest.raises(RunSpecError, match=r"up/metrics\.json: no 'miou' recorded"):
        resolve_params(Run("d", "d", tmp_path / "x.ipynb", {"m": "${up.miou}"}), reports)


def _runner(spec: Path, reports: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "GOOSE_SAM3_CODE_KEY": "pinned-for-test"}  # the shared tree may change
    return subprocess.Popen([sys.executable, "-m", "goose_lib", "ablate", str(spec), "--reports", str(reports),
                             "--no-progress", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True, env=env)


@pytest.mark.slow
def test_faults_failing_variant_killed_run_and_two_runners(tmp_path: Path) -> None:
    log, block = tmp_path / "log.txt", tmp_path / "block"
    block.touch()
    spec = write_spec(tmp_path, log=log, block=str(block))
    reports = tmp_path / "reports"
    first = _runner(spec, reports)
    deadline = time.time() + 120
    while not Path(f"{block}.started").exists():  # "evaluate" is executing (and blocked)
        assert first.poll() is None and time.time() < deadline, first.communicate()[0]
        time.sleep(0.1)
    # the failing variant was kept with its error while the others went on
    assert read_record(reports / "train-broken")["error"] == "ValueError: boom in this variant"
    assert (reports / "train-broken" / "notebook.ipynb").is_file()
    assert read_record(reports / "train-strong")["status"] == "ok"
    os.killpg(first.pid, signal.SIGKILL)  # the runner and its kernel, mid-run
    first.wait()
    assert read_record(reports / "evaluate") is None  # no completion marker
    assert (reports / "evaluate" / "params.json").exists()
    block.unlink()
    log.write_text("")
    # two runners on the same folder at once (one with 2 worker processes): the killed run is
    # redone once, the unchanged runs are not redone, the failed one is retried by each runner
    second, third = _runner(spec, reports), _runner(spec, reports, "--workers", "2")
    outs = [second.communicate(timeout=240)[0], third.communicate(timeout=240)[0]]
    assert second.returncode == third.returncode == 1, outs  # train-broken fails in both
    assert Counter(log.read_text().split()) == Counter({"evaluate": 1, "train-broken": 2}), outs
    for run, status in [("train-base", "ok"), ("train-strong", "ok"), ("evaluate", "ok"),
                        ("train-broken", "failed"), ("after_broken", "skipped")]:
        assert json.loads((reports / run / "run.json").read_text())["status"] == status
    assert read_record(reports / "after_broken")["error"] == "upstream run train-broken did not succeed"
    assert json.loads((reports / "evaluate" / "metrics.json").read_text())["upstream"] == "alpha=2.0"
    assert not list(reports.rglob("*.tmp"))
    page = (reports / "index.html").read_text()
    assert '<tr class="failed">' in page and "boom in this variant" in page
    assert "cached" in outs[0] and "cached" in outs[1]


@pytest.mark.slow
def test_in_process_runner_skips_unchanged_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOSE_SAM3_CODE_KEY", "pinned-for-test")
    write_notebook(tmp_path / "fake.ipynb", light=True)
    (tmp_path / "s.yaml").write_text(f"""
common: {{log_file: {tmp_path / 'log.txt'}}}
steps:
  a: {{notebook: fake.ipynb, variants: [{{name: one}}, {{name: two, params: {{alpha: 2}}}}]}}
  b: {{notebook: fake.ipynb, params: {{checkpoint: "${{a-two.checkpoint}}"}}}}
""")
    spec = load_spec(tmp_path / "s.yaml", registry={})
    res = run_ablation(spec, tmp_path / "reports", progress=False, registry={})
    assert [r["outcome"] for r in res.values()] == ["ok", "ok", "ok"]
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace("alpha: 2", "alpha: 4"))
    res = run_ablation(load_spec(tmp_path / "s.yaml", registry={}), tmp_path / "reports", progress=False,
                       registry={})
    # a-two changed, so did b's upstream key; a-one did not
    assert {n: r["outcome"] for n, r in res.items()} == {"a-one": "cached", "a-two": "ok", "b": "ok"}
    assert (tmp_path / "log.txt").read_text().split() == ["a-one", "a-two", "b", "a-two", "b"]
    assert json.loads((tmp_path / "reports/b/metrics.json").read_text())["upstream"] == "alpha=4"


def test_a_run_whose_upstream_is_elsewhere_and_incomplete_is_blocked(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, SPEC_HEAD + "  b:\n    notebook: fake.ipynb\n"
                                        "    params: {checkpoint: '${a.checkpoint}'}\n"), registry={})
    res = run_ablation(spec, tmp_path / "reports", stage=1, progress=False, registry={}, index=False)
    assert res["b"]["outcome"] == "blocked" and "upstream run a is not complete" in res["b"]["error"]
    assert not (tmp_path / "reports" / "b").exists()  # nothing ran, nothing written


@pytest.mark.slow
def test_a_killed_training_inside_an_ablation_resumes_from_its_checkpoint(tmp_path: Path, tiny_root: Path) -> None:
    """Preemption: kill -9 the runner (and its kernel) mid-training; the next invocation resumes
    the training from its last checkpoint (not from step 0) and ends with the weights of an
    uninterrupted run."""
    from safetensors.torch import load_file

    from goose_lib.models.tiny import build_tiny_checkpoint

    small = build_tiny_checkpoint(tmp_path / "sam3_112", image_size=112)
    spec = tmp_path / "train.yaml"
    spec.write_text(
        "steps:\n  train:\n    notebook: 03_training\n    params:\n"
        f"      data_root: {tiny_root}\n      sam3_checkpoint: {small}\n      decoder_channels: 16\n"
        "      batch_size: 2\n      steps: 60\n      checkpoint_interval: 5\n      val_interval: 0\n"
        "      train_limit: 4\n      val_limit: 2\n      warmup_steps: 2\n      progress: false\n")
    reports = tmp_path / "reports"
    first = _runner(spec, reports)
    latest = reports / "train" / "training" / "latest.json"
    deadline = time.time() + 240
    while not latest.exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()[0]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 0 < killed_at < 60 and read_record(reports / "train") is None
    second = _runner(spec, reports)
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out
    m = json.loads((reports / "train" / "metrics.json").read_text())
    assert m["resumed_from"] is not None and m["resumed_from"] >= killed_at and m["steps"] == 60
    assert any(f"(step {m['resumed_from']})" in n and n.startswith("resumed from") for n in m["notes"])
    clean = _runner(spec, tmp_path / "clean")
    assert clean.communicate(timeout=600)[0] is not None and clean.returncode == 0
    a = load_file(str(reports / "train" / m["checkpoint"] / "model.safetensors"))
    mc = json.loads((tmp_path / "clean" / "train" / "metrics.json").read_text())
    assert mc["resumed_from"] is None
    b = load_file(str(tmp_path / "clean" / "train" / mc["checkpoint"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


@pytest.mark.slow
def test_a_moved_reports_folder_is_all_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 case 4: results are recorded relative to the run folder, so run keys do not depend on
    where the reports folder lies: move it and rerun, and nothing is recomputed."""
    import shutil

    from goose_lib.reports.record import relative

    monkeypatch.setenv("GOOSE_SAM3_CODE_KEY", "pinned-for-test")
    write_notebook(tmp_path / "fake.ipynb", light=True)
    (tmp_path / "s.yaml").write_text(f"""
common: {{log_file: {tmp_path / 'log.txt'}}}
steps:
  a: {{notebook: fake.ipynb, params: {{alpha: 2}}}}
  b: {{notebook: fake.ipynb, params: {{checkpoint: "${{a.checkpoint}}"}}}}
""")
    spec = load_spec(tmp_path / "s.yaml", registry={})
    first = run_ablation(spec, tmp_path / "reports", progress=False, registry={})
    assert [r["outcome"] for r in first.values()] == ["ok", "ok"]
    shutil.move(str(tmp_path / "reports"), str(tmp_path / "moved"))
    again = run_ablation(spec, tmp_path / "moved", progress=False, registry={})
    assert [r["outcome"] for r in again.values()] == ["cached", "cached"]
    assert (tmp_path / "log.txt").read_text().split() == ["a", "b"]  # nothing ran twice
    # what the notebooks record: inside the reports folder relative to the run, outside as is
    run = tmp_path / "moved" / "b"
    assert relative(tmp_path / "moved" / "a" / "ckpt", run) == "../a/ckpt"
    assert relative("/elsewhere/cache", run) == "/elsewhere/cache" and relative("untrained", run) == "untrained"
