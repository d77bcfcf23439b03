"""What the training notebook shows next to the trained student: the majority-class baseline and a
per-class comparison table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from goose_lib.config import EvalProtocol
from goose_lib.data.dataset import GooseDataset
from goose_lib.data.decode import read_label
from goose_lib.metrics import ConfusionMatrix, compute_scores


def majority_baseline(cfg: Any, *, protocol: EvalProtocol | None = None, progress: bool = True) -> dict[str, Any]:
    """Predict the most frequent training class (by pixels) everywhere on the validation split.

    ``cfg``: a :class:`goose_lib.train.loop.TrainConfig` (data root, splits, limits). Returns
    ``{"class_id", "class_name", "scores": Scores.to_dict()}``. A class the protocol drops
    (e.g. the void classes under ``ignore_void_category``) is not a candidate (its pixels are not scored).
    """
    protocol = protocol or EvalProtocol()
    train = GooseDataset(cfg.data_root, cfg.train_split, config=cfg.data_config(cfg.train_limit))
    ont = train.ontology
    counts = np.zeros(ont.num_classes, np.int64)
    for s in tqdm(train.samples, desc="class frequency", disable=not progress, leave=False):
        if s.labelids is not None:
            counts += np.bincount(read_label(s.labelids, ont.num_classes).ravel(), minlength=ont.num_classes)
    counts[protocol.dropped_classes(ont)] = 0
    majority = int(counts.argmax())
    val = GooseDataset(cfg.data_root, cfg.val_split, config=cfg.data_config(cfg.val_limit))
    cm = ConfusionMatrix(ont.num_classes)
    for s in tqdm(val.samples, desc="baseline", disable=not progress, leave=False):
        label = read_label(s.labelids, ont.num_classes)
        cm.update(np.full_like(label, majority), label)
    scores = compute_scores(cm.counts, ont, protocol).to_dict()
    return {"class_id": majority, "class_name": ont.classes[majority].name, "scores": scores}


def class_iou_table(results: dict[str, dict[str, Any]], ontology: Any) -> pd.DataFrame:
    """One row per class scored by any result, one column per result (``{name: Scores.to_dict()}``),
    IoU values; index = class id, plus ``name`` and ``category`` columns."""
    table = pd.DataFrame({name: np.asarray(r["class_iou"], dtype=float) for name, r in results.items()})
    table.index.name = "class_id"
    table = table[table.notna().any(axis=1)]
    table.insert(0, "category", [ontology.classes[i].category for i in table.index])
    table.insert(0, "name", [ontology.classes[i].name for i in table.index])
    return table

