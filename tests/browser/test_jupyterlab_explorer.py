"""JupyterLab in a real browser: run notebooks/01_data_exploration.ipynb (a parameterised copy in
the server's private root), then move the explorer's image slider and check that the kernel
answers with a new picture."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from goose_lib.paths import repo_root

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

NOTEBOOK = repo_root() / "notebooks" / "01_data_exploration.ipynb"
RUN_TIMEOUT_MS = 180_000

# JavaScript run in the page (JupyterLab exposes `window.jupyterapp` with expose_app_in_browser).
# The notebook panel is found by its path (the shell's current widget changes with focus).
FIND_PANEL = """(name) => {
  for (const w of window.jupyterapp.shell.widgets('main')) {
    if (w.context && w.context.path === name && w.sessionContext) return w;
  }
  return null;
}"""
WAIT_KERNEL_IDLE = f"""(name) => {{
  if (!window.jupyterapp || !window.jupyterapp.shell) return false;
  const panel = ({FIND_PANEL})(name);
  if (!panel || !panel.context.isReady || !panel.sessionContext.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}}"""  # synchronous: wait_for_function treats a returned Promise as truthy
RUN_ALL = f"""(name) => {{
  const panel = ({FIND_PANEL})(name);
  window.jupyterapp.shell.activateById(panel.id);
  window.jupyterapp.commands.execute('notebook:run-all-cells');
  return true;
}}"""
CELL_STATE = f"""(name) => {{
  const panel = ({FIND_PANEL})(name);
  const cells = panel.content.model.cells;
  let code = 0, done = 0, errors = [];
  for (let i = 0; i < cells.length; i++) {{
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    code += 1;
    if (cell.executionCount !== null && cell.executionCount !== undefined) done += 1;
    for (const out of cell.outputs.toJSON()) {{
      if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
    }}
  }}
  const kernel = panel.sessionContext.session.kernel;
  return {{code, done, errors, status: kernel ? kernel.status : 'none'}};
}}"""
RUN_FINISHED = f"""(name) => {{
  const s = ({CELL_STATE})(name);
  return s.errors.length > 0 || (s.done === s.code && s.status === 'idle');
}}"""


def _copy_parameterised(dest: Path, tiny_root: Path) -> None:
    """The notebook with small parameters injected the way papermill does (tagged cell)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(NOTEBOOK))
    nb = parameterize_notebook(nb, {"data_root": str(tiny_root), "split": "val", "workers": 1,
                                    "gallery_classes": 2, "gallery_per_class": 1, "progress": False,
                                    "out_dir": "figures", "explorer_max_side": 128})
    nbformat.write(nb, dest)


def test_explorer_responds_to_slider(browser, jupyterlab_server, tiny_root: Path) -> None:
    name = "01_data_exploration.ipynb"
    _copy_parameterised(jupyterlab_server.root / name, tiny_root)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(jupyterlab_server.lab_url(name), wait_until="domcontentloaded")
        page.wait_for_function(WAIT_KERNEL_IDLE, arg=name, timeout=90_000, polling=500)
        page.evaluate(RUN_ALL, name)
        # all code cells executed and the kernel idle again (or an error shows up)
        page.wait_for_function(RUN_FINISHED, arg=name, timeout=RUN_TIMEOUT_MS, polling=500)
        state = page.evaluate(CELL_STATE, name)
        assert state["errors"] == [], f"notebook raised: {state['errors']}\n{jupyterlab_server.log_tail()}"

        image = page.locator(".goose-explorer img.goose-image")
        image.wait_for(state="visible", timeout=60_000)
        page.wait_for_function("() => { const i = document.querySelector('.goose-explorer img.goose-image');"
                               " return i && i.src && i.naturalWidth > 0; }")
        before = image.get_attribute("src")
        caption_before = page.locator(".goose-explorer .goose-caption").inner_text()
        assert "val/" in caption_before

        # type a new index into the slider's editable readout (what a user can do too)
        readout = page.locator(".goose-explorer .goose-index .widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("2")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "(old) => { const i = document.querySelector('.goose-explorer img.goose-image');"
            " return i && i.src !== old && i.naturalWidth > 0; }", arg=before, timeout=60_000)
        after = image.get_attribute("src")
        assert after != before
        caption_after = page.locator(".goose-explorer .goose-caption").inner_text()
        assert caption_after != caption_before and "val/" in caption_after
        # the figures of the run landed in the server's copy, not in the repository
        assert (jupyterlab_server.root / "figures" / "class_distribution.png").is_file()
        assert (jupyterlab_server.root / "metrics.json").is_file()
    finally:
        context.close()
        for session in jupyterlab_server.api("/api/sessions"):  # free the kernel
            jupyterlab_server.api(f"/api/sessions/{session['id']}", method="DELETE")
