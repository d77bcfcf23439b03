"""The prepared GPU check: one script, one JSON, under 8 minutes on one GPU (an H200 / A100 class).

Sections (random weights everywhere: no checkpoint needed; each section's failure is recorded
and the next still runs; a section that would start after ``--budget-s`` is skipped):

1. ``encoder``: the full-size student (1008 px, 32 layers, 24 frozen, FPN 256) forward + backward
   + AdamW in bf16 autocast at batch 1/2/4, without and with gradient checkpointing: seconds per
   step and peak memory (``benchmarks/bench_encoder_gpu.measure``), next to the analytic estimate
   of ``benchmarks/memory_estimate.py``.
2. ``teacher``: the full-size SAM3 tracker on a 2048x1536 image with 1 vs 50 boxes, fp32 and
   ``TeacherConfig(autocast="bfloat16")``: seconds per image, the ratio, peak memory.
3. ``tta``: the full-size student on a 2048x1536 image with the error-analysis notebook's default
   multi-scale TTA (``ErrorAnalysisParams``: scales, overlap, base, flip) in bf16, vs single-scale.
4. ``nccl``: a one-process NCCL group (``device_id`` bound) and ``train()`` on it (3 steps of the
   tiny model on a small synthetic root written on the spot, or ``--data-root``; its validation
   all-reduce runs on NCCL), then an object all-gather and a barrier on the bound device.

Without CUDA (and without ``--tiny``) it writes ``{"skipped": "no CUDA device"}``. ``--tiny`` runs
every section on tiny models and a small image (CUDA if present, else the CPU and gloo): the test
suite's smoke test. Output: ``benchmarks/results/gpu_check.json`` (``--out``).

    python benchmarks/gpu_check.py [--tiny] [--out FILE] [--budget-s 420] [--sections encoder teacher tta nccl]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goose_lib.io import atomic_write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = ("encoder", "teacher", "tta", "nccl")
GIB = 2**30


def _bench(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def check_encoder(device: torch.device, tiny: bool) -> dict[str, Any]:
    from goose_lib.models.student import StudentConfig

    enc, mem = _bench("bench_encoder_gpu"), _bench("memory_estimate")
    vc = enc.vision_config(tiny)
    frozen, channels, batches = (2, 16, [1, 2]) if tiny else (24, 256, [1, 2, 4])
    rows = []
    for batch in batches:
        for ckpt in (False, True):
            cfg = StudentConfig(sam3_checkpoint="none", frozen_layers=frozen, grad_checkpointing=ckpt,
                                decoder_channels=channels)
            rows.append(enc.measure(cfg, vc, batch, device, steps=1 if tiny else 3, warmup=0 if tiny else 1))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    estimates = {b: mem.estimate(b, tiny=tiny, frozen_layers=frozen, decoder_channels=channels) for b in batches}
    for r in rows:
        est = next(e for e in estimates[r["batch"]]["rows"] if e["grad_checkpointing"] == r["grad_checkpointing"])
        r["estimate_gib"] = est["total"]
    return {"image_size": int(vc.image_size), "layers": int(vc.backbone_config.num_hidden_layers),
            "frozen_layers": frozen, "autocast": "bfloat16" if device.type == "cuda" else "off", "rows": rows}


def _tracker(device: torch.device, tiny: bool) -> Any:
    from transformers import Sam3TrackerModel, Sam3VideoConfig

    from goose_lib.models import tiny as tiny_sam3

    cfg = tiny_sam3._tiny_video_config(112) if tiny else Sam3VideoConfig()
    torch.manual_seed(0)
    with torch.device(device):
        return Sam3TrackerModel(cfg).eval()


def _image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def check_teacher(device: torch.device, tiny: bool) -> dict[str, Any]:
    from goose_lib.teacher.boxes import make_boxset
    from goose_lib.teacher.prompt import Teacher, TeacherConfig

    h, w = (192, 256) if tiny else (1536, 2048)
    image = _image(h, w)
    rng = np.random.default_rng(1)

    def boxes(n: int) -> Any:
        x1, y1 = rng.uniform(0, w * 0.8, n), rng.uniform(0, h * 0.8, n)
        xyxy = np.stack([x1, y1, x1 + rng.uniform(8, w * 0.2, n), y1 + rng.uniform(8, h * 0.2, n)], 1)
        return make_boxset(xyxy, rng.integers(1, 64, n), ["instance"] * n, h, w)

    model = _tracker(device, tiny)
    out: dict[str, Any] = {"image": f"{w}x{h}", "params": sum(p.numel() for p in model.parameters())}
    sets = {1: boxes(1), 50: boxes(50)}
    for autocast in ("off", "bfloat16"):
        teacher = Teacher(model, TeacherConfig(autocast=autocast))
        teacher.predict([image], [sets[1]])  # warm-up (kernels, allocator)
        row: dict[str, Any] = {}
        for n, bs in sets.items():
            _reset_peak(device)
            row[f"s_{n}_boxes"] = _timed(lambda bs=bs, t=teacher: t.predict([image], [bs]), device, 1 if tiny else 3)
            row[f"peak_gib_{n}_boxes"] = _peak(device)
        row["ratio_50_vs_1"] = row["s_50_boxes"] / row["s_1_boxes"]
        out[autocast] = row
    return out


def check_tta(device: torch.device, tiny: bool) -> dict[str, Any]:
    from goose_lib.infer.tta import TTAConfig, count_windows, predict
    from goose_lib.models.student import StudentConfig, build_student
    from goose_lib.params import ErrorAnalysisParams

    vc = _bench("bench_encoder_gpu").vision_config(tiny)
    torch.manual_seed(0)
    with torch.device(device):
        model = build_student(StudentConfig(sam3_checkpoint="none", decoder_channels=16 if tiny else 256),
                              device=device, vision_config=vc).eval()
    p = ErrorAnalysisParams()
    autocast = "bfloat16" if device.type == "cuda" else "off"
    multi = TTAConfig(mode="multiscale", scales=p.scales, flip=p.flip, overlap=p.overlap, base=p.tta_base,
                      window_batch=p.window_batch, autocast=autocast)
    single = TTAConfig(autocast=autocast)
    h, w = (192, 256) if tiny else (1536, 2048)
    image = _image(h, w)
    out: dict[str, Any] = {"image": f"{w}x{h}", "scales": list(p.scales), "flip": p.flip, "overlap": p.overlap,
                           "base": p.tta_base, "autocast": autocast}
    for name, cfg in (("single", single), ("multiscale", multi)):
        predict(model, image, cfg)  # warm-up
        _reset_peak(device)
        out[name] = {"windows": count_windows(h, w, model.image_size, cfg),
                     "s_per_image": _timed(lambda cfg=cfg: predict(model, image, cfg), device, 1 if tiny else 3),
                     "peak_gib": _peak(device)}
    out["ratio_multiscale_vs_single"] = out["multiscale"]["s_per_image"] / out["single"]["s_per_image"]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_nccl(device: torch.device, tiny: bool, data_root: str = "") -> dict[str, Any]:
    import torch.distributed as dist

    from goose_lib.train.config import TrainConfig
    from goose_lib.train.distributed import all_gather_objects
    from goose_lib.train.loop import train

    backend = "nccl" if device.type == "cuda" else "gloo"
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if backend == "nccl":
            torch.cuda.set_device(0)
            dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
        else:
            dist.init_process_group("gloo")
        with tempfile.TemporaryDirectory() as tmp:
            if not data_root:
                from goose_lib.data.synthetic import write_synthetic

                data_root = str(write_synthetic(Path(tmp) / "data", seed=0, n_train=8, n_val=4, n_test=1))
            cfg = TrainConfig(data_root=data_root, steps=3, batch_size=2, train_limit=4, val_limit=2,
                              decoder_channels=16, val_interval=0, checkpoint_interval=2,
                              device="cuda" if backend == "nccl" else "cpu")
            result = train(cfg, Path(tmp) / "run", progress=False)
        gathered = [None]
        dist.all_gather_object(gathered, {"rank": dist.get_rank()})
        if backend == "nccl":
            dist.barrier(device_ids=[0])
        return {"backend": backend, "world_size": dist.get_world_size(), "steps": result.step,
                "final_loss": next((r["loss"] for r in reversed(result.history) if "loss" in r), None),
                "val_composite": (result.val or {}).get("composite"), "all_gather": gathered,
                "helper_gather": all_gather_objects("ok", device), "ok": True}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models, CPU allowed (smoke test)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip sections starting after this many seconds")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--data-root", default="", help="data of the nccl section's training run "
                                                    "(default: a small synthetic root in a temporary folder)")
    args = ap.parse_args(argv)
    out_path = args.out or RESULTS / ("gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        atomic_write_json(out_path, {"skipped": "no CUDA device", "torch": torch.__version__})
        print(f"skipped: no CUDA device (wrote {out_path})")
        return 0
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if cuda else "cpu",
                              "torch": torch.__version__, "tiny": args.tiny, "sections": {}}
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "encoder": lambda: check_encoder(device, args.tiny),
        "teacher": lambda: check_teacher(device, args.tiny),
        "tta": lambda: check_tta(device, args.tiny),
        "nccl": lambda: check_nccl(device, args.tiny, args.data_root),
    }
    start = time.perf_counter()
    for name in args.sections:
        if time.perf_counter() - start > args.budget_s:
            report["sections"][name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        t0 = time.perf_counter()
        try:
            res = checks[name]()
        except Exception as exc:  # noqa: BLE001 - recorded; the next section still runs
            res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
        res["wall_s"] = time.perf_counter() - t0
        report["sections"][name] = res
        print(f"{name}: {'error ' + res['error'] if 'error' in res else 'ok'} ({res['wall_s']:.1f} s)", flush=True)
        if cuda:
            torch.cuda.empty_cache()
        atomic_write_json(out_path, report)  # partial results survive a kill
    report["wall_s"] = time.perf_counter() - start
    atomic_write_json(out_path, report)
    print(f"wrote {out_path} ({report['wall_s']:.0f} s)")
    return 1 if any("error" in s for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
