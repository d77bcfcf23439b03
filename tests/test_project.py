"""The project's set-up contract: README commands, CI entry, environment.yml vs pyproject."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README must open with a bash block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_demo_and_test_commands() -> None:
    cmds = _readme_commands()
    assert cmds == ["make demo", "make test"]
    first_lines = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any("make demo" in line for line in first_lines)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = _readme_commands()[1]
    assert re.search(rf"^{re.escape(test_cmd)}\s*$", ci, re.MULTILINE), ".ci/run must call the README's test command"


def test_makefile_installs_torch_pin_before_project() -> None:
    mk = (ROOT / "Makefile").read_text()
    torch_at = mk.index("pip install -q torch==2.13.0")
    project_at = mk.index("pip install -q -e '.[dev]'")
    assert torch_at < project_at


def test_environment_yml_mirrors_pyproject() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["torch==2.13.0", "-e .[dev]"]
    assert "dev" in py["project"]["optional-dependencies"]
    torch_req = next(r for r in py["project"]["dependencies"] if r.startswith("torch"))
    assert "2.13.0" in torch_req, "pyproject's torch range must admit the pinned CPU build"
    assert not any(r.startswith("torchvision") for r in py["project"]["dependencies"])
