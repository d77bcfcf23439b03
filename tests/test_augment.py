"""Augmentation: joint geometry keeps maps aligned with the image, photometric ranges hold,
mmseg order/semantics (against an independent transcription), determinism."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch

from goose_lib.config import ParameterError, validate
from goose_lib.data.augment import (
    MAP_KEYS,
    PHOTOMETRIC_PRESETS,
    EvalTransform,
    GeometryConfig,
    PhotometricConfig,
    TrainTransform,
    hsv_to_rgb,
    normalize,
    photometric_distort,
    photometric_preset,
    resize_image,
    resize_map,
    rgb_to_hsv,
    scale_saturation,
)

OFF = PHOTOMETRIC_PRESETS["off"]


def _palette(k: int = 64) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.choice(256, size=(k, 3), replace=True).astype(np.uint8)


def _blocky_item(h: int = 96, w: int = 128, block: int = 8, seed: int = 0) -> dict:
    """Label of 8x8 blocks of random classes; image = each pixel's class colour; other maps derived."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 64, size=(h // block, w // block)).astype(np.uint8)
    label = np.kron(coarse, np.ones((block, block), np.uint8))
    image = _palette()[label]
    return {"image": image, "label": label, "instances": label.astype(np.int32) * 7 + 1,
            "teacher_cls": label.copy(), "teacher_prob": (label * 3).astype(np.uint8),
            "teacher_region": label.copy(), "key": "train/s/x_cam"}


def _tensor_img(out: dict) -> np.ndarray:
    """Transform output image back to HxWx3 float 0..255."""
    return ((out["image"] + 1.0) * 127.5).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("seed", range(6))
def test_geometry_keeps_every_map_aligned_with_the_image(seed: int) -> None:
    item = _blocky_item(seed=seed)
    tf = TrainTransform(64, GeometryConfig(scale_range=(0.5, 2.0), crop_size=48, flip_prob=0.5), OFF)
    out = tf(item, np.random.default_rng(seed))
    label = out["label"].numpy()
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
    assert set(out) == {"image", "key", *MAP_KEYS}
    img = _tensor_img(out)
    # Interior pixels (5x5 neighbourhood of one class: beyond the antialias filter's reach when
    # downscaling by up to 2x) carry exactly their class colour.
    pad = np.pad(label, 2, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, (5, 5))
    interior = (win == label[..., None, None]).all((-1, -2)) & (label != 255)
    assert interior.sum() > 300
    expect = _palette()[label[interior]].astype(np.float32)
    np.testing.assert_allclose(img[interior], expect, atol=1.0)
    # Every map moved with the label (their values are functions of the label).
    lab = out["label"].long()
    valid = lab != 255
    assert torch.equal(out["instances"].long()[valid], lab[valid] * 7 + 1)
    assert torch.equal(out["teacher_cls"].long()[valid], lab[valid])
    assert torch.equal(out["teacher_prob"].long()[valid], lab[valid] * 3)
    assert out["instances"].dtype == torch.int32 and out["teacher_prob"].dtype == torch.uint8


def test_padding_fills_each_key_with_its_own_value() -> None:
    item = _blocky_item(h=32, w=32)
    # scale 0.25 with a 64 crop: a 256-pixel window over a 32x32 image -> mostly padding.
    tf = TrainTransform(64, GeometryConfig(scale_range=(0.25, 0.25), crop_size=64, flip_prob=0.0, pad_image=7), OFF)
    out = tf(item, np.random.default_rng(0))
    assert out["label"][-1, -1] == 255 and out["instances"][-1, -1] == 0
    assert out["teacher_cls"][-1, -1] == 255 and out["teacher_prob"][-1, -1] == 0
    assert out["teacher_region"][-1, -1] == 255
    np.testing.assert_allclose(_tensor_img(out)[-1, -1], [7, 7, 7], atol=1e-3)
    # The image occupies the top-left 8x8 of the output (32 / 256 * 64).
    assert (out["label"][:8, :8] != 255).all() and (out["label"][9:, :] == 255).all()


def test_identity_geometry_and_off_preset_change_nothing() -> None:
    item = _blocky_item(h=64, w=64)
    tf = TrainTransform(64, GeometryConfig(scale_range=(1.0, 1.0), crop_size=64, flip_prob=0.0), OFF)
    out = tf(item, np.random.default_rng(3))
    np.testing.assert_allclose(_tensor_img(out), item["image"], atol=1e-4)
    assert np.array_equal(out["label"].numpy(), item["label"])
    x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8)).astype(np.float32)
    assert np.array_equal(photometric_distort(x, OFF, np.random.default_rng(0)), x)


