"""Optional short fine-tuning of the teacher's prompt encoder and mask decoder on ground truth.

A tiny random SAM3 (the embedded default) is no useful teacher; this adapts its box-prompted
decoder on the training split's oracle boxes and their object masks so the embedded pipeline has
a meaningful teacher. Off by default for real checkpoints (``AdaptConfig.steps = 0``).

What is trained: ``prompt_encoder.*`` and ``mask_decoder.*`` except ``mask_decoder.conv_s0/
conv_s1`` (they are applied inside ``get_image_features``, whose outputs are computed ONCE per
image here and kept in memory); the vision encoder and ``no_memory_embedding`` stay frozen.
Loss per box: the best of the multimask candidates under BCE + Dice against the object's mask
(resized to the 4g x 4g mask frame), plus the MSE of the predicted IoU of every candidate
against its actual IoU (SAM's recipe). The result is written as a copy of the base checkpoint
folder with those tensors replaced in the folder's own key layout, so ``models.sam3.load_tracker``
loads it strictly and ``checkpoint_fingerprint`` differs from the base.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from goose_lib.models.pretrain import box_mask_loss
from goose_lib.teacher.boxes import boxes_from_labels
from goose_lib.teacher.config import DEFAULT_BOXES, AdaptConfig, BoxParams
from goose_lib.teacher.prompt import encode_image, tracker_image_size

FROZEN_DECODER = ("mask_decoder.conv_s0.", "mask_decoder.conv_s1.")


def trainable_names(model: torch.nn.Module) -> list[str]:
    """Parameter names adapted (see module doc)."""
    return [n for n, _ in model.named_parameters()
            if n.startswith(("prompt_encoder.", "mask_decoder.")) and not n.startswith(FROZEN_DECODER)]


def prepare_examples(model: torch.nn.Module, samples: Sequence[Any], box_params: BoxParams,
             no_memory_level: str, progress: bool, instance_classes: Collection[int] | None = None
             ) -> list[dict[str, Any]]:
    """Per image: embeddings (computed once), model-frame boxes (n,4) and target masks (n,4g,4g)."""
    from tqdm.auto import tqdm

    from goose_lib.data.decode import load_sample
    from goose_lib.models.sam3 import preprocess

    size = tracker_image_size(model)
    dev = next(model.parameters()).device
    data = []
    for s in tqdm(list(samples), desc="adapt: embeddings", disable=not progress):
        item = load_sample(s)
        if item.get("label") is None:
            continue
        bs = boxes_from_labels(item["label"], item.get("instances"), params=box_params, return_masks=True,
                               instance_classes=instance_classes)
        if len(bs) == 0:
            continue
        emb = [e.detach() for e in encode_image(model, preprocess(item["image"], size).to(dev), no_memory_level)]
        mask_size = emb[0].shape[-2:]
        masks = torch.from_numpy(np.stack(bs.masks)).float()[:, None]
        target = (F.interpolate(masks, size=mask_size, mode="area")[:, 0] >= 0.5).float()
        scale = np.array([size / bs.width, size / bs.height] * 2, np.float32)
        inside = torch.zeros_like(target)
        mh, mw = mask_size
        fx, fy = mw / bs.width, mh / bs.height
        for j, (x1, y1, x2, y2) in enumerate(bs.xyxy):
            inside[j, int(y1 * fy):max(int(np.ceil(y2 * fy)), int(y1 * fy) + 1),
                   int(x1 * fx):max(int(np.ceil(x2 * fx)), int(x1 * fx) + 1)] = 1.0
        data.append({"emb": emb, "boxes": torch.from_numpy(bs.xyxy * scale), "target": target.to(dev),
                     "inside": inside.to(dev)})
    return data


@torch.no_grad()
def mean_box_iou(model: torch.nn.Module, examples: Sequence[dict[str, Any]]) -> float:
    """Mean over boxes of the IoU, inside each box, between the teacher's chosen mask (logit > 0)
    and the object's mask, in the mask frame (examples from :func:`prepare_examples`)."""
    ious = []
    for d in examples:
        out = model(image_embeddings=d["emb"], input_boxes=d["boxes"][None].to(d["target"].device),
                    multimask_output=True)
        lg, sc = out.pred_masks[0], out.iou_scores[0]
        best = lg.gather(1, sc.argmax(1)[:, None, None, None].expand(-1, 1, *lg.shape[-2:]))[:, 0]
        h = (best > 0).float() * d["inside"]
        t = d["target"] * d["inside"]
        ious.append(((h * t).sum((1, 2)) / ((h + t) > 0).float().sum((1, 2)).clamp_min(1)).cpu())
    return float(torch.cat(ious).mean()) if ious else float("nan")


