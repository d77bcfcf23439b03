"""``make bench``: run every ``benchmarks/bench_*.py``, then print one target / measured / met table.

Exits 1 if any target is missed, a script fails, or a script records no result line. Each
script appends its own JSON line to ``benchmarks/results/<bench>.jsonl`` (see _harness.py);
the lines of this invocation share a session id. Run: ``python benchmarks/run_all.py [NAME...]``
(names without the ``bench_`` prefix, e.g. ``metrics tta``; default: all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS_DIR, SESSION_ENV, print_table


def _session_line(name: str, session: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.jsonl"
    if not path.exists():
        return None
    for raw in reversed(path.read_text().splitlines()):
        rec = json.loads(raw)
        if rec.get("session") == session:
            return rec
    return None


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
    session = uuid.uuid4().hex[:12]
    env = {**os.environ, SESSION_ENV: session}
    rows, bad = [], 0
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        print(f"\n##### {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script)], check=False, env=env).returncode
        rec = _session_line(name, session)
        rows.append((name, rc, rec, time.perf_counter() - t0))
    print(f"\n##### summary (session {session}, results in {RESULTS_DIR})")
    for name, rc, rec, wall in rows:
        if rec is None:
            print(f"== {name}: FAILED (exit {rc}, no result recorded) after {wall:.0f} s")
            bad += 1
            continue
        print_table(f"{name} [{wall:.0f} s]", rec["targets"], rec["load_avg_before"], rec["load_avg_after"],
                    rec["machine"]["torch_threads"])
        for note in rec.get("notes", []):
            if note.startswith("skipped"):
                print(f"   {note}")
        missed = [t for t in rec["targets"] if not t["met"]]
        bad += bool(missed) or rc not in (0, 1)
    total = sum(len(r[2]["targets"]) for r in rows if r[2])
    met = sum(t["met"] for r in rows if r[2] for t in r[2]["targets"])
    print(f"\n{met}/{total} targets met" + ("" if not bad else f"; {bad} benchmark(s) missed a target or failed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
