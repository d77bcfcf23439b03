"""Training-step overhead and data-pipeline headroom on the embedded tiny model.

1. ``goose_lib.train.loop.train_step`` (loss, NaN check, scheduler, EMA off, grad clip off) vs a bare
   PyTorch loop (forward, cross-entropy, backward, AdamW step, zero_grad) with the same student,
   the same batch and the same optimiser: target ratio <= 1.15.
2. Data pipeline (DataLoader over the augmented training draws, ``--workers`` processes) vs what
   training consumes (batch / step time): target ratio >= 2.

Timings alternate between the two loops and take medians, so a busy machine hurts both alike.
Run: ``python benchmarks/bench_train_step.py [--steps 10] [--batch-size 8] [--workers 2] [--threads 1]``
(``--threads 0``: configure_threads' default, the cores minus the data workers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Bench, timing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per loop (after 2 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes for the pipeline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: configure_threads' default)")
    args = ap.parse_args()
    from goose_lib.runtime import configure_threads

    configure_threads(args.threads or None, data_workers=args.workers)
    bench = Bench("train_step", args)

    from goose_lib.data.augment import TrainTransform
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.models.student import param_groups
    from goose_lib.train.config import TrainConfig
    from goose_lib.train.sampling import DrawDataset, DrawSampler
    from goose_lib.train.step import make_state, train_step

    cfg = TrainConfig(**({"batch_size": args.batch_size} if args.batch_size else {}))
    device = torch.device("cpu")
    ours = make_state(cfg, device)
    bare_model = make_state(cfg, device).model
    bare_opt = torch.optim.AdamW(param_groups(bare_model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                              layer_decay=cfg.layer_decay), lr=cfg.lr, fused=True)
    size = ours.model.image_size

    base = GooseDataset(cfg.data_root, cfg.train_split)
    draws = DrawDataset(base, TrainTransform(size, cfg.geometry(), cfg.photometric_config()), seed=0)
    sampler = DrawSampler(len(base), batch_size=cfg.batch_size, seed=0)
    loader = torch.utils.data.DataLoader(draws, batch_size=cfg.batch_size, sampler=sampler,
                                         num_workers=args.workers, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    batch = next(it)

    def bare_step() -> None:
        logits = bare_model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"].long(), ignore_index=255)
        loss.backward()
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)

    def our_step() -> None:
        train_step(ours, [batch])

    for _ in range(2):
        bare_step()
        our_step()
    t_bare, t_ours = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        bare_step()
        t1 = time.perf_counter()
        our_step()
        t2 = time.perf_counter()
        t_bare.append(t1 - t0)
        t_ours.append(t2 - t1)
    bare, mine = statistics.median(t_bare), statistics.median(t_ours)
    bench.record("bare_step", timing(t_bare))
    bench.record("train_step", timing(t_ours))

    del it  # a fresh pipeline: start the workers, skip what they prefetch, then time steady state
    it = iter(loader)
    for _ in range(2 * max(args.workers, 1) + 1):
        next(it)
    n_batches = max(2 * args.steps, 8)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    data_rate = n_batches * cfg.batch_size / (time.perf_counter() - t0)
    consume_rate = cfg.batch_size / mine

    print(f"batch {cfg.batch_size} at {size}x{size}, {args.steps} timed steps (medians), "
          f"{torch.get_num_threads()} torch threads, {args.workers} data workers")
    print(f"bare PyTorch step   {bare * 1000:8.1f} ms")
    print(f"goose train_step    {mine * 1000:8.1f} ms")
    print(f"step overhead ratio {mine / bare:8.3f}  (target <= 1.15)")
    print(f"data pipeline       {data_rate:8.1f} images/s; training consumes {consume_rate:.1f} images/s")
    print(f"data headroom ratio {data_rate / consume_rate:8.2f}  (target >= 2)")
    bench.target("train_step / bare PyTorch step", mine / bare, "<=", 1.15, "x")
    bench.target("data pipeline / training consumption", data_rate / consume_rate, ">=", 2.0, "x",
                 detail=f"{args.workers} workers")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
