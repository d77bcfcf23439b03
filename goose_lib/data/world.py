"""The embedded world: procedural scenes (the layouts of :mod:`goose_lib.data.synthetic`) in
which the paper's premises hold, each behind one switch of :class:`WorldParams`:

1. ``domain_shift``: train scenarios are rendered in mild daylight, val/test scenarios under
   dusk, overcast haze and snow (:mod:`goose_lib.data.weather`); off = every split in daylight.
   Class appearance is never one exact colour: a per-image colour spread per class
   (``colour_spread``), a low-frequency colour field inside regions, per-instance tints and
   stronger textures (``texture_gain``).
2. ``label_noise``: training labels degraded from the exact maps (:mod:`goose_lib.data.degrade`);
   val/test labels exact; the exact training labels are kept aside under ``labels_exact/train/``
   (the GOOSE layout readers never look there). ``LabelNoise(enabled=False)`` = exact labels.
3. (the teacher premise lives in :mod:`goose_lib.models.pretrain`, checkpoint "embedded-teacher")
4. ``scale``: image size in multiples of the basic world's (2.0 gives 640x480 windshield images,
   about 2048/1008 times the 224-px input over 320x240's ratio), with ``thin_rate`` times as
   many poles, signs, cones and bicycles; off = ``scale=1``.

A world is written once per parameter set under ``paths.home()/"world-v1-<hash>"``; the named
specs :data:`WORLD_SPECS` ("embedded" = every premise on, "embedded-no-shift", ...) and
"embedded-basic" (the first synthetic world) are resolved by :mod:`goose_lib.data.embedded`. Image ``i`` of
a split depends only on (seed, split, i); the layout, the appearance and the label noise use
separate random streams, so switching one premise leaves the others' draws unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from goose_lib import paths
from goose_lib.data.degrade import LabelNoise, degrade
from goose_lib.data.synthetic import (
    NIR_STYLES,
    SCENARIOS,
    SPLITS,
    STYLES,
    THINGS,
    _look_tables,
    _nir,
    _save_png,
    _texture,
    scene_layout,
    write_mapping_csv,
)
from goose_lib.data.weather import EVAL_LIGHTS, TRAIN_LIGHT, Light, apply_light, smooth_noise
from goose_lib.io import atomic_write_json, sha256_json
from goose_lib.ontology import Ontology

WORLD_VERSION = "world-v1"
EXACT_LABELS = "labels_exact"  # <root>/labels_exact/train/<scenario>/<stem>_{labelids,instanceids}.png
SMALL_THINGS = ("pole", "traffic_sign", "misc_sign", "traffic_cone", "bicycle")


@dataclass(frozen=True)
class WorldParams:
    """Every parameter of an embedded world (a different value = a different folder)."""

    seed: int = 0
    n_train: int = 64
    n_val: int = 16
    n_test: int = 8
    scale: float = 2.0  # premise 4 (1.0 = off)
    thin_rate: float = 2.0  # multiplier of the mean count of SMALL_THINGS per image
    domain_shift: bool = True  # premise 1 (False = val/test under train_light)
    train_light: Light = TRAIN_LIGHT
    eval_lights: tuple[Light, Light, Light] = EVAL_LIGHTS  # per val/test scenario, in SCENARIOS order
    colour_spread: float = 0.12  # std of the per-image, per-class log colour gain (per channel)
    texture_gain: float = 1.5  # multiplier of the basic world's texture amplitudes
    label_noise: LabelNoise = field(default_factory=LabelNoise)  # premise 2

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_val, self.n_test) < 0 or self.scale <= 0 or self.thin_rate < 0:
            raise ValueError("WorldParams: image counts >= 0, scale > 0 and thin_rate >= 0 are required")
        if self.colour_spread < 0 or self.texture_gain < 0 or len(self.eval_lights) != 3:
            raise ValueError("WorldParams: colour_spread, texture_gain >= 0 and 3 eval_lights are required")

    def key(self) -> str:
        return sha256_json({"version": WORLD_VERSION, **asdict(self)})[:12]

    def light(self, split: str, scenario_index: int) -> Light:
        if split == "train" or not self.domain_shift:
            return self.train_light
        return self.eval_lights[scenario_index % 3]


DEFAULT_WORLD = WorldParams()
WORLD_SPECS: dict[str, WorldParams] = {
    "embedded": DEFAULT_WORLD,
    "embedded-no-shift": replace(DEFAULT_WORLD, domain_shift=False),
    "embedded-exact-labels": replace(DEFAULT_WORLD, label_noise=LabelNoise(enabled=False)),
    "embedded-1x": replace(DEFAULT_WORLD, scale=1.0),
}
BASIC = "embedded-basic"  # the basic synthetic world (goose_lib.data.synthetic)


def world_names() -> list[str]:
    return [*WORLD_SPECS, BASIC]


def _things(rate: float) -> tuple[tuple[str, float], ...]:
    return tuple((n, lam * rate if n in SMALL_THINGS else lam) for n, lam in THINGS)


def render_world_scene(params: WorldParams, split: str, index: int, width: int, height: int, *, ego: bool,
                       scenario_index: int, ontology: Ontology
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(HxWx3 uint8 image, HxW uint8 exact labels, HxW uint16 instance ids, horizon row)."""
    si = SPLITS.index(split)
    s = params.scale
    c, horizon = scene_layout(np.random.default_rng([params.seed, si, index, 0]), width, height, ego=ego,
                              ontology=ontology, scale=s, things=_things(params.thin_rate))
    rng = np.random.default_rng([params.seed, si, index, 1])
    colors, tex, amp = _look_tables(ontology)
    k = len(colors)
    colors = colors * np.exp(rng.normal(0, params.colour_spread, (k, 3))).astype(np.float32)
    lab, h, w = c.label, height, width
    blotch = smooth_noise(rng, h, w, max(2, round(6 * s)))
    kinds = tex[lab]
    t = np.zeros((h, w), np.float32)
    for kind in np.unique(kinds):
        m = kinds == kind
        t[m] = _texture(int(kind), c.yy[m], c.xx[m], 6.0 * s, blotch, rng)
    img = colors[lab] + (t * amp[lab] * params.texture_gain)[..., None]
    fieldc = np.stack([smooth_noise(rng, h, w, max(4, round(24 * s))) for _ in range(3)], -1)
    img *= np.exp(fieldc * params.colour_spread * 0.6)
    tint = np.exp(rng.normal(0, params.colour_spread, (int(c.inst.max()) + 1, 3))).astype(np.float32)
    tint[0] = 1.0
    img *= tint[c.inst]
    sky = lab == ontology.index("sky")
    img[sky] += (40 * (c.yy[sky] / max(horizon, 1)))[:, None]
    ground_stuff = (c.yy >= horizon) & (c.inst == 0) & (lab != ontology.index("ego_vehicle"))
    image = apply_light(img, params.light(split, scenario_index), rng, horizon=horizon, ground_stuff=ground_stuff)
    return image, c.label, c.inst, horizon


