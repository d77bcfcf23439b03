"""The embedded teacher (premise 3: a teacher that knows boundaries but not classes): the tiny
SAM3 tracker pre-trained class-agnostically, box -> mask as SAM is trained, on the generated
shapes of :mod:`goose_lib.data.shapes` (never on GOOSE-like labels).

Everything of the tracker that the box-prompted path uses is trained (vision encoder, FPN neck,
prompt encoder, mask decoder); the loss per box is :func:`box_mask_loss` (best of the multimask
candidates under BCE + Dice inside the box, plus the IoU head's MSE), in the 4g x 4g mask frame
with the image embeddings computed as the teacher computes them (``no_memory_embedding`` on the
x1 level). Boxes are jittered by up to ``box_jitter`` of their size. The result is written with
``Sam3TrackerModel.save_pretrained`` (a layout :func:`goose_lib.models.sam3.load_tracker` loads
strictly), plus ``pretrain.json`` (config, losses, held-out in-box IoU of the teacher and of
box filling). Cached as ``paths.home()/"teacher-sam3-v1-<hash>"`` (:func:`ensure_teacher_checkpoint`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from goose_lib import paths
from goose_lib.io import atomic_dir, atomic_write_json, sha256_json

TEACHER_VERSION = "teacher-sam3-v1"


@dataclass(frozen=True)
class PretrainConfig:
    """Class-agnostic pre-training of the embedded tracker (budget: 1-2 minutes on 2 cores)."""

    steps: int = 300
    n_images: int = 192  # training shape images (generated once)
    images_per_step: int = 4
    boxes_per_image: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    box_jitter: float = 0.05  # max box-edge shift, as a fraction of the box's width / height
    seed: int = 0
    held_out: int = 32  # held-out shape images for pretrain.json (seed + 1)
    candidates: str = "best"  # box_mask_loss: "best" (of the multimask candidates) or "all"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n_images < 1 or self.images_per_step < 1 or self.boxes_per_image < 1:
            raise ValueError("PretrainConfig: steps, n_images, images_per_step, boxes_per_image must be >= 1")
        if self.lr <= 0 or not 0 <= self.box_jitter < 0.5 or self.held_out < 0:
            raise ValueError("PretrainConfig: lr > 0, 0 <= box_jitter < 0.5 and held_out >= 0 are required")
        if self.candidates not in ("best", "all"):
            raise ValueError(f"PretrainConfig.candidates must be 'best' or 'all', got {self.candidates!r}")


DEFAULT_PRETRAIN = PretrainConfig()


def box_mask_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
                  inside: torch.Tensor, *, candidates: str = "best") -> torch.Tensor:
    """logits (n,k,h,w), iou_pred (n,k), target and inside-the-box mask (n,h,w) -> scalar.

    BCE and Dice count only pixels inside each box (the teacher's masks are clipped to their
    boxes), which keeps foreground and background balanced; ``candidates="best"``: the best
    candidate's loss (SAM's recipe for ambiguous prompts), ``"all"``: every candidate's (a box
    is unambiguous: then whichever candidate the IoU head picks is trained); + IoU head MSE."""
    t = target[:, None].expand_as(logits)
    w = inside[:, None].expand_as(logits)
    area = w.sum(dim=(-2, -1)).clamp_min(1)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w).sum(dim=(-2, -1)) / area
    p = torch.sigmoid(logits) * w
    inter = (p * t).sum(dim=(-2, -1))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(-2, -1)) + (t * w).sum(dim=(-2, -1)) + 1)
    per = bce + dice  # (n, k)
    best = per.min(dim=1).values if candidates == "best" else per.mean(dim=1)
    with torch.no_grad():
        hard = (logits > 0).float() * w
        i = (hard * t).sum(dim=(-2, -1))
        u = ((hard + t) > 0).float().sum(dim=(-2, -1)).clamp_min(1)
        actual = i / u
    return best.mean() + F.mse_loss(iou_pred, actual)


def box_frame_targets(masks: np.ndarray, boxes: np.ndarray, width: int, height: int,
                      mask_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,h,w) target masks (area-resized, >= 0.5) and in-box masks in the mask frame."""
    t = torch.from_numpy(np.asarray(masks, np.float32))[:, None]
    target = (F.interpolate(t, size=mask_size, mode="area")[:, 0] >= 0.5).float()
    inside = torch.zeros_like(target)
    mh, mw = mask_size
    fx, fy = mw / width, mh / height
    for j, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        inside[j, int(y1 * fy):max(int(np.ceil(y2 * fy)), int(y1 * fy) + 1),
               int(x1 * fx):max(int(np.ceil(x2 * fx)), int(x1 * fx) + 1)] = 1.0
    return target, inside


