"""The foundation recipe: pre-training the tiny SAM3 (detector vision encoder + tracker, one
shared ViT backbone, as in ``facebook/sam3``) on the foundation corpus
(:mod:`goose_lib.data.corpus`), offline, once. The result is shipped with the package
(:mod:`goose_lib.models.foundation`); nothing here runs at demo time.

Two objectives in SAM3's spirit, summed every step:

- **promptable segmentation** (tracker: backbone, tracker neck, prompt encoder, mask decoder):
  a box (jittered by up to ``box_jitter`` of its size) or one positive point inside the region
  -> mask: a point's best multimask candidate (ambiguous), every candidate of a box (not
  ambiguous: whichever candidate the teacher's IoU head picks must be right), plus the IoU head's
  MSE on every candidate (:func:`box_mask_loss`). The loss counts **the whole mask frame**: counting only in-box pixels
  makes "segment every object, ignore the prompt" a perfect solution (the known answer in
  ``tests/test_pretrain.py``);
- **concepts** (detector: backbone, detector neck): per-pixel multi-label BCE over the corpus's
  own vocabulary :data:`goose_lib.data.corpus.CONCEPTS` from a 1x1 head on the neck (the head is
  dropped afterwards, as SAM3's text side is for the student).

Deterministic in the recipe (threads fixed by ``threads``); checkpoints every
``checkpoint_every`` steps into its run folder and resumes from there after a kill.
:func:`recipe_hash` covers the recipe's values and the source of this module and the corpus.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from goose_lib.io import sha256_json

RECIPE_VERSION = "foundation-v1"


@dataclass(frozen=True)
class FoundationRecipe:
    """Every value of the foundation pre-training (a different value = a different model)."""

    steps: int = 7000
    n_images: int = 4000  # training corpus images (corpus seed 0), rendered on first use
    images_per_step: int = 8
    prompts_per_image: int = 6
    point_share: float = 0.25  # share of prompts that are one positive point instead of a box
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # share of steps of linear warm-up, then cosine to 0
    box_jitter: float = 0.05  # max box-edge shift, as a fraction of the box's width / height
    concept_weight: float = 1.0
    seed: int = 0  # torch init of the concept head + prompt sampling; the corpus seed is 0 for training
    held_out: int = 64  # held-out corpus images (corpus seed 1) for the card's metrics
    threads: int = 2
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        if min(self.steps, self.n_images, self.images_per_step, self.prompts_per_image, self.threads,
               self.checkpoint_every) < 1:
            raise ValueError("FoundationRecipe: steps, n_images, images_per_step, prompts_per_image, threads and "
                             "checkpoint_every must be >= 1")
        if self.lr <= 0 or not 0 <= self.box_jitter < 0.5 or not 0 <= self.point_share <= 1 or self.held_out < 0:
            raise ValueError("FoundationRecipe: lr > 0, 0 <= box_jitter < 0.5, 0 <= point_share <= 1 and "
                             "held_out >= 0 are required")


DEFAULT_RECIPE = FoundationRecipe()


def recipe_hash(recipe: FoundationRecipe = DEFAULT_RECIPE) -> str:
    """sha256 over the recipe's values, its version, the corpus module's source and the source of
    every piece of this module that a training step runs (not the measurements or the run loop)."""
    from goose_lib.data import corpus

    parts = (box_mask_loss, box_frame_targets, shared_forward, ConceptHead, _jitter, _Corpus, Pretrainer)
    sources = {"corpus": inspect.getsource(corpus), **{p.__name__: inspect.getsource(p) for p in parts}}
    return sha256_json({"version": RECIPE_VERSION, "recipe": asdict(recipe), "sources": sources})


# --- the promptable objective --------------------------------------------------------------------

def box_mask_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
                  inside: torch.Tensor, *, candidates: str = "best") -> torch.Tensor:
    """logits (n,k,h,w), iou_pred (n,k), target and the prompt's box (n,h,w), all in the mask
    frame -> scalar. The whole frame counts: BCE averaged inside and outside the box separately
    (a small object is not drowned by the background, and a mask spilling onto other objects
    outside its box is penalised), plus Dice over the whole frame; ``candidates="best"``: the best
    candidate's loss (SAM's recipe for ambiguous prompts), ``"all"``: their mean; plus the IoU
    head's MSE against each candidate's actual whole-frame IoU."""
    t = target[:, None].expand_as(logits)
    w = inside[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    b_in = (bce * w).sum(dim=(-2, -1)) / w.sum(dim=(-2, -1)).clamp_min(1)
    b_out = (bce * (1 - w)).sum(dim=(-2, -1)) / (1 - w).sum(dim=(-2, -1)).clamp_min(1)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * t).sum(dim=(-2, -1)) + 1) / (p.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1)) + 1)
    per = b_in + b_out + dice  # (n, k)
    best = per.min(dim=1).values if candidates == "best" else per.mean(dim=1)
    with torch.no_grad():
        hard = (logits > 0).float()
        actual = (hard * t).sum(dim=(-2, -1)) / ((hard + t) > 0).float().sum(dim=(-2, -1)).clamp_min(1)
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


def shared_forward(tracker: Any, detector_neck: nn.Module, pixel_values: torch.Tensor
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One backbone pass -> (the tracker's decoder inputs as :func:`embeddings`, the detector neck's maps)."""
    venc = tracker.vision_encoder
    h = venc.backbone(pixel_values).last_hidden_state
    g = pixel_values.shape[-1] // venc.config.backbone_config.patch_size
    spatial = h.view(h.shape[0], g, g, -1).permute(0, 3, 1, 2)
    fpn, _ = venc.neck(spatial)
    emb = [tracker.mask_decoder.conv_s0(fpn[0]), tracker.mask_decoder.conv_s1(fpn[1]),
           fpn[2] + tracker.no_memory_embedding.reshape(1, -1, 1, 1)]
    det, _ = detector_neck(spatial)
    return emb, list(det)


