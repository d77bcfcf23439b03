"""SAM3 adapter: the tiny checkpoint, strict loading in every layout, fault reports, preprocessing."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from goose_lib.models import sam3, tiny
from goose_lib.models.sam3 import CheckpointError

VE = "detector_model.vision_encoder."


def _copy_with(src: Path, dst: Path, edit) -> Path:
    """Copy a checkpoint folder, letting ``edit(state)`` change its weights."""
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _encode(model, seed: int = 0) -> list[torch.Tensor]:
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        out = model(x)
    return [out.last_hidden_state, *out.fpn_hidden_states]


# --- the tiny checkpoint -------------------------------------------------------------------------

def test_tiny_checkpoint_is_in_facebook_layout_and_loads_with_no_missing_keys(tiny_checkpoint: Path) -> None:
    from transformers import Sam3TrackerModel

    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"detector_model", "tracker_model", "tracker_neck"}
    assert (tiny_checkpoint / "config.json").is_file()
    model, info = Sam3TrackerModel.from_pretrained(tiny_checkpoint, local_files_only=True,
                                                   output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # the tracker's backbone is the detector's, its neck is tracker_neck
    for name, p in model.vision_encoder.backbone.state_dict().items():
        torch.testing.assert_close(p, state[VE + "backbone." + name], rtol=0, atol=0)
    for name, p in model.vision_encoder.neck.state_dict().items():
        torch.testing.assert_close(p, state["tracker_neck." + name], rtol=0, atol=0)
    enc = sam3.load_vision_encoder(tiny_checkpoint)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.no_grad():  # our loader and transformers' from_pretrained agree on the shared backbone
        torch.testing.assert_close(enc.backbone(x).last_hidden_state, model.vision_encoder.backbone(x).last_hidden_state,
                                   rtol=0, atol=0)
    bb = enc.backbone.config
    assert (enc.config.image_size, bb.num_hidden_layers, bb.hidden_size) == (224, 6, 64)
    assert [i for i, layer in enumerate(enc.backbone.layers) if layer.window_size == 0] == [2, 5]


def test_tiny_build_is_deterministic_and_seeded(tmp_path: Path, tiny_checkpoint: Path) -> None:
    rng_before = torch.random.get_rng_state()
    a = tiny.build_tiny_checkpoint(tmp_path / "a", seed=0)
    b = tiny.build_tiny_checkpoint(tmp_path / "b", seed=1)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # global RNG untouched
    assert sam3.checkpoint_fingerprint(a) == sam3.checkpoint_fingerprint(tiny_checkpoint)
    assert sam3.checkpoint_fingerprint(b) != sam3.checkpoint_fingerprint(a)
    with pytest.raises(FileExistsError, match=str(a)):
        tiny.build_tiny_checkpoint(a)


def test_ensure_tiny_checkpoint_concurrent_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOSE_SAM3_HOME", str(tmp_path / "home"))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(tiny.ensure_tiny_checkpoint())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "home" / tiny.TINY_NAME] * 3
    assert sorted(p.name for p in (tmp_path / "home").iterdir() if p.is_dir()) == [tiny.TINY_NAME]
    sam3.load_vision_encoder(results[0])


def test_tracker_segments_a_box(tiny_checkpoint: Path) -> None:
    tracker = sam3.load_tracker(tiny_checkpoint, image_size=224)
    x = sam3.preprocess(np.zeros((50, 70, 3), np.uint8), 224)
    with torch.no_grad():
        out = tracker(pixel_values=x, input_boxes=torch.tensor([[[10.0, 20.0, 100.0, 120.0]]]),
                      multimask_output=False)
    assert out.pred_masks.shape == (1, 1, 1, 64, 64)


# --- layouts ----------------------------------------------------------------------------------------

def test_all_layouts_give_identical_encoders(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ref = sam3.load_vision_encoder(tiny_checkpoint)
    expected = _encode(ref)
    ref.save_pretrained(tmp_path / "vision")  # Sam3VisionModel.save_pretrained: backbone.*, neck.*
    assert "backbone.layer_norm.weight" in load_file(str(tmp_path / "vision" / "model.safetensors"))
    for got, want in zip(_encode(sam3.load_vision_encoder(tmp_path / "vision")), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    tracker = sam3.load_tracker(tiny_checkpoint)
    tracker.save_pretrained(tmp_path / "tracker")  # tracker_model.detector_model.vision_encoder.* prefix
    keys = load_file(str(tmp_path / "tracker" / "model.safetensors"))
    assert any(k.startswith("tracker_model.detector_model.vision_encoder.backbone.") for k in keys)
    from_tracker = sam3.load_vision_encoder(tmp_path / "tracker")
    assert torch.equal(from_tracker.backbone.layers[5].mlp.fc2.weight, ref.backbone.layers[5].mlp.fc2.weight)
    # ... and its neck is the tracker's own
    assert torch.equal(from_tracker.neck.fpn_layers[2].proj1.weight, tracker.vision_encoder.neck.fpn_layers[2].proj1.weight)
    sam3.load_tracker(tmp_path / "tracker")  # the tracker's own save round-trips strictly


def test_dtype_and_device_are_explicit(tiny_checkpoint: Path) -> None:
    enc = sam3.load_vision_encoder(tiny_checkpoint, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in enc.parameters()} == {torch.bfloat16}
    assert not enc.training


# --- faults --------------------------------------------------------------------------------------------

def test_missing_weight_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    key = VE + "backbone.layers.3.attention.q_proj.weight"
    bad = _copy_with(tiny_checkpoint, tmp_path / "ck", lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match="missing 1 key") as exc:
        sam3.load_vision_encoder(bad)
    assert str(exc.value).startswith(str(bad)) and "backbone.layers.3.attention.q_proj.weight" in str(exc.value)


def test_extra_weight_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    key = VE + "backbone.layers.1.extra_scale"
    bad = _copy_with(tiny_checkpoint, tmp_path / "ck", lambda s: s.__setitem__(key, torch.ones(3)))
    with pytest.raises(CheckpointError, match="unexpected 1 key") as exc:
        sam3.load_vision_encoder(bad)
    assert str(exc.value).startswith(str(bad)) and key in str(exc.value)


def test_extra_weight_in_vision_only_folder_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    sam3.load_vision_encoder(tiny_checkpoint).save_pretrained(tmp_path / "vision")
    state = load_file(str(tmp_path / "vision" / "model.safetensors"))
    state["decoder.head.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "vision" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"decoder\.head\.weight"):
        sam3.load_vision_encoder(tmp_path / "vision")


def test_misshaped_weight_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    key = VE + "neck.fpn_layers.1.proj1.weight"
    bad = _copy_with(tiny_checkpoint, tmp_path / "ck", lambda s: s.__setitem__(key, torch.zeros(5, 5, 1, 1)))
    with pytest.raises(CheckpointError, match="mis-shaped") as exc:
        sam3.load_vision_encoder(bad)
    assert key in str(exc.value) and "(5, 5, 1, 1)" in str(exc.value)


def test_other_image_size_is_an_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"224x224 input but 336x336"):
        sam3.load_vision_encoder(tiny_checkpoint, image_size=336)
    with pytest.raises(CheckpointError, match=r"224x224 input but 448x448"):
        sam3.load_tracker(tiny_checkpoint, image_size=448)
    big = tiny.build_tiny_checkpoint(tmp_path / "ck336", image_size=336)
    enc = sam3.load_vision_encoder(big, image_size=336)
    assert enc(torch.zeros(1, 3, 336, 336)).fpn_hidden_states[0].shape[-1] == 96


def test_tracker_loading_is_strict(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bad = _copy_with(tiny_checkpoint, tmp_path / "ck", lambda s: s.pop("tracker_model.mask_decoder.iou_token.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys 1 \[mask_decoder\.iou_token\.weight\]") as exc:
        sam3.load_tracker(bad)
    assert str(exc.value).startswith(str(bad))


def test_tracker_misshaped_weight_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    key = "tracker_model.mask_decoder.iou_token.weight"
    bad = _copy_with(tiny_checkpoint, tmp_path / "ck", lambda s: s.__setitem__(key, torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=r"mismatched keys 1 .*mask_decoder\.iou_token\.weight"):
        sam3.load_tracker(bad)


def test_sharded_checkpoint_loads(tiny_checkpoint: Path, tmp_path: Path) -> None:
    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    ck = tmp_path / "sharded"
    ck.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", ck / "config.json")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(ck / shard), metadata={"format": "pt"})
    (ck / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}))
    for got, want in zip(_encode(sam3.load_vision_encoder(ck)), _encode(sam3.load_vision_encoder(tiny_checkpoint))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    sam3.load_tracker(ck)
    assert sam3.checkpoint_fingerprint(ck) != sam3.checkpoint_fingerprint(tiny_checkpoint)
    (ck / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        sam3.load_vision_encoder(ck)


def test_stale_embedded_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOSE_SAM3_HOME", str(tmp_path))
    (tmp_path / tiny.TINY_NAME).mkdir()
    (tmp_path / tiny.TINY_NAME / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="incomplete embedded checkpoint folder; delete it"):
        tiny.ensure_tiny_checkpoint()


def test_tracker_rejects_sam3_video_save_pretrained(tmp_path: Path) -> None:
    """transformers 5.23's Sam3VideoModel.save_pretrained writes tracker_model.tracker_model.*:
    Sam3TrackerModel.from_pretrained would leave those tensors random - we must refuse."""
    from transformers import Sam3VideoModel

    Sam3VideoModel(tiny._tiny_video_config(224)).save_pretrained(tmp_path / "video")
    with pytest.raises(CheckpointError, match="missing keys"):
        sam3.load_tracker(tmp_path / "video")


def test_not_a_checkpoint_folder(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match=f"^{tmp_path}: no config.json"):
        sam3.load_vision_encoder(tmp_path)
    shutil.copy(tiny_checkpoint / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        sam3.load_vision_encoder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        sam3.load_vision_encoder(tmp_path)


def test_fingerprint_is_cached_by_mtime_and_size(tiny_checkpoint: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ck = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    first = sam3.checkpoint_fingerprint(ck)
    monkeypatch.setattr(sam3, "_HASH_CACHE", {})  # a new process: the on-disk cache answers
    monkeypatch.setattr(sam3, "sha256_file", lambda *a: pytest.fail("re-hashed an unchanged file"))
    assert sam3.checkpoint_fingerprint(ck) == first
    monkeypatch.undo()
    _copy_with(ck, tmp_path / "ck2", lambda s: s[VE + "backbone.layer_norm.bias"].add_(1))
    assert sam3.checkpoint_fingerprint(tmp_path / "ck2") != first


# --- preprocessing ----------------------------------------------------------------------------------

def _aa_halve(a: np.ndarray, axis: int) -> np.ndarray:
    """Reference: antialiased bilinear downsampling by exactly 2 = the kernel [1, 3, 3, 1] / 8 around
    each output pixel (triangle filter of twice the width), renormalised at the borders."""
    a = np.moveaxis(a, axis, 0).astype(np.float64)
    n = a.shape[0] // 2
    out = np.empty((n,) + a.shape[1:])
    for i in range(n):
        taps = [(2 * i - 1, 1.0), (2 * i, 3.0), (2 * i + 1, 3.0), (2 * i + 2, 1.0)]
        taps = [(j, w) for j, w in taps if 0 <= j < a.shape[0]]
        out[i] = sum(w * a[j] for j, w in taps) / sum(w for _, w in taps)
    return np.moveaxis(out, 0, axis)


def test_preprocess_matches_a_hand_computed_antialiased_resize() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    want = _aa_halve(_aa_halve(img.astype(np.float64), 0), 1)  # 16 x 16 x 3, 0..255
    got = sam3.preprocess(torch.from_numpy(img).permute(2, 0, 1).double(), 16)  # float input: no rounding
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want / 127.5 - 1, atol=1e-5)
    got_u8 = sam3.preprocess(img, 16)[0].permute(1, 2, 0).numpy()  # uint8 input: rounded like torchvision
    levels = (got_u8 + 1) * 127.5
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.abs(levels - want).max() <= 0.5 + 1e-3
    # a plain (non-antialiased) bilinear halving would average 2 pixels, not 4
    plain = img.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(want - plain).max() > 5


def test_preprocess_range_stretch_and_input_forms() -> None:
    black, white = np.zeros((30, 50, 3), np.uint8), np.full((60, 20, 3), 255, np.uint8)
    x = sam3.preprocess([black, white], 28)  # different sizes, stretched to a square
    assert x.shape == (2, 3, 28, 28) and x.dtype == torch.float32
    assert torch.all(x[0] == -1) and torch.all(x[1] == 1)
    img = np.random.default_rng(1).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    a = sam3.preprocess(img, 28)
    b = sam3.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None], 28)
    c = sam3.preprocess(img[None], 28)
    assert torch.equal(a, b) and torch.equal(a, c)
    same = sam3.preprocess(img[:28, :28], 28)  # no resize needed: exact affine map
    torch.testing.assert_close(same[0].permute(1, 2, 0), torch.from_numpy(img[:28, :28]).float() / 127.5 - 1)
    # the stretch is anisotropic: a vertical gradient stays vertical
    grad = np.repeat(np.linspace(0, 255, 40).astype(np.uint8)[:, None, None], 3, axis=2).repeat(10, axis=1)
    g = sam3.preprocess(grad, 28)[0, 0]
    assert torch.all(g == g[:, :1]) and torch.all(g[1:, 0] >= g[:-1, 0])


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.int32),
                                 torch.zeros(1, 1, 8, 8), "image.png"])
def test_preprocess_rejects_bad_input(bad) -> None:
    with pytest.raises((ValueError, TypeError), match="preprocess"):
        sam3.preprocess(bad, 16)


def test_cli_tiny_sam3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from goose_lib.cli import main

    assert main(["tiny-sam3", str(tmp_path / "ck"), "--seed", "3"]) == 0
    assert str(tmp_path / "ck") in capsys.readouterr().out
    sam3.load_vision_encoder(tmp_path / "ck")
    assert main(["tiny-sam3", str(tmp_path / "ck")]) == 2
    assert "not empty" in capsys.readouterr().err
