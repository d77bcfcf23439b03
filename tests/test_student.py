"""Student: output shapes, both decoders, freezing, layer-wise LR groups, gradient checkpointing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from goose_lib.config import ParameterError, validate
from goose_lib.models.student import StudentConfig, build_student, count_parameters, param_groups

ROOT = Path(__file__).resolve().parent.parent


def _x(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("decoder", ["fpn", "upernet"])
def test_output_at_input_resolution_and_gradients_reach_the_trained_parts(tiny_checkpoint: Path,
                                                                          decoder: str) -> None:
    student = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), decoder=decoder, frozen_layers=3,
                                          num_classes=7, decoder_channels=16))
    assert (student.image_size, student.num_classes, student.num_layers) == (224, 7, 6)
    logits = student(_x(1))
    assert logits.shape == (1, 7, 224, 224) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    for name, p in student.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_embedded_default_builds(tiny_checkpoint: Path) -> None:
    student = build_student(StudentConfig())
    assert student(_x(1)).shape == (1, 64, 224, 224)
    assert student.training


def test_freezing_leaves_exactly_the_expected_parameters_trainable(tiny_checkpoint: Path) -> None:
    def trainable(k: int) -> set[str]:
        s = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=k, decoder_channels=16))
        return {n for n, p in s.named_parameters() if p.requires_grad}

    s = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), decoder_channels=16))
    names = {n for n, _ in s.named_parameters()}
    head = {n for n in names if n.startswith(("encoder.neck.", "decoder."))}
    layer = {i: {n for n in names if n.startswith(f"encoder.backbone.layers.{i}.")} for i in range(6)}
    stem_norm = {"encoder.backbone.layer_norm.weight", "encoder.backbone.layer_norm.bias"}
    embeddings = {n for n in names if n.startswith("encoder.backbone.embeddings.")}
    assert embeddings == {"encoder.backbone.embeddings.patch_embeddings.projection.weight",
                          "encoder.backbone.embeddings.position_embeddings"}
    assert trainable(0) == head | stem_norm | set().union(*layer.values())
    assert trainable(4) == head | layer[4] | layer[5]
    assert trainable(6) == head
    frozen = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=2, decoder_channels=16))
    frozen.train()
    assert not frozen.encoder.backbone.layers[1].training and frozen.encoder.backbone.layers[2].training
    assert count_parameters(frozen)["trainable"] < count_parameters(frozen)["total"]


def test_frozen_layers_beyond_the_encoder_is_an_error(tiny_checkpoint: Path) -> None:
    with pytest.raises(ParameterError, match=r"frozen_layers=7 exceeds the encoder's 6 layers"):
        build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=7))
    with pytest.raises(ParameterError, match="frozen_layers must be >= 0"):
        validate(StudentConfig, {"frozen_layers": -1})
    with pytest.raises(ParameterError, match="decoder"):
        validate(StudentConfig, {"decoder": "segformer"})


def test_image_size_mismatch_is_an_error(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"224x224 input but 448x448"):
        build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), image_size=448))
    student = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), image_size=224, decoder_channels=16))
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 224, 224\)"):
        student(torch.zeros(1, 3, 200, 200))


def test_param_groups_layer_decay(tiny_checkpoint: Path) -> None:
    student = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=2, decoder_channels=16))
    groups = param_groups(student, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr == {"layer2/decay": 0.125, "layer2/no_decay": 0.125, "layer3/decay": 0.25, "layer3/no_decay": 0.25,
                  "layer4/decay": 0.5, "layer4/no_decay": 0.5, "layer5/decay": 1.0, "layer5/no_decay": 1.0,
                  "head/decay": 1.0, "head/no_decay": 1.0}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in student.parameters() if p.requires_grad}
    names = {id(p): n for n, p in student.named_parameters()}
    for g in groups:
        for p in g["params"]:
            no_decay = p.ndim <= 1
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), names[id(p)]
    assert "encoder.backbone.layers.5.layer_norm1.weight" in {names[id(p)] for g in groups
                                                              if g["name"] == "layer5/no_decay" for p in g["params"]}
    # trainable stem: one step below layer 0
    all_trained = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=0, decoder_channels=16))
    stem = [g for g in param_groups(all_trained, lr=1.0, weight_decay=0.0, layer_decay=0.5) if g["name"].startswith("stem")]
    assert [g["lr"] for g in stem] == [0.5 ** 6]
    torch.optim.AdamW(groups)  # the groups are a valid optimizer spec
    with pytest.raises(ParameterError, match="layer_decay"):
        param_groups(student, lr=1.0, weight_decay=0.0, layer_decay=1.5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_checkpoint: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import goose_lib.models.student as student_mod

    calls = []
    real = student_mod.checkpoint
    monkeypatch.setattr(student_mod, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))

    def grads(ckpt: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        s = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=1, dropout=0.0,
                                        decoder_channels=16, grad_checkpointing=ckpt))
        s(_x(1)).square().mean().backward()
        return {n: p.grad for n, p in s.named_parameters() if p.requires_grad}

    plain = grads(False)
    assert calls == []
    ckpt = grads(True)
    assert len(calls) == 5  # the 5 trainable layers of 6, one frozen
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_architecture_only_build_from_vision_config(tiny_checkpoint: Path) -> None:
    cfg = StudentConfig(sam3_checkpoint=str(tiny_checkpoint), decoder="upernet", decoder_channels=16)
    trained = build_student(cfg).eval()
    as_json = json.loads(json.dumps(trained.vision_config.to_dict()))
    rebuilt = build_student(StudentConfig(sam3_checkpoint="/nonexistent", decoder="upernet", decoder_channels=16),
                            vision_config=as_json)
    assert not torch.equal(rebuilt.encoder.backbone.layers[0].mlp.fc1.weight,
                           trained.encoder.backbone.layers[0].mlp.fc1.weight)
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(_x(1)), trained(_x(1)), rtol=0, atol=0)


def test_bench_encoder_gpu_builds_and_steps_at_tiny_size(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_encoder_gpu", ROOT / "benchmarks" / "bench_encoder_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "tiny.json"
    assert bench.main(["--tiny", "--out", str(out), "--batches", "2", "--steps", "1", "--warmup", "0"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["grad_checkpointing"]) for r in rows] == [(2, False), (2, True)]
    assert all(r["step_s"] > 0 for r in rows)


def test_runs_under_bf16_autocast(tiny_checkpoint: Path) -> None:
    """The dtype path the GPU uses (bf16 autocast), exercised on the CPU."""
    student = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=2, num_classes=5,
                                          decoder_channels=16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = student(_x(1))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().mean().backward()
    assert student.decoder.classifier.weight.grad.dtype == torch.float32
