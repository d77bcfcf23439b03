"""Report pages in a real browser, offline: the index page (table, sorting, plot, per-class
comparison) and a run page (figure, widget snapshot rendered by the vendored html-manager),
opened from file:// URLs with every non-file request blocked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reports_fakes import write_notebook

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ablation (two runs, one failing) executed into a reports folder with the widget
    renderer vendored; the folder is then moved, to prove its links are relative."""
    from goose_lib.paths import repo_root
    from goose_lib.reports.ablation import run_ablation
    from goose_lib.reports.html import vendor
    from goose_lib.reports.spec import load_spec

    base = tmp_path_factory.mktemp("report_pages")
    write_notebook(base / "fake.ipynb")
    (base / "s.yaml").write_text("""
steps:
  t:
    notebook: fake.ipynb
    variants: [{name: base, params: {alpha: 1}}, {name: strong, params: {alpha: 3}},
               {name: broken, params: {fail: true}}]
index: {baseline: t-base, compare: {baseline: t-base, strong: t-strong}}
""")
    built = base / "built"
    if not vendor(built, repo_root() / "vendor"):
        pytest.skip("widget renderer could not be vendored (npm unavailable): run `make vendor`")
    res = run_ablation(load_spec(base / "s.yaml", registry={}), built, progress=False, registry={})
    assert [r["outcome"] for r in res.values()] == ["ok", "ok", "failed"]
    moved = base / "copied"
    shutil.move(built, moved)
    return moved


@pytest.fixture
def page(browser):
    context = browser.new_context()
    external: list[str] = []

    def gate(route) -> None:
        if route.request.url.startswith(("file://", "data:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    context.close()
    assert external == [], f"pages asked the network for {external}"
    assert errors == [], errors


def test_index_page_renders_offline(page, reports: Path) -> None:
    page.goto((reports / "index.html").as_uri())
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 3
    failed = page.locator("#runs tbody tr.failed")
    assert failed.count() == 1 and "boom in this variant" in failed.inner_text()
    # sort by composite, descending (second click): strong (1.5) first, the failed run (none) last
    header = page.locator("#runs thead th", has_text="composite").first
    header.click()
    header.click()
    names = page.locator("#runs tbody tr td:first-child").all_inner_texts()
    assert names == ["t-strong", "t-base", "t-broken"]
    assert page.eval_on_selector("#main-plot", "img => img.complete && img.naturalWidth") > 100
    # per-class comparison: baseline vs the last compared run by default; switch runs
    assert page.locator("#run-a").input_value() == "t-base"
    assert page.locator("#run-b").input_value() == "t-strong"
    per_class = page.locator("#per-class tbody tr")
    assert per_class.count() == 63  # class 0 is null in both
    assert "+0.0" in per_class.nth(0).inner_text()
    page.select_option("#run-b", "t-base")
    assert "+0.0000" in page.locator("#per-class tbody tr").nth(1).inner_text()
    # the link to a run page is relative and resolves
    assert page.locator('a[href="t-base/report.html"]').count() == 1


def test_run_page_renders_figure_and_widget_snapshot(page, reports: Path) -> None:
    page.goto((reports / "t-strong" / "report.html").as_uri())
    slider = page.locator(".widget-slider").first
    slider.wait_for(state="visible", timeout=30_000)  # drawn by the vendored html-manager
    assert "alpha" in page.locator(".widget-label").first.inner_text()
    assert page.locator(".widget-readout").first.inner_text().strip() == "3"
    assert page.eval_on_selector("img[src^='data:image/png']",
                                 "img => img.complete && img.naturalWidth") > 50
    page.goto((reports / "t-broken" / "report.html").as_uri())
    assert "boom in this variant" in page.content()
