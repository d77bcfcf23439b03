"""Evaluation of a model over a labelled split, for several inference modes in ONE pass.

Each image is read and decoded once; every mode (a :class:`~goose_lib.infer.tta.TTAConfig`)
predicts it, and one confusion matrix per mode (plus one per image and mode) is accumulated.
Optionally the errors are binned by the pixel's distance to the nearest ground-truth label
boundary, and predictions are kept for an error browser.

Outputs (:meth:`EvalResult.save`): ``eval_summary.json`` (scores per mode, protocol, modes),
``eval_per_image.csv`` (one row per image and mode), ``eval_per_class.csv`` (one row per class:
support and IoU per mode), ``eval_boundary.csv`` (when binned).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from goose_lib.config import EvalProtocol, to_dict
from goose_lib.io import atomic_write_json, atomic_write_text
from goose_lib.metrics import (
    DEFAULT_PROTOCOL,
    ConfusionMatrix,
    Scores,
    apply_protocol,
    category_counts,
    compute_scores,
)
from goose_lib.ontology import IGNORE_INDEX, Ontology
from goose_lib.runtime import worker_init

from .tta import TTAConfig, count_windows, predict

DEFAULT_BOUNDARY_BINS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64)  # upper edges (px); last bin open


def boundary_distance(label: np.ndarray) -> np.ndarray:
    """HxW float32: Euclidean distance (px) of each pixel to the nearest label boundary.

    A boundary pixel is one whose right or lower neighbour has another label (ignore included);
    boundary pixels have distance 0. A map without any boundary gets +inf everywhere.
    """
    edge = np.zeros(label.shape, dtype=bool)
    dx = label[:, 1:] != label[:, :-1]
    dy = label[1:, :] != label[:-1, :]
    edge[:, :-1] |= dx
    edge[:, 1:] |= dx
    edge[:-1, :] |= dy
    edge[1:, :] |= dy
    if not edge.any():
        return np.full(label.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~edge).astype(np.float32)


@dataclass
class EvalResult:
    """Scores of every mode over a split, per image and overall.

    ``counts``: {mode: (K, K) int64 confusion (raw, before the protocol)}; ``scores``:
    {mode: Scores}; ``per_image``: DataFrame with columns key, mode, miou, category_miou,
    composite, accuracy, pixels, seconds; ``boundary``: DataFrame (mode, bin, lo, hi, pixels,
    errors, error_rate) or None; ``predictions``: {mode: {key: HxW uint8}} when kept;
    ``reads``: images decoded (== number of images: one pass). ``per_image.windows`` is the mode's
    own window count (:func:`count_windows`); the stretched S x S view common to several modes
    actually runs once per image.
    """

    protocol: EvalProtocol
    modes: dict[str, TTAConfig]
    counts: dict[str, np.ndarray]
    scores: dict[str, Scores]
    per_image: pd.DataFrame
    ontology: Ontology
    boundary: pd.DataFrame | None = None
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    image_counts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    reads: int = 0

    def summary(self) -> pd.DataFrame:
        """One row per mode: miou, category_miou, composite, windows per image, seconds per image."""
        rows = []
        for name, s in self.scores.items():
            img = self.per_image[self.per_image["mode"] == name]
            rows.append({"mode": name, "tta": self.modes[name].name, "miou": s.miou,
                         "category_miou": s.category_miou, "composite": s.composite,
                         "seconds_per_image": float(img["seconds"].mean()) if len(img) else float("nan")})
        return pd.DataFrame(rows).set_index("mode")

    def per_class(self) -> pd.DataFrame:
        """One row per class id: name, category, support (GT pixels after the protocol), IoU per mode."""
        first = next(iter(self.scores.values()))
        df = pd.DataFrame({
            "name": self.ontology.names,
            "category": [self.ontology.categories[g] for g in self.ontology.class_to_category],
            "support": first.support,
        })
        for name, s in self.scores.items():
            df[f"iou_{name}"] = s.class_iou
        df.index.name = "class_id"
        return df

    def gain(self, base: str, other: str) -> pd.DataFrame:
        """Per class: support, IoU of ``base`` and ``other`` and ``gain`` = other - base (NaN where
        either is not scored), sorted by gain (largest first)."""
        df = self.per_class()[["name", "category", "support", f"iou_{base}", f"iou_{other}"]]
        df = df.assign(gain=df[f"iou_{other}"] - df[f"iou_{base}"])
        return df.sort_values("gain", ascending=False, na_position="last")

    def category_confusion(self, mode: str) -> np.ndarray:
        """(G, G) category confusion of ``mode`` under the protocol."""
        return category_counts(apply_protocol(self.counts[mode], self.protocol, self.ontology), self.ontology)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol.void, "images": int(self.per_image["key"].nunique()),
                "reads": self.reads,
                "modes": {n: {"tta": to_dict(self.modes[n]), **s.to_dict()} for n, s in self.scores.items()}}

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write the summary JSON and the CSV tables into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        paths = {
            "summary": atomic_write_json(out / "eval_summary.json", self.to_dict()),
            "per_image": atomic_write_text(out / "eval_per_image.csv", self.per_image.to_csv(index=False)),
            "per_class": atomic_write_text(out / "eval_per_class.csv", self.per_class().to_csv()),
        }
        if self.boundary is not None:
            paths["boundary"] = atomic_write_text(out / "eval_boundary.csv", self.boundary.to_csv(index=False))
        return paths


def _item_key(item: Mapping[str, Any], i: int) -> str:
    sample = item.get("sample")
    return getattr(sample, "key", None) or f"item{i:06d}"


def _where(item: Mapping[str, Any]) -> str | None:
    sample = item.get("sample")
    return str(getattr(sample, "labelids", None) or getattr(sample, "image", "")) or None


def _identity(x: Any) -> Any:
    return x


def evaluate(model: torch.nn.Module, dataset: Sequence[Mapping[str, Any]], modes: Mapping[str, TTAConfig],
             protocol: EvalProtocol = DEFAULT_PROTOCOL, *, ontology: Ontology | None = None,
             boundary_bins: Sequence[float] | None = None, keep_predictions: bool = False,
             keep_image_counts: bool = False, workers: int = 0, progress: bool = True) -> EvalResult:
    """Evaluate ``model`` on every item of ``dataset`` under every mode, reading each item once.

    ``dataset``: a sequence of dicts with ``"image"`` (HxWx3 uint8), ``"label"`` (HxW uint8) and
    optionally ``"sample"`` (its ``key`` names rows, its label path names errors), e.g. a
    :class:`~goose_lib.data.dataset.GooseDataset`. ``boundary_bins``: upper edges (pixels) of
    distance-to-boundary bins for the error analysis (None = skip it). ``workers``: DataLoader
    processes decoding ahead (0 = in this process). The model is put in eval mode and restored.
    """
    if not modes:
        raise ValueError("evaluate: no inference modes given")
    ontology = ontology or getattr(dataset, "ontology", None) or Ontology.load()
    k = ontology.num_classes
    dropped = protocol.dropped_classes(ontology)
    totals = {name: ConfusionMatrix(k) for name in modes}
    rows: list[dict[str, Any]] = []
    bins = np.asarray(list(boundary_bins), dtype=np.float64) if boundary_bins is not None else None
    nb = 0 if bins is None else len(bins) + 1
    b_pixels = np.zeros(nb, dtype=np.int64)
    b_errors = {name: np.zeros(nb, dtype=np.int64) for name in modes}
    result_preds: dict[str, dict[str, np.ndarray]] = {name: {} for name in modes} if keep_predictions else {}
    image_counts: dict[str, dict[str, np.ndarray]] = {name: {} for name in modes} if keep_image_counts else {}
    reads = 0
    loader: Any = dataset
    if workers > 0:
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                             collate_fn=_identity, worker_init_fn=worker_init)  # malloc (runtime)
    was_training = model.training
    model.eval()
    try:
        for i, item in enumerate(tqdm(loader, total=len(dataset), desc="evaluate", disable=not progress)):
            reads += 1
            label = item.get("label")
            key, where = _item_key(item, i), _where(item)
            if label is None:
                raise ValueError(f"{where or key}: item has no label; evaluate needs a labelled split")
            if bins is not None:
                valid = label != IGNORE_INDEX
                if dropped:
                    valid &= ~np.isin(label, dropped)
                bin_of = np.digitize(boundary_distance(label), bins, right=True)
                b_pixels += np.bincount(bin_of[valid], minlength=nb)
            shared: dict = {}  # the stretched SxS view, common to the modes, runs once per image
            for name, cfg in modes.items():
                t = time.perf_counter()
                pred = predict(model, item["image"], cfg, shared=shared)
                seconds = time.perf_counter() - t
                own = totals[name].update(pred, label, where=where)
                s = compute_scores(own, ontology, protocol)
                kept = apply_protocol(own, protocol, ontology)
                valid_px = int(kept.sum())
                acc = float(np.trace(kept)) / valid_px if valid_px else float("nan")
                rows.append({"key": key, "mode": name, "miou": s.miou, "category_miou": s.category_miou,
                             "composite": s.composite, "accuracy": acc, "pixels": valid_px,
                             "windows": count_windows(*label.shape, int(model.image_size), cfg),
                             "seconds": seconds})
                if bins is not None:
                    wrong = valid & (pred != label)
                    b_errors[name] += np.bincount(bin_of[wrong], minlength=nb)
                if keep_predictions:
                    result_preds[name][key] = pred
                if keep_image_counts:
                    image_counts[name][key] = own
    finally:
        model.train(was_training)
    boundary = None
    if bins is not None:
        edges = np.concatenate([[-np.inf], bins, [np.inf]])
        recs = []
        for name in modes:
            for j in range(nb):
                recs.append({"mode": name, "bin": j, "lo": edges[j], "hi": edges[j + 1],
                             "pixels": int(b_pixels[j]), "errors": int(b_errors[name][j]),
                             "error_rate": b_errors[name][j] / b_pixels[j] if b_pixels[j] else float("nan")})
        boundary = pd.DataFrame(recs)
    return EvalResult(
        protocol=protocol, modes=dict(modes), counts={n: cm.counts.copy() for n, cm in totals.items()},
        scores={n: compute_scores(cm.counts, ontology, protocol) for n, cm in totals.items()},
        per_image=pd.DataFrame(rows, columns=["key", "mode", "miou", "category_miou", "composite", "accuracy",
                                              "pixels", "windows", "seconds"]),
        ontology=ontology, boundary=boundary, predictions=result_preds, image_counts=image_counts, reads=reads)
