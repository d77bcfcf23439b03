"""The reports verbs of the ``goose`` command: run, ablate, vendor, demo (arguments and errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reports_fakes import write_notebook

from goose_lib.cli import main
from goose_lib.paths import repo_root
from goose_lib.reports.spec import load_spec


@pytest.mark.slow
def test_run_parses_yaml_values_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    nb = write_notebook(tmp_path / "fake.ipynb", light=True)
    reports = tmp_path / "reports"
    code = main(["run", str(nb), "-p", "alpha", "3", "-p", "block_file", "null", "-p", "log_file", "''",
                 "--name", "r1", "--reports", str(reports)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("ok r1 in ") and str(reports / "r1" / "report.html") in out
    params = json.loads((reports / "r1" / "params.json").read_text())["params"]
    assert params == {"alpha": 3, "block_file": None, "log_file": ""}
    assert type(params["alpha"]) is int
    assert json.loads((reports / "r1" / "metrics.json").read_text())["composite"] == 1.5
    for name in ("notebook.ipynb", "report.html", "provenance.json", "run.json"):
        assert (reports / "r1" / name).is_file()
    assert 'href="r1/report.html"' in (reports / "index.html").read_text()


def test_run_rejects_unknown_parameters_before_running(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    nb = write_notebook(tmp_path / "fake.ipynb")
    reports = tmp_path / "reports"
    assert main(["run", str(nb), "-p", "alpah", "3", "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"goose run: {nb}: unknown parameter(s) ['alpah']")
    assert not reports.exists()
    assert main(["run", "99_no_such_notebook", "--reports", str(reports)]) == 2
    assert "99_no_such_notebook.ipynb: notebook not found" in capsys.readouterr().err
    assert main(["run", str(nb), "--name", "../escape", "--reports", str(reports)]) == 2
    assert "invalid run name" in capsys.readouterr().err


def test_run_rejects_registered_parameter_names(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from goose_lib.params import NOTEBOOK_PARAMS

    name = next(iter(NOTEBOOK_PARAMS))
    from goose_lib.reports.execute import notebooks_dir

    if not (notebooks_dir() / f"{name}.ipynb").is_file():
        pytest.skip(f"notebooks/{name}.ipynb not written yet")
    assert main(["run", name, "-p", "no_such_parameter", "1", "--reports", str(tmp_path / "r")]) == 2
    assert "unknown parameter(s) ['no_such_parameter']" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_ablate_and_vendor_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.yaml").write_text("steps:\n  a:\n    notebook: 99_missing\n")
    assert main(["ablate", str(tmp_path / "bad.yaml"), "--reports", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith(f"goose ablate: {tmp_path / 'bad.yaml'}: steps.a:")
    write_notebook(tmp_path / "fake.ipynb")
    (tmp_path / "ok.yaml").write_text("steps:\n  a:\n    notebook: fake.ipynb\n")
    assert main(["ablate", str(tmp_path / "ok.yaml"), "--shard", "3/2", "--reports", str(tmp_path / "r")]) == 2
    assert "shard index must satisfy" in capsys.readouterr().err
    assert main(["ablate", str(tmp_path / "ok.yaml"), "--workers", "0"]) == 2
    # vendor: packages already in the npm prefix are copied, no network needed
    vendor_dir = tmp_path / "v"
    from goose_lib.reports.html import VENDORED_FILES

    for src, _ in VENDORED_FILES:
        (vendor_dir / "node_modules" / src).parent.mkdir(parents=True, exist_ok=True)
        (vendor_dir / "node_modules" / src).write_text("//")
    assert main(["vendor", "--reports", str(tmp_path / "r"), "--vendor-dir", str(vendor_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("_static: ready")
    assert (tmp_path / "r" / "_static" / "require.js").is_file()


def test_paper_spec_is_valid_when_the_notebooks_exist() -> None:
    from goose_lib.paths import repo_root
    from goose_lib.reports.execute import RunSpecError
    from goose_lib.reports.spec import load_spec

    try:
        spec = load_spec(repo_root() / "ablations" / "paper.yaml")
    except RunSpecError as exc:
        if "notebook not found" in str(exc):
            pytest.skip(f"a notebook of the paper ablation is not written yet: {exc}")
        raise
    assert spec.baseline and next(iter(spec.compare)) == "baseline" and len(spec.compare) == 4


def test_leaderboard_spec_is_valid_and_shares_the_paper_runs() -> None:
    """ablations/leaderboard.yaml validates (names, types, references) and its paper-pipeline runs are
    paper.yaml's own (same names, notebooks and parameters: up to date after `goose demo`)."""
    from goose_lib.paths import repo_root
    from goose_lib.reports.spec import load_spec

    lb = load_spec(repo_root() / "ablations" / "leaderboard.yaml")
    paper = {r.name: r for r in load_spec(repo_root() / "ablations" / "paper.yaml").runs}
    runs = {r.name: r for r in lb.runs}
    shared = {n for n in paper if n.split("-seed=")[0] in ("train_aggressive", "teacher", "train_distill", "evaluate")}
    assert len(shared) == 12 and shared <= set(runs)
    for name in shared:
        assert (runs[name].notebook, runs[name].params) == (paper[name].notebook, paper[name].params)
    techniques = {"category", "ensemble3", "copy_paste", "repeat", "ema", "gauss4flip", "ohem", "balanced",
                  "layer_decay", "all"}
    assert {r.step.removeprefix("eval_") for r in lb.runs if r.step.startswith("eval_")} == techniques
    assert all(runs[f"eval_{t}-seed={k}"].seed == k for t in techniques for k in (0, 1, 2))
    assert lb.baseline == "paper" and set(lb.compare) == {"paper", "all"} | {f"+{t}" for t in techniques - {"all"}}
    assert runs["eval_ensemble3-seed=1"].deps == ("train_ensemble3-seed=1",)  # same-seed upstream


