"""The SAM3 teacher: box-prompted masks from ``Sam3TrackerModel`` (one mask per box).

Each image is encoded ONCE (:meth:`Teacher.encode`); all its boxes are decoded from those
embeddings in chunks of ``box_batch`` boxes, several images at a time with their box lists
padded to equal length (padding results are dropped). Boxes go to the model in xyxy pixels of
the model-input frame (the image stretched to ``image_size`` squared).

``no_memory_embedding``: transformers 5.23 adds it to the coarsest FPN level (x0.5), which the
tracker then discards, while the original SAM3 predictor adds it to the g x g (x1) map that the
mask decoder reads. ``TeacherConfig.no_memory_level="original"`` (default) computes the
embeddings here and adds it to the x1 level, like the original; ``"transformers"`` reproduces
the transformers behaviour (tested against ``Sam3TrackerModel.get_image_embeddings``).

Composition rules (per image, at image resolution; see :func:`compose`). Each box's mask
probability p (sigmoid of the upsampled logits of the candidate with the highest predicted IoU)
counts only inside its own box. :func:`compose_probabilities` applies the same rules to any
source of per-box probabilities (the oracle teacher's exact masks, :mod:`goose_lib.teacher.oracle`).
``TeacherConfig.overlap``:

- ``"smallest_box"`` (default; the usual order for pasting box-prompted masks): boxes are
  painted from the largest to the smallest. ``teacher_region`` = the class of the smallest box
  covering the pixel, ``teacher_prob`` = round(255 * p) of that box; ``teacher_cls`` = the class
  of the smallest covering box with p >= ``mask_threshold`` (so a large box's confident mask
  shows through where a small box's mask is off); 255 where no covering box is confident.
- ``"max_prob"``: per class c, P_c = the max over the boxes of c covering the pixel;
  ``teacher_region`` = the covering class with the highest P_c, ``teacher_prob`` = round(255 *
  P_region); ``teacher_cls`` = the region's class where P_region >= ``mask_threshold`` and no
  other covering class has P >= ``mask_threshold`` within ``tie_margin`` of it; else 255.

Outside every box: ``teacher_cls`` = ``teacher_region`` = 255 and ``teacher_prob`` = 0.

Precision: weights stay as loaded (fp32 by default); ``TeacherConfig.autocast="bfloat16"`` runs
the encoder and the decoder under ``torch.autocast`` in bf16 (meant for the GPU, about half the
activation memory and several times the speed there; on the CPU it works but is slow). Mask
logits leave the model as float32 either way. The default ``"off"`` is plain fp32.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from goose_lib.ontology import IGNORE_INDEX
from goose_lib.paths import EMBEDDED
from goose_lib.teacher.boxes import BoxSet, box_pixels
from goose_lib.teacher.config import DEFAULT_TEACHER, TeacherConfig

NONE = IGNORE_INDEX  # value of teacher_cls / teacher_region where the teacher says nothing




@dataclass(frozen=True)
class TeacherMaps:
    """Teacher output of one image: three HxW uint8 maps (see module doc) and the boxes used."""

    teacher_cls: np.ndarray
    teacher_prob: np.ndarray
    teacher_region: np.ndarray
    boxes: BoxSet
    box_scores: np.ndarray  # (N,) float32 predicted IoU of each box's chosen mask


def tracker_image_size(model: torch.nn.Module) -> int:
    """The fixed input size of a Sam3TrackerModel."""
    size = model.config.prompt_encoder_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


class Teacher:
    """A Sam3TrackerModel wrapped for box prompting. ``calls`` counts encoder / decoder calls."""

    def __init__(self, model: torch.nn.Module, cfg: TeacherConfig = DEFAULT_TEACHER) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.image_size = tracker_image_size(model)
        self.calls = {"encode": 0, "decode": 0, "images": 0}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,S,S) float in [-1,1] -> the decoder's embeddings, finest first:
        [(B,C0,4g,4g), (B,C1,2g,2g), (B,C,g,g)], with ``no_memory_embedding`` added per
        ``cfg.no_memory_level``."""
        self.calls["encode"] += 1
        with self._precision():
            return encode_image(self.model, pixel_values, self.cfg.no_memory_level)

    def _precision(self) -> Any:
        """``torch.autocast`` in bf16 when ``cfg.autocast`` asks for it, else nothing."""
        import contextlib

        if self.cfg.autocast == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def decode(self, embeddings: list[torch.Tensor], boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """boxes (B, n, 4) model-frame xyxy -> (logits (B, n, 4g, 4g), iou (B, n)) of the chosen mask."""
        self.calls["decode"] += 1
        with self._precision():
            out = self.model(image_embeddings=embeddings, input_boxes=boxes, multimask_output=self.cfg.multimask)
        masks, iou = out.pred_masks, out.iou_scores  # (B, n, k, h, w), (B, n, k)
        best = iou.argmax(dim=-1)  # (B, n)
        idx = best[..., None, None, None].expand(-1, -1, 1, *masks.shape[-2:])
        logits = masks.gather(2, idx).squeeze(2)
        return logits.float(), iou.gather(2, best[..., None]).squeeze(-1).float()

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], boxsets: Sequence[BoxSet]) -> list[TeacherMaps]:
        """Teacher maps for a few images (HxWx3 uint8 each) with their boxes (image frame)."""
        from goose_lib.models.sam3 import preprocess

        if len(images) != len(boxsets):
            raise ValueError(f"{len(images)} images but {len(boxsets)} box sets")
        results: list[TeacherMaps] = []
        for start in range(0, len(images), self.cfg.image_batch):
            imgs = list(images[start:start + self.cfg.image_batch])
            sets = list(boxsets[start:start + self.cfg.image_batch])
            results.extend(self._predict_batch(imgs, sets, preprocess))
        return results

    def _predict_batch(self, images: list[np.ndarray], sets: list[BoxSet], preprocess: Any) -> list[TeacherMaps]:
        for img, bs in zip(images, sets):
            if img.shape[:2] != (bs.height, bs.width):
                raise ValueError(f"image of shape {img.shape[:2]} but boxes for {(bs.height, bs.width)}")
        self.calls["images"] += len(images)
        nmax = max(len(bs) for bs in sets)
        logits_per = [[] for _ in sets]
        scores_per = [[] for _ in sets]
        if nmax:
            x = torch.cat([preprocess(img, self.image_size) for img in images]).to(self.device, self.dtype)
            emb = self.encode(x)
            s = self.image_size
            for lo in range(0, nmax, self.cfg.box_batch):
                hi = min(lo + self.cfg.box_batch, nmax)
                boxes = torch.zeros(len(sets), hi - lo, 4)
                boxes[..., 2:] = 1.0  # padding box (dropped below)
                for b, bs in enumerate(sets):
                    part = bs.xyxy[lo:hi]
                    if len(part):
                        scale = np.array([s / bs.width, s / bs.height] * 2, np.float32)
                        boxes[b, : len(part)] = torch.from_numpy(part * scale)
                logits, iou = self.decode(emb, boxes.to(self.device, self.dtype))
                for b, bs in enumerate(sets):
                    k = max(0, min(hi, len(bs)) - lo)
                    logits_per[b].append(logits[b, :k].float().cpu())
                    scores_per[b].append(iou[b, :k].float().cpu())
        out = []
        for b, bs in enumerate(sets):
            lg = torch.cat(logits_per[b]) if logits_per[b] else torch.zeros(0, 1, 1)
            sc = torch.cat(scores_per[b]).numpy() if scores_per[b] else np.zeros(0, np.float32)
            cls, prob, region = compose(lg, bs, self.cfg.mask_threshold, self.cfg.tie_margin, self.cfg.overlap)
            out.append(TeacherMaps(cls, prob, region, bs, sc.astype(np.float32)))
        return out


