"""The embedded default dataset: procedural off-road scenes written in the exact GOOSE layout.

Each scene has sky on top, a jagged tree line (forest, tree crowns on trunks, sometimes a
building or far vegetation), ground below the horizon (a grass / crop / snow base, a path of
asphalt / gravel / soil / cobble converging to a vanishing point, curbs, road markings, puddles,
fences) and instance objects standing on the ground with perspective scaling (cars, trucks,
people, poles, traffic signs, barrels, rocks, and rare small traffic cones, animals, bicycles).
Windshield images show the ego vehicle's bonnet at the bottom; a few void pixels appear.

Pixels are rendered from the label map: a per-class colour plus a per-class texture (flat,
stripes, checker, speckle, blotches), with per-instance tint, global brightness / colour cast
and mild noise. Colour, texture and layout are all cues a tiny ViT can learn at 224x224.

Output (``write_synthetic``): ``goose_label_mapping.csv``, ``images/<split>/<scenario>/
<stem>_<camera>.png`` (RGB; plus ``windshield_nir`` gray images in the GOOSE scenario),
``labels/{train,val}/<scenario>/<stem>_{labelids,instanceids,color}.png`` (8-bit ids, 16-bit
instance ids with 0 = none and one id per object, RGB palette colours). Three scenario styles:
GOOSE (``windshield_vis`` 320x240), MuCAR-3 (double-underscore stems, ``windshield_vis``
352x264) and GOOSE-Ex (``camera_left`` 320x180). Deterministic in ``seed``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from goose_lib import paths
from goose_lib.ontology import MAPPING_CSV, REQUIRED_COLUMNS, Ontology, packaged_mapping_rows

EMBEDDED_NAME = "embedded-goose-v1"
EMBEDDED_COUNTS = {"n_train": 64, "n_val": 16, "n_test": 8}
SPLITS = ("train", "val", "test")
# split -> [(scenario folder, style)]; style -> (camera, width, height, ego bonnet, stem format)
SCENARIOS = {
    "train": [("2022-07-22_touareg_flight", "goose"), ("2022-07-07_campus_no_ptp", "mucar3"),
              ("alice_scenario01_sequence14", "goose_ex")],
    "val": [("2022-08-30_siegertsbrunn_feldwege", "goose"), ("2023-01-20_aying_mangfall", "mucar3"),
            ("alice_scenario02_sequence03", "goose_ex")],
    "test": [("2023-03-02_garching_snow", "goose"), ("2022-12-07_campus_hills", "mucar3"),
             ("alice_scenario05_sequence01", "goose_ex")],
}
STYLES = {
    "goose": ("windshield_vis", 320, 240, True, "{sc}_{i:04d}_{ts}"),
    "mucar3": ("windshield_vis", 352, 264, True, "{sc}__{i:04d}_{ts}"),
    "goose_ex": ("camera_left", 320, 180, False, "{sc}_{i:04d}_{ts}"),
}
NIR_STYLES = ("goose",)  # styles that also get a windshield_nir image (ignored by default)

# texture kinds: 0 flat, 1 horizontal stripes, 2 vertical stripes, 3 checker, 4 blotches,
# 5 speckle, 6 diagonal stripes
FLAT, HSTRIPE, VSTRIPE, CHECKER, BLOTCH, SPECKLE, DIAG = range(7)
# class name -> (RGB, texture, amplitude)
LOOK: dict[str, tuple[tuple[int, int, int], int, float]] = {
    "undefined": ((95, 95, 95), SPECKLE, 30), "sky": ((120, 175, 235), BLOTCH, 8),
    "forest": ((30, 75, 38), BLOTCH, 22), "tree_crown": ((65, 140, 55), SPECKLE, 28),
    "tree_trunk": ((105, 72, 42), VSTRIPE, 18), "scenery_vegetation": ((95, 125, 125), FLAT, 4),
    "bush": ((75, 112, 25), BLOTCH, 26), "low_grass": ((110, 175, 60), SPECKLE, 14),
    "high_grass": ((160, 165, 75), VSTRIPE, 32), "crops": ((205, 180, 85), DIAG, 26),
    "soil": ((125, 85, 52), BLOTCH, 16), "gravel": ((155, 150, 140), SPECKLE, 38),
    "asphalt": ((68, 68, 74), SPECKLE, 8), "cobble": ((135, 112, 100), CHECKER, 26),
    "water": ((55, 90, 140), HSTRIPE, 14), "snow": ((238, 240, 246), SPECKLE, 6),
    "hedge": ((35, 95, 42), CHECKER, 16), "road_marking": ((240, 240, 228), FLAT, 3),
    "sidewalk": ((175, 168, 160), CHECKER, 12), "curb": ((200, 198, 190), HSTRIPE, 14),
    "building": ((175, 118, 96), HSTRIPE, 22), "fence": ((140, 100, 58), VSTRIPE, 30),
    "car": ((200, 32, 36), FLAT, 6), "truck": ((225, 200, 40), HSTRIPE, 10),
    "person": ((205, 60, 165), FLAT, 8), "pole": ((118, 118, 132), VSTRIPE, 6),
    "traffic_sign": ((30, 80, 225), FLAT, 4), "misc_sign": ((250, 210, 0), FLAT, 4),
    "barrel": ((245, 120, 20), HSTRIPE, 40), "rock": ((112, 106, 98), BLOTCH, 26),
    "traffic_cone": ((255, 90, 0), HSTRIPE, 60), "animal": ((88, 58, 30), SPECKLE, 20),
    "bicycle": ((20, 22, 24), FLAT, 4), "obstacle": ((150, 60, 150), CHECKER, 20),
    "ego_vehicle": ((38, 38, 44), HSTRIPE, 10),
}
GROUND_BASE = (("low_grass", 0.45), ("high_grass", 0.2), ("crops", 0.12), ("soil", 0.1),
               ("snow", 0.05), ("moss", 0.04), ("leaves", 0.04))
PATH_KINDS = (("gravel", 0.35), ("asphalt", 0.3), ("soil", 0.25), ("cobble", 0.1))
# thing -> mean count per image (Poisson); rare small classes last
THINGS = (("car", 0.7), ("truck", 0.15), ("person", 0.5), ("pole", 0.9), ("traffic_sign", 0.35),
          ("barrel", 0.4), ("rock", 0.8), ("obstacle", 0.12), ("misc_sign", 0.12),
          ("traffic_cone", 0.12), ("animal", 0.08), ("bicycle", 0.08))


def _look_tables(ont: Ontology) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K,3) float colours, (K,) texture kinds, (K,) amplitudes; unlisted classes get a hashed colour."""
    k = ont.num_classes
    rng = np.random.default_rng(1234)
    colors = rng.integers(40, 220, size=(k, 3)).astype(np.float32)
    tex = np.full(k, SPECKLE, dtype=np.int64)
    amp = np.full(k, 12.0, dtype=np.float32)
    for name, (rgb, t, a) in LOOK.items():
        i = ont.index(name)
        colors[i], tex[i], amp[i] = rgb, t, a
    return colors, tex, amp


