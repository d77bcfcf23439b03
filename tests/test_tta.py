"""Multi-scale / sliding-window / flip inference against known answers with fake models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from infer_fakes import ColourModel, PositionModel

from goose_lib.infer.tta import TTAConfig, count_windows, predict, predict_probs, window_starts
from goose_lib.models.sam3 import preprocess

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (20, 20, 20), (240, 240, 240)]


def _block_ids(h: int, w: int, seed: int = 0, block: int = 16) -> np.ndarray:
    """HxW indices into COLOURS, constant over block x block squares."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(COLOURS), (h // block + 1, w // block + 1))
    return np.kron(ids, np.ones((block, block), dtype=int))[:h, :w]


def _blocks(h: int, w: int, seed: int = 0, block: int = 16) -> np.ndarray:
    """HxWx3 uint8 image of uniform colour blocks."""
    return np.array(COLOURS, dtype=np.uint8)[_block_ids(h, w, seed, block)]


def test_window_starts_cover_and_overlap() -> None:
    assert window_starts(20, 32, 1 / 3) == [0]
    assert window_starts(32, 32, 1 / 3) == [0]
    starts = window_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 16 for a, b in itertools.pairwise(starts))  # stride <= S * (1 - overlap)
    assert window_starts(33, 32, 0.0) == [0, 1]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiscale"):
        TTAConfig(scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="overlap"):
        TTAConfig(overlap=1.0)
    with pytest.raises(ValueError, match="window_batch"):
        TTAConfig(window_batch=0)
    assert TTAConfig(mode="multiscale", scales=(0.75, 1.0), flip=True).name == "ms0.75-1+flip"


@pytest.mark.parametrize("model_cls", [ColourModel, PositionModel])
@pytest.mark.parametrize("hw", [(48, 80), (17, 9), (40, 32)])
def test_multiscale_at_scale_one_equals_single(model_cls: type, hw: tuple[int, int]) -> None:
    model = model_cls(image_size=32)
    image = _blocks(*hw, block=5)
    for flip in (False, True):
        single = predict_probs(model, image, TTAConfig(flip=flip))
        multi = predict_probs(model, image, TTAConfig(mode="multiscale", scales=(1.0,), flip=flip))
        torch.testing.assert_close(multi, single, atol=1e-5, rtol=1e-5)
    # single mode is exactly preprocess -> model -> softmax -> bilinear resize
    with torch.no_grad():
        ref = F.interpolate(model(preprocess(image, 32)).softmax(1), size=hw, mode="bilinear",
                            align_corners=False)[0]
    torch.testing.assert_close(predict_probs(model, image, TTAConfig()), ref)