def encode_image(model: torch.nn.Module, pixel_values: torch.Tensor,
                 no_memory_level: Literal["original", "transformers"] = "original") -> list[torch.Tensor]:
    """Image embeddings for the tracker's mask decoder (see :meth:`Teacher.encode`).

    ``"transformers"`` equals ``model.get_image_embeddings(pixel_values)`` in transformers 5.23
    (the embedding lands on the discarded x0.5 level); ``"original"`` adds it to the x1 level.
    """
    with torch.no_grad():
        feats = model.get_image_features(pixel_values, return_dict=True).fpn_hidden_states
    sizes = model.backbone_feature_sizes
    bsz = pixel_values.shape[0]
    emb = [f.permute(1, 2, 0).reshape(bsz, -1, *size) for f, size in zip(feats, sizes)]
    if no_memory_level == "original":
        emb[-1] = emb[-1] + model.no_memory_embedding.reshape(1, -1, 1, 1)
    elif no_memory_level != "transformers":
        raise ValueError(f"no_memory_level must be 'original' or 'transformers', got {no_memory_level!r}")
    return emb


def _interp_matrix(out_len: int, in_len: int, start: int, stop: int) -> torch.Tensor:
    """(stop - start, in_len) weights of 1-D bilinear resampling (``align_corners=False``, as
    ``F.interpolate``) from ``in_len`` to ``out_len`` samples, for output rows start..stop-1."""
    dst = torch.arange(start, stop, dtype=torch.float64)
    src = ((dst + 0.5) * (in_len / out_len) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(in_len - 1)
    i1 = (i0 + 1).clamp_max(in_len - 1)
    l1 = src - i0
    m = torch.zeros(stop - start, in_len, dtype=torch.float64)
    rows = torch.arange(stop - start)
    m.index_put_((rows, i0), 1 - l1, accumulate=True)
    m.index_put_((rows, i1), l1, accumulate=True)
    return m.float()


def box_probability(logits: torch.Tensor, pix: Sequence[int], h: int, w: int,
                    mats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mask probability inside one box: sigmoid of the low-res logits (h_lr, w_lr) bilinearly
    upsampled to the image (h, w), computed only for the box's pixels ``pix = (x1, y1, x2, y2)``
    (two small matrix products instead of a full-image upsampling). ``mats``: the full
    (h, h_lr) and (w, w_lr) matrices of :func:`_interp_matrix`, when reused across boxes."""
    x1, y1, x2, y2 = (int(v) for v in pix)
    if mats is None:
        ay = _interp_matrix(h, logits.shape[-2], y1, y2)
        ax = _interp_matrix(w, logits.shape[-1], x1, x2)
    else:
        ay, ax = mats[0][y1:y2], mats[1][x1:x2]
    return torch.sigmoid(ay @ logits.float() @ ax.T)


def _image_mats(logits: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _interp_matrix(h, logits.shape[-2], 0, h), _interp_matrix(w, logits.shape[-1], 0, w)


BoxProbability = Callable[[int], torch.Tensor]  # box index j -> its mask probability on box_pixels' range of j


def compose(logits: torch.Tensor, boxes: BoxSet, threshold: float = 0.5, tie_margin: float = 0.05,
            overlap: Literal["smallest_box", "max_prob"] = "smallest_box") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-box mask logits (N, h, w) in the model frame -> (teacher_cls, teacher_prob,
    teacher_region), HxW uint8 each, by the rule in the module doc (SAM3's masks as the
    probability source of :func:`compose_probabilities`)."""
    h, w = boxes.height, boxes.width
    pix = box_pixels(boxes.xyxy, h, w)
    mats = _image_mats(logits, h, w) if len(boxes) else None
    return compose_probabilities(lambda j: box_probability(logits[j], pix[j], h, w, mats), boxes, threshold,
                                 tie_margin, overlap)


def compose_probabilities(probability: BoxProbability, boxes: BoxSet, threshold: float = 0.5,
                          tie_margin: float = 0.05, overlap: Literal["smallest_box", "max_prob"] = "smallest_box"
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The composition rule of the module doc over any mask source: ``probability(j)`` is box
    j's mask probability (float, shape of ``box_pixels(boxes.xyxy, H, W)[j]``'s range: rows
    y1:y2, columns x1:x2) -> (teacher_cls, teacher_prob, teacher_region), HxW uint8 each."""
    h, w = boxes.height, boxes.width
    cls_map = np.full((h, w), NONE, np.uint8)
    prob_map = np.zeros((h, w), np.uint8)
    region_map = np.full((h, w), NONE, np.uint8)
    if len(boxes) == 0:
        return cls_map, prob_map, region_map
    if overlap == "smallest_box":
        return _compose_smallest(probability, boxes, threshold, cls_map, prob_map, region_map)
    if overlap != "max_prob":
        raise ValueError(f"overlap must be 'smallest_box' or 'max_prob', got {overlap!r}")
    classes = np.unique(boxes.classes)
    # per-class max probability inside the class's boxes; -1 where no box of the class covers
    per_class = torch.full((len(classes), h, w), -1.0)
    pix = box_pixels(boxes.xyxy, h, w)
    cls_index = {int(c): i for i, c in enumerate(classes)}
    for j in range(len(boxes)):
        x1, y1, x2, y2 = pix[j]
        k = cls_index[int(boxes.classes[j])]
        p = probability(j)
        per_class[k, y1:y2, x1:x2] = torch.maximum(per_class[k, y1:y2, x1:x2], p)
    if len(classes) > 1:
        top2, arg = per_class.topk(2, dim=0)
        best, second = top2[0], top2[1]
    else:
        best, arg = per_class[0], torch.zeros((1, h, w), dtype=torch.long)
        second = torch.full((h, w), -1.0)
    covered = best >= 0
    region_cls = torch.from_numpy(classes.astype(np.int64))[arg[0]]
    confident = covered & (best >= threshold)
    tie = confident & (second >= threshold) & (best - second < tie_margin)
    region_np = region_cls.numpy()
    cov = covered.numpy()
    region_map[cov] = region_np[cov]
    prob_map[cov] = np.round(best.clamp(0, 1).numpy()[cov] * 255).astype(np.uint8)
    ok = (confident & ~tie).numpy()
    cls_map[ok] = region_np[ok]
    return cls_map, prob_map, region_map


def _compose_smallest(probability: BoxProbability, boxes: BoxSet, threshold: float, cls_map: np.ndarray,
                      prob_map: np.ndarray, region_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``"smallest_box"`` rule: paint boxes from the largest to the smallest."""
    h, w = boxes.height, boxes.width
    pix = box_pixels(boxes.xyxy, h, w)
    area = (pix[:, 2] - pix[:, 0]) * (pix[:, 3] - pix[:, 1])
    order = np.argsort(-area, kind="stable")
    for j in order:
        x1, y1, x2, y2 = pix[j]
        p = probability(int(j)).numpy()
        c = int(boxes.classes[j])
        region_map[y1:y2, x1:x2] = c
        prob_map[y1:y2, x1:x2] = np.round(p * 255).astype(np.uint8)
        cls_map[y1:y2, x1:x2][p >= threshold] = c
    return cls_map, prob_map, region_map


def load_teacher(sam3_checkpoint: str | os.PathLike = EMBEDDED, *, cfg: TeacherConfig = DEFAULT_TEACHER,
                 device: str = "auto", dtype: torch.dtype = torch.float32) -> Teacher:
    """Load the SAM3 tracker of ``sam3_checkpoint`` strictly (``models.sam3.load_tracker``) and wrap it."""
    from goose_lib.models.sam3 import load_tracker
    from goose_lib.paths import resolve_device

    return Teacher(load_tracker(sam3_checkpoint, device=resolve_device(device), dtype=dtype), cfg)