def test_lab_command_is_local_tokened_and_runs_as_root(tmp_path: Path, monkeypatch, capsys) -> None:
    from goose_lib.reports.lab import lab_command

    argv, token = lab_command(tmp_path, port=9999)
    assert "--allow-root" in argv and "--ip=127.0.0.1" in argv and "--port=9999" in argv
    assert f"--IdentityProvider.token={token}" in argv and len(token) >= 32
    assert f"--ServerApp.root_dir={tmp_path}" in argv
    # `goose lab` runs exactly that command (the browser tier starts its server with lab_command too)
    seen = {}
    monkeypatch.setattr("subprocess.call", lambda a: seen.setdefault("argv", a) and 0)
    assert main(["lab", "--dir", str(tmp_path), "--port", "9998"]) == 0
    assert seen["argv"][:3] == argv[:3] and "--port=9998" in seen["argv"]
    assert "http://127.0.0.1:9998/lab?token=" in capsys.readouterr().err


@pytest.mark.parametrize("spec", sorted(p.name for p in (repo_root() / "ablations").glob("*.yaml")))
def test_every_shipped_ablation_spec_is_valid(spec: str) -> None:
    """Every spec under ablations/ loads against today's notebooks and parameter names (a renamed
    parameter must be renamed in the specs too)."""
    loaded = load_spec(repo_root() / "ablations" / spec)
    assert loaded.runs and (loaded.baseline is None or loaded.baseline in loaded.compare)


def test_a_run_name_means_one_run_across_the_shipped_specs() -> None:
    """Specs run into one reports folder share runs by name (a run up to date for one is reused by the
    other), so a name used by two specs must be the same notebook with the same parameters; else the
    second ablation would overwrite the first's run with another one of the same name."""
    seen: dict[str, tuple] = {}
    for path in sorted((repo_root() / "ablations").glob("*.yaml")):
        for run in load_spec(path).runs:
            mine = (run.notebook, run.params, run.deps)
            first = seen.setdefault(run.name, (path.name, mine))
            assert first[1] == mine, f"{run.name}: differs between {first[0]} and {path.name}"
    assert "train_distill-seed=0" in seen and "train_long-seed=2" in seen