def write_world(out: str | os.PathLike, params: WorldParams = DEFAULT_WORLD, *, progress: bool = False) -> Path:
    """Write the world ``params`` at ``out`` (must not exist or be empty) in the GOOSE layout,
    plus ``labels_exact/train`` and ``world.json`` (the parameters); returns ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    write_mapping_csv(out)
    ont = Ontology.load(out)
    counts = (params.n_train, params.n_val, params.n_test)
    jobs = [(split, i) for split, n in zip(SPLITS, counts) for i in range(n)]
    si_of = {s: i for i, s in enumerate(SPLITS)}
    for split, i in tqdm(jobs, desc="embedded world", disable=not progress):
        scenario, style = SCENARIOS[split][i % 3]
        camera, w, h, ego, fmt = STYLES[style]
        stem = fmt.format(sc=scenario, i=i // 3, ts=1_650_000_000_000_000_000 + 97_000_000 * (si_of[split] * 10_000 + i))
        image, label, inst, _ = render_world_scene(params, split, i, round(w * params.scale), round(h * params.scale),
                                                   ego=ego, scenario_index=i % 3, ontology=ont)
        img_dir = out / "images" / split / scenario
        img_dir.mkdir(parents=True, exist_ok=True)
        _save_png(img_dir / f"{stem}_{camera}.png", image, 1)
        if style in NIR_STYLES:
            _save_png(img_dir / f"{stem}_windshield_nir.png", _nir(image, label, ont), 1)
        if split == "test":
            continue
        shown, shown_inst = label, inst
        if split == "train":
            exact_dir = out / EXACT_LABELS / split / scenario
            exact_dir.mkdir(parents=True, exist_ok=True)
            _save_png(exact_dir / f"{stem}_labelids.png", label)
            _save_png(exact_dir / f"{stem}_instanceids.png", inst)
            rng = np.random.default_rng([params.seed, si_of[split], i, 2])
            shown, shown_inst = degrade(label, inst, params.label_noise, rng, ont, px=h * params.scale / 240)
        lbl_dir = out / "labels" / split / scenario
        lbl_dir.mkdir(parents=True, exist_ok=True)
        _save_png(lbl_dir / f"{stem}_labelids.png", shown)
        _save_png(lbl_dir / f"{stem}_instanceids.png", shown_inst)
        _save_png(lbl_dir / f"{stem}_color.png", ont.palette[shown])
    atomic_write_json(out / "world.json", {"version": WORLD_VERSION, "key": params.key(), "params": asdict(params)})
    return out


def ensure_world(params: WorldParams = DEFAULT_WORLD, *, progress: bool = False) -> Path:
    """``paths.home()/"world-v1-<key>"``, written once (temp folder + rename; a loser of a race
    discards its copy, readers never see a partial or replaced folder)."""
    target = paths.home() / f"{WORLD_VERSION}-{params.key()}"
    if (target / "world.json").is_file():
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target}: exists but is not a complete embedded world (no world.json); "
                              "delete it and it will be written again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write_world(tmp / "w", params, progress=progress)
        try:
            os.rename(tmp / "w", target)
        except OSError:
            if not (target / "world.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def exact_train_label(root: str | os.PathLike, label_path: str | os.PathLike) -> Path:
    """The exact twin of a (degraded) training label file of a world root."""
    root, label_path = Path(root), Path(label_path)
    rel = label_path.resolve().relative_to((root / "labels").resolve())
    return root / EXACT_LABELS / rel


def label_noise_rate(exact: np.ndarray, coarse: np.ndarray) -> float:
    """Share of pixels whose training label differs from the exact one."""
    return float(np.mean(exact != coarse))


def boundary_distance(label: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every pixel to the nearest pixel of another class."""
    edge = np.zeros(label.shape, bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[1:] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, :-1] != label[:, 1:]
    return ndimage.distance_transform_edt(~edge)




def ensure_named(name: str):  # -> Callable[[], Path]
    """A no-argument function that resolves the named world (for name -> function registries)."""
    if name not in WORLD_SPECS:
        raise ValueError(f"unknown embedded world {name!r}; choose one of {world_names()}")

    def ensure() -> Path:
        return ensure_world(WORLD_SPECS[name])

    ensure.__name__ = ensure.__qualname__ = "ensure_" + name.replace("-", "_")
    return ensure


# module-level no-argument ensurers, one per named world ("module:function" registries)
ensure_embedded = ensure_named("embedded")
ensure_embedded_no_shift = ensure_named("embedded-no-shift")
ensure_embedded_exact_labels = ensure_named("embedded-exact-labels")
ensure_embedded_1x = ensure_named("embedded-1x")