class ConceptHead(nn.Module):
    """Per-pixel concept logits at the finest neck level: 1x1 convs on the x4 and the x1 levels (summed)."""

    def __init__(self, channels: int, n_concepts: int) -> None:
        super().__init__()
        self.fine = nn.Conv2d(channels, n_concepts, 1)
        self.coarse = nn.Conv2d(channels, n_concepts, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        fine = self.fine(maps[0])
        return fine + F.interpolate(self.coarse(maps[2]), size=fine.shape[-2:], mode="bilinear", align_corners=False)


# --- the training loop ---------------------------------------------------------------------------

def _jitter(boxes: np.ndarray, frac: float, size: int, rng: np.random.Generator) -> np.ndarray:
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    out = boxes + rng.uniform(-frac, frac, boxes.shape) * wh
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
    return np.clip(out, 0, size).astype(np.float32)


def _image_size(model: Any) -> int:
    size = model.config.prompt_encoder_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


class _Corpus:
    """Training corpus images, rendered on first use and kept (region maps, not mask stacks)."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed, self.size, self.items = seed, size, {}

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if index not in self.items:
            from goose_lib.data.corpus import corpus_sample

            s = corpus_sample(self.seed, index, size=self.size)
            regions = np.zeros((self.size, self.size), np.int16)
            for j, m in enumerate(s.masks):
                regions[m] = j + 1
            self.items[index] = (s.image, regions, s.boxes, s.concepts.astype(np.uint8))
        return self.items[index]


class Pretrainer:
    """The recipe's state: models, optimiser, schedule, random streams, losses; one :meth:`step` at a time."""

    def __init__(self, recipe: FoundationRecipe, base: str | os.PathLike) -> None:
        from goose_lib.data.corpus import CONCEPTS
        from goose_lib.models.sam3 import load_tracker, load_vision_encoder

        self.recipe = recipe
        self.recipe_hash = recipe_hash(recipe)  # of the code this process runs (read once, here)
        self.tracker = load_tracker(base)
        detector = load_vision_encoder(base)
        self.detector_neck = detector.neck
        self.vision_config = detector.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            self.head = ConceptHead(int(detector.config.fpn_hidden_size), len(CONCEPTS))
        self.size = _image_size(self.tracker)
        self.corpus = _Corpus(0, self.size)
        tr = [p for n, p in self.tracker.named_parameters()
              if n.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.", "no_memory_embedding"))]
        params = tr + list(self.detector_neck.parameters()) + list(self.head.parameters())
        for p in self.tracker.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        warm = max(1, int(recipe.warmup * recipe.steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, recipe.steps - warm)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
        self.rng = np.random.default_rng([recipe.seed, 11])
        self.step_index = 0
        self.losses: list[dict[str, float]] = []

    def modules(self) -> list[nn.Module]:
        return [self.tracker, self.detector_neck, self.head]

    def step(self) -> dict[str, float]:
        from goose_lib.data.corpus import concept_targets
        from goose_lib.models.sam3 import preprocess

        r, rng, size = self.recipe, self.rng, self.size
        for m in self.modules():
            m.train()
        picks = [int(j) for j in rng.choice(r.n_images, size=r.images_per_step, replace=False)]
        items = [self.corpus[j] for j in picks]
        emb, det = shared_forward(self.tracker, self.detector_neck, preprocess([it[0] for it in items], size))
        mask_size = tuple(emb[0].shape[-2:])
        mask_loss = torch.zeros(())
        for b, (_, regions, boxes, _) in enumerate(items):
            n = len(boxes)
            sel = np.sort(rng.choice(n, size=min(r.prompts_per_image, n), replace=False))
            masks = np.stack([regions == j + 1 for j in sel])
            target, inside = box_frame_targets(masks, boxes[sel], size, size, mask_size)
            is_point = rng.random(len(sel)) < r.point_share
            one = [e[b:b + 1] for e in emb]
            for kind in (False, True):
                idx = np.nonzero(is_point == kind)[0]
                if not len(idx):
                    continue
                if kind:
                    pts = []
                    for j in idx:
                        ys, xs = np.nonzero(masks[j])
                        k = int(rng.integers(len(ys)))
                        pts.append([xs[k] + 0.5, ys[k] + 0.5])
                    out = self.tracker(image_embeddings=one, multimask_output=True,
                                       input_points=torch.tensor(pts, dtype=torch.float32)[None, :, None],
                                       input_labels=torch.ones(1, len(idx), 1, dtype=torch.long))
                else:
                    bx = _jitter(boxes[sel][idx], r.box_jitter, size, rng)
                    out = self.tracker(image_embeddings=one, input_boxes=torch.from_numpy(bx)[None],
                                       multimask_output=True)
                ti = torch.from_numpy(idx)
                # a point is ambiguous (best candidate, SAM's rule); a box is not: every candidate
                # learns its object, so whichever the IoU head picks is right
                mask_loss = mask_loss + box_mask_loss(out.pred_masks[0], out.iou_scores[0], target[ti], inside[ti],
                                                      candidates="best" if kind else "all"
                                                      ) * len(idx) / len(sel) / len(items)
        logits = self.head(det)
        targets = torch.stack([concept_targets(it[3].astype(np.int64), tuple(logits.shape[-2:])) for it in items])
        concept_loss = F.binary_cross_entropy_with_logits(logits, targets)
        total = mask_loss + r.concept_weight * concept_loss
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.sched.step()
        self.step_index += 1
        rec = {"loss": float(total.detach()), "mask": float(mask_loss.detach()),
               "concept": float(concept_loss.detach())}
        self.losses.append(rec)
        return rec

    # resumable state
    def state(self) -> dict[str, Any]:
        return {"recipe_hash": self.recipe_hash, "step": self.step_index, "losses": self.losses,
                "tracker": self.tracker.state_dict(), "detector_neck": self.detector_neck.state_dict(),
                "head": self.head.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any], where: str) -> None:
        if state.get("recipe_hash") != self.recipe_hash:
            raise ValueError(f"{where}: written by another recipe (hash {str(state.get('recipe_hash'))[:12]}, "
                             f"this one {self.recipe_hash[:12]}); use a new run folder")
        self.tracker.load_state_dict(state["tracker"])
        self.detector_neck.load_state_dict(state["detector_neck"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.rng.bit_generator.state = state["rng"]
        self.step_index = int(state["step"])
        self.losses = list(state["losses"])


def run_recipe(run_dir: str | os.PathLike, recipe: FoundationRecipe = DEFAULT_RECIPE, *,
               base: str | os.PathLike | None = None, steps: int | None = None,
               progress: bool = False) -> Pretrainer:
    """Run (or resume) the recipe in ``run_dir`` up to ``steps`` (default: all) steps; the state is
    written to ``run_dir/state.pt`` every ``checkpoint_every`` steps and at the end (atomically)."""
    from goose_lib.models.tiny import ensure_tiny_checkpoint

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)  # the recipe's numbers depend on it; restored on return
    try:
        return _run(run_dir, recipe, base if base is not None else ensure_tiny_checkpoint(), steps, progress)
    finally:
        torch.set_num_threads(threads)


def _run(run_dir: Path, recipe: FoundationRecipe, base: str | os.PathLike, steps: int | None,
         progress: bool) -> Pretrainer:
    from tqdm.auto import tqdm

    from goose_lib.io import atomic_write_bytes

    trainer = Pretrainer(recipe, base)
    state_file = run_dir / "state.pt"
    if state_file.is_file():
        trainer.load_state(torch.load(state_file, weights_only=False), str(state_file))
    end = recipe.steps if steps is None else min(steps, recipe.steps)

    def save() -> None:
        import io

        buf = io.BytesIO()
        torch.save(trainer.state(), buf)
        atomic_write_bytes(state_file, buf.getvalue())

    import json
    import time

    first, t0 = trainer.step_index, time.monotonic()
    bar = tqdm(total=end, initial=trainer.step_index, desc="foundation", disable=not progress)
    while trainer.step_index < end:
        rec = trainer.step()
        bar.update(1)
        bar.set_postfix(mask=f"{rec['mask']:.3f}", concept=f"{rec['concept']:.3f}", refresh=False)
        if trainer.step_index % recipe.checkpoint_every == 0 or trainer.step_index == end:
            save()
    bar.close()
    if trainer.step_index > first:  # one line per session: the run's wall time survives kills and resumes
        with open(run_dir / "sessions.jsonl", "a") as f:
            f.write(json.dumps({"from_step": first, "to_step": trainer.step_index,
                                "wall_seconds": round(time.monotonic() - t0, 1)}) + "\n")
    for m in trainer.modules():
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return trainer


def training_seconds(run_dir: str | os.PathLike) -> float | None:
    """The run's training wall time summed over its sessions (``sessions.jsonl``), None if a
    session did not record it (every step must be covered, from step 0)."""
    import json

    path = Path(run_dir) / "sessions.jsonl"
    if not path.is_file():
        return None
    sessions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    covered = 0
    for s in sorted(sessions, key=lambda s: s["from_step"]):
        if s["from_step"] > covered:
            return None
        covered = max(covered, s["to_step"])
    return float(sum(s["wall_seconds"] for s in sessions))


# --- measurements ----------------------------------------------------------------------------------

@torch.no_grad()
def best_masks(model: Any, emb: list[torch.Tensor], boxes: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) bool: the tracker's chosen mask (highest IoU score, logits > 0) per box."""
    out = model(image_embeddings=emb, input_boxes=torch.from_numpy(np.asarray(boxes, np.float32))[None],
                multimask_output=True)
    lg, sc = out.pred_masks[0], out.iou_scores[0]
    best = lg.gather(1, sc.argmax(1)[:, None, None, None].expand(-1, 1, *lg.shape[-2:]))
    return (F.interpolate(best, size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0).numpy()


SIZE_BINS = ((0, 200), (200, 1000), (1000, 5000), (5000, None))  # region area in pixels of the 224-px frame


@torch.no_grad()
def held_out_iou(model: Any, seed: int = 1, n: int = 64) -> dict[str, Any]:
    """Mean in-box IoU over every region of ``n`` corpus images of corpus seed ``seed`` (exact
    boxes), at the corpus frame: the tracker's chosen mask and the box filled; also per region
    size (``by_size``: :data:`SIZE_BINS`, area in pixels of the model frame)."""
    from goose_lib.data.corpus import corpus_sample
    from goose_lib.models.sam3 import preprocess

    size = _image_size(model)
    model.eval()
    teacher, fill, area = [], [], []
    for i in range(n):
        s = corpus_sample(seed, i, size=size)
        if not len(s.boxes):
            continue
        pred = best_masks(model, embeddings(model, preprocess(s.image, size)), s.boxes, size)
        for j, (x1, y1, x2, y2) in enumerate(s.boxes.astype(int)):
            m, p = s.masks[j, y1:y2, x1:x2], pred[j, y1:y2, x1:x2]
            teacher.append((m & p).sum() / max((m | p).sum(), 1))
            fill.append(m.sum() / m.size)
            area.append(int(m.sum()))
    t, f, a = np.array(teacher), np.array(fill), np.array(area)
    by_size = []
    for lo, hi in SIZE_BINS:
        k = (a >= lo) & (a < (hi if hi is not None else np.inf))
        if k.any():
            by_size.append({"min_area": lo, "max_area": hi, "boxes": int(k.sum()), "teacher": float(t[k].mean()),
                            "box_fill": float(f[k].mean())})
    return {"teacher": float(t.mean()), "box_fill": float(f.mean()), "boxes": len(t), "images": n,
            "corpus_seed": seed, "by_size": by_size}


@torch.no_grad()
def held_out_concepts(trainer: Pretrainer, seed: int = 1, n: int = 64) -> dict[str, Any]:
    """Per-concept IoU (logit > 0 vs area share >= 0.5 at the head's frame) on held-out corpus images."""
    from goose_lib.data.corpus import CONCEPTS, concept_targets, corpus_sample
    from goose_lib.models.sam3 import preprocess

    inter = np.zeros(len(CONCEPTS))
    union = np.zeros(len(CONCEPTS))
    for m in trainer.modules():
        m.eval()
    for i in range(n):
        s = corpus_sample(seed, i, size=trainer.size)
        _, det = shared_forward(trainer.tracker, trainer.detector_neck, preprocess(s.image, trainer.size))
        logits = trainer.head(det)[0]
        t = concept_targets(s.concepts, tuple(logits.shape[-2:])).numpy() >= 0.5
        p = (logits > 0).numpy()
        inter += (p & t).sum(axis=(1, 2))
        union += (p | t).sum(axis=(1, 2))
    iou = {c: float(inter[k] / union[k]) for k, c in enumerate(CONCEPTS) if union[k] > 0}
    return {"mean": float(np.mean(list(iou.values()))), "per_concept": iou, "images": n, "corpus_seed": seed}
