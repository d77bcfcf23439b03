"""HTML pages of executed notebooks that render offline, widgets included.

A run page is nbconvert's ``lab`` HTML with three changes: require.js and the widget renderer
(``@jupyter-widgets/html-manager``'s ``embed-amd.js``) are loaded from ``<reports>/_static/``
through *relative* URLs (a copied reports folder still renders), MathJax is not loaded from a
CDN (no network), and the exporter is built once per process and reused (~0.03 s a page).

``vendor`` fetches the two npm packages once (``npm install --prefix <vendor_dir>``, an ignored
folder) and copies the files the pages need into ``<reports>/_static/``. Without npm the pages
still work; widget snapshots then stay blank (a warning says so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

from goose_lib.io import atomic_write_text

STATIC_DIR = "_static"
REQUIRE_JS = "require.js"
WIDGET_JS = "embed-amd.js"
NPM_PACKAGES: tuple[str, ...] = ("@jupyter-widgets/html-manager@^1.0", "requirejs@^2.3")
# (file inside node_modules, name under _static)
VENDORED_FILES: tuple[tuple[str, str], ...] = (
    ("requirejs/require.js", REQUIRE_JS),
    ("@jupyter-widgets/html-manager/dist/embed-amd.js", WIDGET_JS),
    ("@jupyter-widgets/html-manager/dist/embed.js.LICENSE.txt", "html-manager.LICENSE.txt"),
)

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
"""


def static_ready(reports_dir: str | os.PathLike) -> bool:
    """True when ``<reports_dir>/_static`` holds require.js and the widget renderer."""
    static = Path(reports_dir) / STATIC_DIR
    return all((static / name).is_file() for _, name in VENDORED_FILES[:2])


def vendor(reports_dir: str | os.PathLike, vendor_dir: str | os.PathLike, *, npm: str = "npm",
           force: bool = False) -> bool:
    """Make ``<reports_dir>/_static`` hold the offline widget renderer; True when it does.

    Idempotent: returns at once when the files are already there (unless ``force``). Runs
    ``npm install --prefix vendor_dir`` only when ``vendor_dir`` lacks the packages. Without
    npm (or offline) it warns and returns False; reports still work, with blank widgets.
    """
    reports_dir, vendor_dir = Path(reports_dir), Path(vendor_dir)
    static = reports_dir / STATIC_DIR
    if static_ready(reports_dir) and not force:
        return True
    modules = vendor_dir / "node_modules"
    if force or not all((modules / src).is_file() for src, _ in VENDORED_FILES):
        exe = shutil.which(npm)
        if exe is None:
            warnings.warn(f"{npm}: not found; HTML reports will show blank widgets "
                          f"(install Node.js/npm and run `goose vendor`)", stacklevel=2)
            return False
        vendor_dir.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "install", "--prefix", str(vendor_dir), "--no-audit", "--no-fund",
               "--no-save", "--ignore-scripts", *NPM_PACKAGES]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            warnings.warn(f"{vendor_dir}: `{' '.join(cmd)}` failed; HTML reports will show blank "
                          f"widgets:\n{proc.stderr.strip()[-2000:]}", stacklevel=2)
            return False
    static.mkdir(parents=True, exist_ok=True)
    for src, name in VENDORED_FILES:
        tmp = static / f".{name}.tmp"
        shutil.copyfile(modules / src, tmp)
        os.replace(tmp, static / name)
    return True


STATE_MIME = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
# model modules the vendored html-manager renders by itself; any other module would be fetched
# from a CDN (no network: a broken page), so such models are left out of a report's widget state
OFFLINE_MODULES = ("@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output")


def offline_widgets(nb: Any) -> Any:
    """``nb``, or a copy without the widget models of third-party modules (e.g. the mask lab's
    anywidget box editor): their state entries, the references other models hold to them and
    their view outputs (which fall back to text) are removed; standard widgets are kept."""
    import copy

    state = nb.metadata.get("widgets", {}).get(STATE_MIME, {}).get("state") or {}
    drop = {mid for mid, m in state.items() if m.get("model_module") not in OFFLINE_MODULES}
    if not drop:
        return nb
    nb = copy.deepcopy(nb)
    state = nb.metadata["widgets"][STATE_MIME]["state"]
    refs = {f"IPY_MODEL_{mid}" for mid in drop}

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(x) for x in v if not (isinstance(x, str) and x in refs)]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, str) and v in refs else v

    for mid in drop:
        del state[mid]
    for m in state.values():
        m["state"] = clean(m.get("state", {}))
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(VIEW_MIME)
            if view and view.get("model_id") in drop:
                del out["data"][VIEW_MIME]
    return nb


class HtmlReporter:
    """Writes run pages; holds one nbconvert ``HTMLExporter`` for the life of the process."""

    def __init__(self) -> None:
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter

        self._exporter = HTMLExporter(
            template_name="lab",
            extra_loaders=[DictLoader({"goose_report.html.j2": _TEMPLATE})],
            template_file="goose_report.html.j2",
        )
        self._warned = False

    def render(self, nb: Any, out_path: str | os.PathLike, static_dir: str | os.PathLike) -> str:
        """HTML of notebook node ``nb`` for a page at ``out_path``, with the vendored scripts
        referenced relatively from ``static_dir`` (the reports folder's ``_static``)."""
        out_dir = Path(out_path).resolve().parent
        rel = Path(os.path.relpath(Path(static_dir).resolve(), out_dir)).as_posix()
        if "widgets" in nb.metadata and not (Path(static_dir) / WIDGET_JS).is_file() and not self._warned:
            warnings.warn(f"{static_dir}: widget renderer not vendored; widget snapshots render "
                          f"blank (run `goose vendor`)", stacklevel=2)
            self._warned = True
        nb = offline_widgets(nb)
        self._exporter.require_js_url = f"{rel}/{REQUIRE_JS}"
        self._exporter.widget_renderer_url = f"{rel}/{WIDGET_JS}"
        body, _ = self._exporter.from_notebook_node(nb, resources={"metadata": {"name": out_dir.name}})
        return body

    def write(self, nb: Any, out_path: str | os.PathLike, static_dir: str | os.PathLike) -> Path:
        """Render ``nb`` and write it atomically to ``out_path``."""
        return atomic_write_text(out_path, self.render(nb, out_path, static_dir))


_REPORTER: HtmlReporter | None = None


def reporter() -> HtmlReporter:
    """The process-wide reporter (built on first use)."""
    global _REPORTER
    if _REPORTER is None:
        _REPORTER = HtmlReporter()
    return _REPORTER
