"""The comparison index of a reports folder: ``<reports>/index.html``.

One self-contained page (no CDN, no network): a sortable table of every run (status, notebook,
key metrics — ``composite``, ``miou``, ``category_miou`` first, then any other numeric scalar the
run recorded — each with its delta against the baseline run), bar plots of the main metrics
across the compared variants (matplotlib PNG, base64), a per-class IoU comparison of any two
runs (pure JS over the runs' ``class_iou`` lists embedded as JSON), links to each run's page,
and failed / skipped / interrupted runs marked with their error.

Which run is the baseline and which runs are the compared variants is read from
``<reports>/index.json`` (written by the ablation runner from the spec's ``index`` section).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goose_lib.io import atomic_write_json, atomic_write_text, read_json
from goose_lib.reports.execute import HTML_FILE, LOCK_DIR, PARAMS_FILE, PROVENANCE_FILE, RECORD_FILE
from goose_lib.reports.record import METRICS_FILE

INDEX_FILE = "index.html"
SETTINGS_FILE = "index.json"
MAIN_METRICS: tuple[str, ...] = ("composite", "miou", "category_miou")


def save_settings(reports_dir: str | os.PathLike, *, baseline: str | None, compare: Mapping[str, str],
                  spec: str | None = None) -> Path:
    """Record the baseline run and the ordered ``label -> run`` variants the index compares."""
    return atomic_write_json(Path(reports_dir) / SETTINGS_FILE,
                             {"baseline": baseline, "compare": [[k, v] for k, v in compare.items()],
                              "spec": spec})  # pairs: JSON objects are written key-sorted


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def collect_runs(reports_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per run folder: name, status, error, notebook, metrics (numeric scalars),
    class_iou (list or None), params, seed, commit, wall_s, html (relative link or None)."""
    root = Path(reports_dir)
    runs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._"):
        record = _read(d / RECORD_FILE)
        params = _read(d / PARAMS_FILE) or {}
        if record is None and not params:
            continue
        metrics = _read(d / METRICS_FILE) or {}
        prov = _read(d / PROVENANCE_FILE) or {}
        record = record or {"status": "incomplete", "error": "no run.json: interrupted or still running"}
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        ciou = metrics.get("class_iou")
        runs.append({
            "name": d.name, "status": record.get("status"),
            "error": "; ".join(filter(None, [record.get("error"), *record.get("warnings", [])])) or None,
            "notebook": record.get("notebook") or Path(params.get("notebook", "?")).stem,
            "metrics": numeric, "class_iou": ciou if isinstance(ciou, list) else None,
            "params": params.get("params", {}), "seed": prov.get("seed"),
            "commit": ((prov.get("code") or {}).get("commit") or "")[:10],
            "wall_s": record.get("wall_s"),
            "html": f"{d.name}/{HTML_FILE}" if (d / HTML_FILE).is_file() else None,
        })
    return runs


def metric_columns(runs: list[dict[str, Any]]) -> list[str]:
    """Main metrics first (when any run has them), then every other recorded numeric key."""
    seen = {k for r in runs for k in r["metrics"]}
    return [m for m in MAIN_METRICS if m in seen] + sorted(seen - set(MAIN_METRICS))


def _plot(runs: Mapping[str, dict[str, Any]], compare: Mapping[str, str]) -> str | None:
    """Grouped bars of the main metrics per compared variant -> base64 PNG (None if no data)."""
    from matplotlib.figure import Figure

    labels = [lbl for lbl, run in compare.items() if run in runs and runs[run]["metrics"]]
    metrics = [m for m in MAIN_METRICS if any(m in runs[compare[lbl]]["metrics"] for lbl in labels)]
    if not labels or not metrics:
        return None
    fig = Figure(figsize=(3.0 + 1.4 * len(labels), 3.2), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        vals = [runs[compare[lbl]]["metrics"].get(m, float("nan")) for lbl in labels]
        bars = ax.bar([i + j * width for i in range(len(labels))], vals, width, label=m)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(labels))], labels)
    ax.set_ylabel("IoU")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.margins(y=0.15)
    ax.set_title("main metrics across variants")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _class_names(n: int) -> list[str]:
    try:
        from goose_lib.ontology import Ontology

        names = list(Ontology.load().names)
        if len(names) == n:
            return names
    except Exception as exc:  # noqa: BLE001 - an index must render even without the ontology
        warnings.warn(f"class names unavailable ({exc}); using numbers", stacklevel=2)
    return [f"class {i}" for i in range(n)]


