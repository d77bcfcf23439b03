"""Runner overhead per run and report page size.

Executes an ablation of N small notebooks (a figure, a widget, recorded metrics) in one process
and prints, per run, the runner's overhead: everything except executing the notebook's cells
(kernel start/stop, parameter checks, hashing, provenance, HTML). Target: < 1 s per run. Also
prints the largest ``report.html`` (target < 2 MB, the shared vendored JS excluded), for the
fake runs and for the runs already in ``--reports`` (e.g. after ``goose demo``).

    python benchmarks/bench_runner.py [--runs 6] [--reports reports]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, timing

CELLS = [
    ("%matplotlib inline\nfrom matplotlib.figure import Figure\nimport ipywidgets\n"
    "from goose_lib.reports.record import save_metrics"),
    "fig = Figure(figsize=(6, 4))\nfig.add_subplot().plot(range(100), [i * alpha for i in range(100)])\nfig",
    "ipywidgets.IntSlider(value=int(alpha), max=100, description='alpha')",
    "save_metrics({'composite': 0.01 * alpha, 'miou': 0.01 * alpha, 'class_iou': [0.5] * 64})",
]
TARGET_OVERHEAD_S = 1.0
TARGET_HTML_BYTES = 2_000_000


def _notebook(path: Path) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell("alpha = 1  # scale")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# bench"), params, *[new_code_cell(c) for c in CELLS]]
    nbformat.write(nb, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs in the fake ablation (the paper's has 7)")
    parser.add_argument("--reports", type=Path, default=None, help="also measure the pages in this folder")
    args = parser.parse_args()
    bench = Bench("runner", args)

    from goose_lib.paths import repo_root
    from goose_lib.reports.ablation import run_ablation
    from goose_lib.reports.html import vendor
    from goose_lib.reports.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _notebook(tmp / "bench.ipynb")
        alphas = ", ".join(str(i + 1) for i in range(args.runs))
        (tmp / "spec.yaml").write_text(f"steps:\n  b:\n    notebook: bench.ipynb\n    grid: {{alpha: [{alphas}]}}\n")
        vendor(tmp / "reports", repo_root() / "vendor")
        t0 = time.perf_counter()
        res = run_ablation(load_spec(tmp / "spec.yaml", registry={}), tmp / "reports", progress=False,
                           registry={})
        total = time.perf_counter() - t0
        records = list(res.values())
        assert all(r["status"] == "ok" for r in records), records
        cells = sum(r["cells_s"] for r in records)
        per_run = [r["overhead_s"] for r in records]
        sizes = [(tmp / "reports" / r["name"] / "report.html").stat().st_size for r in records]
    amortised = (total - cells) / len(records)
    bench.record("per_run_overhead", timing(per_run))
    bench.record("total", timing([total]))
    bench.record("cells", timing([cells]))
    bench.target("runner overhead per run, amortised over the ablation (s)", amortised, "<", TARGET_OVERHEAD_S, "s")
    bench.target("largest fake run page (MB)", max(sizes) / 1e6, "<", TARGET_HTML_BYTES / 1e6, "MB")
    print(f"runs: {len(records)}, total {total:.2f} s, notebook cells {cells:.2f} s")
    print(f"runner overhead per run: first {per_run[0]:.3f} s, median of the rest "
          f"{statistics.median(per_run[1:] or per_run):.3f} s, amortised over the whole ablation "
          f"(index, hashing, first-use imports included) {amortised:.3f} s "
          f"(target < {TARGET_OVERHEAD_S:.1f} s: ratio {amortised / TARGET_OVERHEAD_S:.2f})")
    print(f"largest fake run page: {max(sizes) / 1e6:.3f} MB (target < {TARGET_HTML_BYTES / 1e6:.0f} MB: "
          f"ratio {max(sizes) / TARGET_HTML_BYTES:.3f})")
    reports = args.reports or (repo_root() / "reports")
    pages = sorted(p for p in reports.glob("*/report.html"))
    if pages:
        biggest = max(pages, key=lambda p: p.stat().st_size)
        size = biggest.stat().st_size
        print(f"largest page in {reports}: {biggest.parent.name} {size / 1e6:.3f} MB "
              f"(ratio {size / TARGET_HTML_BYTES:.3f}) over {len(pages)} pages")
        bench.target(f"largest page in {reports} (MB)", size / 1e6, "<", TARGET_HTML_BYTES / 1e6, "MB")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
