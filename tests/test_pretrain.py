"""The foundation recipe: its promptable loss has no shortcut (known answers), its corpus is its
own, its run resumes bit for bit, and what it writes loads strictly by the facebook/sam3 paths."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from goose_lib.data.corpus import CONCEPTS, CORPUS_SEED, KIND_CONCEPTS, concept_table, corpus_sample
from goose_lib.models.pretrain import (
    FoundationRecipe,
    Pretrainer,
    box_frame_targets,
    box_mask_loss,
    embeddings,
    recipe_hash,
    run_recipe,
    shared_forward,
)
from goose_lib.models.sam3 import load_tracker, load_vision_encoder, preprocess

SMALL = FoundationRecipe(steps=4, n_images=4, images_per_step=2, prompts_per_image=3, held_out=0, threads=1,
                         checkpoint_every=2)


def _disc_and_bar(size: int = 224) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright disc (left) and a dark bar (right) on grey: image, masks (2,S,S), boxes (2,4)."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - 80) ** 2 + (xx - 60) ** 2 < 35 ** 2
    bar = (yy > 40) & (yy < 190) & (xx > 150) & (xx < 175)
    img = np.full((size, size, 3), 128, np.uint8)
    img[disc] = (230, 200, 40)
    img[bar] = (30, 40, 160)
    masks = np.stack([disc, bar])
    boxes = np.array([[25, 45, 96, 116], [151, 41, 175, 190]], np.float32)
    return img, masks, boxes


def test_the_loss_has_no_segment_everything_shortcut() -> None:
    """Known answer: each box's own object scores 0 loss-wise better than the union of both
    objects; counting only in-box pixels (the old loss) could not tell them apart."""
    _, masks, boxes = _disc_and_bar()
    target, inside = box_frame_targets(masks, boxes, 224, 224, (64, 64))
    union = target.amax(0, keepdim=True).expand_as(target)
    right = (target * 2 - 1)[:, None] * 20  # logits: the own object
    wrong = (union * 2 - 1)[:, None] * 20  # logits: both objects for each box
    iou = torch.ones(2, 1)
    own, both = float(box_mask_loss(right, iou, target, inside)), float(box_mask_loss(wrong, iou, target, inside))
    assert own < 0.05 and both > own + 0.5, (own, both)
    # the old in-box loss's view: inside each box the two predictions are identical
    assert torch.equal(right[:, 0] * inside, wrong[:, 0] * inside)


@pytest.mark.slow
def test_two_boxes_on_one_image_get_two_different_masks(tiny_checkpoint: Path) -> None:
    """The smallest promptable case, fitted from the random tiny tracker with the recipe's loss:
    the disc's box gives the disc, the bar's box gives the bar (not their union)."""
    img, masks, boxes = _disc_and_bar()
    torch.manual_seed(0)
    model = load_tracker(tiny_checkpoint)
    params = [p for n, p in model.named_parameters()
              if n.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.", "no_memory_embedding"))]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = preprocess(img, 224)
    target, inside = box_frame_targets(masks, boxes, 224, 224, (64, 64))
    model.train()
    for _ in range(250):
        out = model(image_embeddings=embeddings(model, x), input_boxes=torch.from_numpy(boxes)[None],
                    multimask_output=True)
        loss = box_mask_loss(out.pred_masks[0], out.iou_scores[0], target, inside, candidates="all")
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    from goose_lib.models.pretrain import best_masks

    with torch.no_grad():
        pred = best_masks(model, embeddings(model, x), boxes, 224)

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max((a | b).sum(), 1))

    assert iou(pred[0], pred[1]) < 0.2, iou(pred[0], pred[1])
    assert iou(pred[0], masks[0]) > 0.7 and iou(pred[1], masks[1]) > 0.7, (iou(pred[0], masks[0]), iou(pred[1], masks[1]))


def test_corpus_is_deterministic_exact_and_its_own() -> None:
    from goose_lib.data.world import WORLD_SPECS

    a, b = corpus_sample(0, 3), corpus_sample(0, 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, corpus_sample(1, 3).image)  # held-out seed: other images
    assert all(p.seed < CORPUS_SEED for p in WORLD_SPECS.values())  # seeds disjoint from every world
    assert not (a.masks.sum(0) > 1).any() and len(a.boxes) >= 5
    for m, (x1, y1, x2, y2) in zip(a.masks, a.boxes.astype(int)):
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
    # the vocabulary is not a renaming of the generator's (GOOSE-named) kinds: many kinds share one
    # concept set, and no concept is one kind
    sets = [frozenset(v) for v in KIND_CONCEPTS.values()]
    assert len(set(sets)) < len(sets) - 10
    assert concept_table().shape[1] == len(CONCEPTS) and (concept_table().sum(0) >= 1).all()


def test_one_backbone_pass_gives_the_teachers_embeddings_and_the_students_neck(tiny_checkpoint: Path) -> None:
    trainer = Pretrainer(SMALL, tiny_checkpoint)
    x = preprocess(corpus_sample(0, 0).image, 224)
    with torch.no_grad():
        emb, det = shared_forward(trainer.tracker, trainer.detector_neck, x)
        for got, want in zip(emb, embeddings(trainer.tracker, x)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        ref = load_vision_encoder(tiny_checkpoint)(x).fpn_hidden_states
        for got, want in zip(det, ref):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_run_resumes_bit_for_bit(tiny_checkpoint: Path, tmp_path: Path) -> None:
    whole = run_recipe(tmp_path / "whole", SMALL, base=tiny_checkpoint)
    run_recipe(tmp_path / "split", SMALL, base=tiny_checkpoint, steps=2)  # "killed" after its checkpoint
    resumed = run_recipe(tmp_path / "split", SMALL, base=tiny_checkpoint)
    assert resumed.step_index == whole.step_index == 4
    assert resumed.losses == whole.losses
    for (k, a), b in zip(whole.tracker.state_dict().items(), resumed.tracker.state_dict().values()):
        assert torch.equal(a, b), k
    other = replace(SMALL, lr=2e-3)
    assert recipe_hash(other) != recipe_hash(SMALL)
    with pytest.raises(ValueError, match="another recipe"):
        run_recipe(tmp_path / "split", other, base=tiny_checkpoint)


def test_written_foundation_loads_strictly_with_the_trained_tensors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from goose_lib.models.foundation import write_foundation

    trainer = run_recipe(tmp_path / "run", replace(SMALL, steps=2), base=tiny_checkpoint)
    out = write_foundation(trainer, tmp_path / "found", base=tiny_checkpoint,
                           held_out={"teacher": 0.5, "box_fill": 0.4, "boxes": 1, "images": 1, "corpus_seed": 1},
                           concepts={"mean": 0.1, "per_concept": {"sky": 0.1}})
    tracker = load_tracker(out)  # the teacher's strict path
    vision = load_vision_encoder(out)  # the student's strict path
    for k, v in trainer.tracker.state_dict().items():
        assert torch.equal(tracker.state_dict()[k], v), k
    for k, v in trainer.detector_neck.state_dict().items():
        assert torch.equal(vision.neck.state_dict()[k], v), k
    for k, v in vision.backbone.state_dict().items():  # one shared backbone, as in facebook/sam3
        assert torch.equal(tracker.vision_encoder.backbone.state_dict()[k], v), k
    random = load_tracker(tiny_checkpoint)
    assert not torch.equal(random.mask_decoder.iou_token.weight, tracker.mask_decoder.iou_token.weight)
    assert (out / "MODEL_CARD.md").read_text().count("0.500") == 1 and "sky 0.10" in (out / "MODEL_CARD.md").read_text()
