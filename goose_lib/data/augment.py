"""Training augmentation: joint geometry for the image and every map, photometric distortion,
then the stretch to the (fixed) model input and its normalisation.

Pipeline of :class:`TrainTransform` (the order of mmsegmentation's training pipeline, with the
resize to the model input last because the SAM3 encoder only takes one size):

1. **Random scale + crop** (:class:`GeometryConfig`): the image would be scaled by a factor
   drawn from ``scale_range`` and a ``crop_size`` x ``crop_size`` window cut from it, padded at
   the bottom/right where the scaled image is smaller (fill per key: :data:`MAP_KEYS`, image
   ``pad_image``). Implemented exactly as the equivalent window of the *unscaled* image
   (``crop_size / scale`` pixels), which is then resampled once, straight to the model input:
   one resampling instead of two, and no full-resolution upscaled copy.
2. **Stretch to the model input** ``image_size`` x ``image_size``: bilinear with antialias for
   the image (the semantics of :func:`goose_lib.models.sam3.preprocess`), nearest-exact for
   every map (pixel-centre aligned with the bilinear grid).
3. **Horizontal flip** with probability ``flip_prob``, image and maps together.
4. **Photometric distortion** (:class:`PhotometricConfig`) on the image in 0..255, in
   mmsegmentation's ``PhotoMetricDistortion`` order and semantics.
5. **Normalisation** to [-1, 1] (``x / 127.5 - 1``, SAM3's mean = std = 0.5).

All randomness comes from the ``numpy.random.Generator`` passed per call, so an item's
augmentation is a pure function of (item, seed): reproducible across worker counts and resumes.

Item format in: ``{"image": HxWx3 uint8, "label": HxW uint8 | None, "instances": HxW int32 | None,
"teacher_cls" / "teacher_prob" / "teacher_region": HxW uint8 (optional), "sample": Sample, ...}``.
Item format out: ``{"image": float32 (3,S,S) in [-1,1], <map key>: tensor (S,S) of the map's
dtype, "key": str}`` (``None`` maps and non-map entries other than the sample key are dropped,
so the default collate works).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from goose_lib.ontology import IGNORE_INDEX

# Map keys moved with the image, and the value padding fills them with.
MAP_KEYS: dict[str, int] = {
    "label": IGNORE_INDEX, "instances": 0, "teacher_cls": 255, "teacher_prob": 0, "teacher_region": 255,
}

PhotometricPreset = Literal["off", "standard", "aggressive"]


@dataclass(frozen=True)
class PhotometricConfig:
    """Photometric distortion parameters (mmsegmentation ``PhotoMetricDistortion`` semantics).

    Each of the four steps runs independently with probability ``prob``; brightness adds
    ``U(-brightness_delta, brightness_delta)`` (0..255 scale); contrast multiplies by
    ``U(*contrast_range)`` (no mean-centering, like mmseg) and runs either right after brightness
    or last (a fair coin); saturation multiplies HSV S by ``U(*saturation_range)``; hue shifts H
    by ``U(-hue_delta, hue_delta)`` in OpenCV 8-bit hue units (1 unit = 2 degrees, as mmseg).
    Values are clipped to 0..255 after every step.
    """

    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: float = 18.0
    prob: float = 0.5
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.brightness_delta <= 255.0:
            raise ValueError(f"brightness_delta must be in [0, 255], got {self.brightness_delta}")
        for name in ("contrast_range", "saturation_range"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")
        if not 0.0 <= self.hue_delta <= 90.0:
            raise ValueError(f"hue_delta must be in [0, 90] (OpenCV units), got {self.hue_delta}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")


PHOTOMETRIC_PRESETS: dict[str, PhotometricConfig] = {
    "off": PhotometricConfig(enabled=False),
    # mmsegmentation's PhotoMetricDistortion defaults.
    "standard": PhotometricConfig(),
    # Much wider ranges, applied more often (the paper's largest single gain; values ours).
    "aggressive": PhotometricConfig(brightness_delta=64.0, contrast_range=(0.25, 1.75),
                                    saturation_range=(0.25, 1.75), hue_delta=36.0, prob=0.8),
}


def photometric_preset(name: str, **overrides: Any) -> PhotometricConfig:
    """The preset ``name`` ("off" | "standard" | "aggressive") with ``overrides`` (None = keep)."""
    if name not in PHOTOMETRIC_PRESETS:
        raise ValueError(f"unknown photometric preset {name!r}; choose one of {sorted(PHOTOMETRIC_PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PHOTOMETRIC_PRESETS[name], **changes) if changes else PHOTOMETRIC_PRESETS[name]


@dataclass(frozen=True)
class GeometryConfig:
    """Random scale, crop and flip (mmseg ``RandomResize`` + ``RandomCrop`` + ``RandomFlip``).

    ``base_short_side``: the image is first (virtually) resized so its short side has this many
    pixels (0 = keep its own size); then scaled by ``U(*scale_range)``; then a square window of
    ``crop_size`` pixels is cut (0 = the model input size). ``cat_max_ratio`` < 1 re-draws the
    window (up to 10 times) while one class covers more than that fraction of its labelled pixels.
    """

    scale_range: tuple[float, float] = (0.5, 2.0)
    base_short_side: int = 0
    crop_size: int = 0
    flip_prob: float = 0.5
    cat_max_ratio: float = 1.0
    pad_image: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {self.scale_range}")
        if self.base_short_side < 0 or self.crop_size < 0:
            raise ValueError("base_short_side and crop_size must be >= 0 (0 = default)")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 < self.cat_max_ratio <= 1.0:
            raise ValueError(f"cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}")
        if not 0 <= self.pad_image <= 255:
            raise ValueError(f"pad_image must be in [0, 255], got {self.pad_image}")


# --- colour space (numpy: single-threaded elementwise work, cheap per item in any process) -----------

def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(3,H,W) float RGB in 0..255 -> (3,H,W) float32 HSV: H degrees [0,360), S [0,1], V 0..255."""
    rgb = np.asarray(rgb, dtype=np.float32)
    r, g, b = rgb
    maxc = rgb.max(0)
    delta = maxc - rgb.min(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(maxc > 0, delta / maxc, 0.0)
        dc = np.where(delta > 0, delta, 1.0)
        rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, np.remainder(h * 60.0, 360.0), 0.0)
    return np.stack((h, s, maxc)).astype(np.float32, copy=False)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`: (3,H,W) HSV -> (3,H,W) float32 RGB in 0..255."""
    h, s, v = np.asarray(hsv, dtype=np.float32)
    h6 = np.remainder(h, 360.0) / 60.0
    i = np.floor(h6)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    # For sector i, (r, g, b) is (v,t,p), (q,v,p), (p,v,t), (p,q,v), (t,p,v), (v,p,q).
    choices = np.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q)).reshape(3, 6, *h.shape)
    idx = np.broadcast_to(i[None, None], (3, 1, *i.shape))
    return np.take_along_axis(choices, idx, axis=1)[:, 0].astype(np.float32, copy=False)


def scale_saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    """HSV saturation times ``factor`` (clipped to 1), hue and value kept, without an HSV round trip.

    Each channel is ``c = V - V * S * k(hue)``, so scaling S scales ``V - c``; S is capped at 1
    by capping the factor at ``V / (V - min)``. (3,H,W) float RGB 0..255 in and out.
    """
    v = rgb.max(0, keepdims=True)
    spread = v - rgb.min(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(spread > 0, v / spread, np.float32(factor))
    return (v - (v - rgb) * np.minimum(cap, np.float32(factor))).astype(np.float32, copy=False)


def photometric_distort(img: np.ndarray, cfg: PhotometricConfig, rng: np.random.Generator) -> np.ndarray:
    """(3,H,W) float32 RGB in 0..255 -> distorted copy (same format), mmseg order and semantics."""
    if not cfg.enabled:
        return img

    def coin() -> bool:  # one draw per step, in a fixed order
        return bool(rng.random() < cfg.prob)

    out = np.asarray(img, dtype=np.float32)
    if coin():
        out = np.clip(out + np.float32(rng.uniform(-cfg.brightness_delta, cfg.brightness_delta)), 0, 255)
    contrast_last = rng.integers(2) == 0
    if not contrast_last and coin():
        out = np.clip(out * np.float32(rng.uniform(*cfg.contrast_range)), 0, 255)
    if coin():
        out = scale_saturation(out, rng.uniform(*cfg.saturation_range))
    if coin():
        hsv = rgb_to_hsv(out)
        hsv[0] = np.remainder(hsv[0] + np.float32(2.0 * rng.uniform(-cfg.hue_delta, cfg.hue_delta)), 360.0)
        out = np.clip(hsv_to_rgb(hsv), 0, 255)
    if contrast_last and coin():
        out = np.clip(out * np.float32(rng.uniform(*cfg.contrast_range)), 0, 255)
    return out


# --- geometry ----------------------------------------------------------------------------------

def _window(h: int, w: int, geo: GeometryConfig, image_size: int,
            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A crop window (y0, x0, ch, cw) in the unscaled image; ch/cw may exceed h/w (padding)."""
    base = geo.base_short_side / min(h, w) if geo.base_short_side else 1.0
    scale = base * rng.uniform(*geo.scale_range)
    crop = geo.crop_size or image_size
    side = max(1, round(crop / scale))
    y0 = int(rng.integers(0, max(h - side, 0) + 1))
    x0 = int(rng.integers(0, max(w - side, 0) + 1))
    return y0, x0, side, side


def _cut(arr: np.ndarray, y0: int, x0: int, ch: int, cw: int, fill: int) -> np.ndarray:
    """``arr[y0:y0+ch, x0:x0+cw]`` padded at the bottom/right with ``fill`` to (ch, cw)."""
    part = arr[y0:y0 + ch, x0:x0 + cw]
    if part.shape[:2] == (ch, cw):
        return part
    out = np.full((ch, cw) + arr.shape[2:], fill, dtype=arr.dtype)
    out[:part.shape[0], :part.shape[1]] = part
    return out


def _cat_ok(label: np.ndarray, ratio: float) -> bool:
    counts = np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=1)
    return counts.size > 1 and counts.max() / max(counts.sum(), 1) < ratio


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``arr``'s memory when it can (read-only or strided arrays are copied)."""
    arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> (3,size,size) float32 in 0..255, stretched: bilinear with antialias, rounded
    back to integers, i.e. :func:`goose_lib.models.sam3.preprocess` before its normalisation.

    Computed with PIL in float mode (no torch threads in data workers; equal to torch's antialiased
    bilinear up to rounding ties).
    """
    if img.shape[:2] == (size, size):
        return img.transpose(2, 0, 1).astype(np.float32)
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32), mode="F")
                        .resize((size, size), Image.BILINEAR)) for c in range(3)]
    return np.clip(np.round(np.stack(chans)), 0, 255).astype(np.float32, copy=False)


def resize_map(arr: np.ndarray, size: int) -> np.ndarray:
    """HxW map -> (size,size) of the same dtype, nearest-exact (source pixel ``floor((i + 0.5) * in / out)``,
    the pixel-centre convention of the bilinear grid; torch's ``nearest-exact``)."""
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    ys = np.minimum(((np.arange(size) + 0.5) * (h / size)).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(size) + 0.5) * (w / size)).astype(np.int64), w - 1)
    return arr[ys[:, None], xs[None, :]]


def normalize(img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """float 0..255 -> [-1, 1] (SAM3: scale 1/255, mean = std = 0.5)."""
    return img / np.float32(127.5) - np.float32(1.0)


def _finish(item: Mapping[str, Any], image: torch.Tensor, maps: dict[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": image, **maps}
    sample = item.get("sample")
    out["key"] = str(getattr(sample, "key", item.get("key", "")))
    return out


class TrainTransform:
    """The training augmentation; ``transform(item, rng) -> item`` (formats: module docstring)."""

    def __init__(self, image_size: int, geometry: GeometryConfig = GeometryConfig(),
                 photometric: PhotometricConfig = PHOTOMETRIC_PRESETS["standard"]) -> None:
        self.image_size = int(image_size)
        self.geometry = geometry
        self.photometric = photometric

    def __call__(self, item: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        img = item["image"]
        h, w = img.shape[:2]
        maps = {k: item[k] for k in MAP_KEYS if item.get(k) is not None}
        for k, m in maps.items():
            if m.shape[:2] != (h, w):
                raise ValueError(f"{item.get('sample', '?')}: map {k!r} has shape {m.shape[:2]}, image {(h, w)}")
        geo = self.geometry
        win = _window(h, w, geo, self.image_size, rng)
        if geo.cat_max_ratio < 1.0 and "label" in maps:
            for _ in range(9):
                if _cat_ok(_cut(maps["label"], *win, IGNORE_INDEX), geo.cat_max_ratio):
                    break
                win = _window(h, w, geo, self.image_size, rng)
        flip = rng.random() < geo.flip_prob
        image = resize_image(_cut(img, *win, geo.pad_image), self.image_size)
        out_maps = {k: resize_map(_cut(m, *win, MAP_KEYS[k]), self.image_size) for k, m in maps.items()}
        if flip:
            image = image[:, :, ::-1]
            out_maps = {k: m[:, ::-1] for k, m in out_maps.items()}
        image = photometric_distort(image, self.photometric, rng)
        return _finish(item, _tensor(normalize(image)), {k: _tensor(m) for k, m in out_maps.items()})


class EvalTransform:
    """Validation: the image stretched to the model input and normalised; maps kept at the
    image's resolution (scored there). ``transform(item) -> item`` (formats: module docstring)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = int(image_size)

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        image = _tensor(normalize(resize_image(item["image"], self.image_size)))
        maps = {k: _tensor(item[k]) for k in MAP_KEYS if item.get(k) is not None}
        return _finish(item, image, maps)

