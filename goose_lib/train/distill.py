"""Self-distillation from the cached SAM3 teacher, on selected classes only.

Modes (:class:`DistillConfig.mode`):

- ``"soft"``: an extra loss (:func:`distill_loss`). Inside the prompt boxes of a selected class c
  (pixels with ``teacher_region == c``), the student's softmax probability of c is pulled toward
  the teacher's probability ``teacher_prob / 255`` with a binary cross-entropy; the mean over those
  pixels is returned (0 when a batch has none). The training loop adds ``weight * distill_loss``.
- ``"replace"``: no extra loss; :func:`replace_labels` rewrites the hard label before the usual
  cross-entropy: inside the boxes of a selected class c, pixels the teacher assigns to c become c,
  and pixels labelled c that the teacher does not assign to c become 255 (ignored: the teacher
  disagrees and we do not know the right class). Pixels outside those boxes keep their label.
- ``"off"``: neither. An empty class list turns any mode off (:func:`resolve_distill` says so).

Teacher maps come from the cache (``teacher.cache``) and are attached to dataset items *before*
augmentation by :class:`TeacherTargets`, so the joint geometry (``data.augment``) moves them with
the image. Batched maps are (B, S, S) tensors (uint8 or int64), logits (B, C, S, S).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from goose_lib.ontology import IGNORE_INDEX

DistillMode = Literal["off", "soft", "replace"]


@dataclass(frozen=True)
class DistillConfig:
    """Distillation as a training parameter set (the loop's TrainConfig maps onto it)."""

    mode: DistillMode = "off"  # see the module doc
    weight: float = 1.0  # multiplier of the soft loss in the total loss
    classes: tuple[int, ...] = ()  # class ids distilled (from a selection.json, or by hand)
    cache_dir: str | None = None  # key folder of the teacher cache (teacher.cache.key_dir)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if self.mode != "off" and self.classes and not self.cache_dir:
            raise ValueError(f"distillation mode {self.mode!r} needs cache_dir (a teacher cache folder)")
        bad = [c for c in self.classes if not 0 <= c < IGNORE_INDEX]
        if bad:
            raise ValueError(f"classes must be class ids 0..254, got {bad}")

    @property
    def active(self) -> bool:
        return self.mode != "off" and bool(self.classes)


def resolve_distill(mode: DistillMode = "off", weight: float = 1.0, classes: Sequence[int] = (),
                    selection: str | None = None, cache_dir: str | None = None) -> tuple[DistillConfig, str]:
    """The effective :class:`DistillConfig` and a one-line message for the training log.

    ``selection``: a selection.json (``teacher.selection.save_selection``); its classes are used
    when ``classes`` is empty. No classes -> mode ``"off"`` and a message saying training runs
    without distillation.
    """
    from goose_lib.teacher.selection import load_selection

    chosen = tuple(int(c) for c in classes)
    source = "classes parameter"
    if not chosen and selection:
        chosen = tuple(load_selection(selection))
        source = str(selection)
    if mode == "off":
        return DistillConfig("off", weight, chosen, cache_dir), "distillation: off"
    if not chosen:
        return (DistillConfig("off", weight, (), cache_dir),
                f"distillation: no classes selected ({source}) -> training WITHOUT distillation")
    if not cache_dir:
        raise ValueError(f"distillation mode {mode!r} on {len(chosen)} classes needs a teacher cache folder")
    cfg = DistillConfig(mode, weight, chosen, cache_dir)
    return cfg, f"distillation: {mode}, weight {weight}, {len(chosen)} classes {list(chosen)} from {source}"


def _class_mask(region: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """bool map: region value is one of ``classes``."""
    table = torch.zeros(256, dtype=torch.bool, device=region.device)
    table[torch.as_tensor(list(classes), dtype=torch.long, device=region.device)] = True
    return table[region.long().clamp(0, 255)]


def protected(label: torch.Tensor, teacher_region: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Pixels whose label a teacher target must not overrule: labelled with a real class that is
    neither the pixel's target class nor distilled itself (void 0 and ignore 255 are not protected)."""
    lab = label.long()
    return ((lab != teacher_region.long()) & ~_class_mask(label, classes) & (lab != 0) & (lab != IGNORE_INDEX))


def distill_loss(logits: torch.Tensor, teacher_cls: torch.Tensor, teacher_prob: torch.Tensor,
                 teacher_region: torch.Tensor, classes: Sequence[int], *, mode: DistillMode = "soft",
                 label: torch.Tensor | None = None, protect: bool = True,
                 per: Literal["region", "labelled"] = "region") -> torch.Tensor:
    """Unweighted distillation loss (scalar, differentiable w.r.t. ``logits``).

    logits (B, C, S, S); teacher maps (B, S, S) (``teacher_cls`` is unused by the soft loss; kept
    for a uniform signature). ``"soft"``: mean over pixels with ``teacher_region`` in ``classes``
    of BCE(softmax(logits)[region class], teacher_prob / 255). ``label`` given: pixels
    :func:`protected` by their label are left out (a selected class's targets never pull a pixel
    labelled with another, undistilled class toward it). ``per``: the mean's denominator, the
    distilled pixels (``"region"``) or every labelled pixel (``"labelled"``, needs ``label``: the
    cross-entropy's, so a target weighs per pixel what a label weighs). Other modes, or no such pixel: 0.
    """
    zero = logits.sum() * 0.0
    if mode != "soft" or not classes:
        return zero
    if logits.shape[-2:] != teacher_region.shape[-2:]:
        raise ValueError(f"distill_loss: logits {tuple(logits.shape)} vs teacher maps {tuple(teacher_region.shape)}")
    sel = _class_mask(teacher_region, classes)
    if label is not None and protect:
        sel = sel & ~protected(label, teacher_region, classes)
    if not bool(sel.any()):
        return zero
    # Contiguous (n, C) logit rows (reductions over the last dim, not strided ones over dim 1),
    # through a closed-form backward (_SoftBCE). Mostly selected maps: every pixel's row, the
    # others weighted 0 (a permuted copy is far cheaper than boolean indexing); else only the
    # selected rows.
    c_all = logits.shape[1]
    scale = 1.0
    if per == "labelled":
        if label is None:
            raise ValueError("distill_loss: per='labelled' needs the label")
        scale = float(sel.sum()) / max(float((label != IGNORE_INDEX).sum()), 1.0)
    if scale != 1.0:
        return scale * distill_loss(logits, teacher_cls, teacher_prob, teacher_region, classes, mode=mode,
                                    label=label, protect=protect)
    if float(sel.float().mean()) >= DENSE_FROM:
        x = logits.float().permute(0, 2, 3, 1).reshape(-1, c_all)
        c = teacher_region.reshape(-1).long().clamp(0, c_all - 1)
        return _SoftBCE.apply(x, c, teacher_prob.reshape(-1).float() / 255.0, sel.reshape(-1).float())
    x = logits.float().permute(0, 2, 3, 1)[sel]
    c = teacher_region[sel].long().clamp(0, c_all - 1)
    return _SoftBCE.apply(x, c, teacher_prob[sel].float() / 255.0, None)


DENSE_FROM = 0.25  # selected-pixel share from which distill_loss works on every pixel's row


class _SoftBCE(torch.autograd.Function):
    """Weighted mean over rows i of BCE(p_i[c_i], t_i): rows x (n, C), p = softmax(x), classes c
    (n,), targets t (n,), weights w (n,) of 0/1 or None (all 1).

    Forward, finite for any logits: with o = the classes other than c, LSE_o = max_o + log
    sum_o exp(x_o - max_o) and LSE = logaddexp(x_c, LSE_o): log p_c = x_c - LSE and
    log(1 - p_c) = LSE_o - LSE. Backward (d/dx of the mean): (p_c - t) w / W for class c and
    (t - p_c) w / W * softmax_o(x)_j for j != c (W = sum w), so no 1 / (1 - p_c) blows up. One
    exp pass instead of two logsumexp passes plus autograd's graph over a scattered copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        idx = c[:, None]
        x_c = x.gather(1, idx)[:, 0]
        e = x.scatter(1, idx, float("-inf"))  # the other classes
        m_o = e.max(dim=1, keepdim=True).values
        e.sub_(m_o).exp_()  # exp(x_j - max_o), 0 at c
        o_sum = e.sum(dim=1)
        lse_o = m_o[:, 0] + o_sum.log()
        lse = torch.logaddexp(x_c, lse_o)
        log_p, log_q = x_c - lse, lse_o - lse
        bce = -(t * log_p + (1.0 - t) * log_q)
        if w is None:
            total = bce.new_tensor(float(bce.shape[0]))
            loss = bce.sum() / total
        else:
            total = w.sum().clamp_min(1.0)
            loss = (bce * w).sum() / total
        ctx.save_for_backward(e, o_sum, log_p.exp(), c, t, w if w is not None else total, total)
        ctx.weighted = w is not None
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        e, o_sum, p_c, c, t, w, total = ctx.saved_tensors
        scale = grad / total
        if ctx.weighted:
            scale = scale * w
        g = e * ((t - p_c) * scale / o_sum)[:, None]
        g.scatter_(1, c[:, None], ((p_c - t) * scale)[:, None])
        return g, None, None, None


def replace_labels(label: torch.Tensor, teacher_cls: torch.Tensor, teacher_prob: torch.Tensor,
                   teacher_region: torch.Tensor, classes: Sequence[int], *, protect: bool = False) -> torch.Tensor:
    """The label with the teacher's masks of ``classes`` in place (rule in the module doc).

    All maps (…, H, W); returns a new tensor of ``label``'s dtype. ``teacher_prob`` is unused
    (``teacher_cls`` is already thresholded by the teacher). ``protect``: pixels :func:`protected`
    by their label keep it.
    """
    if not classes:
        return label.clone()
    out = label.clone()
    sel = _class_mask(teacher_region, classes)
    if protect:
        sel = sel & ~protected(label, teacher_region, classes)
    region = teacher_region.long()
    agree = sel & (teacher_cls.long() == region)
    drop = sel & (label.long() == region) & ~agree
    out[drop] = IGNORE_INDEX
    out[agree] = teacher_cls[agree].to(out.dtype)
    return out


class TeacherTargets:
    """Dataset-item transform attaching the cached teacher maps (HxW uint8) to an item.

    ``cache_dir``: a key folder of the teacher cache (holds manifest.json). The item needs
    ``"sample"`` (for its key) and ``"image"`` (for the size check). ``on_missing``: ``"error"``
    (default) raises naming the missing file; ``"empty"`` attaches maps meaning "no teacher"
    (cls / region 255, prob 0), for unlabelled extras without teacher output.
    """

    def __init__(self, cache_dir: str | os.PathLike, *, on_missing: Literal["error", "empty"] = "error",
                 expected_fingerprint: str | None = None) -> None:
        from goose_lib.teacher.cache import open_cache

        self.cache_dir = Path(cache_dir)
        self.manifest = open_cache(self.cache_dir)
        fp = self.manifest.get("key", {}).get("checkpoint_fingerprint")
        if expected_fingerprint is not None and fp != expected_fingerprint:
            raise ValueError(f"{self.cache_dir}: teacher cache was written by checkpoint {str(fp)[:12]}…, "
                             f"not {expected_fingerprint[:12]}…; rebuild it")
        self.on_missing = on_missing

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        from goose_lib.teacher.cache import item_path, read_item

        sample = item["sample"]
        h, w = item["image"].shape[:2]
        path = item_path(self.cache_dir, sample.key)
        out = dict(item)
        if not path.exists():
            if self.on_missing == "error":
                raise FileNotFoundError(f"{path}: no teacher output for {sample.key}; build the teacher "
                                        "cache for this split (goose teacher) or pass on_missing='empty'")
            out["teacher_cls"] = np.full((h, w), IGNORE_INDEX, np.uint8)
            out["teacher_prob"] = np.zeros((h, w), np.uint8)
            out["teacher_region"] = np.full((h, w), IGNORE_INDEX, np.uint8)
            return out
        t = read_item(path)
        if t["teacher_cls"].shape != (h, w):
            raise ValueError(f"{path}: teacher maps are {t['teacher_cls'].shape}, image {sample.image} is "
                             f"{(h, w)}; the cache is stale, rebuild it")
        for k in ("teacher_cls", "teacher_prob", "teacher_region"):
            out[k] = t[k]
        return out


# --- what the training loop uses (from TrainConfig's distill_* fields) ------------------------

@dataclass
class DistillSetup:
    """Active distillation: what to attach before augmentation and how to use it in the loss."""

    mode: str  # "soft" | "replace"
    weight: float
    classes: tuple[int, ...]
    attach: Any  # TeacherTargets: item -> item with teacher_cls / teacher_prob / teacher_region
    protect: bool = True  # labels of undistilled classes are never overruled (see protected())
    per: str = "labelled"  # the soft loss's mean: over every labelled pixel | over the distilled pixels

    def _maps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [k for k in ("teacher_cls", "teacher_prob", "teacher_region") if k not in batch]
        if missing:
            raise KeyError(f"batch lacks teacher maps {missing}; TeacherTargets must run before augmentation")
        return batch["teacher_cls"], batch["teacher_prob"], batch["teacher_region"]

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return distill_loss(logits, *self._maps(batch), self.classes, mode="soft",
                            label=batch["label"], protect=self.protect, per=self.per)

    def replace(self, batch: dict[str, Any]) -> torch.Tensor:
        return replace_labels(batch["label"], *self._maps(batch), self.classes, protect=self.protect)


def make_distill(cfg: Any) -> tuple[DistillSetup | None, str | None]:
    """``(setup or None, note)``: None when distillation is off or has no classes; ``note`` says
    why training runs without it when it was asked for (for the warning and the log)."""
    if cfg.distill_mode == "off":
        return None, None
    dcfg, message = resolve_distill(cfg.distill_mode, cfg.distill_weight, cfg.distill_classes,
                                    cfg.distill_selection or None, cfg.teacher_cache or None)
    if not dcfg.active:
        return None, message
    return DistillSetup(dcfg.mode, dcfg.weight, dcfg.classes, TeacherTargets(dcfg.cache_dir),
                        protect=cfg.distill_protect, per=cfg.distill_per), None
