"""The comparison index of a reports folder: ``<reports>/index.html`` and ``<reports>/index.json``.

One self-contained page (no CDN, no network):

- the compared **variants** (a variant is one run, or the runs of a seeded step, one per seed):
  composite / mIoU / category mIoU as mean +- std over seeds with the per-seed values, and the delta
  of the composite against the baseline variant with its paired spread (the std of the per-seed
  differences, same seed against same seed); a delta smaller than its spread is marked *not
  significant*; a plot of the per-seed points with mean and std;
- a sortable table of every run: status, the main metrics and their deltas against the baseline
  run of the same seed (else the baseline's mean), wall time, commit; every other recorded number
  behind the "all columns" toggle, never with a delta (counts and settings are not improvements);
- a per-class IoU comparison of any two runs (pure JS over the runs' ``class_iou`` lists), links to
  each run's page, and failed / skipped / interrupted runs marked with their error.

Which variants are compared and which is the baseline is read from ``<reports>/index_settings.json``
(written by the ablation runner from the spec's ``index`` section). Every ablation run into the same
folder keeps its own comparison there (by spec name), so the page shows one variants section per
ablation, the latest first; the latest one's baseline is the runs table's. The variants' numbers are
also written to ``<reports>/index.json`` for scripts: a list with one entry per variant (the latest
ablation's first), ``ablation`` (its spec name), ``name``, ``runs``, ``seeds``, ``composite_mean``,
``composite_std``, ``composite_values``, ``miou_mean``, ``category_miou_mean``, ``delta_mean``,
``delta_std``, ``significant`` (null for the baseline or without spread).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goose_lib.io import atomic_write_json, atomic_write_text, read_json
from goose_lib.reports.execute import HTML_FILE, LOCK_DIR, PARAMS_FILE, PROVENANCE_FILE, RECORD_FILE
from goose_lib.reports.record import METRICS_FILE

INDEX_FILE = "index.html"
SUMMARY_FILE = "index.json"
SETTINGS_FILE = "index_settings.json"
MAIN_METRICS: tuple[str, ...] = ("composite", "miou", "category_miou")


def save_settings(reports_dir: str | os.PathLike, *, baseline: str | None,
                  compare: Mapping[str, str | Sequence[str]], spec: str | None = None,
                  name: str | None = None) -> Path:
    """Record an ablation's baseline (a variant label or a run name) and its ordered
    ``label -> run(s)`` variants (several runs: one per seed) under ``name`` (default: the spec's
    file stem), first in the list: it replaces an earlier comparison of that name and keeps the others."""
    name = name or _default_name(spec)
    pairs = [[k, [v] if isinstance(v, str) else list(v)] for k, v in compare.items()]  # pairs: keys stay ordered
    path = Path(reports_dir) / SETTINGS_FILE
    kept = [a for a in read_settings(reports_dir) if a["name"] != name]
    entry = {"name": name, "baseline": baseline, "compare": pairs, "spec": spec}
    return atomic_write_json(path, {"ablations": [entry, *kept]})


def read_settings(reports_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The comparisons recorded in ``index_settings.json``, the latest first (``name``, ``baseline``,
    ``compare`` as ``[label, [runs]]`` pairs, ``spec``); a file of the one-comparison form written
    before several were kept reads as one entry; none: ``[]``."""
    settings = _read(Path(reports_dir) / SETTINGS_FILE) or {}
    if "ablations" in settings:
        return list(settings["ablations"])
    if settings.get("compare") or settings.get("baseline"):
        spec = settings.get("spec")
        return [{"name": _default_name(spec), "baseline": settings.get("baseline"),
                 "compare": settings.get("compare") or [], "spec": spec}]
    return []


def _default_name(spec: str | None) -> str:
    """An ablation's name when none is given: its spec's file stem."""
    return Path(spec).stem if spec else "ablation"


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


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value; None for none)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _resolve_variants(runs: Mapping[str, dict[str, Any]], baseline: str | None,
                      compare: Mapping[str, Sequence[str]]) -> tuple[dict[str, tuple[str, ...]], str | None]:
    """(label -> runs, baseline label): ``baseline`` may be a label or a run of a variant."""
    variants = {k: tuple([v] if isinstance(v, str) else v) for k, v in compare.items()}
    if baseline and baseline not in variants:
        label = next((k for k, v in variants.items() if baseline in v), None)
        if label is None and baseline in runs:
            variants, label = {baseline: (baseline,), **variants}, baseline
        baseline = label
    return variants, baseline


