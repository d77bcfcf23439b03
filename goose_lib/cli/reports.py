"""Verbs of the reports part: ``demo`` (the main job), ``run`` (one notebook), ``ablate`` (a spec),
``vendor`` (the offline widget renderer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from goose_lib.cli.common import CommandError, progress_arg, short_warnings

DEMO_WORKERS = 2


def _reports_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", metavar="DIR", default=None, help="reports folder (default: reports/ of the checkout)")


def _reports_dir(args: argparse.Namespace) -> Path:
    from goose_lib.paths import repo_root

    return Path(args.reports) if args.reports else repo_root() / "reports"


def _finish(results: dict, reports: Path) -> int:
    from goose_lib.reports.ablation import summarise

    text, ok = summarise(results)
    print(text)
    print(f"index: {reports / 'index.html'}")
    return 0 if ok else 1


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: embedded defaults -> every notebook -> reports/index.html")
    p.add_argument("--workers", type=int, default=DEMO_WORKERS,
                   help=f"notebook processes, each with cores / workers threads (default {DEMO_WORKERS}: on 2 cores, "
                        "two 1-thread runs go faster than one 2-thread run of the tiny models)")
    p.add_argument("--force", action="store_true", help="re-run runs that are up to date")
    _reports_arg(p)
    p.set_defaults(func=cmd_demo)


@short_warnings
def cmd_demo(args: argparse.Namespace) -> int:
    from goose_lib.reports.ablation import run_demo

    reports = _reports_dir(args)
    return _finish(run_demo(reports, workers=args.workers, force=args.force), reports)


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one notebook headless -> reports/RUN/")
    p.add_argument("notebook", help="a name from notebooks/ (e.g. 03_training) or a .ipynb path")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter; VALUE is read as a YAML scalar (2, 0.5, true, null, [1, 2], text)")
    p.add_argument("--name", help="run folder name (default: the notebook's name)")
    _reports_arg(p)
    p.set_defaults(func=cmd_run)


@short_warnings
def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from goose_lib.reports.ablation import run_single
    from goose_lib.reports.execute import check_run_name, resolve_notebook

    params = {}
    for name, text in args.param:
        try:
            params[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CommandError(f"-p {name} {text!r}: not a YAML value ({exc})") from None
    notebook = resolve_notebook(args.notebook)
    reports = _reports_dir(args)
    record = run_single(notebook, params, reports, name=check_run_name(args.name or notebook.stem))
    print(f"{record['status']} {record['name']} in {record['wall_s']:.1f} s -> "
          f"{reports / record['name'] / 'report.html'}")
    if record["error"]:
        print(f"goose run: {record['error']}", file=sys.stderr)
    return 0 if record["status"] == "ok" else 1


def add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation spec -> its index page")
    p.add_argument("spec", help="ablation spec (YAML, see ablations/README.md)")
    p.add_argument("--workers", type=int, default=1, help="notebook processes (default 1: in-process)")
    p.add_argument("--shard", metavar="I/N", help="run the I-th of N deterministic shards (job arrays)")
    p.add_argument("--stage", type=int, help="run only this dependency stage (0 = no dependencies)")
    p.add_argument("--force", action="store_true", help="re-run runs that are up to date")
    progress_arg(p)
    _reports_arg(p)
    p.set_defaults(func=cmd_ablate)


@short_warnings
def cmd_ablate(args: argparse.Namespace) -> int:
    from goose_lib.config import parse_shard
    from goose_lib.reports.ablation import run_ablation
    from goose_lib.reports.spec import load_spec

    if args.workers < 1:
        raise CommandError(f"--workers must be >= 1, got {args.workers}")
    reports = _reports_dir(args)
    results = run_ablation(load_spec(args.spec), reports, workers=args.workers,
                           shard=parse_shard(args.shard) if args.shard else None, stage=args.stage,
                           force=args.force, progress=not args.no_progress)
    return _finish(results, reports)


def add_vendor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vendor", help="fetch the offline widget renderer for HTML reports (npm)")
    p.add_argument("--vendor-dir", default=None, help="npm prefix (default: vendor/ of the checkout)")
    p.add_argument("--force", action="store_true", help="fetch and copy again")
    _reports_arg(p)
    p.set_defaults(func=cmd_vendor)


@short_warnings
def cmd_vendor(args: argparse.Namespace) -> int:
    from goose_lib.paths import repo_root
    from goose_lib.reports.html import STATIC_DIR, vendor

    reports = _reports_dir(args)
    ok = vendor(reports, Path(args.vendor_dir) if args.vendor_dir else repo_root() / "vendor", force=args.force)
    print(f"{reports / STATIC_DIR}: {'ready' if ok else 'not vendored (widgets will render blank)'}")
    return 0


def add_lab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="JupyterLab on the notebooks (localhost, token; works as root too)")
    p.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    p.add_argument("--dir", default=None, help="folder shown (default: notebooks/ of the checkout)")
    p.set_defaults(func=cmd_lab)


def cmd_lab(args: argparse.Namespace) -> int:
    import subprocess

    from goose_lib.paths import repo_root
    from goose_lib.reports.lab import lab_command

    argv, token = lab_command(args.dir or repo_root() / "notebooks", port=args.port)
    print(f"JupyterLab: http://127.0.0.1:{args.port}/lab?token={token}", file=sys.stderr, flush=True)
    return subprocess.call(argv)


def add_results(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="the results tables of a reports folder as Markdown (for docs/results.md)",
                       description="Render the variants of every ablation in the reports folder (index.json) and "
                                   "its teacher runs as Markdown: to stdout, or to --out.")
    _reports_arg(p)
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    from goose_lib.io import atomic_write_text
    from goose_lib.reports.index import SUMMARY_FILE
    from goose_lib.reports.results import results_markdown

    reports = _reports_dir(args)
    if not (reports / SUMMARY_FILE).is_file():
        raise CommandError(f"{reports / SUMMARY_FILE}: no index (run an ablation into {reports} first)")
    text = results_markdown(reports, command=f"goose results --reports {args.reports}"
                            if getattr(args, "reports", None) else "goose results")
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


VERBS = (add_demo, add_run, add_ablate, add_vendor, add_lab, add_results)