def _pick(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    p = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=p / p.sum()))][0]


class _Canvas:
    """Label and instance maps under construction (painter's algorithm, later paints win)."""

    def __init__(self, w: int, h: int, ont: Ontology) -> None:
        self.w, self.h, self.ont = w, h, ont
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.label = np.zeros((h, w), np.uint8)
        self.inst = np.zeros((h, w), np.uint16)
        self.next_id = 1

    def paint(self, mask: np.ndarray, name: str, instance: bool = False) -> None:
        self.label[mask] = self.ont.index(name)
        if instance:
            self.inst[mask] = self.next_id
            self.next_id += 1
        else:
            self.inst[mask] = 0

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0


def _smooth_curve(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """(n,) smooth random profile: a few sines plus smoothed noise, roughly in [-amp, amp]."""
    x = np.linspace(0, 1, n, dtype=np.float32)
    out = np.zeros(n, np.float32)
    for f in (1.5, 4.0, 11.0):
        out += np.sin(2 * np.pi * (f * x + rng.random())) * amp / f ** 0.5 / 2
    out += ndimage.uniform_filter1d(rng.normal(0, amp / 3, n).astype(np.float32), max(3, n // 40))
    return out


def _background(c: _Canvas, rng: np.random.Generator, horizon: float, s: float) -> None:
    """Sky, far vegetation, tree line with crowns and trunks, a building, ground, path, patches."""
    w, h, yy, xx = c.w, c.h, c.yy, c.xx
    c.paint(yy < horizon, "sky")
    if rng.random() < 0.35:
        far = horizon - h * 0.12 + _smooth_curve(rng, w, h * 0.05)[None, :]
        c.paint((yy >= far) & (yy < horizon), "scenery_vegetation")
    top = horizon - h * rng.uniform(0.05, 0.16) + _smooth_curve(rng, w, h * 0.04)[None, :]
    c.paint((yy >= top) & (yy < horizon), "hedge" if rng.random() < 0.12 else "forest")
    if rng.random() < 0.3:
        bw, bh = w * rng.uniform(0.12, 0.3), h * rng.uniform(0.12, 0.22)
        bx = rng.uniform(0, w - bw)
        c.paint(c.rect(bx, horizon - bh, bx + bw, horizon + 1), "building")
    c.paint(yy >= horizon, _pick(rng, GROUND_BASE))
    for _ in range(rng.integers(0, 5)):  # trees: trunk instance + crown
        tx, r = rng.uniform(0, w), h * rng.uniform(0.05, 0.1)
        base = horizon + rng.uniform(0, h * 0.05)
        c.paint(c.rect(tx - r * 0.18, base - r * 2.6, tx + r * 0.18, base), "tree_trunk", instance=True)
        c.paint(c.ellipse(tx, base - r * 2.6, r, r * 0.9), "tree_crown")
    # path converging to a vanishing point, maybe curving
    vx = w * rng.uniform(0.35, 0.65)
    t = np.clip((yy - horizon) / max(h - horizon, 1), 0, 1)
    centre = vx + t * w * rng.uniform(-0.15, 0.15) + (t - t ** 2) * w * rng.uniform(-0.3, 0.3)
    half = (0.01 + t * rng.uniform(0.22, 0.4)) * w
    on_ground = yy >= horizon
    kind = _pick(rng, PATH_KINDS)
    if rng.random() < 0.85:
        if kind == "asphalt" and rng.random() < 0.6:
            c.paint(on_ground & (np.abs(xx - centre) < half * 1.35 + 3 * s), "sidewalk")
        if rng.random() < 0.4:
            c.paint(on_ground & (np.abs(xx - centre) < half * 1.12 + 1.5 * s),
                    "curb" if kind == "asphalt" else "high_grass")
        c.paint(on_ground & (np.abs(xx - centre) < half), kind)
        if kind == "asphalt":
            dash = np.sin(2 * np.pi * (t ** 0.5) * rng.uniform(6, 10)) > 0
            c.paint(on_ground & dash & (np.abs(xx - centre) < half * 0.03 + 0.6 * s), "road_marking")
    for name, prob in (("water", 0.3), ("soil", 0.2), ("bush", 0.35), ("leaves", 0.1), ("debris", 0.05)):
        if rng.random() < prob:
            cy = rng.uniform(horizon + 4 * s, h)
            depth = (cy - horizon) / max(h - horizon, 1)
            c.paint(c.ellipse(rng.uniform(0, w), cy, w * depth * rng.uniform(0.08, 0.2),
                              h * depth * rng.uniform(0.03, 0.07)), name)
    if rng.random() < 0.2:  # fence across part of the view just below the horizon
        x0 = rng.uniform(0, w * 0.6)
        c.paint(c.rect(x0, horizon - h * 0.05, x0 + w * rng.uniform(0.2, 0.4), horizon + h * 0.02), "fence")


def _thing(c: _Canvas, name: str, x: float, yb: float, size: float) -> None:
    """One object standing at (x, yb) with height scale ``size`` pixels."""
    el, rect = c.ellipse, c.rect
    if name in ("car", "truck"):
        wd = size * (1.9 if name == "car" else 2.3)
        body = rect(x - wd / 2, yb - size * 0.6, x + wd / 2, yb - size * 0.12)
        cab = rect(x - wd * 0.3, yb - size * (1.0 if name == "car" else 1.3), x + wd * (0.25 if name == "car" else 0.5),
                   yb - size * 0.55)
        wheels = el(x - wd * 0.3, yb - size * 0.15, size * 0.17, size * 0.15) | el(x + wd * 0.3, yb - size * 0.15,
                                                                             size * 0.17, size * 0.15)
        c.paint(body | cab | wheels, name, instance=True)
    elif name == "person":
        m = el(x, yb - size * 0.45, size * 0.14, size * 0.45) | el(x, yb - size * 0.97, size * 0.08, size * 0.09)
        c.paint(m, name, instance=True)
    elif name in ("pole", "traffic_sign", "misc_sign"):
        height = size * 2.2
        c.paint(rect(x - size * 0.035 - 0.5, yb - height, x + size * 0.035 + 0.5, yb), "pole", instance=True)
        if name == "traffic_sign":
            c.paint(el(x, yb - height, size * 0.22, size * 0.22), name, instance=True)
        elif name == "misc_sign":
            c.paint(rect(x - size * 0.3, yb - height - size * 0.2, x + size * 0.3, yb - height + size * 0.15),
                    name, instance=True)
    elif name == "barrel":
        c.paint(rect(x - size * 0.22, yb - size * 0.6, x + size * 0.22, yb), name, instance=True)
    elif name == "rock":
        c.paint(el(x, yb, size * 0.35, size * 0.25) & (c.yy <= yb), name, instance=True)
    elif name == "obstacle":
        c.paint(rect(x - size * 0.4, yb - size * 0.35, x + size * 0.4, yb), name, instance=True)
    elif name == "traffic_cone":
        hh = size * 0.45
        m = (c.yy <= yb) & (c.yy >= yb - hh) & (np.abs(c.xx - x) <= (c.yy - (yb - hh)) / hh * size * 0.15 + 0.5)
        c.paint(m, name, instance=True)
    elif name == "animal":
        m = el(x, yb - size * 0.4, size * 0.35, size * 0.17) | el(x + size * 0.38, yb - size * 0.55, size * 0.1,
                                                                    size * 0.08)
        legs = rect(x - size * 0.25, yb - size * 0.4, x - size * 0.18, yb) | rect(x + size * 0.18, yb - size * 0.4,
                                                                                 x + size * 0.25, yb)
        c.paint(m | legs, name, instance=True)
    elif name == "bicycle":
        r = size * 0.2
        ring = np.zeros_like(c.label, dtype=bool)
        for cx in (x - r * 1.3, x + r * 1.3):
            d = np.hypot(c.xx - cx, c.yy - (yb - r))
            ring |= np.abs(d - r) <= max(0.6, r * 0.15)
        frame = rect(x - r * 1.3, yb - r * 1.9, x + r * 1.3, yb - r * 1.6)
        c.paint(ring | frame, name, instance=True)
    else:  # pragma: no cover - THINGS lists only the names above
        raise ValueError(f"unknown synthetic thing {name!r}")


def scene_layout(rng: np.random.Generator, width: int, height: int, *, ego: bool, ontology: Ontology,
                 scale: float = 1.0, things: tuple[tuple[str, float], ...] = THINGS) -> tuple[_Canvas, float]:
    """The label and instance maps of one scene (a ``_Canvas``) and its horizon row; ``things``:
    (thing name, mean count per image) of the objects standing on the ground."""
    c = _Canvas(width, height, ontology)
    horizon = height * rng.uniform(0.36, 0.5)
    _background(c, rng, horizon, scale)
    placed = [(name, float(rng.uniform(0, width)), float(rng.uniform(horizon + 2, height)))
              for name, lam in things for _ in range(rng.poisson(lam))]
    for name, x, yb in sorted(placed, key=lambda t: t[2]):  # far first: near objects occlude
        depth = (yb - horizon) / max(height - horizon, 1)
        _thing(c, name, x, yb, max(3.0, height * 0.28 * depth ** 1.2))
    if ego:  # bonnet at the bottom of windshield images
        u = (c.xx - width / 2) / (width / 2)
        c.paint(c.yy >= height * (1 - rng.uniform(0.07, 0.11)) + height * 0.05 * u ** 2, "ego_vehicle")
    for _ in range(rng.integers(0, 3)):  # a few unlabelled (void) pixels
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        c.paint(c.rect(x0, y0, x0 + rng.uniform(2, 8) * scale, y0 + rng.uniform(2, 6) * scale), "undefined")
    return c, horizon


def render_scene(rng: np.random.Generator, width: int, height: int, *, ego: bool,
                 ontology: Ontology, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (HxWx3 uint8 RGB image, HxW uint8 label ids, HxW uint16 instance ids)."""
    c, horizon = scene_layout(rng, width, height, ego=ego, ontology=ontology, scale=scale)
    return _render(c, rng, horizon, scale), c.label, c.inst


def _texture(kind: int, y: np.ndarray, x: np.ndarray, period: float, blotch: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Texture values in [-1, 1] of one kind at pixel coordinates (y, x)."""
    if kind == HSTRIPE:
        return np.sin(2 * np.pi / period * y)
    if kind == VSTRIPE:
        return np.sin(3 * np.pi / period * x)
    if kind == CHECKER:
        return np.sign(np.sin(np.pi / period * x) * np.sin(np.pi / period * y))
    if kind == BLOTCH:
        return np.clip(blotch[y.astype(np.intp), x.astype(np.intp)], -1.5, 1.5) / 1.5
    if kind == SPECKLE:
        return rng.random(len(y), dtype=np.float32) * 2 - 1
    if kind == DIAG:
        return np.sin(2 * np.pi / (1.5 * period) * (x + y))
    return np.zeros(len(y), np.float32)


def _render(c: _Canvas, rng: np.random.Generator, horizon: float, s: float) -> np.ndarray:
    colors, tex, amp = _look_tables(c.ont)
    h, w, lab = c.h, c.w, c.label
    lowres = rng.standard_normal((h // 12 + 2, w // 12 + 2), dtype=np.float32)
    blotch = ndimage.zoom(lowres, 12, order=1)[:h, :w]
    kinds = tex[lab]
    t = np.zeros((h, w), np.float32)
    for kind in np.unique(kinds):
        m = kinds == kind
        t[m] = _texture(int(kind), c.yy[m], c.xx[m], 6.0 * s, blotch, rng)
    img = colors[lab] + (t * amp[lab])[..., None]
    tint = rng.normal(0, 12, (int(c.inst.max()) + 1, 3)).astype(np.float32)
    tint[0] = 0
    img += tint[c.inst]
    sky = lab == c.ont.index("sky")
    img[sky] += (40 * (c.yy[sky] / max(horizon, 1)))[:, None]  # sky brightens towards the horizon
    img = img * np.float32(rng.uniform(0.8, 1.15)) + rng.normal(0, 6, 3).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * 3
    return np.clip(img, 0, 255).astype(np.uint8)


def _nir(image: np.ndarray, label: np.ndarray, ont: Ontology) -> np.ndarray:
    """A fake near-infrared frame (HxW uint8): luminance, vegetation bright."""
    veg = np.isin(label, [i for i, k in enumerate(ont.class_to_category) if ont.categories[k] == "vegetation"])
    gray = image.astype(np.float32) @ np.array([0.3, 0.59, 0.11], np.float32)
    return np.clip(gray + 70 * veg, 0, 255).astype(np.uint8)


def _save_png(path: Path, arr: np.ndarray, level: int = 6) -> None:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
    path.write_bytes(buf.getvalue())


def write_mapping_csv(root: Path) -> Path:
    """``root/goose_label_mapping.csv`` from the packaged table (columns class_name,label_key,has_instance,hex)."""
    path = root / MAPPING_CSV
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(REQUIRED_COLUMNS))
        writer.writeheader()
        writer.writerows(packaged_mapping_rows())
    return path


def write_synthetic(out: str | os.PathLike, *, seed: int = 0, n_train: int = 64, n_val: int = 16,
                    n_test: int = 8, scale: float = 1.0, progress: bool = False) -> Path:
    """Write a synthetic GOOSE root at ``out`` (must not exist or be empty) and return it.

    ``n_*``: images per split, spread round-robin over the split's three scenarios;
    ``scale`` multiplies every image size (3.2 gives 1024x768 windshield images).
    Image ``i`` of a split depends only on (seed, split, i).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new folder")
    if min(n_train, n_val, n_test) < 0 or scale <= 0:
        raise ValueError(f"{out}: image counts must be >= 0 and scale > 0")
    out.mkdir(parents=True, exist_ok=True)
    write_mapping_csv(out)
    ont = Ontology.load(out)
    jobs = [(si, split, i) for si, (split, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test)))
            for i in range(n)]
    for si, split, i in tqdm(jobs, desc="synthetic GOOSE", disable=not progress):
        scenario, style = SCENARIOS[split][i % 3]
        camera, w, h, ego, fmt = STYLES[style]
        frame = i // 3
        stem = fmt.format(sc=scenario, i=frame, ts=1_650_000_000_000_000_000 + 97_000_000 * (si * 10_000 + i))
        rng = np.random.default_rng([seed, si, i])
        image, label, inst = render_scene(rng, round(w * scale), round(h * scale), ego=ego, ontology=ont,
                                          scale=scale)
        img_dir = out / "images" / split / scenario
        img_dir.mkdir(parents=True, exist_ok=True)
        _save_png(img_dir / f"{stem}_{camera}.png", image, 1)  # noisy: fast zlib
        if style in NIR_STYLES:
            _save_png(img_dir / f"{stem}_windshield_nir.png", _nir(image, label, ont), 1)
        if split != "test":
            lbl_dir = out / "labels" / split / scenario
            lbl_dir.mkdir(parents=True, exist_ok=True)
            _save_png(lbl_dir / f"{stem}_labelids.png", label)
            _save_png(lbl_dir / f"{stem}_instanceids.png", inst)
            _save_png(lbl_dir / f"{stem}_color.png", ont.palette[label])
    return out


def ensure_embedded_dataset() -> Path:
    """``paths.home()/"embedded-goose-v1"``, written once (temp folder + rename; safe under races)."""
    target = paths.home() / EMBEDDED_NAME
    if target.is_dir():
        if not (target / MAPPING_CSV).is_file() or not (target / "images").is_dir():
            raise FileExistsError(f"{target}: exists but is not a complete embedded dataset; delete it "
                                  "and it will be written again")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{EMBEDDED_NAME}."))
    try:
        write_synthetic(tmp, seed=0, **EMBEDDED_COUNTS)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