def test_flip_probability_one_mirrors_image_and_maps() -> None:
    item = _blocky_item(h=64, w=64)
    tf = TrainTransform(64, GeometryConfig(scale_range=(1.0, 1.0), crop_size=64, flip_prob=1.0), OFF)
    out = tf(item, np.random.default_rng(0))
    assert np.array_equal(out["label"].numpy(), item["label"][:, ::-1])
    np.testing.assert_allclose(_tensor_img(out), item["image"][:, ::-1], atol=1e-4)


@pytest.mark.parametrize("shape", [(88, 120, 56), (240, 320, 224), (64, 48, 112)])
def test_resize_and_eval_transform_follow_sam3_preprocess(shape) -> None:
    from goose_lib.models.sam3 import preprocess

    h, w, size = shape
    image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = preprocess(image, size)[0].numpy()
    ours = normalize(resize_image(image, size))
    diff = np.abs(ours - ref)
    assert diff.max() <= 1 / 127.5 + 1e-6  # at most one grey level (rounding ties)
    assert (diff > 1e-6).mean() < 0.03  # ties: exact .5 values round differently
    item = _blocky_item(h=88, w=120)
    out = EvalTransform(56)(item)
    assert np.abs(out["image"].numpy() - preprocess(item["image"], 56)[0].numpy()).max() <= 1 / 127.5 + 1e-6
    assert out["label"].shape == (88, 120)  # scored at the image's resolution
    assert torch.equal(out["label"], torch.from_numpy(item["label"]))


def test_resize_map_is_torch_nearest_exact() -> None:
    import torch.nn.functional as F

    lab = np.random.default_rng(0).integers(0, 64, (37, 53)).astype(np.uint8)
    for size in (16, 64, 101):
        ref = F.interpolate(torch.from_numpy(lab)[None, None].float(), size=(size, size), mode="nearest-exact")
        assert np.array_equal(resize_map(lab, size), ref[0, 0].numpy().astype(np.uint8))


def test_cat_max_ratio_redraws_crops_dominated_by_one_class() -> None:
    label = np.zeros((200, 200), np.uint8)
    label[:, 190:] = 1  # class 1 only in a thin strip at the right
    item = {"image": np.zeros((200, 200, 3), np.uint8), "label": label}
    strict = TrainTransform(32, GeometryConfig(scale_range=(1, 1), crop_size=32, flip_prob=0, cat_max_ratio=0.95), OFF)
    loose = TrainTransform(32, GeometryConfig(scale_range=(1, 1), crop_size=32, flip_prob=0), OFF)
    hits_strict = sum(bool((strict(item, np.random.default_rng(s))["label"] == 1).any()) for s in range(40))
    hits_loose = sum(bool((loose(item, np.random.default_rng(s))["label"] == 1).any()) for s in range(40))
    assert hits_strict > hits_loose + 10


def test_augmentation_is_deterministic_given_the_seed() -> None:
    item = _blocky_item()
    tf = TrainTransform(64, GeometryConfig(crop_size=48), PHOTOMETRIC_PRESETS["aggressive"])
    a, b = tf(item, np.random.default_rng(11)), tf(item, np.random.default_rng(11))
    c = tf(item, np.random.default_rng(12))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])


# --- photometric ranges ------------------------------------------------------------------------

def _only(**kw) -> PhotometricConfig:
    base = {"brightness_delta": 0.0, "contrast_range": (1.0, 1.0), "saturation_range": (1.0, 1.0),
            "hue_delta": 0.0, "prob": 1.0}
    return PhotometricConfig(**(base | kw))


