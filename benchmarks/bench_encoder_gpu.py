"""Training-step time and peak GPU memory of the full-size SAM3 student.

Full-size SAM3 image encoder (1008x1008 input, 32 layers, hidden 1024, random init: no weights
needed), lower 24 layers frozen, FPN decoder, bf16 autocast, AdamW; batch 1, 2, 4, with and
without per-layer gradient checkpointing. Prints a table and the checkpointing ratios, and writes
``benchmarks/results/encoder_gpu.json``. Without CUDA it prints "skipped: no CUDA device" and
exits 0. ``--tiny`` runs the same code on a tiny encoder (CUDA if present, else CPU) as a smoke test.

    python benchmarks/bench_encoder_gpu.py [--batches 1 2 4] [--steps 5] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from goose_lib.io import atomic_write_json
from goose_lib.models.student import StudentConfig, build_student, count_parameters, param_groups

RESULTS = Path(__file__).resolve().parent / "results"


def vision_config(tiny: bool) -> Any:
    """Sam3VisionConfig: transformers' defaults are the real SAM3 sizes; tiny = the embedded model at 112."""
    from transformers import Sam3VisionConfig, Sam3ViTConfig

    if not tiny:
        return Sam3VisionConfig(backbone_config=Sam3ViTConfig(), fpn_hidden_size=256)
    vit = Sam3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=6, num_attention_heads=4,
                        image_size=112, patch_size=14, window_size=8, global_attn_indexes=[2, 5],
                        pretrain_image_size=112)
    return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=32)


def measure(cfg: StudentConfig, vc: Any, batch: int, device: torch.device, *, steps: int, warmup: int,
            num_classes: int = 64) -> dict[str, Any]:
    """Mean seconds per optimizer step and peak allocated memory for one configuration."""
    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the GPU (seconds on a CPU for 454M parameters)
        model = build_student(cfg, device=device, vision_config=vc)
    opt = torch.optim.AdamW(param_groups(model, lr=1e-4, weight_decay=0.05, layer_decay=0.9))
    size = model.image_size
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    y = torch.randint(0, num_classes, (batch, size, size), device=device)
    cuda = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(model(x), y, ignore_index=255)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    row: dict[str, Any] = {"batch": batch, "grad_checkpointing": cfg.grad_checkpointing,
                           "trainable_params": count_parameters(model)["trainable"]}
    try:
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        row["step_s"] = (time.perf_counter() - start) / steps
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    except torch.cuda.OutOfMemoryError:
        row.update(step_s=None, peak_gib=None, error="out of memory")
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    print(f"{'batch':>5} {'ckpt':>5} {'step s':>8} {'img/s':>7} {'peak GiB':>9}")
    for r in rows:
        ips = r["batch"] / r["step_s"] if r.get("step_s") else None
        print(f"{r['batch']:>5} {r['grad_checkpointing']!s:>5} {fmt(r.get('step_s'), '8.3f')} "
              f"{fmt(ips, '7.2f')} {fmt(r.get('peak_gib'), '9.2f')}")
    for b in sorted({r["batch"] for r in rows}):
        off, on = (next(r for r in rows if r["batch"] == b and r["grad_checkpointing"] is c) for c in (False, True))
        if off.get("step_s") and on.get("step_s"):
            mem = (f", memory x{on['peak_gib'] / off['peak_gib']:.2f}" if on.get("peak_gib") and off.get("peak_gib")
                   else "")
            print(f"batch {b}: checkpointing time x{on['step_s'] / off['step_s']:.2f}{mem}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny encoder, CPU allowed (smoke test)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--frozen-layers", type=int, default=None, help="default: 24 (full), 4 (tiny)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import Bench

    bench = Bench("encoder_gpu", args)
    if not torch.cuda.is_available() and not args.tiny:
        bench.note("skipped: no CUDA device")
        return bench.finish()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vc = vision_config(args.tiny)
    frozen = args.frozen_layers if args.frozen_layers is not None else (4 if args.tiny else 24)
    warmup = args.warmup
    rows = []
    for batch in args.batches:
        for ckpt in (False, True):
            cfg = StudentConfig(sam3_checkpoint="none", decoder="fpn", frozen_layers=frozen, grad_checkpointing=ckpt,
                                decoder_channels=32 if args.tiny else 128)
            rows.append(measure(cfg, vc, batch, device, steps=args.steps, warmup=warmup))
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the model of the last configuration is gone
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"SAM3 student training step ({'tiny' if args.tiny else 'full-size'} encoder, "
          f"{vc.image_size}x{vc.image_size}, {vc.backbone_config.num_hidden_layers} layers, {frozen} frozen, "
          f"FPN decoder, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}) on {name}")
    print_table(rows)
    out = args.out or RESULTS / ("encoder_gpu_tiny.json" if args.tiny else "encoder_gpu.json")
    atomic_write_json(out, {"device": name, "torch": torch.__version__, "tiny": args.tiny,
                            "image_size": int(vc.image_size), "layers": int(vc.backbone_config.num_hidden_layers),
                            "frozen_layers": frozen, "steps": args.steps, "rows": rows})
    print(f"wrote {out}")
    bench.notes.append(f"rows in {out}")
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main())
