"""Metrics against hand-computed answers and torchmetrics' MulticlassJaccardIndex."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from goose_lib.config import EvalProtocol
from goose_lib.metrics import (
    COUNTERS,
    ConfusionMatrix,
    MetricError,
    category_counts,
    compute_scores,
    pick_counter,
    score_maps,
)
from goose_lib.ontology import GooseClass, Ontology

IGNORE_VOID = EvalProtocol("ignore_void")
VOID_AS_CLASS = EvalProtocol("void_as_class")


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return Ontology.load()


@pytest.fixture(scope="module")
def small() -> Ontology:
    """4 classes: 0 void, 1 and 2 in category 'ground', 3 in 'sky'."""
    cats = {0: "void", 1: "ground", 2: "ground", 3: "sky"}
    classes = [GooseClass(i, f"c{i}", (i, i, i), cats[i], False) for i in range(4)]
    return Ontology(classes, ["void", "ground", "sky"], "test")


def _random_pair(rng: np.random.Generator, shape=(37, 53), k=64) -> tuple[np.ndarray, np.ndarray]:
    label = rng.integers(0, k, shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.6, label, rng.integers(0, k, shape)).astype(np.uint8)
    label[rng.random(shape) < 0.05] = 255
    return pred, label


def _torchmetrics_iou(pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    m = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)
    m.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
    return m.compute().numpy().astype(np.float64)


def test_hand_computed_small(small: Ontology) -> None:
    label = np.array([[0, 1, 1, 2], [2, 3, 3, 255]], dtype=np.uint8)
    pred = np.array([[1, 1, 2, 2], [2, 3, 0, 3]], dtype=np.uint8)
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    expected = np.array([[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [1, 0, 0, 1]])
    np.testing.assert_array_equal(cm.counts, expected)

    s = compute_scores(cm.counts, small, VOID_AS_CLASS)
    # class 0: tp 0, union 1+1 = 2 -> 0; class 1: 1/(2+2-1); class 2: 2/(2+3-2); class 3: 1/(2+1-1)
    np.testing.assert_allclose(s.class_iou, [0, 1 / 3, 2 / 3, 1 / 2])
    assert s.miou == pytest.approx((0 + 1 / 3 + 2 / 3 + 1 / 2) / 4)
    # categories (void=0, ground=1, sky=2): ground tp = 4, row 4, col 5 -> 4/5; sky 1/(2+1-1)
    assert s.category_iou == pytest.approx({"ground": 4 / 5, "sky": 1 / 2})
    assert s.category_miou == pytest.approx(0.65)
    assert s.composite == pytest.approx((s.miou + 0.65) / 2)
    assert s.excluded_classes == [] and s.protocol == "void_as_class"

    s = compute_scores(cm.counts, small, IGNORE_VOID)
    # GT void pixel (0,0) dropped: class 1 loses an FP -> 1/(2+1-1); class 0 not scored.
    assert np.isnan(s.class_iou[0]) and s.excluded_classes == [0]
    np.testing.assert_allclose(s.class_iou[1:], [1 / 2, 2 / 3, 1 / 2])
    assert s.category_iou == pytest.approx({"ground": 4 / 4, "sky": 1 / 2})
    np.testing.assert_array_equal(s.support, [0, 2, 2, 2])


def test_absent_classes_are_excluded_and_named(small: Ontology) -> None:
    label = np.array([[1, 1, 1]], dtype=np.uint8)
    pred = np.array([[1, 1, 2]], dtype=np.uint8)
    s = score_maps(pred, label, small, IGNORE_VOID)
    assert s.excluded_classes == [0, 3]
    assert s.class_iou[1] == pytest.approx(2 / 3) and s.class_iou[2] == 0.0
    assert s.miou == pytest.approx(1 / 3)
    assert s.excluded_categories == ["sky"] and s.category_miou == pytest.approx(1.0)
    d = s.to_dict()
    assert d["class_iou"][0] is None and d["class_iou"][3] is None
    assert d["category_iou"] == {"ground": 1.0, "sky": None}


@pytest.mark.parametrize("seed", [0, 1])
def test_class_iou_matches_torchmetrics(onto: Ontology, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, label = _random_pair(rng)
    ref = _torchmetrics_iou(pred, label, 64)
    s = score_maps(pred, label, onto, VOID_AS_CLASS)
    present = ~np.isnan(s.class_iou)
    np.testing.assert_allclose(s.class_iou[present], ref[present], rtol=1e-6)
    assert s.miou == pytest.approx(ref[present].mean())

    # ignore_void == dropping ground-truth void pixels entirely (label 0 -> ignore)
    label_dropped = np.where(label == 0, 255, label).astype(np.uint8)
    ref_iv = _torchmetrics_iou(pred, label_dropped, 64)
    s_iv = score_maps(pred, label, onto, IGNORE_VOID)
    scored = ~np.isnan(s_iv.class_iou)
    assert not scored[0]
    np.testing.assert_allclose(s_iv.class_iou[scored], ref_iv[scored], rtol=1e-6)


def test_category_iou_matches_torchmetrics_on_category_maps(onto: Ontology) -> None:
    rng = np.random.default_rng(3)
    pred, label = _random_pair(rng, (64, 48))
    c2c = np.append(onto.class_to_category, 255).astype(np.uint8)  # 255 stays ignored
    lut = np.full(256, 255, dtype=np.uint8)
    lut[:64] = c2c[:64]
    ref = _torchmetrics_iou(lut[pred], lut[label], onto.num_categories)
    s = score_maps(pred, label, onto, VOID_AS_CLASS)
    for g in onto.evaluated_categories:
        assert s.category_iou[onto.categories[g]] == pytest.approx(ref[g], rel=1e-6)
    assert s.composite == pytest.approx((s.miou + s.category_miou) / 2)


def test_category_counts_derivation_matches_direct_counting(onto: Ontology) -> None:
    rng = np.random.default_rng(4)
    pred, label = _random_pair(rng)
    cm = ConfusionMatrix(64)
    cm.update(pred, label)
    lut = np.full(256, 255, dtype=np.uint8)
    lut[:64] = onto.class_to_category
    direct = ConfusionMatrix(onto.num_categories)
    direct.update(lut[pred], lut[label])
    np.testing.assert_array_equal(category_counts(cm.counts, onto), direct.counts)


def test_accumulation_torch_and_dtypes_agree() -> None:
    rng = np.random.default_rng(5)
    pairs = [_random_pair(rng) for _ in range(3)]
    whole = ConfusionMatrix(64)
    whole.update(np.stack([p for p, _ in pairs]), np.stack([lab for _, lab in pairs]))
    acc, acc_t = ConfusionMatrix(64), ConfusionMatrix(64)
    for p, lab in pairs:
        own = acc.update(p.astype(np.int64), lab.astype(np.int32))
        acc_t.update(torch.from_numpy(p).long(), torch.from_numpy(lab))
        assert own.sum() == (lab != 255).sum()
    np.testing.assert_array_equal(acc.counts, whole.counts)
    np.testing.assert_array_equal(acc_t.counts, whole.counts)
    merged = ConfusionMatrix(64)
    merged.merge(acc)
    np.testing.assert_array_equal(merged.counts, whole.counts)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_torch_device_path(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(6)
    pred, label = _random_pair(rng)
    ref = ConfusionMatrix(64)
    ref.update(pred, label)
    cm = ConfusionMatrix(64)
    cm.update(torch.from_numpy(pred).to(device), torch.from_numpy(label).to(device))
    np.testing.assert_array_equal(cm.counts, ref.counts)
    with pytest.raises(MetricError, match="prediction holds id 64"):
        cm.update(torch.full((2, 2), 64, device=device), torch.zeros((2, 2), dtype=torch.uint8,
                                                                      device=device))


@pytest.mark.parametrize("pred, label, message", [
    (np.array([[0, 64]]), np.array([[0, 1]]), "prediction holds id 64"),
    (np.array([[0, 255]], np.uint8), np.array([[0, 255]], np.uint8), "prediction holds id 255"),
    (np.array([[0, 1]]), np.array([[0, 70]], np.uint8), r"label holds id\(s\) \[70\]"),
    (np.array([[0, 1]]), np.array([[0, -1]]), "label holds id -1"),
    (np.array([[0, 1]]), np.array([[0, 300]]), "label holds id 300"),
    (np.array([[0.0, 1.0]]), np.array([[0, 1]]), "dtype float64"),
    (np.array([[0, 1, 2]]), np.array([[0, 1]]), "shape"),
])
def test_bad_maps_raise(pred: np.ndarray, label: np.ndarray, message: str) -> None:
    cm = ConfusionMatrix(64)
    with pytest.raises(MetricError, match=message):
        cm.update(pred, label, where="x/y_labelids.png")
    assert cm.counts.sum() == 0  # nothing half-counted
    with pytest.raises(MetricError, match="^x/y_labelids.png: "):
        cm.update(pred, label, where="x/y_labelids.png")


def test_unknown_protocol_and_class_count(onto: Ontology) -> None:
    with pytest.raises(ValueError):
        ConfusionMatrix(256)
    with pytest.raises(MetricError, match="4 classes"):
        compute_scores(np.zeros((4, 4), np.int64), onto)
    s = compute_scores(np.zeros((64, 64), np.int64), onto)
    assert np.isnan(s.miou) and np.isnan(s.composite) and len(s.excluded_classes) == 64


@pytest.mark.parametrize("k", [2, 64, 128, 129, 255])
def test_counts_match_a_dense_reference_on_both_bincount_paths(k: int) -> None:
    """K <= 128 counts through torch's int16 bincount, larger K through numpy's; both equal a
    plain np.add.at reference, ignore label 255 included."""
    rng = np.random.default_rng(k)
    label = rng.integers(0, k, (37, 53)).astype(np.uint8)
    label[rng.random(label.shape) < 0.1] = 255
    pred = rng.integers(0, k, (37, 53)).astype(np.uint8)
    ref = np.zeros((k, k), dtype=np.int64)
    keep = label != 255
    np.add.at(ref, (label[keep].astype(int), pred[keep].astype(int)), 1)
    cm = ConfusionMatrix(k)
    cm.update(pred, label)
    np.testing.assert_array_equal(cm.counts, ref)


def _dense_reference(pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    ref = np.zeros((256, k), dtype=np.int64)  # rows 0..255: out-of-range labels land in rows >= k
    np.add.at(ref, (label.reshape(-1).astype(int), pred.reshape(-1).astype(int)), 1)
    return ref


@pytest.mark.parametrize("path", sorted(COUNTERS))
@pytest.mark.parametrize("k,n", [(2, 1), (64, 0), (64, 5000), (128, 70_000), (129, 3000), (255, 3000)])
def test_every_counting_path_equals_the_dense_reference(path: str, k: int, n: int) -> None:
    """Each CPU path (whatever pick_counter would choose) gives the full (256, K) counts of a plain
    np.add.at reference, ignore rows and out-of-range label rows included; the int16 path only
    where its index fits (K <= 128)."""
    if path == "torch_serial" and k > 128:
        pytest.skip("label * K + pred overflows int16")
    rng = np.random.default_rng(n + k)
    label = rng.integers(0, 256, n).astype(np.uint8)  # every label value, 255 and invalid ones too
    pred = rng.integers(0, k, n).astype(np.uint8)
    np.testing.assert_array_equal(COUNTERS[path](pred, label, k), _dense_reference(pred, label, k))


@pytest.mark.parametrize("threads", [1, 2])
def test_counts_do_not_depend_on_torch_threads_and_restore_them(threads: int) -> None:
    rng = np.random.default_rng(threads)
    pred, label = _random_pair(rng, (300, 401))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cm = ConfusionMatrix(64)
        cm.update(pred, label)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(cm.counts, _dense_reference(pred, label, 64)[:64])


def test_pick_counter_by_index_width() -> None:
    assert pick_counter(64) == "torch_serial" and pick_counter(128) == "torch_serial"
    assert pick_counter(129) == "numpy" and pick_counter(255) == "numpy"

# --- protocols (issue 13): toolkit, ignore_void_category, the old name ------------------------------

def test_old_protocol_name_maps_to_what_it_does() -> None:
    assert EvalProtocol("ignore_void").void == "ignore_class0"
    assert EvalProtocol("ignore_void") == EvalProtocol("ignore_class0")
    assert EvalProtocol().void == "ignore_void_category"
    with pytest.raises(ValueError, match="unknown void protocol"):
        EvalProtocol("drop")  # type: ignore[arg-type]


def test_toolkit_protocol_matches_torchmetrics_and_the_toolkits_filtered_mean(onto: Ontology) -> None:
    """The dataset toolkit: torchmetrics' Jaccard index over all 64 classes, no ignore index,
    absent classes 0; "Mean" over all 64, "Filtered Mean" over the non-zero IoUs."""
    rng = np.random.default_rng(7)
    label = rng.integers(0, 40, (41, 57)).astype(np.uint8)  # classes 40..63 absent from the label
    pred = np.where(rng.random(label.shape) < 0.5, label, rng.integers(0, 50, label.shape)).astype(np.uint8)
    m = MulticlassJaccardIndex(num_classes=64, average=None, zero_division=0)
    m.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
    ref = m.compute().double()
    s = score_maps(pred, label, onto, EvalProtocol("toolkit"))
    np.testing.assert_allclose(s.class_iou, ref.numpy(), rtol=1e-6)
    assert (s.class_iou[50:] == 0).all() and s.excluded_classes == []
    assert s.miou == pytest.approx(float(ref.mean()))
    assert s.filtered_miou == pytest.approx(float(ref[torch.nonzero(ref)].mean()))
    assert len(s.category_iou) == 12 and "void" in s.category_iou  # every category, void included


def test_ignore_void_category_drops_every_void_class(onto: Ontology) -> None:
    void = [c for c in range(64) if onto.classes[c].category == "void"]
    assert void == [0, 8, 56]
    label = np.array([[0, 8, 56, 1, 1, 2]], dtype=np.uint8)
    pred = np.array([[1, 1, 8, 1, 8, 2]], dtype=np.uint8)
    s = score_maps(pred, label, onto, EvalProtocol("ignore_void_category"))
    # GT void pixels gone: class 1 = 1 tp / (2 GT + 0 FP) ... pixel 4 predicted 8 on GT 1 is a miss
    assert s.class_iou[1] == pytest.approx(1 / 2) and s.class_iou[2] == 1.0
    assert all(np.isnan(s.class_iou[c]) for c in void) and set(void) <= set(s.excluded_classes)
    np.testing.assert_array_equal(s.support[void], 0)
    # equal to dropping those pixels by hand (label -> 255) and scoring with void_as_class
    dropped = np.where(np.isin(label, void), 255, label).astype(np.uint8)
    ref = score_maps(pred, dropped, onto, VOID_AS_CLASS)
    keep = [c for c in range(64) if c not in void]
    np.testing.assert_array_equal(s.class_iou[keep], ref.class_iou[keep])
    assert s.to_dict()["category_iou"] == ref.to_dict()["category_iou"]
    # the class-0-only variant still scores ego_vehicle (8): predicted on a non-void pixel -> IoU 0
    c0 = score_maps(pred, label, onto, EvalProtocol("ignore_class0"))
    assert c0.class_iou[8] == 0.0 and np.isnan(c0.class_iou[0]) and c0.miou < s.miou


def test_all_protocols_side_by_side(onto: Ontology) -> None:
    from goose_lib.config import PROTOCOLS
    from goose_lib.metrics import compute_all_protocols

    rng = np.random.default_rng(8)
    pred, label = _random_pair(rng)
    cm = ConfusionMatrix(64)
    cm.update(pred, label)
    every = compute_all_protocols(cm.counts, onto)
    assert list(every) == list(PROTOCOLS)
    for name, s in every.items():
        assert s.to_dict() == compute_scores(cm.counts, onto, EvalProtocol(name)).to_dict()