def _img(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(40, 215, size=(3, 16, 16)).astype(np.float32)


def test_brightness_shift_is_one_constant_bounded_by_delta() -> None:
    shifts = []
    for s in range(200):
        x = _img(s)
        d = photometric_distort(x, _only(brightness_delta=20.0), np.random.default_rng(s)) - x
        assert float(d.max() - d.min()) < 1e-3  # one shift for the whole image (no clipping here)
        shifts.append(float(d.mean()))
    assert max(abs(v) for v in shifts) <= 20.0 and min(shifts) < -15 and max(shifts) > 15


def test_contrast_factor_within_range() -> None:
    for s in range(100):
        x = np.minimum(_img(s), 200)  # no clipping at 255 after x1.2
        r = photometric_distort(x, _only(contrast_range=(0.7, 1.2)), np.random.default_rng(s)) / x
        assert float(r.max() - r.min()) < 1e-4 and 0.7 - 1e-5 <= float(r.mean()) <= 1.2 + 1e-5


def test_hue_shift_bounded_and_saturation_value_kept() -> None:
    worst = 0.0
    for s in range(100):
        x = _img(s)
        y = photometric_distort(x, _only(hue_delta=10.0), np.random.default_rng(s))
        hx, hy = rgb_to_hsv(x), rgb_to_hsv(y)
        dh = np.remainder(hy[0] - hx[0] + 180.0, 360.0) - 180.0  # circular difference, degrees
        assert float(dh.max() - dh.min()) < 0.05  # one shift for every pixel
        worst = max(worst, float(np.abs(dh).max()))
        np.testing.assert_allclose(hy[1:], hx[1:], atol=1e-3, rtol=1e-4)
    assert 15.0 < worst <= 20.0 + 1e-3  # hue_delta 10 OpenCV units = 20 degrees


def test_saturation_closed_form_matches_hsv_round_trip() -> None:
    x = np.random.default_rng(1).uniform(0, 255, (3, 20, 20)).astype(np.float32)
    for factor in (0.0, 0.4, 1.0, 1.6, 10.0):
        h = rgb_to_hsv(x)
        h[1] = np.clip(h[1] * factor, 0, 1)
        np.testing.assert_allclose(scale_saturation(x, factor), hsv_to_rgb(h), atol=1e-3)


def test_hsv_matches_matplotlib() -> None:
    x = np.random.default_rng(2).uniform(0, 255, (3, 30, 30)).astype(np.float32)
    x[:, 0, :3] = 128  # grey pixels: hue and saturation 0
    ref = mcolors.rgb_to_hsv(x.transpose(1, 2, 0) / 255)
    h = rgb_to_hsv(x).transpose(1, 2, 0)
    np.testing.assert_allclose(h[..., 0] / 360, ref[..., 0], atol=1e-5)
    np.testing.assert_allclose(h[..., 1], ref[..., 1], atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-3)


def _mmseg_reference(img: np.ndarray, cfg: PhotometricConfig, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion transcribed with matplotlib's HSV (float, same draw order)."""
    img = img.astype(np.float64)
    def coin() -> bool:
        return bool(rng.random() < cfg.prob)

    if coin():
        img = np.clip(img + rng.uniform(-cfg.brightness_delta, cfg.brightness_delta), 0, 255)
    mode = rng.integers(2)
    if mode == 1 and coin():
        img = np.clip(img * rng.uniform(*cfg.contrast_range), 0, 255)
    if coin():
        hsv = mcolors.rgb_to_hsv(img / 255)
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*cfg.saturation_range), 0, 1)
        img = mcolors.hsv_to_rgb(hsv) * 255
    if coin():
        hsv = mcolors.rgb_to_hsv(img / 255)
        hsv[..., 0] = (hsv[..., 0] + 2 * rng.uniform(-cfg.hue_delta, cfg.hue_delta) / 360) % 1.0
        img = mcolors.hsv_to_rgb(hsv) * 255
    if mode == 0 and coin():
        img = np.clip(img * rng.uniform(*cfg.contrast_range), 0, 255)
    return img


@pytest.mark.parametrize("preset", ["standard", "aggressive"])
def test_photometric_matches_mmseg_transcription(preset: str) -> None:
    cfg = PHOTOMETRIC_PRESETS[preset]
    for s in range(25):
        x = np.random.default_rng(100 + s).uniform(0, 255, size=(12, 12, 3))
        ref = _mmseg_reference(x, cfg, np.random.default_rng(s))
        got = photometric_distort(x.transpose(2, 0, 1).astype(np.float32), cfg, np.random.default_rng(s))
        np.testing.assert_allclose(got.transpose(1, 2, 0), ref, atol=0.05)


def test_presets_and_validation() -> None:
    std = photometric_preset("standard")
    assert (std.brightness_delta, std.contrast_range, std.saturation_range, std.hue_delta, std.prob) == (
        32.0, (0.5, 1.5), (0.5, 1.5), 18.0, 0.5)  # mmsegmentation's defaults
    agg = photometric_preset("aggressive")
    assert agg.brightness_delta > std.brightness_delta and agg.hue_delta > std.hue_delta and agg.prob > std.prob
    assert photometric_preset("aggressive", hue_delta=5.0, prob=None).hue_delta == 5.0
    with pytest.raises(ValueError, match="unknown photometric preset"):
        photometric_preset("extreme")
    with pytest.raises(ParameterError, match="contrast_range"):
        validate(PhotometricConfig, {"contrast_range": [1.5, 0.5]})
    with pytest.raises(ParameterError, match="scale_range"):
        validate(GeometryConfig, {"scale_range": [0.0, 1.0]})


def test_misshaped_map_raises() -> None:
    item = _blocky_item()
    item["teacher_cls"] = item["teacher_cls"][:10]
    with pytest.raises(ValueError, match="teacher_cls"):
        TrainTransform(32)(item, np.random.default_rng(0))
