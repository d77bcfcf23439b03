"""Illumination and weather of the embedded world (premise 1: a domain shift between train and
val/test that photometric distortion can bridge), and class appearance spread.

A :class:`Light` draws, per image, an exposure gain, a white balance (red and blue gains), a
saturation factor, a haze strength (blend towards a bright grey, strongest at the horizon), cast
shadows (soft dark blotches, with a probability) and snow dusting (a share of the ground's stuff
pixels blended towards white; labels unchanged), plus sensor noise. All of it is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Range = tuple[float, float]


@dataclass(frozen=True)
class Light:
    """Ranges drawn uniformly per image (see module doc); (1, 1) / (0, 0) = no effect."""

    exposure: Range = (1.0, 1.0)
    wb_red: Range = (1.0, 1.0)
    wb_blue: Range = (1.0, 1.0)
    saturation: Range = (1.0, 1.0)
    haze: Range = (0.0, 0.0)
    shadow_prob: float = 0.0
    shadow_strength: Range = (0.0, 0.0)
    snow: Range = (0.0, 0.0)  # share of ground stuff pixels dusted
    noise: float = 3.0  # sensor noise std (0..255)

    def __post_init__(self) -> None:
        for name in ("exposure", "wb_red", "wb_blue", "saturation", "haze", "shadow_strength", "snow"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"Light.{name} must be (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")
        for name in ("haze", "shadow_strength", "snow"):
            if getattr(self, name)[1] > 1.0:
                raise ValueError(f"Light.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.shadow_prob <= 1.0 or self.noise < 0:
            raise ValueError("Light.shadow_prob must be in [0, 1] and noise >= 0")


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(h, w) float32 smooth noise of unit-ish std with features about ``cell`` pixels wide."""
    low = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    up = ndimage.zoom(low, cell, order=1)[:h, :w]
    return up / max(float(up.std()), 1e-6)


def _soft_cover(field: np.ndarray, share: float, softness: float = 0.25) -> np.ndarray:
    """Soft mask covering about ``share`` of the pixels where ``field`` is highest."""
    if share <= 0:
        return np.zeros_like(field)
    thr = np.quantile(field, 1.0 - share)
    return np.clip((field - thr) / softness + 0.5, 0.0, 1.0)


def apply_light(img: np.ndarray, light: Light, rng: np.random.Generator, *, horizon: float,
                ground_stuff: np.ndarray) -> np.ndarray:
    """``img`` (HxWx3 float, 0..255 scale) under ``light``; ``ground_stuff``: HxW bool pixels that
    snow may cover. Returns HxWx3 uint8."""
    h, w, _ = img.shape
    u = rng.uniform
    img = img.copy()
    snow = u(*light.snow)
    if snow > 0 and ground_stuff.any():
        cover = _soft_cover(smooth_noise(rng, h, w, max(4, h // 20)), snow) * ground_stuff
        white = np.array([236, 239, 246], np.float32) + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
        img = img * (1 - cover[..., None]) + white * cover[..., None]
    if rng.random() < light.shadow_prob:
        field = ndimage.zoom(rng.standard_normal((4, 7)).astype(np.float32), (h / 4, w / 7), order=3)[:h, :w]
        below = (np.arange(h, dtype=np.float32)[:, None] >= horizon).astype(np.float32)  # cast on the ground
        shade = _soft_cover(field, 0.35, 0.3) * u(*light.shadow_strength) * below
        img *= (1 - shade)[..., None]
    gain = np.array([u(*light.wb_red), 1.0, u(*light.wb_blue)], np.float32) * u(*light.exposure)
    img *= gain
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + u(*light.saturation) * (img - grey)
    haze = u(*light.haze)
    if haze > 0:
        yy = np.arange(h, dtype=np.float32)[:, None]
        depth = np.where(yy < horizon, 1.0, 1.0 - 0.75 * (yy - horizon) / max(h - horizon, 1.0))
        a = (haze * depth)[..., None]
        img = img * (1 - a) + a * np.array([200, 204, 210], np.float32) * min(1.0, float(gain[1]) * 1.1)
    if light.noise > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * light.noise
    return np.clip(img, 0, 255).astype(np.uint8)


# Train: mild summer daylight. Val/test: one condition per scenario (in SCENARIOS order):
# dusk (dark, warm, desaturated), overcast haze (washed out, cool), snow (bright, cold, shadows).
TRAIN_LIGHT = Light(exposure=(0.95, 1.1), wb_red=(0.97, 1.03), wb_blue=(0.97, 1.03), saturation=(0.9, 1.1),
                    haze=(0.0, 0.05), shadow_prob=0.2, shadow_strength=(0.15, 0.3))
DUSK = Light(exposure=(0.5, 0.65), wb_red=(1.12, 1.22), wb_blue=(0.78, 0.88), saturation=(0.55, 0.75),
             haze=(0.0, 0.08), noise=5.0)
OVERCAST = Light(exposure=(0.85, 1.0), wb_red=(0.93, 0.98), wb_blue=(1.04, 1.1), saturation=(0.35, 0.5),
                 haze=(0.25, 0.4), shadow_prob=0.1, shadow_strength=(0.1, 0.2))
SNOW = Light(exposure=(1.1, 1.25), wb_red=(0.9, 0.95), wb_blue=(1.06, 1.14), saturation=(0.5, 0.7),
             haze=(0.05, 0.15), shadow_prob=0.6, shadow_strength=(0.3, 0.45), snow=(0.15, 0.3))
EVAL_LIGHTS = (DUSK, OVERCAST, SNOW)
