"""Real-browser fixtures: Debian's chromium driven by playwright (sync API), and a JupyterLab
server on localhost with a token and private settings/workspace folders.

Never `playwright install`: the browser is `/usr/bin/chromium` from Debian
(`make browser-deps`, i.e. `apt-get install -y chromium`). Without it every browser test is
skipped with that instruction. Every test in this folder gets the ``browser`` marker and the
xdist group "browser" (one worker runs them, sharing one chromium); test modules also set
``pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]`` to be explicit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from goose_lib.reports.lab import lab_command

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
LAB_START_TIMEOUT_S = 90.0


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection and xdist's grouping read the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.xdist_group("browser"))  # one worker runs them all


def chromium_path() -> str | None:
    """The Debian chromium binary, or None when it is not installed."""
    env = os.environ.get("GOOSE_CHROMIUM")
    for candidate in (env, CHROMIUM, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless chromium ``playwright.sync_api.Browser`` (one per test session/worker).

    Make pages with ``browser.new_page()`` (close them, or use ``browser.new_context()``).
    """
    exe = chromium_path()
    if exe is None:
        pytest.skip(f"Debian chromium not found at {CHROMIUM}: install it with `make browser-deps` "
                    "(apt-get install -y chromium); do not use `playwright install`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed: "
                                   "pip install -e '.[browser]'")
    with sync_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class LabServer:
    """A running JupyterLab: ``root`` is its file root (copy notebooks there)."""

    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path
    log: Path
    process: subprocess.Popen

    def lab_url(self, relpath: str) -> str:
        """URL opening ``root/relpath`` in JupyterLab, token included."""
        return f"{self.url}/lab/tree/{relpath}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> object:
        """Call the server's REST API (``/api/...``) and return the decoded JSON (or None)."""
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    """User settings: no news / update pop-ups, no toast notifications."""
    path = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}))


def _start_lab(base: Path) -> LabServer:
    root, settings, workspaces, runtime = (base / n for n in ("root", "settings", "workspaces", "runtime"))
    for d in (root, settings, workspaces, runtime):
        d.mkdir(parents=True, exist_ok=True)
    _write_settings(settings)
    port = _free_port()
    log = base / f"jupyterlab-{port}.log"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(workspaces), JUPYTER_CONFIG_DIR=str(base / "config"),
               PYTHONUNBUFFERED="1")
    # the command `goose lab` / `make lab` runs (works as root), plus test-only settings
    cmd, token = lab_command(root, port=port, extra=(
        "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"))
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, log, proc)
    deadline = time.monotonic() + LAB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log}: JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("/api/status")
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.25)
    _stop_lab(server)
    raise RuntimeError(f"{log}: JupyterLab not ready after {LAB_START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def _stop_lab(server: LabServer) -> None:
    """Shut the server down (kernels included), escalating to SIGTERM / SIGKILL of its group."""
    proc = server.process
    if proc.poll() is None:
        try:
            server.api("/api/shutdown", method="POST")
            proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:  # URLError is an OSError
            print(f"JupyterLab did not shut down cleanly ({exc}); sending signals")
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def jupyterlab_server(tmp_path_factory: pytest.TempPathFactory, goose_home: Path) -> Iterator[LabServer]:
    """A JupyterLab server for this test session (kernels inherit ``GOOSE_SAM3_HOME``)."""
    server = _start_lab(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        _stop_lab(server)
