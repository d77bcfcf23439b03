"""The SAM3 box-prompted teacher: encode once, batching/padding parity, no_memory_embedding level,
multimask choice, box scaling and the composition rule (known answers)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from goose_lib.teacher.boxes import make_boxset
from goose_lib.teacher.prompt import Teacher, TeacherConfig, compose, encode_image


def _image(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _boxes(n: int, h: int = 60, w: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, w - 20, n)
    y1 = rng.uniform(0, h - 20, n)
    xyxy = np.stack([x1, y1, x1 + rng.uniform(5, 20, n), y1 + rng.uniform(5, 20, n)], 1)
    return make_boxset(xyxy, rng.integers(1, 6, n), ["component"] * n, h, w)


def test_encoder_runs_once_per_image_whatever_the_box_count(tracker) -> None:
    t = Teacher(tracker, TeacherConfig(box_batch=16))
    out = t.predict([_image()], [_boxes(50)])[0]
    assert t.calls == {"encode": 1, "decode": 4, "images": 1}  # ceil(50 / 16) decoder calls
    assert out.teacher_cls.shape == (60, 80) and out.teacher_cls.dtype == np.uint8
    assert len(out.box_scores) == 50
    t2 = Teacher(tracker)
    t2.predict([_image()], [_boxes(0)])
    assert t2.calls["encode"] == 0  # no box, no model call


def test_chunking_and_multi_image_padding_do_not_change_results(tracker) -> None:
    imgs = [_image(seed=1), _image(70, 50, seed=2)]
    sets = [_boxes(7, seed=3), _boxes(2, 70, 50, seed=4)]
    alone = [Teacher(tracker, TeacherConfig(box_batch=64)).predict([i], [b])[0] for i, b in zip(imgs, sets)]
    t = Teacher(tracker, TeacherConfig(box_batch=3, image_batch=2))
    both = t.predict(imgs, sets)
    assert t.calls["encode"] == 1 and t.calls["decode"] == 3  # one batched encode; 7 boxes padded per 3
    for a, b in zip(alone, both):
        assert np.abs(a.teacher_prob.astype(int) - b.teacher_prob.astype(int)).max() <= 1
        assert (a.teacher_region == b.teacher_region).all()
        np.testing.assert_allclose(a.box_scores, b.box_scores, atol=1e-4)


def test_no_memory_embedding_goes_to_the_x1_level(tracker) -> None:
    """transformers adds it to the discarded x0.5 level; 'original' adds it to the g x g map."""
    from goose_lib.models.sam3 import preprocess

    x = preprocess(_image(), 224)
    old = tracker.no_memory_embedding.detach().clone()
    try:
        with torch.no_grad():
            tracker.no_memory_embedding.copy_(torch.linspace(-1, 1, old.numel()).reshape(old.shape))
        ref = tracker.get_image_embeddings(x)
        hf = encode_image(tracker, x, "transformers")
        orig = encode_image(tracker, x, "original")
        for a, b in zip(ref, hf):
            assert torch.equal(a, b)  # reproduces transformers exactly
        assert torch.equal(orig[0], ref[0]) and torch.equal(orig[1], ref[1])
        g = tracker.backbone_feature_sizes[-1]
        assert tuple(orig[-1].shape[-2:]) == tuple(g)
        diff = orig[-1] - ref[-1]
        torch.testing.assert_close(diff, tracker.no_memory_embedding.reshape(1, -1, 1, 1).expand_as(diff))
        box = torch.tensor([[[20.0, 30.0, 150.0, 170.0]]])
        a = Teacher(tracker).decode(orig, box)[0]
        b = Teacher(tracker).decode(hf, box)[0]
        assert (a - b).abs().max() > 0.1 * b.abs().max()  # it matters when the embedding is not zero
    finally:
        with torch.no_grad():
            tracker.no_memory_embedding.copy_(old)


class _FakeTracker(torch.nn.Module):
    """Returns fixed candidates: candidate k of box j has logit (k - 1) * (j + 1) and IoU score
    [0.1, 0.9, 0.3][k] -> the decoder must pick k = 1 (logit 0 for every box)."""

    def __init__(self, size: int = 56) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        pe = SimpleNamespace(image_size=size)
        self.config = SimpleNamespace(prompt_encoder_config=pe)
        self.backbone_feature_sizes = [[16, 16], [8, 8], [4, 4]]
        self.no_memory_embedding = torch.nn.Parameter(torch.zeros(1, 1, 2))
        self.seen: list[torch.Tensor] = []

    def get_image_features(self, x, return_dict=True):
        b = x.shape[0]
        return SimpleNamespace(fpn_hidden_states=[torch.zeros(s[0] * s[1], b, 2) for s in self.backbone_feature_sizes])

    def forward(self, image_embeddings, input_boxes, multimask_output):
        self.seen.append(input_boxes.clone())
        b, n = input_boxes.shape[:2]
        k = torch.arange(3).float() - 1
        j = torch.arange(n).float() + 1
        masks = (k[None, :] * j[:, None])[None, :, :, None, None].expand(b, n, 3, 16, 16)
        iou = torch.tensor([0.1, 0.9, 0.3]).expand(b, n, 3)
        return SimpleNamespace(pred_masks=masks, iou_scores=iou)


def test_multimask_choice_by_iou_and_box_scaling() -> None:
    fake = _FakeTracker(size=56)
    t = Teacher(fake)
    bs = make_boxset(np.array([[10, 20, 30, 40], [0, 0, 100, 50]], np.float32), [3, 4], ["instance"] * 2, 50, 100)
    out = t.predict([_image(50, 100)], [bs])[0]
    np.testing.assert_allclose(out.box_scores, [0.9, 0.9])
    # chosen logit 0 -> probability 0.5 everywhere inside each box -> prob 128, region set
    assert out.teacher_prob[25, 20] == 128
    np.testing.assert_allclose(fake.seen[0][0], [[5.6, 22.4, 16.8, 44.8], [0, 0, 56, 56]], rtol=1e-5)


def test_compose_rule_known_answer() -> None:
    h, w = 10, 10
    bs = make_boxset(np.array([[0, 0, 6, 10], [4, 0, 10, 10], [0, 8, 2, 10]], np.float32), [1, 2, 3],
                     ["component"] * 3, h, w)
    lg = torch.zeros(3, 10, 10)
    lg[0] = torch.logit(torch.tensor(0.9))  # box of class 1: p = 0.9
    lg[1] = torch.logit(torch.tensor(0.88))  # class 2: p = 0.88 (tie with 0.9 within 0.05)
    lg[1, :, 8:] = torch.logit(torch.tensor(0.3))  # low confidence on its right edge
    lg[2] = torch.logit(torch.tensor(0.4))
    cls, prob, region = compose(lg, bs, threshold=0.5, tie_margin=0.05, overlap="max_prob")
    assert cls[5, 1] == 1 and region[5, 1] == 1 and prob[5, 1] == round(0.9 * 255)
    assert cls[5, 5] == 255 and region[5, 5] == 1  # overlap 0.9 vs 0.88: tie -> none, region = best
    assert cls[5, 7] == 2 and prob[5, 7] == round(0.88 * 255)
    assert cls[5, 9] == 255 and region[5, 9] == 2 and prob[5, 9] == round(0.3 * 255)  # low confidence
    assert cls[9, 1] == 1 and region[9, 1] == 1  # class 3 (0.4) loses to class 1 (0.9)
    cls2, _, _ = compose(lg, bs, threshold=0.5, tie_margin=0.0, overlap="max_prob")
    assert cls2[5, 5] == 1  # no tie margin: highest probability wins
    empty = compose(torch.zeros(0, 4, 4), make_boxset(np.zeros((0, 4)), [], [], 5, 6))
    assert all(m.shape == (5, 6) for m in empty) and (empty[0] == 255).all() and (empty[1] == 0).all()


def test_compose_smallest_box_rule_known_answer() -> None:
    # a large box of class 50 (p = 0.9) containing a small box of class 45 whose mask is on (0.8)
    # in its left half and off (0.2) in its right half
    bs = make_boxset(np.array([[0, 0, 10, 10], [2, 2, 6, 6]], np.float32), [50, 45], ["component"] * 2, 10, 10)
    lg = torch.zeros(2, 10, 10)
    lg[0] = torch.logit(torch.tensor(0.9))
    lg[1] = torch.logit(torch.tensor(0.2))
    lg[1, :, :4] = torch.logit(torch.tensor(0.8))
    cls, prob, region = compose(lg, bs, threshold=0.5, overlap="smallest_box")
    assert cls[3, 2] == 45 and region[3, 2] == 45 and prob[3, 2] == round(0.8 * 255)  # small box wins
    assert cls[3, 5] == 50 and region[3, 5] == 45 and prob[3, 5] == round(0.2 * 255)  # large box shows through
    assert cls[8, 8] == 50 and region[8, 8] == 50 and prob[8, 8] == round(0.9 * 255)
    with pytest.raises(ValueError, match="overlap"):
        compose(lg, bs, overlap="biggest")


@pytest.mark.parametrize("h, w, lr", [(60, 80, 16), (17, 300, 64), (240, 320, 64), (10, 10, 16)])
def test_box_probability_equals_full_bilinear_upsampling(h, w, lr) -> None:
    from goose_lib.teacher.prompt import _image_mats, box_probability

    logits = torch.randn(lr, lr, generator=torch.Generator().manual_seed(h))
    full = torch.sigmoid(torch.nn.functional.interpolate(logits[None, None], size=(h, w), mode="bilinear",
                                                         align_corners=False))[0, 0]
    for pix in [(0, 0, w, h), (w // 3, h // 4, w // 2 + 1, h - 1), (w - 1, h - 1, w, h)]:
        x1, y1, x2, y2 = pix
        torch.testing.assert_close(box_probability(logits, pix, h, w), full[y1:y2, x1:x2], atol=1e-5, rtol=0)
        torch.testing.assert_close(box_probability(logits, pix, h, w, _image_mats(logits, h, w)),
                                   full[y1:y2, x1:x2], atol=1e-5, rtol=0)


def test_mask_outside_its_box_is_ignored() -> None:
    bs = make_boxset(np.array([[2, 2, 5, 5]], np.float32), [7], ["instance"], 8, 8)
    for rule in ("smallest_box", "max_prob"):
        cls, prob, region = compose(torch.full((1, 4, 4), 10.0), bs, overlap=rule)
        assert (cls == 7).sum() == 9 and (region == 7).sum() == 9 and (prob > 0).sum() == 9


def test_mismatched_boxes_raise(tracker) -> None:
    with pytest.raises(ValueError, match="boxes for"):
        Teacher(tracker).predict([_image(60, 80)], [_boxes(2, 50, 50)])


def test_adaptation_improves_the_teacher_and_saves_a_strict_checkpoint(tiny_checkpoint, tiny_root, tmp_path) -> None:
    from goose_lib.data.layout import index_split
    from goose_lib.models.sam3 import checkpoint_fingerprint, load_tracker
    from goose_lib.teacher.adapt import (
        AdaptConfig,
        adapt_teacher,
        mean_box_iou,
        prepare_examples,
        save_adapted,
        trainable_names,
    )
    from goose_lib.teacher.boxes import BoxParams

    model = load_tracker(tiny_checkpoint)
    base_encoder = {k: v.clone() for k, v in model.vision_encoder.state_dict().items()}
    samples = index_split(tiny_root, "train")
    bp = BoxParams(max_boxes=8)
    examples = prepare_examples(model, samples, bp, "original", progress=False)
    before = mean_box_iou(model, examples)
    losses = adapt_teacher(model, samples, AdaptConfig(steps=150, lr=3e-3, images_per_step=2), bp, progress=False)
    after = mean_box_iou(model, examples)
    assert len(losses) == 150 and np.mean(losses[-10:]) < np.mean(losses[:10])
    assert after > before + 0.05, (before, after)
    for k, v in model.vision_encoder.state_dict().items():
        assert torch.equal(v, base_encoder[k])  # the encoder stays frozen
    out = save_adapted(model, tiny_checkpoint, tmp_path / "adapted")
    again = load_tracker(out)  # strict: raises on any missing / unexpected key
    own = dict(model.state_dict())
    for name in trainable_names(model):
        assert torch.equal(dict(again.named_parameters())[name], own[name])
    assert checkpoint_fingerprint(out) != checkpoint_fingerprint(tiny_checkpoint)
    assert adapt_teacher(model, samples, AdaptConfig(steps=0)) == []


def test_bf16_autocast_option_runs_encoder_and_decoder_in_bf16_and_agrees_with_fp32(tracker) -> None:
    seen: list[tuple[str, bool]] = []
    hooks = [tracker.vision_encoder.register_forward_pre_hook(
                 lambda m, a: seen.append(("encoder", torch.is_autocast_enabled("cpu")))),
             tracker.mask_decoder.register_forward_pre_hook(
                 lambda m, a: seen.append(("decoder", torch.is_autocast_enabled("cpu"))))]
    try:
        img, boxes = _image(seed=5), _boxes(6, seed=6)
        fp32 = Teacher(tracker).predict([img], [boxes])[0]
        assert seen and not any(on for _, on in seen)  # default: plain fp32
        seen.clear()
        bf16 = Teacher(tracker, TeacherConfig(autocast="bfloat16")).predict([img], [boxes])[0]
        assert {name for name, _ in seen} == {"encoder", "decoder"} and all(on for _, on in seen)
    finally:
        for h in hooks:
            h.remove()
    assert next(tracker.parameters()).dtype == torch.float32  # weights untouched
    assert bf16.box_scores.dtype == np.float32
    np.testing.assert_allclose(bf16.box_scores, fp32.box_scores, atol=0.05)
    assert (bf16.teacher_region == fp32.teacher_region).mean() > 0.99
    assert np.abs(bf16.teacher_prob.astype(int) - fp32.teacher_prob.astype(int)).mean() < 8
    assert TeacherConfig().result_key() == {k: v for k, v in TeacherConfig(autocast="bfloat16").result_key().items()
                                           if k != "autocast"}
    assert TeacherConfig(autocast="bfloat16").result_key()["autocast"] == "bfloat16"  # its own cache key
