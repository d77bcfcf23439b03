"""ConfusionMatrix.update on 2048x1024 maps, 64 classes, against the fair plain alternatives.

Baselines, on identical uint8 inputs: torchmetrics' MulticlassJaccardIndex.update with
``validate_args=False`` (what a user who times it would run) and numpy's bincount of a uint16
``label * K + pred`` index (what a user would write). Both our CPU paths are timed too.
Targets: at 1 torch thread <= 2.5 ms and >= 4x torchmetrics; at every torch thread count
(1 .. cores) on a quiet machine and with one competing CPU-bound process, never slower than
numpy's bincount. On a GPU the CUDA-tensor path is printed (no target).
Run: python benchmarks/bench_metrics.py [--repeats 15] [--no-load]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, competing_load, interleave

from goose_lib.metrics import COUNTERS, ConfusionMatrix, pick_counter

H, W, K = 1024, 2048, 64


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-load", action="store_true", help="skip the runs beside a competing process")
    args = ap.parse_args()
    bench = Bench("metrics", args)
    rng = np.random.default_rng(0)
    label = rng.integers(0, K, (H, W), dtype=np.uint8)
    label[rng.random((H, W)) < 0.05] = 255
    pred = np.where(rng.random((H, W)) < 0.7, label % K, rng.integers(0, K, (H, W))).astype(np.uint8)
    tp, tl = torch.from_numpy(pred).long(), torch.from_numpy(label).long()
    p, lab = pred.reshape(-1), label.reshape(-1)
    tm = MulticlassJaccardIndex(num_classes=K, average=None, ignore_index=255, validate_args=False)
    cm = ConfusionMatrix(K)
    ref = np.zeros((K, K), np.int64)
    keep = label != 255
    np.add.at(ref, (label[keep].astype(int), pred[keep].astype(int)), 1)
    assert np.array_equal(cm.update(pred, label), ref), "ConfusionMatrix disagrees with the reference"

    def numpy_bincount() -> None:
        idx = lab.astype(np.uint16)
        idx *= K
        idx += p
        np.bincount(idx, minlength=256 * K)

    contenders = {"ours": lambda: cm.update(pred, label), "numpy_bincount": numpy_bincount,
                  "torchmetrics_fair": lambda: tm.update(tp, tl),
                  **{f"path_{n}": (lambda f=f: f(p, lab, K)) for n, f in COUNTERS.items()}}
    cores = len(os.sched_getaffinity(0))
    old = torch.get_num_threads()
    conditions = [(n, False) for n in range(1, cores + 1)] + ([] if args.no_load else
                                                               [(n, True) for n in range(1, cores + 1)])
    print(f"2048x1024, {K} classes, picked CPU path: {pick_counter(K)}; {args.repeats} interleaved repeats")
    for threads, loaded in conditions:
        torch.set_num_threads(threads)
        tag = f"{threads}t" + ("+load" if loaded else "")
        if loaded:
            with competing_load(1):
                res = interleave(contenders, args.repeats)
        else:
            res = interleave(contenders, args.repeats)
        for name, t in res.items():
            bench.record(f"{tag}/{name}", t)
            print(f"[{tag:7s}] {name:22s} {t.ms()}")
        ours, npb, tmf = res["ours"].median, res["numpy_bincount"].median, res["torchmetrics_fair"].median
        if threads == 1 and not loaded:
            bench.target("update 1 thread (ms)", ours * 1e3, "<=", 2.5, "ms")
            bench.target("torchmetrics(validate_args=False) / ours, 1 thread", tmf / ours, ">=", 4.0, "x")
        bench.target(f"numpy bincount / ours, {tag}", npb / ours, ">=", 1.0, "x")
    torch.set_num_threads(old)

    if torch.cuda.is_available():
        gp, gl = torch.from_numpy(pred).cuda(), torch.from_numpy(label).cuda()
        tmg = MulticlassJaccardIndex(num_classes=K, average=None, ignore_index=255, validate_args=False).cuda()
        res = interleave({"ours_cuda_uint8": lambda: cm.update(gp, gl),
                          "torchmetrics_fair_cuda": lambda: tmg.update(gp.long(), gl.long())},
                         args.repeats, sync=torch.cuda.synchronize)
        for name, t in res.items():
            bench.record(f"cuda/{name}", t)
            print(f"[cuda   ] {name:22s} {t.ms()}")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
