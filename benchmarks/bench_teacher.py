"""Teacher speed targets (tiny SAM3, CPU), printed as measured ratios.

1. The encoder runs once per image whatever the number of boxes: an image with 50 boxes should
   cost at most 1.5x one with a single box. Printed for the embedded tiny checkpoint and, because
   its encoder is so small that the per-box decoder dominates, also for a "proportioned" tiny
   tracker whose encoder / decoder cost ratio is closer to the real SAM3 (where one encoder pass
   is ~60 s on CPU and one box decode a few ms). Both also against the naive baseline that
   re-encodes the image for every box.
2. A second pass over a cached split makes no model calls and is at least 50x faster.

Usage: python benchmarks/bench_teacher.py [--threads N] [--repeats N]
Timings on a shared machine are noisy; the script prints medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def bench_boxes(model, name: str, repeats: int) -> None:
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
    t = Teacher(model)
    t.predict([image], [one])
    t.predict([image], [fifty])
    pairs = []  # interleaved, so machine load changes hit both sides alike
    for _ in range(repeats):
        pairs.append((_median_time(lambda: t.predict([image], [one]), 1),
                      _median_time(lambda: t.predict([image], [fifty]), 1)))
    t1 = statistics.median(p[0] for p in pairs)
    t50 = statistics.median(p[1] for p in pairs)
    naive = 50 * t1  # re-encoding the image for each box
    print(f"[{name}] 1 box {t1 * 1e3:.1f} ms, 50 boxes {t50 * 1e3:.1f} ms -> ratio {t50 / t1:.2f}x "
          f"(target <= 1.5x); naive per-box encoding would be {naive / t50:.1f}x slower")


def bench_cache(checkpoint: Path, repeats: int) -> None:
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
        second = _median_time(lambda: build_teacher_cache(samples, Path(tmp) / "cache", fingerprint=fp,
                                                          teacher=teacher, progress=False), repeats)
        assert teacher.calls == calls, "the cached pass called the model"
        print(f"[cache] first pass {first:.2f} s ({calls['encode']} encoder calls), cached pass {second * 1e3:.1f} ms, "
              f"0 model calls -> {first / second:.0f}x faster (target >= 50x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("GOOSE_SAM3_HOME", tempfile.mkdtemp(prefix="goose-bench-"))
    from goose_lib.models.sam3 import load_tracker
    from goose_lib.models.tiny import ensure_tiny_checkpoint

    ckpt = ensure_tiny_checkpoint()
    bench_boxes(load_tracker(ckpt), "embedded tiny", args.repeats)
    bench_boxes(_proportioned_tracker(), "proportioned tiny", args.repeats)
    bench_cache(ckpt, args.repeats)


if __name__ == "__main__":
    main()
