"""Distillation's cost per training step against plain training with the same data.

Two training states built from the same TrainConfig (embedded tiny student, aggressive
photometric distortion), one with soft self-distillation on every class 1..63 (an upper bound:
the demo selects about 20) from a teacher cache built by the tiny SAM3 teacher on a small
synthetic split. A step = drawing a batch through the DataLoader (``num_workers=0``, as the
demo; the distilled one also reads the cached teacher maps) + ``train_step``. The two alternate,
so load changes hit both alike. Target: distilled / plain <= 1.2 (medians).
Run: python benchmarks/bench_distill.py [--steps 8] [--threads 1]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: configure_threads' default)")
    args = ap.parse_args()
    from goose_lib.runtime import configure_threads

    configure_threads(args.threads or None)
    bench = Bench("distill", args)
    os.environ.setdefault("GOOSE_SAM3_HOME", tempfile.mkdtemp(prefix="goose-bench-"))
    import torch

    from goose_lib.data.augment import TrainTransform
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.data.synthetic import write_synthetic
    from goose_lib.teacher.cache import cache_split
    from goose_lib.train.distill import make_distill
    from goose_lib.train.loop import TrainConfig
    from goose_lib.train.sampling import DrawDataset, DrawSampler
    from goose_lib.train.step import make_state, train_step

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "root", seed=0, n_train=8, n_val=1, n_test=1)
        report = cache_split("embedded", str(root), "train", Path(tmp) / "cache", progress=False)
        common = {"data_root": str(root), "photometric": "aggressive"}
        configs = {"plain": TrainConfig(**common),
                   "distill": TrainConfig(**common, distill_mode="soft", distill_classes=tuple(range(1, 64)),
                                          teacher_cache=str(report.folder))}
        device = torch.device("cpu")
        runs = {}
        for name, cfg in configs.items():
            state = make_state(cfg, device)
            state.distill, _ = make_distill(cfg)
            base = GooseDataset(cfg.data_root, cfg.train_split)
            draws = DrawDataset(base, TrainTransform(state.model.image_size, cfg.geometry(), cfg.photometric_config()),
                                seed=0, pre=state.distill.attach if state.distill else None)
            loader = torch.utils.data.DataLoader(draws, batch_size=cfg.batch_size, num_workers=0,
                                                 sampler=DrawSampler(len(base), batch_size=cfg.batch_size, seed=0))
            runs[name] = (state, iter(loader))
        assert runs["distill"][0].distill is not None and runs["plain"][0].distill is None
        samples: dict[str, dict[str, list[float]]] = {n: {"data": [], "step": [], "total": []} for n in runs}
        for i in range(args.steps + 2):
            for name, (state, it) in runs.items():
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                train_step(state, [batch])
                t2 = time.perf_counter()
                if i >= 2:
                    samples[name]["data"].append(t1 - t0)
                    samples[name]["step"].append(t2 - t1)
                    samples[name]["total"].append(t2 - t0)
    for name, parts in samples.items():
        for part, vals in parts.items():
            t = bench.record(f"{name}/{part}", timing(vals))
            print(f"{name:8s} {part:6s} {t.s()}")
    med = {n: statistics.median(p["total"]) for n, p in samples.items()}
    bench.target("distilled / plain training step (data + step)", med["distill"] / med["plain"], "<=", 1.2, "x",
                 detail=f"batch {configs['plain'].batch_size}, 63 classes distilled")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
