"""ConfusionMatrix.update vs torchmetrics' MulticlassJaccardIndex.update on 2048x1024 maps, 64 classes.

Target: >= 100x faster, on CPU numpy arrays and (when a GPU is present) CUDA tensors.
Run: python benchmarks/bench_metrics.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from goose_lib.metrics import ConfusionMatrix

H, W, K = 1024, 2048, 64


def _time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    label = rng.integers(0, K, (H, W), dtype=np.uint8)
    label[rng.random((H, W)) < 0.05] = 255
    pred = np.where(rng.random((H, W)) < 0.7, label % K, rng.integers(0, K, (H, W))).astype(np.uint8)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        tm = MulticlassJaccardIndex(num_classes=K, average=None, ignore_index=255).to(dev)
        tp, tl = torch.from_numpy(pred).long().to(dev), torch.from_numpy(label).long().to(dev)
        t_ref = _time(lambda tm=tm, tp=tp, tl=tl: tm.update(tp, tl), max(3, args.repeats // 2), sync)
        cm = ConfusionMatrix(K)
        if dev == "cpu":
            t_ours = _time(lambda cm=cm: cm.update(pred, label), args.repeats)
            what = "numpy uint8 arrays"
        else:
            gp, gl = torch.from_numpy(pred).to(dev), torch.from_numpy(label).to(dev)
            t_ours = _time(lambda cm=cm, gp=gp, gl=gl: cm.update(gp, gl), args.repeats, sync)
            what = "CUDA uint8 tensors"
        print(f"[{dev}] {what}: ConfusionMatrix.update {t_ours * 1e3:.2f} ms, "
              f"torchmetrics update (default args) {t_ref * 1e3:.1f} ms -> {t_ref / t_ours:.0f}x faster (target >= 100x)")
        if dev == "cuda":
            cpu_t = torch.from_numpy(pred).to(dev).long(), torch.from_numpy(label).to(dev).long()
            t64 = _time(lambda cm=cm, cpu_t=cpu_t: cm.update(*cpu_t), args.repeats, sync)
            print(f"[{dev}] CUDA int64 tensors: {t64 * 1e3:.2f} ms -> {t_ref / t64:.0f}x")


if __name__ == "__main__":
    main()
