"""Explorer responsiveness on a GOOSE-sized frame (2048x1536): one slider/opacity update with the
overlay computed after fitting to the display size (what DatasetExplorer does) versus overlaying
at full resolution and downscaling the picture. Prints the times and their ratio."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench

from goose_lib.ontology import Ontology
from goose_lib.viz.overlay import fit, overlay, to_png
from goose_lib.viz.widgets import DatasetExplorer

REPEATS = 5
MAX_SIDE = 640


def _best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    bench = Bench("explorer")
    rng = np.random.default_rng(0)
    onto = Ontology.load()
    image = rng.integers(0, 256, (1536, 2048, 3), dtype=np.uint8)
    blocks = rng.integers(0, 64, (24, 32)).astype(np.uint8)
    label = np.repeat(np.repeat(blocks, 64, axis=0), 64, axis=1)
    items = [{"image": image, "label": label, "sample": "bench/frame"}]
    explorer = DatasetExplorer(items, onto, max_side=MAX_SIDE)
    alphas = iter(np.tile([0.3, 0.6], REPEATS * 2))

    def update() -> None:
        explorer.alpha.value = float(next(alphas))  # observer: render + PNG

    def full_res() -> None:
        to_png(overlay(image, label, onto, alpha=0.5), max_side=MAX_SIDE)

    def fitted() -> None:
        small, lab = fit(image, label, max_side=MAX_SIDE)
        to_png(overlay(small, lab, onto, alpha=0.5))

    t_full, t_fit, t_update = _best(full_res), _best(fitted), _best(update)
    print(f"full-resolution overlay + downscale: {t_full * 1000:.1f} ms")
    print(f"fit then overlay:                    {t_fit * 1000:.1f} ms")
    print(f"explorer update (opacity change):    {t_update * 1000:.1f} ms")
    print(f"speed-up of fitting first: {t_full / t_fit:.1f}x; explorer update vs full-resolution path: "
          f"{t_full / t_update:.1f}x")
    bench.target("full-resolution overlay / fit-then-overlay", t_full / t_fit, ">=", 1.0, "x")
    bench.target("full-resolution overlay / explorer update", t_full / t_update, ">=", 1.0, "x")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
