"""The mask lab of notebooks/02_teacher_comparison.ipynb in a real browser, offline.

1. JupyterLab: run a copy with tiny parameters in the server's private root, check that the box
   editor (an anywidget) renders without any request leaving localhost, then set a box through
   the editor's widget model in the page and see the kernel answer with a new teacher overlay
   and a per-box IoU row; then drag a second box with the mouse, as a user does.
2. The run's HTML report from file://, every other request blocked: the lab's panels (standard
   widgets) and its static snapshot render; the box editor is left out, so nothing asks a CDN."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from test_jupyterlab_explorer import CELL_STATE, FIND_PANEL, RUN_ALL, RUN_FINISHED, WAIT_KERNEL_IDLE

from goose_lib.paths import repo_root

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

NOTEBOOK = repo_root() / "notebooks" / "02_teacher_comparison.ipynb"
RUN_TIMEOUT_MS = 300_000

# The box editor's model, found through the widget manager of a rendered widget output
# (jupyterlab-manager's WidgetRenderer keeps it in `_manager`), then edited like the editor's
# own mouse handlers do: set `bboxes`, save_changes (synced to the kernel).
SET_BOX = f"""async ([name, box]) => {{
  const panel = ({FIND_PANEL})(name);
  const seen = new Set();
  const find = (w) => {{
    if (!w || seen.has(w)) return null;
    seen.add(w);
    if (w._manager && w.mimeType === 'application/vnd.jupyter.widget-view+json') return w;
    for (const child of (w.widgets || [])) {{ const r = find(child); if (r) return r; }}
    if (w.outputArea) return find(w.outputArea);
    return null;
  }};
  let renderer = null;
  for (const cell of panel.content.widgets) {{ renderer = find(cell); if (renderer) break; }}
  if (!renderer) return 'no widget output';
  const manager = await renderer._manager.promise;
  for (const p of Object.values(manager._models)) {{
    const m = await p;
    if (m.get('_model_name') === 'AnyModel' && m.get('bboxes') !== undefined) {{
      const label = m.get('classes')[0];
      m.set('bboxes', [{{...box, label}}]);
      m.save_changes();
      return 'ok';
    }}
  }}
  return 'no box editor model';
}}"""


def _tiny_params(tiny_root: Path, cache: Path) -> dict:
    return {"data_root": str(tiny_root), "adapt_steps": 3, "adapt_images_per_step": 1, "cache_dir": str(cache),
            "max_boxes": 6, "train_limit": 2, "compare_limit": 2, "min_pixels": 1, "margin": -1.0,
            "gallery_rows": 1, "gallery_classes": 1, "progress": False, "out_dir": "out"}


def _copy_parameterised(dest: Path, tiny_root: Path, cache: Path) -> None:
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), _tiny_params(tiny_root, cache))
    nbformat.write(nb, dest)


def test_mask_lab_box_edit_updates_the_overlay(browser, jupyterlab_server, tiny_root: Path) -> None:
    name = "02_teacher_comparison.ipynb"
    _copy_parameterised(jupyterlab_server.root / name, tiny_root, jupyterlab_server.root / "cache")
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    external: list[str] = []

    def gate(route) -> None:  # offline: only the lab server itself (and inline data) may answer
        url = route.request.url
        if url.startswith((jupyterlab_server.url, "data:", "blob:", "ws://127.0.0.1")):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(jupyterlab_server.lab_url(name), wait_until="domcontentloaded")
        page.wait_for_function(WAIT_KERNEL_IDLE, arg=name, timeout=90_000, polling=500)
        page.evaluate(RUN_ALL, name)
        page.wait_for_function(RUN_FINISHED, arg=name, timeout=RUN_TIMEOUT_MS, polling=500)
        state = page.evaluate(CELL_STATE, name)
        assert state["errors"] == [], f"notebook raised: {state['errors']}\n{jupyterlab_server.log_tail()}"

        lab = page.locator(".goose-mask-lab").first
        lab.wait_for(state="visible", timeout=60_000)
        lab.scroll_into_view_if_needed()
        image = lab.locator("img.goose-mask-lab-image")
        page.wait_for_function("() => { const i = document.querySelector('.goose-mask-lab img.goose-mask-lab-image');"
                               " return i && i.src && i.naturalWidth > 0; }")
        # the box editor rendered (its own picture of the sample), no widget error anywhere in the lab
        page.wait_for_function("() => { const l = document.querySelector('.goose-mask-lab');"
                               " return l && [...l.querySelectorAll('img')].some(i => !i.classList.contains("
                               "'goose-mask-lab-image') && i.naturalWidth > 0); }", timeout=60_000)
        assert "Error displaying widget" not in lab.inner_text()
        before = image.get_attribute("src")

        result = page.evaluate(SET_BOX, [name, {"x": 40, "y": 30, "width": 120, "height": 90}])
        assert result == "ok", result
        page.wait_for_function(
            "(old) => { const i = document.querySelector('.goose-mask-lab img.goose-mask-lab-image');"
            " return i && i.src !== old && i.naturalWidth > 0; }", arg=before, timeout=60_000)
        table = lab.locator(".goose-mask-lab-table")
        page.wait_for_function("() => { const t = document.querySelector('.goose-mask-lab .goose-mask-lab-table');"
                               " return t && t.querySelectorAll('tbody tr').length === 1; }", timeout=30_000)
        cells = table.locator("tbody tr td").all_inner_texts()
        # the box in the widget frame (editor_side 640 >= 320: not scaled) is the row's pixel box
        assert cells[2:6] == ["40", "30", "160", "120"], cells

        # and as a user does it: drag a second box on the editor's picture with the mouse
        editor = page.locator(".goose-mask-lab img:not(.goose-mask-lab-image)").first
        editor.scroll_into_view_if_needed()
        # the page settles (the panels above grew when the first box's row appeared) before measuring
        page.wait_for_function(
            "() => { const e = document.querySelectorAll('.goose-mask-lab img:not(.goose-mask-lab-image)')[0];"
            " const r = e.getBoundingClientRect(); const k = JSON.stringify([r.x, r.y, r.width]);"
            " const same = window.__gooseLast === k; window.__gooseLast = k; return same; }", polling=250,
            timeout=30_000)
        area = editor.bounding_box()
        before = image.get_attribute("src")
        page.mouse.move(area["x"] + 0.6 * area["width"], area["y"] + 0.6 * area["height"])
        page.mouse.down()
        page.mouse.move(area["x"] + 0.9 * area["width"], area["y"] + 0.9 * area["height"], steps=8)
        page.mouse.up()
        page.wait_for_function("() => { const t = document.querySelector('.goose-mask-lab .goose-mask-lab-table');"
                               " return t && t.querySelectorAll('tbody tr').length === 2; }", timeout=30_000)
        page.wait_for_function(
            "(old) => document.querySelector('.goose-mask-lab img.goose-mask-lab-image').src !== old",
            arg=before, timeout=30_000)
        row = [int(float(v)) for v in table.locator("tbody tr").nth(1).locator("td").all_inner_texts()[2:6]]
        # the dragged box reached the kernel in image pixels, inside the lower-right part that was dragged
        # (the widget's frame can sit up to ~20 px off the <img> box as measured by the browser)
        assert 0.55 * 320 <= row[0] < row[2] <= 320 and 0.55 * 240 <= row[1] < row[3] <= 240, row
        assert external == [], f"the page asked the network for {external}"
    finally:
        context.close()
        for session in jupyterlab_server.api("/api/sessions"):  # free the kernel
            jupyterlab_server.api(f"/api/sessions/{session['id']}", method="DELETE")


def test_report_shows_the_mask_lab_offline(browser, tiny_root: Path, tmp_path: Path) -> None:
    from goose_lib.reports.ablation import run_single
    from goose_lib.reports.html import vendor

    reports = tmp_path / "reports"
    if not vendor(reports, repo_root() / "vendor"):
        pytest.skip("widget renderer could not be vendored (npm unavailable): run `make vendor`")
    record = run_single(NOTEBOOK, _tiny_params(tiny_root, tmp_path / "cache"), reports, name="nb02", index=False)
    assert record["status"] == "ok", record
    run = reports / "nb02"
    assert list((run / "out").glob("mask_lab_*.png"))
    html = (run / "report.html").read_text()
    assert "anywidget" not in html and "goose-mask-lab" in html
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    external: list[str] = []

    def gate(route) -> None:
        if route.request.url.startswith(("file://", "data:", "blob:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto((run / "report.html").as_uri())
        page.wait_for_function("() => { const i = document.querySelector('.goose-mask-lab img.goose-mask-lab-image');"
                               " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
        assert "iou_label" in page.locator(".goose-mask-lab .goose-mask-lab-table").inner_text()
        assert "Error" not in page.locator(".goose-mask-lab").inner_text()
        snapshot = page.locator(".jp-Cell", has_text="save_figure(fig, out / f\"mask_lab_{c}.png\")")
        assert snapshot.locator(".jp-OutputArea-output img").count() >= 1
        assert snapshot.locator(".jp-OutputArea-output img").first.evaluate("i => i.naturalWidth") > 300
    finally:
        context.close()
    assert external == [], f"the report asked the network for {external}"
    assert errors == [], errors
