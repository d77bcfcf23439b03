"""The malloc settings of goose_lib.runtime: ``goose train`` with them off vs on (default).

Runs ``goose --threads 1 train --steps N --val-interval 0`` in subprocesses, alternately with
``$GOOSE_MALLOC=off`` (glibc's defaults: every large tensor a fresh mmap, unmapped on free) and
with the default settings, and reads each child's rusage (user, sys, minor faults, max RSS).
Targets: sys time on/off <= 0.5, minor faults on/off <= 0.2, max RSS on/off <= 1.5 (the price:
freed heap stays mapped), and the same weights bit for bit. The load average is printed with
every run (a shared machine: compare the ratios). The checkpoint defaults to ``embedded-random``
(the tiny SAM3's architecture with random weights: the allocations are those of any tiny run).
Run: ``python benchmarks/bench_allocator.py [--steps 30] [--repeats 1] [--sam3-checkpoint X]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, timing

GOOSE = Path(sys.executable).with_name("goose")
SETTINGS_ENV = ("GOOSE_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def run(mode: str, out_dir: Path, args: argparse.Namespace) -> dict:
    """One training run in a child process; its rusage, wall time, final metrics and weights."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    if mode == "off":
        env["GOOSE_MALLOC"] = "off"
    cmd = [str(GOOSE), "--threads", "1", "train", "--out-dir", str(out_dir), "--steps", str(args.steps),
           "--val-interval", "0", "--no-progress", "--sam3-checkpoint", args.sam3_checkpoint]
    load = os.getloadavg()
    with open(out_dir.with_suffix(".log"), "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{mode}: {' '.join(cmd)} exited {proc.returncode}; see {out_dir.with_suffix('.log')}")
    last = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[-1])
    weights = max((out_dir / "checkpoints").glob("step_*/model.safetensors"))
    res = {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "minflt": ru.ru_minflt,
           "maxrss_mb": ru.ru_maxrss / 1024, "composite": last.get("val_composite"),
           "weights": hashlib.sha256(weights.read_bytes()).hexdigest(), "load": load}
    print(f"{mode:>3}: wall {wall:6.2f} s  user {ru.ru_utime:6.2f} s  sys {ru.ru_stime:5.2f} s  "
          f"minor faults {ru.ru_minflt:>9,}  max RSS {res['maxrss_mb']:6.0f} MB  composite {res['composite']!r}  "
          f"(load avg before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="training steps per run")
    ap.add_argument("--repeats", type=int, default=1, help="off/on pairs, alternated")
    ap.add_argument("--sam3-checkpoint", default="embedded-random", help="goose train --sam3-checkpoint")
    args = ap.parse_args()
    bench = Bench("allocator", args)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="bench_allocator_") as tmp:
        for i in range(args.repeats):
            for mode, done in runs.items():
                done.append(run(mode, Path(tmp) / f"{mode}{i}", args))

    def med(mode: str, key: str) -> float:
        vals = sorted(r[key] for r in runs[mode])
        return vals[len(vals) // 2]

    for mode, rs in runs.items():
        bench.record(mode, timing([r["wall"] for r in rs]), **{k: [r[k] for r in rs] for k in
                                                               ("user", "sys", "minflt", "maxrss_mb", "composite", "load")})
    ratios = {k: med("on", k) / med("off", k) for k in ("wall", "user", "sys", "minflt", "maxrss_mb")}
    print("on/off: " + "  ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    same = len({r["weights"] for rs in runs.values() for r in rs}) == 1
    composites = {r["composite"] for rs in runs.values() for r in rs}
    print(f"weights identical: {same}; composites: {sorted(composites)}")
    bench.target("sys time, settings on / off", ratios["sys"], "<=", 0.5, "x")
    bench.target("minor page faults, settings on / off", ratios["minflt"], "<=", 0.2, "x")
    bench.target("max RSS, settings on / off", ratios["maxrss_mb"], "<=", 1.5, "x")
    bench.target("runs with other weights than the first", float(not same), "<=", 0, "",
                 detail=f"composites {sorted(composites)}")
    bench.note(f"wall on/off {ratios['wall']:.3f}, user on/off {ratios['user']:.3f}")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