def _fmt(v: float | None, signed: bool = False) -> str:
    """4 decimals (IoU-like values); whole numbers (counts, steps) without decimals."""
    if v is None:
        return ""
    if v == int(v) and abs(v) >= 1:
        return f"{int(v):+d}" if signed else f"{int(v)}"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def render_index(runs: list[dict[str, Any]], *, baseline: str | None = None,
                 compare: Mapping[str, str] | None = None, title: str = "goose-sam3 ablation") -> str:
    """The index page's HTML (self-contained)."""
    by_name = {r["name"]: r for r in runs}
    base = by_name.get(baseline or "")
    if not compare:
        compare = {r["name"]: r["name"] for r in runs if any(m in r["metrics"] for m in MAIN_METRICS)}
    cols = metric_columns(runs)
    label_of = {run: lbl for lbl, run in compare.items()}
    rows = []
    for r in runs:
        cls = {"ok": "ok", "failed": "failed"}.get(r["status"], "other")
        status_text = html.escape(str(r["status"]))
        status = status_text
        if r["error"]:
            status += f'<div class="err">{html.escape(str(r["error"])[:600])}</div>'
        link = f'<a href="{html.escape(r["html"])}">{html.escape(r["name"])}</a>' if r["html"] else html.escape(r["name"])
        cells = [f'<td data-v="{html.escape(r["name"])}">{link}</td>',
                 f'<td>{html.escape(label_of.get(r["name"], ""))}</td>',
                 f'<td class="{cls}" data-v="{status_text}">{status}</td>', f'<td>{html.escape(r["notebook"])}</td>']
        for c in cols:
            v = r["metrics"].get(c)
            delta = v - base["metrics"][c] if (v is not None and base and c in base["metrics"]) else None
            cells.append(f'<td class="num" data-v="{"" if v is None else v}">{_fmt(v)}</td>')
            cells.append(f'<td class="num delta" data-v="{"" if delta is None else delta}">{_fmt(delta, True)}</td>')
        cells.append(f'<td>{html.escape(str(r["seed"]))}</td><td>{html.escape(r["commit"])}</td>'
                     f'<td class="num" data-v="{r["wall_s"] or ""}">{r["wall_s"] or ""}</td>')
        rows.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    head = "".join(f"<th>{c}</th><th>Δ {c}</th>" for c in cols)
    png = _plot(by_name, compare)
    figure = (f'<img id="main-plot" alt="main metrics across variants" src="data:image/png;base64,{png}">'
              if png else "<p>No run recorded composite / miou / category_miou yet.</p>")
    ciou = {r["name"]: r["class_iou"] for r in runs if r["class_iou"]}
    n = max((len(v) for v in ciou.values()), default=0)
    data = json.dumps({"classIou": ciou, "classNames": [html.escape(c) for c in _class_names(n)], "baseline": baseline,
                       "compare": list(compare.values())}).replace("</", "<\\/")
    return _PAGE.format(title=html.escape(title), baseline=html.escape(baseline or "none"), head=head,
                        rows="\n".join(rows), figure=figure, data=data, n_runs=len(runs),
                        n_failed=sum(r["status"] == "failed" for r in runs))


def build_index(reports_dir: str | os.PathLike, *, baseline: str | None = None,
                compare: Mapping[str, str] | None = None) -> Path:
    """Write ``<reports>/index.html`` from every run folder (settings from ``index.json`` unless
    given); serialised by a lock so concurrent runners leave a whole page."""
    from filelock import FileLock

    root = Path(reports_dir)
    settings = _read(root / SETTINGS_FILE) or {}
    baseline = baseline or settings.get("baseline")
    compare = compare if compare is not None else dict(settings.get("compare") or [])
    (root / LOCK_DIR).mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / LOCK_DIR / "_index.lock")):
        page = render_index(collect_runs(root), baseline=baseline, compare=compare)
        return atomic_write_text(root / INDEX_FILE, page)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }}