def adapt_teacher(model: torch.nn.Module, samples: Sequence[Any], cfg: AdaptConfig,
                  box_params: BoxParams = DEFAULT_BOXES, *, instance_classes: Collection[int] | None = None,
                  progress: bool = True) -> list[float]:
    """Fine-tune ``model`` (a Sam3TrackerModel) in place; returns the loss per step.
    ``instance_classes``: as in :func:`~goose_lib.teacher.boxes.boxes_from_labels`."""
    from tqdm.auto import tqdm

    if cfg.steps == 0:
        return []
    samples = list(samples)[: cfg.limit] if cfg.limit else list(samples)
    data = prepare_examples(model, samples, box_params, cfg.no_memory_level, progress, instance_classes)
    if not data:
        raise ValueError("adapt_teacher: no training sample has a box; nothing to adapt on")
    names = set(trainable_names(model))
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    losses: list[float] = []
    dev = next(model.parameters()).device
    try:
        for _ in tqdm(range(cfg.steps), desc="adapt", disable=not progress):
            opt.zero_grad(set_to_none=True)
            picks = rng.choice(len(data), size=min(cfg.images_per_step, len(data)), replace=False)
            total = 0.0
            for j in picks:
                d = data[int(j)]
                n = d["boxes"].shape[0]
                sel = torch.from_numpy(rng.choice(n, size=min(cfg.boxes_per_image, n), replace=False))
                out = model(image_embeddings=d["emb"], input_boxes=d["boxes"][sel][None].to(dev), multimask_output=True)
                sel = sel.to(dev)
                loss = box_mask_loss(out.pred_masks[0], out.iou_scores[0], d["target"][sel], d["inside"][sel],
                                     candidates="all")  # a box is unambiguous: every candidate learns it
                (loss / len(picks)).backward()
                total += float(loss.detach()) / len(picks)
            opt.step()
            losses.append(total)
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return losses


def save_adapted(model: torch.nn.Module, base: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy the SAM3 checkpoint ``base`` to ``out`` with the adapted tensors replaced
    (:func:`goose_lib.models.sam3.save_tracker_copy`)."""
    from goose_lib.models.sam3 import save_tracker_copy

    own = dict(model.state_dict())
    return save_tracker_copy(base, {name: own[name] for name in trainable_names(model)}, out)


def prepare_teacher_checkpoint(sam3_checkpoint: str, data_root: str, *, cfg: AdaptConfig | None = None,
                               box_params: BoxParams = DEFAULT_BOXES, split: str = "train",
                               out_root: str | os.PathLike | None = None, device: str = "auto",
                               exclude_scenarios: Sequence[str] = (), progress: bool = True) -> str | Path:
    """The teacher's SAM3 checkpoint: ``sam3_checkpoint`` itself (as given) when ``cfg.steps == 0``, else an
    adapted copy under ``out_root`` (default ``paths.home()/"teacher-adapted"``), named by a hash
    of the base fingerprint, the data root, ``cfg`` and ``box_params``; reused when it exists."""
    from goose_lib import paths
    from goose_lib.config import to_dict
    from goose_lib.data.embedded import is_embedded, load_ontology
    from goose_lib.data.layout import index_split
    from goose_lib.io import sha256_json
    from goose_lib.models.sam3 import checkpoint_fingerprint, load_tracker

    cfg = cfg or AdaptConfig()
    if cfg.steps == 0:
        return sam3_checkpoint
    samples = index_split(data_root, split, exclude_scenarios=exclude_scenarios)
    root = str(data_root) if is_embedded(data_root) else str(Path(data_root).resolve())
    instance_classes = load_ontology(data_root).instance_classes  # which ids make boxes: part of the tag
    tag = sha256_json({"base": checkpoint_fingerprint(sam3_checkpoint), "root": root, "split": split,
                       **({"exclude": sorted(exclude_scenarios)} if exclude_scenarios else {}),
                       "adapt": to_dict(cfg), "boxes": to_dict(box_params),
                       "instance_classes": sorted(instance_classes)})[:16]
    out = Path(out_root) if out_root is not None else paths.home() / "teacher-adapted"
    out = out / f"adapted-{tag}"
    if (out / "config.json").is_file():
        return out
    model = load_tracker(sam3_checkpoint, device=paths.resolve_device(device))
    adapt_teacher(model, samples, cfg, box_params, instance_classes=instance_classes, progress=progress)
    return save_adapted(model, sam3_checkpoint, out)
