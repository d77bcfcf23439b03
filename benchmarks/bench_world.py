"""Cost of the embedded world and of its teacher, in CPU seconds (process time, one thread), so
the numbers mean something on a shared machine; wall seconds are printed beside them.

- world: seconds per image (render + label degradation + PNG writing) of the default world
  (2x images) against the basic synthetic world (1x), and the ratio;
- teacher: CPU seconds of ``PretrainConfig()`` extrapolated from ``--steps`` steps (the budget
  is 1-2 minutes on 2 cores).

    OMP_NUM_THREADS=1 python benchmarks/bench_world.py [--images 12] [--steps 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from goose_lib.data.shapes import shape_sample
from goose_lib.data.synthetic import write_synthetic
from goose_lib.data.world import DEFAULT_WORLD, write_world
from goose_lib.models.pretrain import DEFAULT_PRETRAIN, pretrain_tracker
from goose_lib.models.sam3 import build_tiny_checkpoint, load_tracker


def _timed(fn) -> tuple[float, float]:
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.images
    with tempfile.TemporaryDirectory() as tmp:
        world = replace(DEFAULT_WORLD, n_train=n // 2, n_val=n - n // 2, n_test=0)
        cw, ww = _timed(lambda: write_world(Path(tmp) / "world", world))
        cb, wb = _timed(lambda: write_synthetic(Path(tmp) / "basic", n_train=n // 2, n_val=n - n // 2, n_test=0))
        print(f"world: {cw / n:.3f} CPU-s/image ({ww / n:.3f} wall), basic: {cb / n:.3f} CPU-s/image "
              f"({wb / n:.3f} wall), ratio {cw / max(cb, 1e-9):.1f}x; default world (88 images): "
              f"{cw / n * 88:.0f} CPU-s")
        model = load_tracker(build_tiny_checkpoint(Path(tmp) / "tiny"))
        n_img = DEFAULT_PRETRAIN.n_images
        cg, _ = _timed(lambda: [shape_sample(DEFAULT_PRETRAIN.seed, i) for i in range(n_img)])
        cfg = replace(DEFAULT_PRETRAIN, steps=args.steps, n_images=8, held_out=0)
        ct, wt = _timed(lambda: pretrain_tracker(model, cfg))
        step = (ct - cg * 8 / n_img) / args.steps
        full = cg + step * DEFAULT_PRETRAIN.steps
        print(f"teacher pretraining: shapes {cg:.1f} CPU-s for {n_img} images, {step:.3f} CPU-s/step "
              f"({wt / args.steps:.3f} wall); PretrainConfig() ({DEFAULT_PRETRAIN.steps} steps): "
              f"about {full:.0f} CPU-s on one core")


if __name__ == "__main__":
    main()
