"""Cost of the embedded world and of its teacher, in CPU seconds (process time, one thread), so
the numbers mean something on a shared machine; wall seconds are printed beside them.

- world: seconds per image (render + label degradation + PNG writing) of the default world
  (2x images) against the basic synthetic world (1x), and the ratio;
- foundation: CPU seconds per corpus image and per step of the foundation recipe
  (``FoundationRecipe()``, run offline once by ``goose foundation``), extrapolated to the whole
  recipe on one core (the recorded wall time is in the shipped model card).

    OMP_NUM_THREADS=1 python benchmarks/bench_world.py [--images 12] [--steps 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from goose_lib.data.corpus import corpus_sample
from goose_lib.data.synthetic import write_synthetic
from goose_lib.data.world import DEFAULT_WORLD, write_world
from goose_lib.models.pretrain import DEFAULT_RECIPE, Pretrainer
from goose_lib.models.tiny import build_tiny_checkpoint


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
        n_img = 8
        cg, _ = _timed(lambda: [corpus_sample(0, i) for i in range(n_img)])
        trainer = Pretrainer(replace(DEFAULT_RECIPE, n_images=n_img), build_tiny_checkpoint(Path(tmp) / "tiny"))
        trainer.step()  # renders the n_img corpus images (cached afterwards)
        ct, wt = _timed(lambda: [trainer.step() for _ in range(args.steps)])
        step = ct / args.steps
        full = cg / n_img * DEFAULT_RECIPE.n_images + step * DEFAULT_RECIPE.steps
        print(f"foundation: corpus {cg / n_img:.3f} CPU-s/image, {step:.3f} CPU-s/step ({wt / args.steps:.3f} wall); "
              f"FoundationRecipe() ({DEFAULT_RECIPE.n_images} images, {DEFAULT_RECIPE.steps} steps): about "
              f"{full:.0f} CPU-s on one core")


if __name__ == "__main__":
    main()
