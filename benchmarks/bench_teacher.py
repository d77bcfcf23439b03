"""Teacher speed targets (tiny SAM3, CPU), printed as measured ratios.

1. The encoder runs once per image whatever the number of boxes: an image with 50 boxes should
   cost at most 1.5x one with a single box. Printed for the embedded tiny checkpoint and, because
   its encoder is so small that the per-box decoder dominates, also for a "proportioned" tiny
   tracker whose encoder / decoder cost ratio is closer to the real SAM3 (where one encoder pass
   is ~60 s on CPU and one box decode a few ms). Both also against the naive baseline that
   re-encodes the image for every box, MEASURED: 50 one-box calls, each encoding the image.
2. A second pass over a cached split makes no model calls and is at least 50x faster.

Usage: python benchmarks/bench_teacher.py [--threads 1] [--repeats 5]
Timings on a shared machine are noisy; the script interleaves the contenders and prints medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, interleave


def _proportioned_tracker(size: int = 224):
    """A tiny tracker with a heavier encoder (hidden 256, 8 layers) and the embedded decoder."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    g = size // 14
    vc = {"model_type": "sam3_vision_model",
          "backbone_config": {"model_type": "sam3_vit_model", "hidden_size": 256, "intermediate_size": 1024,
                              "num_hidden_layers": 8, "num_attention_heads": 8, "image_size": size,
                              "patch_size": 14, "window_size": 8, "global_attn_indexes": [3, 7],
                              "pretrain_image_size": size},
          "fpn_hidden_size": 32, "backbone_feature_sizes": [[4 * g, 4 * g], [2 * g, 2 * g], [g, g]]}
    cfg = Sam3TrackerConfig(vision_config=vc,
                            prompt_encoder_config={"hidden_size": 32, "image_size": size, "patch_size": 14},
                            mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2,
                                                 "iou_head_hidden_dim": 32})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Sam3TrackerModel(cfg).eval()


def bench_boxes(model, name: str, repeats: int, bench: Bench) -> None:
    from goose_lib.teacher.boxes import make_boxset
    from goose_lib.teacher.prompt import Teacher

    rng = np.random.default_rng(0)
    h, w = 240, 320
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def boxes(n: int):
        x1 = rng.uniform(0, w - 60, n)
        y1 = rng.uniform(0, h - 60, n)
        return make_boxset(np.stack([x1, y1, x1 + 50, y1 + 50], 1), rng.integers(1, 60, n), ["component"] * n, h, w)

    one, fifty = boxes(1), boxes(50)
    singles = [make_boxset(fifty.xyxy[k:k + 1], fifty.classes[k:k + 1], ["component"], h, w) for k in range(50)]
    t = Teacher(model)
    res = interleave({"1 box": lambda: t.predict([image], [one]),
                      "50 boxes": lambda: t.predict([image], [fifty]),
                      "50 x 1 box (per-box encoding)": lambda: [t.predict([image], [b]) for b in singles]},
                     repeats)
    for k, v in res.items():
        bench.record(f"{name}/{k}", v)
        print(f"[{name}] {k:30s} {v.ms()}")
    t1, t50, naive = res["1 box"].median, res["50 boxes"].median, res["50 x 1 box (per-box encoding)"].median
    bench.target(f"teacher [{name}] 50 boxes / 1 box", t50 / t1, "<=", 1.5, "x")
    bench.target(f"teacher [{name}] per-box encoding / batched 50 boxes", naive / t50, ">=", 1.0, "x",
                 detail="measured, not computed")


def bench_cache(checkpoint: Path, repeats: int, bench: Bench) -> None:
    from goose_lib.data.layout import index_split
    from goose_lib.data.synthetic import write_synthetic
    from goose_lib.models.sam3 import checkpoint_fingerprint, load_tracker
    from goose_lib.teacher.cache import build_teacher_cache
    from goose_lib.teacher.prompt import Teacher

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "root", seed=0, n_train=12, n_val=1, n_test=1)
        samples = index_split(root, "train", use_cache=False)
        fp = checkpoint_fingerprint(checkpoint)
        teacher = Teacher(load_tracker(checkpoint))
        t0 = time.perf_counter()
        build_teacher_cache(samples, Path(tmp) / "cache", fingerprint=fp, teacher=teacher, progress=False)
        first = time.perf_counter() - t0
        calls = dict(teacher.calls)
        second = interleave({"cached": lambda: build_teacher_cache(samples, Path(tmp) / "cache", fingerprint=fp,
                                                                   teacher=teacher, progress=False)},
                            repeats)["cached"]
        bench.record("cache/cached pass", second)
        second = second.median
        assert teacher.calls == calls, "the cached pass called the model"
        print(f"[cache] first pass {first:.2f} s ({calls['encode']} encoder calls), cached pass {second * 1e3:.1f} ms, "
              f"0 model calls -> {first / second:.0f}x faster (target >= 50x)")
        bench.target("teacher cache: first pass / cached pass", first / second, ">=", 50, "x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: configure_threads' default)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from goose_lib.runtime import configure_threads

    configure_threads(args.threads or None)
    bench = Bench("teacher", args)
    os.environ.setdefault("GOOSE_SAM3_HOME", tempfile.mkdtemp(prefix="goose-bench-"))
    from goose_lib.models.sam3 import load_tracker
    from goose_lib.models.tiny import ensure_tiny_checkpoint

    ckpt = ensure_tiny_checkpoint()
    bench_boxes(load_tracker(ckpt), "embedded tiny", args.repeats, bench)
    bench_boxes(_proportioned_tracker(), "proportioned tiny", args.repeats, bench)
    bench_cache(ckpt, args.repeats, bench)
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