def test_flip_of_flipped_image_mirrors_probs() -> None:
    model = PositionModel(image_size=32)
    image = _blocks(40, 56, block=7)
    cfg = TTAConfig(mode="multiscale", scales=(0.8, 1.3), flip=True)
    a = predict_probs(model, image, cfg)
    b = predict_probs(model, image[:, ::-1].copy(), cfg)
    torch.testing.assert_close(a, b.flip(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base", ["stretch", "native"])
def test_colour_model_gives_same_map_at_every_scale(base: str) -> None:
    model = ColourModel(image_size=32)
    ids = _block_ids(64, 96, block=16)
    image = np.array(COLOURS, dtype=np.uint8)[ids]
    truth = np.array([model.class_of(c) for c in COLOURS])[ids]
    assert len(np.unique(truth)) >= 3  # a test that can fail
    for scales in [(0.5,), (1.0,), (1.5,), (0.75, 1.0, 1.25, 1.5)]:
        pred = predict(model, image, TTAConfig(mode="multiscale", scales=scales, base=base, flip=True))
        agree = (pred == truth).mean()
        assert agree > 0.93, (scales, agree)  # disagreement only at block edges (resampling)


@pytest.mark.parametrize("hw, cfg", [
    ((720, 1280), TTAConfig(mode="multiscale", scales=(0.75, 1.0, 1.25, 1.5), flip=True, window_batch=3)),
    ((1536, 2048), TTAConfig(mode="multiscale", scales=(0.5, 1.5), overlap=0.5)),
    ((9, 17), TTAConfig(mode="multiscale", scales=(0.5, 1.0, 2.0), base="native", flip=True)),
    ((9, 17), TTAConfig(mode="multiscale", scales=(3.0,), base="native", overlap=0.0)),
    ((17, 9), TTAConfig(flip=True)),
])
def test_window_count_and_odd_sizes(hw: tuple[int, int], cfg: TTAConfig) -> None:
    model = ColourModel(image_size=8 if hw[0] < 20 else 64)
    image = _blocks(*hw, block=4 if hw[0] < 20 else 64)
    probs = predict_probs(model, image, cfg)
    assert probs.shape == (model.num_classes, *hw)
    torch.testing.assert_close(probs.sum(0), torch.ones(hw), atol=1e-4, rtol=0)
    assert model.windows == count_windows(*hw, model.image_size, cfg)
    n_views = (2 if cfg.flip else 1) * len(cfg.scales)
    # batches never exceed window_batch; each view's windows are batched
    assert model.calls <= -(-model.windows // cfg.window_batch) + n_views


def test_native_larger_canvas_uses_several_windows() -> None:
    model = ColourModel(image_size=16)
    cfg = TTAConfig(mode="multiscale", scales=(2.0,), base="native", overlap=0.5)
    assert count_windows(32, 48, 16, cfg) == 7 * 11
    predict(model, _blocks(32, 48), cfg)
    assert model.windows == 77


def test_bad_image_is_rejected() -> None:
    model = ColourModel()
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predict(model, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predict(model, np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("hw", [(100, 173), (9, 17), (32, 32)])
def test_predict_is_argmax_of_probs(hw: tuple[int, int]) -> None:
    model = PositionModel(image_size=16, num_classes=7)
    image = _blocks(*hw, block=3)
    for cfg in (TTAConfig(), TTAConfig(mode="multiscale", scales=(0.5, 1.5), flip=True)):
        pred = predict(model, image, cfg)
        ref = predict_probs(model, image, cfg).argmax(0).numpy()
        assert pred.dtype == np.uint8 and pred.shape == hw
        assert (pred == ref).mean() > 0.999  # equal up to float ties
        assert len(np.unique(ref)) > 1


@pytest.mark.parametrize("smooth", [True, False])
def test_upsample_argmax_matches_full_interpolation(smooth: bool) -> None:
    from goose_lib.infer.tta import _upsample_argmax

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 9, 12, 10, generator=g) * 3
    if smooth:  # few label boundaries: the gather path
        logits = F.interpolate(logits, size=(40, 36), mode="bilinear", align_corners=False)
    p = logits.softmax(1)[0]
    for hw in [(97, 203), (40, 36), (13, 300), (300, 11)]:
        ref = F.interpolate(p[None], size=hw, mode="bilinear", align_corners=False)[0].argmax(0)
        got = _upsample_argmax(p, hw)
        assert got.shape == hw and (got == ref).float().mean() > 0.9999


def test_bfloat16_autocast_matches_float32() -> None:
    model = ColourModel(image_size=32)
    image = _blocks(48, 64, block=8)
    cfg = TTAConfig(mode="multiscale", scales=(0.75, 1.5))
    ref = predict(model, image, cfg)
    low = predict(model, image, TTAConfig(mode="multiscale", scales=(0.75, 1.5), autocast="bfloat16"))
    assert (low == ref).mean() > 0.95
    with pytest.raises(ValueError, match="autocast"):
        TTAConfig(autocast="int8")


@pytest.mark.parametrize("hw", [(97, 203), (40, 36), (13, 300), (300, 11), (41, 37)])
def test_upsample_argmax_equals_the_same_lerps_everywhere(hw: tuple[int, int]) -> None:
    """Exact (no tie tolerance) against a full C x H x W interpolation done with the same lerps
    in the same order, so only the skipping of single-label cells is under test."""
    from goose_lib.infer.tta import _source_index, _upsample_argmax

    g = torch.Generator().manual_seed(1)
    logits = F.interpolate(torch.randn(1, 9, 12, 10, generator=g) * 3, size=(40, 36), mode="bilinear",
                           align_corners=False)
    p = logits.softmax(1)[0]
    y0, y1, wy = _source_index(hw[0], 40, p.device)
    x0, x1, wx = _source_index(hw[1], 36, p.device)
    top = torch.lerp(p[:, y0][:, :, x0], p[:, y0][:, :, x1], wx)
    bottom = torch.lerp(p[:, y1][:, :, x0], p[:, y1][:, :, x1], wx)
    ref = torch.lerp(top, bottom, wy[:, None]).argmax(0)
    got = _upsample_argmax(p, hw, chunk=5000)  # small chunks: several rounds
    assert got.shape == hw
    torch.testing.assert_close(got.long(), ref, rtol=0, atol=0)

# --- Gaussian-blended sliding windows (issue 13) ---------------------------------------------------

class ConstantModel(torch.nn.Module):
    """Logits that ignore the input: the same fixed vector at every pixel of every window."""

    def __init__(self, image_size: int = 16, num_classes: int = 5) -> None:
        super().__init__()
        self.image_size = image_size
        self.logits = torch.nn.Parameter(torch.linspace(-2, 3, num_classes), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:]).clone()


def _gauss(sigma: float, **kw) -> TTAConfig:
    return TTAConfig(mode="multiscale", scales=(1.5, 2.0), base="native", overlap=0.5, blend="gaussian",
                     blend_sigma=sigma, **kw)


def test_gaussian_blend_leaves_a_constant_model_unchanged() -> None:
    model = ConstantModel()
    img = _blocks(24, 40)
    probs = predict_probs(model, img, _gauss(0.125))
    ref = model.logits.softmax(0).view(-1, 1, 1).expand(-1, 24, 40)
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=1e-5)


def test_gaussian_blend_with_infinite_sigma_is_the_flat_average() -> None:
    from goose_lib.infer.tta import window_weights

    model = PositionModel(image_size=16, num_classes=5)
    img = _blocks(24, 40)
    flat = TTAConfig(mode="multiscale", scales=(1.5, 2.0), base="native", overlap=0.5)
    torch.testing.assert_close(predict_probs(model, img, _gauss(float("inf"))), predict_probs(model, img, flat))
    # a finite sigma weights window centres more: a different average for a position-dependent model
    assert not torch.allclose(predict_probs(model, img, _gauss(0.125)), predict_probs(model, img, flat), atol=1e-4)
    w = window_weights(16, _gauss(0.125))
    assert w[7:9, 7:9].min() == w.max() and w[0, 0] == w.min() and torch.equal(w, w.T)
    assert _gauss(0.125).name == "ms1.5-2@native+gauss0.125"
    with pytest.raises(ValueError, match="blend"):
        TTAConfig(blend="cosine")  # type: ignore[arg-type]


class _PixelModel(torch.nn.Module):
    """Logits (B, 2, S, S): class 0 = 4 x the input's first channel, class 1 = 0 (no mixing of pixels)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([4 * x[:, 0], torch.zeros_like(x[:, 0])], dim=1)


def test_overlapping_windows_are_averaged_not_summed() -> None:
    """Each pixel's logits are the mean over the windows covering it: with a per-pixel model every
    window gives the same value there, so the result equals one window's, overlapped or not."""
    model = _PixelModel(image_size=32)
    image = _blocks(48, 80, block=8)
    cfg = TTAConfig(mode="multiscale", scales=(1.0,), base="native", overlap=0.5)
    starts_y, starts_x = window_starts(48, 32, 0.5), window_starts(80, 32, 0.5)
    assert len(starts_y) > 1 and len(starts_x) > 1 and starts_x[1] < 32  # windows do overlap
    x0 = torch.from_numpy(image[..., 0].astype(np.float32)) / 127.5 - 1.0  # canvas = image (scale 1, native)
    expected = torch.sigmoid(4 * x0)  # softmax of (4 x0, 0), class 0
    probs = predict_probs(model, image, cfg)
    torch.testing.assert_close(probs[0], expected, atol=1e-5, rtol=1e-5)
