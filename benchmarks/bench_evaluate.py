"""One pass for every inference mode: each image is read and decoded once, whatever the number of modes.

Counts the image / label decodes of ``evaluate`` with M modes (expected: one each per image) against
M separate single-mode evaluations (M each per image), and times both.
Run: python benchmarks/bench_evaluate.py [--root embedded] [--limit 6] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench

import goose_lib.data.dataset as ds
from goose_lib.config import DataConfig
from goose_lib.infer.evaluate import evaluate
from goose_lib.infer.tta import TTAConfig
from goose_lib.models.checkpoint import load_student

COUNTS: Counter[str] = Counter()


def _counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        return fn(*args, **kwargs)

    return wrapped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="embedded")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    bench = Bench("evaluate", args)
    # count decodes where GooseDataset performs them: in the module that defines load_sample
    # (its globals are looked up at call time)
    decoder = sys.modules[ds.load_sample.__module__]
    decoder.read_image = _counting("image", decoder.read_image)
    decoder.read_label = _counting("label", decoder.read_label)
    model = load_student("untrained", device=args.device)
    what = model.description
    dataset = ds.GooseDataset(args.root, args.split, config=DataConfig(limit=args.limit))
    modes = {"single": TTAConfig(), "single+flip": TTAConfig(flip=True),
             "ms0.75-1": TTAConfig(mode="multiscale", scales=(0.75, 1.0))}
    n = len(dataset)
    print(f"{what}; {n} images of {args.split}, {len(modes)} modes")

    COUNTS.clear()
    t = time.perf_counter()
    evaluate(model, dataset, modes, progress=False)
    one = time.perf_counter() - t
    one_counts = dict(COUNTS)

    COUNTS.clear()
    t = time.perf_counter()
    for name, cfg in modes.items():
        evaluate(model, dataset, {name: cfg}, progress=False)
    sep = time.perf_counter() - t
    print(f"one pass, {len(modes)} modes : image decodes {one_counts.get('image', 0)}, label decodes "
          f"{one_counts.get('label', 0)} ({one_counts.get('image', 0) / n:.0f} per image), {one:.2f} s")
    print(f"{len(modes)} separate passes   : image decodes {COUNTS['image']}, label decodes {COUNTS['label']} "
          f"({COUNTS['image'] / n:.0f} per image), {sep:.2f} s")
    print(f"decodes saved: {COUNTS['image'] / max(1, one_counts.get('image', 0)):.1f}x fewer; "
          f"wall time ratio separate/one-pass {sep / one:.2f}")
    bench.target(f"image decodes per image, one pass over {len(modes)} modes", one_counts.get("image", 0) / n, "<=", 1.0)
    bench.target(f"label decodes per image, one pass over {len(modes)} modes", one_counts.get("label", 0) / n, "<=", 1.0)
    bench.note(f"wall: one pass {one:.2f} s, separate passes {sep:.2f} s (ratio {sep / one:.2f}, no target)")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
