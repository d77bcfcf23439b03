"""benchmarks/memory_estimate.py and benchmarks/gpu_check.py at tiny size on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_memory_estimate_tiny_known_parts(tmp_path: Path) -> None:
    me = _load("memory_estimate")
    out = tmp_path / "m.json"
    assert me.main(["--tiny", "--batches", "1", "2", "--out", str(out)]) == 0
    one, two = json.loads(out.read_text())["estimates"]
    gib = 2**30
    for est in (one, two):
        plain, ckpt = est["rows"]
        assert plain["weights"] * gib == 4 * est["params_total"]
        assert plain["adamw"] * gib == 8 * est["params_trainable"] and plain["grads"] * gib == 4 * est["params_trainable"]
        assert 0 < ckpt["activations"] < plain["activations"]  # checkpointing keeps less
        assert plain["total_with_ema"] > plain["total"]
    # saved activations grow with the batch (about twice: a few saved tensors, e.g. RoPE tables, are shared)
    assert abs(two["rows"][0]["activations"] / one["rows"][0]["activations"] - 2) < 0.05


def test_memory_estimate_never_counts_attention_weights() -> None:
    """The fused-attention stand-in: an L x L attention matrix would dominate the global layers."""
    import torch
    from transformers import Sam3VisionConfig, Sam3ViTConfig

    me = _load("memory_estimate")
    from goose_lib.models.student import StudentConfig, build_student

    # 224 px, patch 14: 16 x 16 tokens; windows of 8 x 8 in layers 0, 1; layer 2 global (256 x 256 attention)
    vit = Sam3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                        image_size=224, patch_size=14, window_size=8, global_attn_indexes=[2], pretrain_image_size=224)
    with torch.device("meta"):
        model = build_student(StudentConfig(decoder_channels=16, frozen_layers=0), device="meta",
                              vision_config=Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=32))
        model = model.to(torch.bfloat16).train()
    parts = me.saved_bytes(model, 1, 64)
    window, global_ = parts["layer0"], parts["layer2"]
    assert abs(global_ - window) / window < 0.1, parts


def test_gpu_check_without_cuda_writes_skipped(tmp_path: Path, monkeypatch) -> None:
    import torch

    gc = _load("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "g.json"
    assert gc.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text())["skipped"] == "no CUDA device"


def test_gpu_check_tiny_runs_every_section(tmp_path: Path, tiny_root: Path) -> None:
    gc = _load("gpu_check")
    out = tmp_path / "g.json"
    assert gc.main(["--tiny", "--out", str(out), "--data-root", str(tiny_root)]) == 0
    rep = json.loads(out.read_text())
    sec = rep["sections"]
    assert set(sec) == {"encoder", "teacher", "tta", "nccl"} and not any("error" in s for s in sec.values())
    assert [(r["batch"], r["grad_checkpointing"]) for r in sec["encoder"]["rows"]] == [
        (1, False), (1, True), (2, False), (2, True)]
    assert all(r["step_s"] > 0 and r["estimate_gib"] > 0 for r in sec["encoder"]["rows"])
    for mode in ("off", "bfloat16"):
        assert sec["teacher"][mode]["s_50_boxes"] > 0 and sec["teacher"][mode]["s_1_boxes"] > 0
    assert sec["tta"]["multiscale"]["windows"] > sec["tta"]["single"]["windows"] == 1
    assert sec["nccl"]["ok"] and sec["nccl"]["steps"] == 3 and sec["nccl"]["backend"] == "gloo"
