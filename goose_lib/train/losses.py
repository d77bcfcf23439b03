"""Supervised segmentation losses (the distillation terms live in ``goose_lib.train.distill``).

- :func:`segmentation_loss`: pixel cross-entropy over the labelled pixels, optionally weighted
  per class (``class_weights``: "class-balanced" CE, weights from :func:`balanced_class_weights`).
- :func:`ohem_loss`: online hard example mining (mmsegmentation's ``OHEMPixelSampler``): only the
  labelled pixels whose true-class probability is below ``max(thresh, p_k)`` enter the mean, where
  ``p_k`` is the batch's true-class probability at sorted (0-based) index ``min_kept``.
- :func:`category_log_probs` / :func:`category_loss`: the coarse-category auxiliary term. A
  category's log-probability is the log-sum-exp of its classes' log-softmax, i.e. the log of the sum
  of its classes' probabilities; the loss is the cross-entropy of that against the label's category,
  void-category pixels ignored (no protocol but the toolkit scores the void category).
- :class:`Criterion`: what the training step calls, built from a TrainConfig by :func:`criterion_for`.
  With ``category_weight == 0`` it returns exactly the plain (or OHEM) loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from goose_lib.ontology import IGNORE_INDEX


def _check(logits: torch.Tensor, label: torch.Tensor) -> None:
    if label.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"label shape {tuple(label.shape)} does not match logits {tuple(logits.shape)}")


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
                      label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel cross-entropy averaged over the labelled pixels.

    ``logits`` float (B,C,H,W); ``label`` integer (B,H,W) class ids, ``ignore_index`` skipped.
    Labels at another resolution than the logits raise. Unlike ``F.cross_entropy``'s mean, a batch
    with no labelled pixel gives a zero loss (still attached to the graph), not NaN; computed in
    float32 even under autocast. ``class_weights`` (C,): the mean is then weighted, sum of
    ``w[y] * loss`` over sum of ``w[y]`` (``F.cross_entropy``'s weighted mean).
    """
    _check(logits, label)
    label = label.long()
    w = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    total = F.cross_entropy(logits.float(), label, weight=w, ignore_index=ignore_index,
                            reduction="sum", label_smoothing=label_smoothing)
    valid = label != ignore_index
    if w is None:
        return total / valid.sum().clamp_min(1)
    return total / w[label[valid]].sum().clamp_min(1e-12)