def variant_summary(runs: Mapping[str, dict[str, Any]], compare: Mapping[str, Sequence[str]],
                    baseline: str | None) -> list[dict[str, Any]]:
    """One entry per compared variant (see the module doc); runs without a composite are left out
    of the means (they are listed under ``missing``)."""
    variants, baseline = _resolve_variants(runs, baseline, compare)

    def by_seed(names: Sequence[str], metric: str) -> dict[Any, float]:
        out = {}
        for i, n in enumerate(names):
            r = runs.get(n)
            if r is not None and r["status"] == "ok" and metric in r["metrics"]:
                out[r["seed"] if r["seed"] is not None else f"#{i}"] = r["metrics"][metric]
        return out

    base = by_seed(variants.get(baseline, ()), "composite") if baseline else {}
    out = []
    for label, names in variants.items():
        comp = by_seed(names, "composite")
        entry: dict[str, Any] = {"name": label, "runs": list(names), "seeds": list(comp),
                                 "missing": [n for n in names if n not in runs or runs[n]["status"] != "ok"
                                             or "composite" not in runs[n]["metrics"]],
                                 "composite_values": list(comp.values()), "baseline": label == baseline}
        for m in MAIN_METRICS:
            entry[f"{m}_mean"], entry[f"{m}_std"] = _mean_std(list(by_seed(names, m).values()))
        delta_mean = delta_std = significant = None
        if base and comp and label != baseline:
            common = [k for k in comp if k in base]
            if common:  # paired: the same seed against the same seed
                delta_mean, delta_std = _mean_std([comp[k] - base[k] for k in common])
                paired = len(common)
            else:  # nothing to pair: difference of means, spreads added
                (bm, bs), (vm, vs) = _mean_std(list(base.values())), _mean_std(list(comp.values()))
                delta_mean, delta_std, paired = vm - bm, math.sqrt(bs ** 2 + vs ** 2), 0
            if paired >= 2 or (paired == 0 and min(len(base), len(comp)) >= 2):
                significant = abs(delta_mean) > delta_std
        entry.update(delta_mean=delta_mean, delta_std=delta_std, significant=significant)
        out.append(entry)
    return out


