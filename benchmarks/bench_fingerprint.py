"""Content-based data fingerprint (goose_lib.reports.provenance.data_fingerprint) on 2,000 files.

Target (issue 12): a second run over a GOOSE download (~28,000 training images + labels) costs
seconds, because file hashes are cached by path, size and mtime. Measured here on 2,000 files of
~60 kB (a tree of PNG-sized files): the first pass reads and hashes every byte, the second only
stats the files; the second pass is extrapolated to 28,000 files x 3 (image, label, instances).

    python benchmarks/bench_fingerprint.py [--files 2000] [--kb 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, timing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kb", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="goose-fp-") as tmp:
        os.environ["GOOSE_SAM3_HOME"] = str(Path(tmp) / "home")
        from goose_lib.reports import provenance

        root = Path(tmp) / "root"
        blob = os.urandom(args.kb * 1024)
        for i in range(args.files):
            d = root / "images" / "train" / f"scenario_{i // 200:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"frame_{i:05d}_windshield_vis.png").write_bytes(blob[: len(blob) - (i % 97)] + i.to_bytes(4, "little"))
        t0 = time.perf_counter()
        first = provenance.data_fingerprint(root)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            again = provenance.data_fingerprint(root)
            warm.append(time.perf_counter() - t0)
            assert again == first
        med = statistics.median(warm)
        per_file = med / args.files
        print(f"{args.files} files x {args.kb} kB: first pass (reads every byte) {cold:.2f} s; "
              f"cached pass median {med * 1000:.0f} ms (min {min(warm) * 1000:.0f}, max {max(warm) * 1000:.0f}); "
              f"cold / cached = {cold / med:.1f}x")
        print(f"load average {os.getloadavg()[0]:.1f}; extrapolated cached pass over 28,000 x 3 files: {per_file * 84000:.1f} s (target: seconds) "
              f"-> {'met' if per_file * 84000 < 10 else 'NOT met'}")
        bench = Bench("fingerprint", args)
        bench.record("cold", timing([cold]))
        bench.record("cached", timing(warm))
        bench.target("cached fingerprint, extrapolated to 28,000 x 3 files (s)", per_file * 84000, "<", 10.0, "s")
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())