def ohem_loss(logits: torch.Tensor, label: torch.Tensor, *, thresh: float, min_kept: int,
              ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0,
              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over the hard labelled pixels only (mmseg ``OHEMPixelSampler`` rule).

    A labelled pixel is kept when its softmax probability of the true class is below
    ``max(thresh, p_k)``, ``p_k`` = the sorted probabilities' entry at 0-based index ``min_kept``
    (so at least ``min_kept`` pixels are kept when there are more, barring ties; mmseg takes
    ``min_kept`` per batch, not per image). No labelled pixel: zero loss.
    """
    _check(logits, label)
    label = label.long()
    valid = label != ignore_index
    x = logits.float()
    with torch.no_grad():
        p_true = x.softmax(1).gather(1, label.clamp(0, x.shape[1] - 1)[:, None])[:, 0]
        p_valid = p_true[valid]
        threshold = torch.tensor(float(thresh), device=x.device)
        if p_valid.numel():
            k = min(int(min_kept), p_valid.numel() - 1)  # 0-based index into the sorted probabilities
            threshold = torch.maximum(threshold, p_valid.kthvalue(k + 1).values)
        keep = valid & (p_true < threshold) if p_valid.numel() else valid
        if p_valid.numel() and not keep.any():  # every probability equals the threshold: keep them all
            keep = valid
    w = None if class_weights is None else class_weights.to(x.device, torch.float32)
    pix = F.cross_entropy(x, torch.where(keep, label, ignore_index), weight=w, ignore_index=ignore_index,
                          reduction="none", label_smoothing=label_smoothing)
    denom = keep.sum() if w is None else w[label[keep]].sum()
    return pix.sum() / denom.clamp_min(1e-12 if w is not None else 1)


def category_log_probs(logits: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, G, H, W) log-probabilities of the categories: for each group of class ids, the
    log-sum-exp of their log-softmax (log of the summed class probabilities)."""
    lp = logits.float().log_softmax(1)
    return torch.stack([lp[:, list(g)].logsumexp(1) for g in groups], 1)


def category_loss(logits: torch.Tensor, label: torch.Tensor, class_to_category: torch.Tensor,
                  groups: Sequence[Sequence[int]], *, ignore_categories: Sequence[int] = (0,),
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of :func:`category_log_probs` against the label's category (pixels of
    ``ignore_categories`` and ``ignore_index`` skipped; zero when none is left)."""
    _check(logits, label)
    lut = class_to_category.to(label.device, torch.long)
    label = label.long()
    cat = torch.where(label == ignore_index, ignore_index, lut[label.clamp(0, lut.numel() - 1)])
    for g in ignore_categories:
        cat = torch.where(cat == g, ignore_index, cat)
    total = F.nll_loss(category_log_probs(logits, groups), cat, ignore_index=ignore_index, reduction="sum")
    return total / (cat != ignore_index).sum().clamp_min(1)


def balanced_class_weights(pixel_counts: np.ndarray, power: float) -> np.ndarray:
    """Class weights ``w_c ∝ (n_c / N) ** -power`` for the classes with pixels (0 for the others),
    scaled so that the pixel-weighted mean weight is 1 (the loss keeps its scale)."""
    n = np.asarray(pixel_counts, dtype=np.float64)
    out = np.zeros_like(n)
    present = n > 0
    if not present.any():
        return out
    freq = n[present] / n.sum()
    w = freq ** -float(power)
    out[present] = w / float((w * freq).sum())
    return out


@dataclass(frozen=True)
class Criterion:
    """The supervised loss of one training run (build it with :func:`criterion_for`)."""

    kind: str  # "ce" | "ohem" | "class_balanced"
    label_smoothing: float
    ohem_thresh: float
    ohem_min_kept: int
    class_weights: torch.Tensor | None  # (C,) for "class_balanced"
    category_weight: float
    class_to_category: torch.Tensor | None  # (C,) long, needed when category_weight > 0
    groups: tuple[tuple[int, ...], ...]  # class ids of each category
    void_category: int = 0

    def __call__(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        kw: dict[str, Any] = {"label_smoothing": self.label_smoothing, "class_weights": self.class_weights}
        if self.kind == "ohem":
            loss = ohem_loss(logits, label, thresh=self.ohem_thresh, min_kept=self.ohem_min_kept, **kw)
        else:
            loss = segmentation_loss(logits, label, **kw)
        if self.category_weight > 0:
            assert self.class_to_category is not None
            loss = loss + self.category_weight * category_loss(
                logits, label, self.class_to_category, self.groups, ignore_categories=(self.void_category,))
        return loss


def criterion_for(cfg: Any, ontology: Any = None, pixel_counts: np.ndarray | None = None) -> Criterion:
    """The :class:`Criterion` of a TrainConfig. ``ontology`` (category grouping) is needed when
    ``cfg.category_loss_weight > 0``; ``pixel_counts`` (training-split pixels per class) when
    ``cfg.loss == "class_balanced"``."""
    weights = None
    if cfg.loss == "class_balanced":
        if pixel_counts is None:
            raise ValueError("loss 'class_balanced' needs the training split's pixel counts per class")
        weights = torch.as_tensor(balanced_class_weights(pixel_counts, cfg.balance_power), dtype=torch.float32)
    lut, groups, void = None, (), 0
    if cfg.category_loss_weight > 0:
        if ontology is None:
            raise ValueError("category_loss_weight > 0 needs the ontology (category grouping)")
        c2c = np.asarray(ontology.class_to_category)
        lut = torch.as_tensor(c2c, dtype=torch.long)
        groups = tuple(tuple(int(c) for c in np.flatnonzero(c2c == g)) for g in range(ontology.num_categories))
        void = list(ontology.categories).index("void")
    return Criterion(cfg.loss, cfg.label_smoothing, cfg.ohem_thresh, cfg.ohem_min_kept, weights,
                     cfg.category_loss_weight, lut, groups, void)