def embeddings(model: Any, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The mask decoder's inputs as the teacher computes them ("original" no-memory level), with grad."""
    feats = model.get_image_features(pixel_values, return_dict=True).fpn_hidden_states
    bsz = pixel_values.shape[0]
    emb = [f.permute(1, 2, 0).reshape(bsz, -1, *size) for f, size in zip(feats, model.backbone_feature_sizes)]
    emb[-1] = emb[-1] + model.no_memory_embedding.reshape(1, -1, 1, 1)
    return emb


def _image_size(model: Any) -> int:
    size = model.config.prompt_encoder_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _jitter(boxes: np.ndarray, frac: float, size: int, rng: np.random.Generator) -> np.ndarray:
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    out = boxes + rng.uniform(-frac, frac, boxes.shape) * wh
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
    return np.clip(out, 0, size).astype(np.float32)


def pretrain_tracker(model: Any, cfg: PretrainConfig = DEFAULT_PRETRAIN, *, progress: bool = False) -> list[float]:
    """Train ``model`` (a Sam3TrackerModel) in place on the shape set; returns the loss per step."""
    from tqdm.auto import tqdm

    from goose_lib.data.shapes import shape_sample
    from goose_lib.models.sam3 import preprocess

    size = _image_size(model)
    data = [s for s in (shape_sample(cfg.seed, i, size=size) for i in range(cfg.n_images)) if len(s.boxes)]
    params = [p for n, p in model.named_parameters()
              if n.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.", "no_memory_embedding"))]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.steps >= 10:  # one-cycle with >= 2 warm-up steps (torch divides by zero below that)
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                         pct_start=max(0.1, 2.0 / cfg.steps))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    rng = np.random.default_rng([cfg.seed, 1])
    losses: list[float] = []
    model.train()
    try:
        for _ in tqdm(range(cfg.steps), desc="pretrain teacher", disable=not progress):
            picks = [data[int(j)] for j in rng.choice(len(data), size=min(cfg.images_per_step, len(data)),
                                                      replace=False)]
            emb = embeddings(model, preprocess([s.image for s in picks], size))
            mask_size = tuple(emb[0].shape[-2:])
            total = torch.zeros(())
            for b, s in enumerate(picks):
                sel = rng.choice(len(s.boxes), size=min(cfg.boxes_per_image, len(s.boxes)), replace=False)
                boxes = _jitter(s.boxes[sel], cfg.box_jitter, size, rng)
                target, inside = box_frame_targets(s.masks[sel], boxes, size, size, mask_size)
                out = model(image_embeddings=[e[b:b + 1] for e in emb], input_boxes=torch.from_numpy(boxes)[None],
                            multimask_output=True)
                total = total + box_mask_loss(out.pred_masks[0], out.iou_scores[0], target, inside,
                                              candidates=cfg.candidates) / len(picks)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            losses.append(float(total.detach()))
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return losses


@torch.no_grad()
def held_out_iou(model: Any, seed: int, n: int) -> dict[str, float]:
    """Mean in-box IoU over the boxes of ``n`` shape images of ``seed`` (exact boxes), at image
    resolution: the tracker's chosen mask (upsampled logits > 0) and the box filled."""
    from goose_lib.data.shapes import shape_sample
    from goose_lib.models.sam3 import preprocess

    size = _image_size(model)
    teacher, fill = [], []
    for i in range(n):
        s = shape_sample(seed, i, size=size)
        if not len(s.boxes):
            continue
        emb = embeddings(model, preprocess(s.image, size))
        out = model(image_embeddings=emb, input_boxes=torch.from_numpy(s.boxes)[None], multimask_output=True)
        lg, sc = out.pred_masks[0], out.iou_scores[0]
        best = lg.gather(1, sc.argmax(1)[:, None, None, None].expand(-1, 1, *lg.shape[-2:]))
        pred = (F.interpolate(best, size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0).numpy()
        for j, (x1, y1, x2, y2) in enumerate(s.boxes.astype(int)):
            m, p = s.masks[j, y1:y2, x1:x2], pred[j, y1:y2, x1:x2]
            teacher.append((m & p).sum() / max((m | p).sum(), 1))
            fill.append(m.sum() / m.size)
    return {"teacher": float(np.mean(teacher)), "box_fill": float(np.mean(fill)), "boxes": len(teacher)}


def build_teacher_checkpoint(out: str | os.PathLike, cfg: PretrainConfig = DEFAULT_PRETRAIN, *,
                             base: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Pre-train the tracker of ``base`` (default: the embedded tiny checkpoint) and write it to ``out``."""
    from goose_lib.models.sam3 import load_tracker
    from goose_lib.models.tiny import ensure_tiny_checkpoint

    base = Path(base) if base is not None else ensure_tiny_checkpoint()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = load_tracker(base)
        losses = pretrain_tracker(model, cfg, progress=progress)
    score = held_out_iou(model, cfg.seed + 1, cfg.held_out) if cfg.held_out else {}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        atomic_write_json(tmp / "pretrain.json", {"version": TEACHER_VERSION, "config": asdict(cfg),
                                                  "losses": losses, "held_out_iou": score})
    return Path(out)


def ensure_teacher_checkpoint(cfg: PretrainConfig = DEFAULT_PRETRAIN, *, progress: bool = False) -> Path:
    """``paths.home()/"teacher-sam3-v1-<hash>"`` (hash of ``cfg``), built on first use (temp folder
    + rename: readers never see a partial folder; a loser of a race discards its copy)."""
    from goose_lib.models.tiny import TINY_NAME

    target = paths.home() / f"{TEACHER_VERSION}-{sha256_json({'base': TINY_NAME, **asdict(cfg)})[:12]}"
    if (target / "config.json").is_file() and (target / "pretrain.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.build-"))
    try:
        build_teacher_checkpoint(tmp / target.name, cfg, progress=progress)
        try:
            os.rename(tmp / target.name, target)
        except OSError:  # another caller won the race (its copy is identical), or a stale folder
            if not (target / "pretrain.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
