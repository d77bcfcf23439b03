"""Textured shapes on textured backgrounds with exact masks: the class-agnostic box -> mask
training set of the embedded teacher (:mod:`goose_lib.models.pretrain`), never GOOSE-like labels.

Each image (``size`` x ``size`` RGB) has a background of two blended random textures and 1-5
shapes painted in order (later ones occlude): ellipses, star-like polygons, rings, thin rotated
bars and L-shapes, each with its own colour and texture. An object's mask is its *visible*
part; its box is the mask's tight bounding box (objects with fewer than ``min_area`` visible
pixels are left out). Deterministic in (seed, index); vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goose_lib.data.weather import smooth_noise

KINDS = ("ellipse", "star", "ring", "bar", "ell")


@dataclass(frozen=True)
class ShapeSample:
    image: np.ndarray  # (S, S, 3) uint8
    masks: np.ndarray  # (n, S, S) bool, visible part of each object
    boxes: np.ndarray  # (n, 4) float32 xyxy pixels (x2, y2 exclusive)


def _texture(rng: np.random.Generator, s: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(S, S, 3) float: a random colour modulated by one random texture."""
    base = rng.uniform(20, 235, 3).astype(np.float32)
    kind = int(rng.integers(5))
    amp = rng.uniform(5, 45)
    if kind == 0:
        period, theta = rng.uniform(3, 14), rng.uniform(0, np.pi)
        t = np.sin(2 * np.pi / period * (np.cos(theta) * xx + np.sin(theta) * yy))
    elif kind == 1:
        period = rng.uniform(4, 16)
        t = np.sign(np.sin(np.pi / period * xx) * np.sin(np.pi / period * yy))
    elif kind == 2:
        t = np.clip(smooth_noise(rng, s, s, int(rng.integers(3, 12))), -1.5, 1.5) / 1.5
    elif kind == 3:
        t = rng.random((s, s), dtype=np.float32) * 2 - 1
    else:
        t = np.zeros((s, s), np.float32)
    second = rng.uniform(-1, 1, 3).astype(np.float32) * rng.uniform(0, 25)
    return base + t[..., None] * amp + smooth_noise(rng, s, s, 16)[..., None] * second


def _shape(rng: np.random.Generator, s: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    cx, cy = rng.uniform(0.1, 0.9, 2) * s
    r = rng.uniform(0.06, 0.3) * s
    theta = rng.uniform(0, np.pi)
    u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
    v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
    if kind == "ellipse":
        return (u / r) ** 2 + (v / (r * rng.uniform(0.3, 1.0))) ** 2 <= 1
    if kind == "star":
        ang, rad = np.arctan2(v, u), np.hypot(u, v)
        lobes, depth = int(rng.integers(3, 7)), rng.uniform(0.15, 0.5)
        return rad <= r * (1 - depth + depth * np.cos(lobes * ang + rng.uniform(0, 6.3)))
    if kind == "ring":
        rad = np.hypot(u, v)
        return (rad <= r) & (rad >= r * rng.uniform(0.4, 0.75))
    if kind == "bar":
        return (np.abs(u) <= r * 1.4) & (np.abs(v) <= rng.uniform(1.5, 0.12 * r + 2))
    w = r * rng.uniform(0.25, 0.45)
    return ((np.abs(u) <= r) & (v >= -w) & (v <= w)) | ((u >= -r) & (u <= -r + 2 * w) & (v >= -r) & (v <= w))


def shape_sample(seed: int, index: int, *, size: int = 224, max_objects: int = 5,
                 min_area: int = 30) -> ShapeSample:
    """Image ``index`` of the shape set of ``seed`` (see module doc)."""
    rng = np.random.default_rng([seed, index, 7])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mix = np.clip(smooth_noise(rng, size, size, int(rng.integers(20, 60))) * 0.5 + 0.5, 0, 1)[..., None]
    img = _texture(rng, size, yy, xx) * mix + _texture(rng, size, yy, xx) * (1 - mix)
    owner = np.zeros((size, size), np.int32)
    n = int(rng.integers(1, max_objects + 1))
    for j in range(1, n + 1):
        m = _shape(rng, size, yy, xx)
        img[m] = _texture(rng, size, yy, xx)[m]
        owner[m] = j
    img = img * rng.uniform(0.7, 1.2) + rng.standard_normal(img.shape, dtype=np.float32) * 3
    masks, boxes = [], []
    for j in range(1, n + 1):
        m = owner == j
        if m.sum() < min_area:
            continue
        ys, xs = np.nonzero(m)
        masks.append(m)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return ShapeSample(np.clip(img, 0, 255).astype(np.uint8),
                       np.array(masks, bool).reshape(-1, size, size), np.array(boxes, np.float32).reshape(-1, 4))
