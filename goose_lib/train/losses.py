"""Supervised segmentation loss (the distillation terms live in ``goose_lib.train.distill``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from goose_lib.ontology import IGNORE_INDEX


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """Pixel cross-entropy averaged over the labelled pixels.

    ``logits`` float (B,C,H,W); ``label`` integer (B,H,W) class ids, ``ignore_index`` skipped.
    Labels at another resolution than the logits raise. Unlike ``F.cross_entropy``'s mean, a batch
    with no labelled pixel gives a zero loss (still attached to the graph), not NaN; computed in
    float32 even under autocast.
    """
    if label.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"label shape {tuple(label.shape)} does not match logits {tuple(logits.shape)}")
    total = F.cross_entropy(logits.float(), label.long(), ignore_index=ignore_index,
                            reduction="sum", label_smoothing=label_smoothing)
    count = (label != ignore_index).sum()
    return total / count.clamp_min(1)
