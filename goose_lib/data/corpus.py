"""The foundation corpus: what SA-1B / SA-Co are to GOOSE, this is to the embedded world.

Scenes of the same visual universe as the embedded world (the generator of
:mod:`goose_lib.data.world`: its layouts, materials, objects, textures), rendered under every
light of that universe (daylight, dusk, overcast haze, snow), from seeds disjoint from every
embedded world (world seeds are small integers; the corpus draws ``CORPUS_SEED`` + k), with
exact masks. Each sample is stretched to the model input (``size`` x ``size``) and gives:

- **regions** (SA-1B's "masks"): every object instance and every connected piece of stuff of at
  least ``min_area`` pixels, with its tight box — class-agnostic, for box / point -> mask;
- **concepts** (SA-Co's noun phrases): per pixel, the multi-hot of the corpus's *own* vocabulary
  :data:`CONCEPTS` (materials, object kinds, attributes, as a caption would name things). The
  vocabulary is many-to-many with the generator's kinds, never GOOSE's 64 class ids or its
  category map: grass, crops and moss are all "vegetation, ground"; asphalt, cobble and sidewalk
  are all "ground, paved"; car and truck are both "vehicle"; a pole and a fence are both "built,
  thin" - the student still has to learn GOOSE's own boundaries.

Deterministic in (seed, index); one image renders in ~30 ms (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from goose_lib.data.synthetic import STYLES
from goose_lib.data.weather import EVAL_LIGHTS, TRAIN_LIGHT
from goose_lib.ontology import Ontology

CORPUS_SEED = 1_000_003  # corpus seeds are CORPUS_SEED + k: disjoint from every WorldParams.seed in use
CONCEPTS = ("sky", "vegetation", "tree", "ground", "paved", "loose", "water", "frozen", "built", "thin",
            "sign", "vehicle", "living", "movable", "stone", "marking")
# the generator's kinds -> concepts (a kind not listed has none: void, undefined, debris)
KIND_CONCEPTS: dict[str, tuple[str, ...]] = {
    "sky": ("sky",),
    "forest": ("vegetation", "tree"), "tree_crown": ("vegetation", "tree"), "tree_trunk": ("tree", "thin"),
    "scenery_vegetation": ("vegetation",), "bush": ("vegetation",), "hedge": ("vegetation",),
    "low_grass": ("vegetation", "ground"), "high_grass": ("vegetation", "ground"),
    "crops": ("vegetation", "ground"), "moss": ("vegetation", "ground"), "leaves": ("ground", "loose"),
    "soil": ("ground", "loose"), "gravel": ("ground", "loose", "stone"),
    "asphalt": ("ground", "paved"), "cobble": ("ground", "paved"), "sidewalk": ("ground", "paved"),
    "road_marking": ("ground", "paved", "marking"), "curb": ("paved", "built", "thin"),
    "water": ("water",), "snow": ("ground", "frozen"),
    "building": ("built",), "fence": ("built", "thin"), "pole": ("built", "thin"),
    "traffic_sign": ("sign", "built"), "misc_sign": ("sign", "built"),
    "car": ("vehicle",), "truck": ("vehicle",), "ego_vehicle": ("vehicle",), "bicycle": ("vehicle", "thin"),
    "person": ("living",), "animal": ("living",),
    "barrel": ("movable",), "traffic_cone": ("movable",), "obstacle": ("movable",), "rock": ("stone",),
}
# corpus lights: the universe's daylight and its three eval conditions (weather and light variety)
LIGHTS = (TRAIN_LIGHT, *EVAL_LIGHTS)
LIGHT_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


@dataclass(frozen=True)
class CorpusSample:
    image: np.ndarray  # (S, S, 3) uint8, the model input frame
    masks: np.ndarray  # (n, S, S) bool, one region each
    boxes: np.ndarray  # (n, 4) float32 xyxy pixels of the S x S frame (x2, y2 exclusive)
    concepts: np.ndarray  # (S, S) int64 generator kind per pixel -> use concept_table() to map


@lru_cache(maxsize=1)
def _ontology() -> Ontology:
    return Ontology.load(None)


@lru_cache(maxsize=1)
def concept_table() -> np.ndarray:
    """(num_kinds, len(CONCEPTS)) float32 multi-hot: generator kind index -> its concepts."""
    ont = _ontology()
    table = np.zeros((ont.num_classes, len(CONCEPTS)), np.float32)
    for name, concepts in KIND_CONCEPTS.items():
        if name in ont.names:
            for c in concepts:
                table[ont.index(name), CONCEPTS.index(c)] = 1.0
    return table


def concept_targets(kinds: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(S, S) kind map -> (len(CONCEPTS), h, w) soft multi-hot targets (area share of each concept)."""
    onehot = torch.from_numpy(concept_table()[kinds]).permute(2, 0, 1)[None]
    return F.interpolate(onehot, size=size, mode="area")[0]


def _resize_nearest(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape
    ys = ((np.arange(size) + 0.5) * h / size).astype(np.int64)
    xs = ((np.arange(size) + 0.5) * w / size).astype(np.int64)
    return arr[ys][:, xs]


def corpus_sample(seed: int, index: int, *, size: int = 224, min_area: int = 64,
                  max_regions: int = 24) -> CorpusSample:
    """Corpus image ``index`` of corpus seed ``seed`` (0 = training corpus, 1 = held-out, ...)."""
    from goose_lib.data.world import WorldParams, render_world_scene
    from goose_lib.models.sam3 import preprocess

    rng = np.random.default_rng([CORPUS_SEED + seed, index, 7])
    style = list(STYLES)[int(rng.integers(len(STYLES)))]
    _, w, h, ego, _ = STYLES[style]
    light = LIGHTS[int(rng.choice(len(LIGHTS), p=LIGHT_WEIGHTS))]
    params = replace(WorldParams(seed=CORPUS_SEED + seed, scale=1.0), train_light=light)
    ont = _ontology()
    image, label, inst, _ = render_world_scene(params, "train", index, w, h, ego=ego, scenario_index=0,
                                               ontology=ont)
    pix = preprocess(image, size)[0]  # the model's own stretch (bilinear, antialias)
    img = ((pix.permute(1, 2, 0) * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    lab, ins = _resize_nearest(label, size), _resize_nearest(inst.astype(np.int64), size)
    void = {ont.index(n) for n in ("undefined",) if n in ont.names}
    masks: list[np.ndarray] = []
    for i in np.unique(ins[ins > 0]):
        masks.append(ins == i)
    stuff = ins == 0
    for k in np.unique(lab[stuff]):
        if int(k) in void:
            continue
        comp, n = ndimage.label(stuff & (lab == k))
        masks.extend(comp == j for j in range(1, n + 1))
    masks = [m for m in masks if m.sum() >= min_area]
    if len(masks) > max_regions:
        keep = np.sort(rng.choice(len(masks), size=max_regions, replace=False))
        masks = [masks[j] for j in keep]
    m = np.stack(masks) if masks else np.zeros((0, size, size), bool)
    boxes = np.zeros((len(masks), 4), np.float32)
    for j, mk in enumerate(masks):
        ys, xs = np.nonzero(mk)
        boxes[j] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return CorpusSample(image=img, masks=m, boxes=boxes, concepts=lab.astype(np.int64))
