"""TTA overhead: wall time of predict_probs vs the sum of its windows' forward times.

Default: the embedded tiny student, a 2048x1024 synthetic scene, scales 0.75/1/1.25/1.5 (base "stretch").
Target, for ``predict`` (the label map evaluation and submission use) in single and multiscale
mode: wall <= 1.1 x forward sum (everything but the model — resizing, blending, softmax,
averaging, mapping back to 2048x1024 — costs at most 10 %). ``predict_probs`` (the full
C x H x W probabilities) is printed, without a target. Each is run ``--repeats`` times (after a
full-size warm-up); the ratio is the median of the per-run ratios.
Run: python benchmarks/bench_tta.py [--device auto] [--flip] [--base stretch|native] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, timing

from goose_lib.data.synthetic import render_scene
from goose_lib.infer.tta import TTAConfig, count_windows, predict, predict_probs
from goose_lib.models.student import StudentConfig, build_student
from goose_lib.ontology import Ontology
from goose_lib.paths import resolve_device
from goose_lib.runtime import configure_threads


class TimedModel(torch.nn.Module):
    """Wraps a model; sums the wall time of its forward passes (synchronised on CUDA)."""

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        super().__init__()
        self.model = model
        self.image_size = model.image_size
        self.cuda = device.startswith("cuda")
        self.seconds = 0.0
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = self.model(x)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.windows += x.shape[0]
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25, 1.5])
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--base", choices=["stretch", "native"], default="stretch")
    ap.add_argument("--window-batch", type=int, default=4)
    ap.add_argument("--blend", choices=["flat", "gaussian"], default="flat", help="window averaging (multiscale)")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: configure_threads' default)")
    args = ap.parse_args()
    configure_threads(args.threads or None)
    bench = Bench("tta", args)
    device = resolve_device(args.device)
    model = TimedModel(build_student(StudentConfig(), device=device).eval(), device)
    image = render_scene(np.random.default_rng(0), args.width, args.height, ego=False, ontology=Ontology.load())[0]
    configs = {
        "single": TTAConfig(flip=args.flip),
        "multiscale": TTAConfig(mode="multiscale", scales=tuple(args.scales), flip=args.flip,
                                base=args.base, window_batch=args.window_batch, blend=args.blend),
    }
    for cfg in configs.values():
        predict(model, image, cfg)  # warm-up at full size
    for name, cfg in configs.items():
        for fn in (predict, predict_probs):  # predict (label map) is what evaluation/submission use
            walls, fwds = [], []
            for _ in range(args.repeats if fn is predict else 1):
                model.seconds, model.windows = 0.0, 0
                t = time.perf_counter()
                out = fn(model, image, cfg)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                walls.append(time.perf_counter() - t)
                fwds.append(model.seconds)
                expected = count_windows(args.height, args.width, model.image_size, cfg)
                assert model.windows == expected, (model.windows, expected)
            ratio = statistics.median(w / f for w, f in zip(walls, fwds))
            bench.record(f"{name}/{fn.__name__}/wall", timing(walls))
            bench.record(f"{name}/{fn.__name__}/forward", timing(fwds))
            print(f"[{device}] {name:10s} {cfg.name} {fn.__name__:13s}: {model.windows} windows of "
                  f"{model.image_size}, wall {statistics.median(walls):.3f} s, forward sum "
                  f"{statistics.median(fwds):.3f} s -> ratio {ratio:.3f}; output {tuple(out.shape)}")
            if fn is predict:
                bench.target(f"TTA {name} predict: wall / forward sum", ratio, "<=", 1.1, "x")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
