"""The real facebook/sam3 key set without its weights (transformers' own classes on the meta device),
and the student's encoder against transformers' ``Sam3VisionModel`` on the tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from goose_lib.models.sam3_keys import CheckpointError, match_vision_keys, tracker_key_problems

VISION = "detector_model.vision_encoder."


@pytest.fixture(scope="module")
def full() -> dict:
    """Key -> shape of the full-size facebook/sam3 (Sam3VideoModel with its default config, the
    hub's 1008-px, 32-layer, 1024-wide encoder), plus the full-size vision model's and tracker's."""
    from transformers import Sam3TrackerModel, Sam3VideoConfig, Sam3VideoModel, Sam3VisionModel

    cfg = Sam3VideoConfig()
    with torch.device("meta"):
        video = Sam3VideoModel(cfg)
        vision = Sam3VisionModel(cfg.detector_config.vision_config)
        tracker = Sam3TrackerModel(Sam3VideoConfig())
    return {"file": {k: tuple(v.shape) for k, v in video.state_dict().items()},
            "vision": {k: tuple(v.shape) for k, v in vision.state_dict().items()},
            "tracker": tracker, "config": cfg}


def test_full_size_config_is_the_real_one(full) -> None:
    vc = full["config"].detector_config.vision_config
    assert (vc.image_size, vc.backbone_config.hidden_size, vc.backbone_config.num_hidden_layers) == (1008, 1024, 32)
    assert 8.5e8 < sum(torch.Size(s).numel() for s in full["file"].values()) < 8.7e8  # ~860M parameters


def test_student_loader_selects_exactly_the_vision_encoder_keys(full) -> None:
    layout, selected = match_vision_keys("facebook/sam3", full["file"], full["vision"])
    assert layout == "facebook/sam3"
    assert set(selected) == set(full["vision"])
    assert set(selected.values()) == {k for k in full["file"] if k.startswith(VISION)}  # nothing else
    assert len(selected) == 538
    for model_key, file_key in selected.items():
        assert full["file"][file_key] == full["vision"][model_key]
    assert full["file"][VISION + "backbone.embeddings.patch_embeddings.projection.weight"] == (1024, 3, 14, 14)
    assert selected["backbone.layers.31.mlp.fc2.weight"] == VISION + "backbone.layers.31.mlp.fc2.weight"


@pytest.mark.parametrize("change", ["drop", "reshape"])
def test_student_loader_rejects_a_damaged_full_size_key_set(full, change: str) -> None:
    file = dict(full["file"])
    key = VISION + "backbone.layers.7.attention.q_proj.weight"
    if change == "drop":
        del file[key]
    else:
        file[key] = (1024, 1000)
    with pytest.raises(CheckpointError, match=r"layers\.7\.attention\.q_proj\.weight"):
        match_vision_keys("facebook/sam3", file, full["vision"])


def test_teacher_loader_accepts_the_full_size_tracker_keys(full) -> None:
    problems = tracker_key_problems(full["file"], full["tracker"])
    assert problems == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert len(full["tracker"].state_dict()) == 685  # every one of them found in the file


def test_teacher_loader_names_damaged_full_size_tracker_keys(full) -> None:
    file = dict(full["file"])
    del file["tracker_model.mask_decoder.iou_token.weight"]
    file["tracker_model.prompt_encoder.point_embed.weight"] = (9, 9)
    file["tracker_model.not_a_weight"] = (1,)
    problems = tracker_key_problems(file, full["tracker"])
    assert problems["missing_keys"] == ["mask_decoder.iou_token.weight"]
    shape = tuple(full["tracker"].state_dict()["prompt_encoder.point_embed.weight"].shape)
    assert problems["mismatched_keys"] == [f"tracker_model.prompt_encoder.point_embed.weight (9, 9) != {shape}"]
    assert problems["unexpected_keys"] == ["tracker_model.not_a_weight"]


@pytest.mark.parametrize("frozen", [0, 4])
def test_student_features_equal_transformers_vision_model(tiny_checkpoint: Path, frozen: int) -> None:
    """Position embeddings, pre-LayerNorm, window/global layers and the FPN as transformers runs them."""
    from goose_lib.models.sam3 import load_vision_encoder
    from goose_lib.models.student import StudentConfig, build_student

    student = build_student(StudentConfig(sam3_checkpoint=str(tiny_checkpoint), frozen_layers=frozen)).eval()
    reference = load_vision_encoder(tiny_checkpoint).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        ours = student.features(x)
        theirs = reference(pixel_values=x).fpn_hidden_states
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