def _plot(summary: list[dict[str, Any]]) -> str | None:
    """Composite per variant: per-seed points, mean bar with std -> base64 PNG (None if no data)."""
    from matplotlib.figure import Figure

    shown = [v for v in summary if v["composite_values"]]
    if not shown:
        return None
    fig = Figure(figsize=(3.0 + 1.2 * len(shown), 3.2), dpi=100)
    ax = fig.add_subplot()
    for i, v in enumerate(shown):
        ax.bar(i, v["composite_mean"], 0.6, yerr=v["composite_std"] or None, capsize=4,
               color="#9bb7e0" if not v["baseline"] else "#c8c8c8", edgecolor="#4878cf")
        xs = [i + (j - (len(v["composite_values"]) - 1) / 2) * 0.08 for j in range(len(v["composite_values"]))]
        ax.plot(xs, v["composite_values"], "o", color="#222", ms=3.5, zorder=3)
        ax.annotate(f"{v['composite_mean']:.3f}", (i, v["composite_mean"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xticks(range(len(shown)), [v["name"] for v in shown])
    ax.set_ylabel("composite mIoU")
    ax.margins(y=0.2)
    ax.set_title("composite per variant: seeds (points), mean and std")
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


def _pm(mean: float | None, std: float | None, signed: bool = False) -> str:
    if mean is None:
        return ""
    return f"{mean:+.4f} ± {std:.4f}" if signed else f"{mean:.4f} ± {std:.4f}"


def _variants_table(summary: list[dict[str, Any]]) -> str:
    rows = []
    for v in summary:
        sig = ("baseline" if v["baseline"] else "" if v["delta_mean"] is None else
               "one seed: no spread" if v["significant"] is None else
               "significant" if v["significant"] else "not significant (|Δ| ≤ spread)")
        cls = "sig" if v["significant"] else "nosig" if v["significant"] is False else ""
        seeds = ", ".join(f"{s}: {x:.4f}" for s, x in zip(v["seeds"], v["composite_values"]))
        missing = f' <span class="err">missing {html.escape(", ".join(v["missing"]))}</span>' if v["missing"] else ""
        rows.append(
            f'<tr class="{cls}"><td>{html.escape(v["name"])}</td><td class="num">{len(v["seeds"])}</td>'
            f'<td class="num" data-v="{v["composite_mean"] if v["composite_mean"] is not None else ""}">'
            f'{_pm(v["composite_mean"], v["composite_std"])}</td>'
            f'<td class="num" data-v="{v["delta_mean"] if v["delta_mean"] is not None else ""}">'
            f'{_pm(v["delta_mean"], v["delta_std"], True)}</td><td>{sig}</td>'
            f'<td class="num">{_pm(v["miou_mean"], v["miou_std"])}</td>'
            f'<td class="num">{_pm(v["category_miou_mean"], v["category_miou_std"])}</td>'
            f'<td class="seeds">{html.escape(seeds)}{missing}</td></tr>')
    return "\n".join(rows)


def _is_score(name: str) -> bool:
    """Metrics whose difference is an improvement (IoU-like); counts and settings get no delta."""
    return name in MAIN_METRICS or name.endswith(("miou", "_iou", "composite"))


def _section(name: str | None, summary: list[dict[str, Any]], base_label: str | None, primary: bool) -> str:
    """One ablation's variants: heading, table and plot (the primary one keeps the plain ids)."""
    suffix = "" if primary else "-" + re.sub(r"[^A-Za-z0-9_-]", "_", name or "ablation")
    png = _plot(summary)
    figure = (f'<img id="main-plot{suffix}" alt="composite per variant" src="data:image/png;base64,{png}">'
              if png else "<p>No run recorded composite / miou / category_miou yet.</p>")
    title = f"Variants: {html.escape(name)}" if name else "Variants"
    return _SECTION.format(title=title, suffix=suffix, baseline=html.escape(base_label or "none"),
                           variants=_variants_table(summary), figure=figure)


def render_index(runs: list[dict[str, Any]], *, baseline: str | None = None,
                 compare: Mapping[str, str | Sequence[str]] | None = None,
                 title: str = "goose-sam3 ablation", name: str | None = None,
                 others: Sequence[tuple[str, str | None, Mapping[str, str | Sequence[str]]]] = ()
                 ) -> tuple[str, list[dict[str, Any]]]:
    """The index page's HTML (self-contained) and the variants' summary (``index.json``).

    ``baseline`` / ``compare``: the primary comparison (its baseline is the runs table's), ``name`` its
    ablation; ``others``: ``(name, baseline, compare)`` of more ablations, one variants section each."""
    by_name = {r["name"]: r for r in runs}
    if not compare:
        compare = {r["name"]: (r["name"],) for r in runs if any(m in r["metrics"] for m in MAIN_METRICS)}
    sections, summaries, resolved = [], [], []
    for i, (ablation, base, comp) in enumerate([(name, baseline, compare), *others]):
        resolved.append(_resolve_variants(by_name, base, comp))
        part = [{"ablation": ablation, **v} for v in variant_summary(by_name, *resolved[-1])]
        sections.append(_section(ablation if others else None, part, resolved[-1][1], primary=i == 0))
        summaries += part
    variants, base_label = resolved[0]  # the primary comparison drives the runs table
    base_runs = [by_name[n] for n in variants.get(base_label, ()) if n in by_name] if base_label else []
    base_by_seed = {r["seed"]: r for r in base_runs}
    base_mean = {m: _mean_std([r["metrics"][m] for r in base_runs if m in r["metrics"]])[0] for m in MAIN_METRICS}
    cols = metric_columns(runs)
    main = [c for c in cols if c in MAIN_METRICS]
    extra = [c for c in cols if c not in MAIN_METRICS]
    label_of = {run: lbl for lbl, names in variants.items() for run in names}
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
        ref = base_by_seed.get(r["seed"])
        for c in main:
            v = r["metrics"].get(c)
            b = ref["metrics"].get(c) if ref is not None else base_mean.get(c)
            delta = v - b if (v is not None and b is not None and base_runs) else None
            cells.append(f'<td class="num" data-v="{"" if v is None else v}">{_fmt(v)}</td>')
            cells.append(f'<td class="num delta" data-v="{"" if delta is None else delta}">{_fmt(delta, True)}</td>')
        cells.append(f'<td>{html.escape(str(r["seed"]))}</td><td>{html.escape(r["commit"])}</td>'
                     f'<td class="num" data-v="{r["wall_s"] or ""}">{r["wall_s"] or ""}</td>')
        for c in extra:
            v = r["metrics"].get(c)
            cells.append(f'<td class="num extra" data-v="{"" if v is None else v}">{_fmt(v)}</td>')
        rows.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    head = "".join(f"<th>{c}</th><th>Δ {c}</th>" for c in main)
    head_extra = "".join(f'<th class="extra">{html.escape(c)}</th>' for c in extra)
    ciou = {r["name"]: r["class_iou"] for r in runs if r["class_iou"]}
    n = max((len(v) for v in ciou.values()), default=0)
    base_run = base_runs[0]["name"] if base_runs else None
    data = json.dumps({"classIou": ciou, "classNames": [html.escape(c) for c in _class_names(n)],
                       "baseline": base_run, "compare": [n for names in variants.values() for n in names]}
                      ).replace("</", "<\\/")
    page = _PAGE.format(title=html.escape(title), baseline=html.escape(base_label or "none"), head=head,
                        head_extra=head_extra, rows="\n".join(rows), data=data, n_runs=len(runs),
                        n_failed=sum(r["status"] == "failed" for r in runs), sections="\n".join(sections),
                        n_extra=len(extra))
    return page, summaries


def build_index(reports_dir: str | os.PathLike, *, baseline: str | None = None,
                compare: Mapping[str, str | Sequence[str]] | None = None) -> Path:
    """Write ``<reports>/index.html`` and ``index.json`` from every run folder (settings from
    ``index_settings.json`` unless given); serialised by a lock so concurrent runners leave whole files."""
    from filelock import FileLock

    root = Path(reports_dir)
    ablations = [] if compare is not None else read_settings(root)
    name, others = None, []
    if ablations:
        first, rest = ablations[0], ablations[1:]
        name, baseline, compare = first["name"], baseline or first["baseline"], dict(first["compare"])
        others = [(a["name"], a["baseline"], dict(a["compare"])) for a in rest]
    (root / LOCK_DIR).mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / LOCK_DIR / "_index.lock")):
        page, summary = render_index(collect_runs(root), baseline=baseline, compare=compare, name=name,
                                     others=others)
        atomic_write_json(root / SUMMARY_FILE, summary)
        return atomic_write_text(root / INDEX_FILE, page)


_SECTION = """<h2>{title}</h2>
<p>Mean ± standard deviation over seeds; Δ composite against the baseline <b>{baseline}</b>, paired by
seed (its spread is the std of the per-seed differences). A difference no larger than its spread is
marked not significant.</p>
<table id="variants{suffix}"><thead><tr><th>variant</th><th>seeds</th><th>composite</th><th>Δ composite</th>
<th>significance</th><th>mIoU</th><th>category mIoU</th><th>per seed (composite)</th></tr></thead><tbody>
{variants}
</tbody></table>
{figure}"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
img {{ max-width: 100%; height: auto; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }}
th {{ background: #f0f0f0; cursor: pointer; user-select: none; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.failed td {{ background: #fde8e8; }} td.failed {{ color: #b00; font-weight: bold; }}
tr.other td {{ background: #f6f6f6; color: #777; }}
tr.sig td {{ background: #eef7ee; }} tr.nosig td {{ color: #666; }} td.seeds {{ font-size: 12px; color: #555; }}
.extra {{ display: none; }} body.all-columns .extra {{ display: table-cell; }}
.err {{ font-weight: normal; font-size: 12px; white-space: pre-wrap; max-width: 40em; }}
.bar {{ display: inline-block; height: 10px; }} .a {{ background: #4878cf; }} .b {{ background: #d65f5f; }}
</style></head><body>
<h1>{title}</h1>
<p>{n_runs} runs, <span id="n-failed">{n_failed}</span> failed. Deltas (Δ) against the baseline variant
<b id="baseline">{baseline}</b>.</p>
{sections}
<h2>Runs</h2>
<p>Deltas against the first variants section's baseline. Click a column header to sort. <label><input type="checkbox" id="show-all"> all columns
({n_extra} more recorded numbers)</label></p>
<table id="runs"><thead><tr><th>run</th><th>variant</th><th>status</th><th>notebook</th>{head}
<th>seed</th><th>commit</th><th>wall s</th>{head_extra}</tr></thead><tbody>
{rows}
</tbody></table>
<h2>Per-class IoU of two runs</h2>
<p>A <select id="run-a"></select> B <select id="run-b"></select></p>
<table id="per-class"><thead><tr><th>class</th><th>A</th><th>B</th><th>B − A</th><th>bars</th></tr></thead>
<tbody></tbody></table>
<script id="index-data" type="application/json">{data}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("index-data").textContent);
  document.getElementById("show-all").addEventListener("change", function (e) {{
    document.body.classList.toggle("all-columns", e.target.checked);
  }});
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