th {{ background: #f0f0f0; cursor: pointer; user-select: none; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.failed td {{ background: #fde8e8; }} td.failed {{ color: #b00; font-weight: bold; }}
tr.other td {{ background: #f6f6f6; color: #777; }}
.err {{ font-weight: normal; font-size: 12px; white-space: pre-wrap; max-width: 40em; }}
.bar {{ display: inline-block; height: 10px; }} .a {{ background: #4878cf; }} .b {{ background: #d65f5f; }}
</style></head><body>
<h1>{title}</h1>
<p>{n_runs} runs, <span id="n-failed">{n_failed}</span> failed. Deltas (Δ) against the baseline run
<b id="baseline">{baseline}</b>. Click a column header to sort.</p>
<table id="runs"><thead><tr><th>run</th><th>variant</th><th>status</th><th>notebook</th>{head}
<th>seed</th><th>commit</th><th>wall s</th></tr></thead><tbody>
{rows}
</tbody></table>
<h2>Main metrics across variants</h2>
{figure}
<h2>Per-class IoU of two runs</h2>
<p>A <select id="run-a"></select> B <select id="run-b"></select></p>
<table id="per-class"><thead><tr><th>class</th><th>A</th><th>B</th><th>B − A</th><th>bars</th></tr></thead>
<tbody></tbody></table>
<script id="index-data" type="application/json">{data}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("index-data").textContent);
  var table = document.getElementById("runs");
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {{
    th.addEventListener("click", function () {{
      var asc = th.dataset.dir !== "asc"; th.dataset.dir = asc ? "asc" : "desc";
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      rows.sort(function (r1, r2) {{
        var a = r1.cells[col].dataset.v !== undefined ? r1.cells[col].dataset.v : r1.cells[col].textContent;
        var b = r2.cells[col].dataset.v !== undefined ? r2.cells[col].dataset.v : r2.cells[col].textContent;
        var na = parseFloat(a), nb = parseFloat(b), c;
        if (a === "" && b !== "") return 1; if (b === "" && a !== "") return -1;
        c = (!isNaN(na) && !isNaN(nb)) ? na - nb : String(a).localeCompare(String(b));
        return asc ? c : -c;
      }});
      rows.forEach(function (r) {{ table.tBodies[0].appendChild(r); }});
    }});
  }});
  var names = Object.keys(data.classIou), selA = document.getElementById("run-a"),
      selB = document.getElementById("run-b");
  names.forEach(function (n) {{ selA.add(new Option(n, n)); selB.add(new Option(n, n)); }});
  var pick = data.compare.filter(function (n) {{ return names.indexOf(n) >= 0; }});
  if (data.baseline && names.indexOf(data.baseline) >= 0) selA.value = data.baseline;
  else if (names.length) selA.value = names[0];
  if (pick.length) selB.value = pick[pick.length - 1]; else if (names.length > 1) selB.value = names[1];
  function f(v) {{ return v === null || v === undefined ? "" : v.toFixed(4); }}
  function render() {{
    var a = data.classIou[selA.value] || [], b = data.classIou[selB.value] || [], body = [];
    data.classNames.forEach(function (name, i) {{
      var va = a[i], vb = b[i];
      if ((va === null || va === undefined) && (vb === null || vb === undefined)) return;
      var d = (va != null && vb != null) ? vb - va : null;
      body.push("<tr><td>" + name + "</td><td class='num'>" + f(va) + "</td><td class='num'>" + f(vb) +
        "</td><td class='num'>" + (d === null ? "" : (d >= 0 ? "+" : "") + d.toFixed(4)) +
        "</td><td><span class='bar a' style='width:" + Math.round(100 * (va || 0)) + "px'></span><br>" +
        "<span class='bar b' style='width:" + Math.round(100 * (vb || 0)) + "px'></span></td></tr>");
    }});
    document.querySelector("#per-class tbody").innerHTML = body.join("");
  }}
  selA.addEventListener("change", render); selB.addEventListener("change", render); render();
}}());
</script>
</body></html>
"""
