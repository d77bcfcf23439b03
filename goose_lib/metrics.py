"""Challenge metrics in two stages: confusion counts, then reductions.

1. :class:`ConfusionMatrix` accumulates a (K, K) ``int64`` confusion matrix (rows = ground-truth
   label, columns = prediction) over any number of (prediction, label) maps. Maps are numpy arrays
   or torch tensors on any device (GPU tensors counted with ``torch.bincount`` there; CPU maps by
   a single-threaded path picked by :func:`pick_counter`, never slowed by torch threads); label
   :data:`~goose_lib.ontology.IGNORE_INDEX` (255) is ignored, any other id outside ``0..K-1``
   (in the label or the prediction) raises :class:`MetricError`.
2. :func:`compute_scores` reduces a confusion matrix to per-class IoU, mIoU, category IoU over
   the non-void categories (the category confusion is derived from the class confusion via
   ``ontology.class_to_category``, never from a second pass) and the challenge composite
   ``(class mIoU + category mIoU) / 2``. All values are fractions in [0, 1], not percent.

Void protocols (:class:`goose_lib.config.EvalProtocol`; the table in the README):

- ``"ignore_void_category"`` (default): ground-truth pixels of every void-category class
  (undefined, ego_vehicle, outlier) are dropped (their rows zeroed) and those classes get no IoU;
  the category mIoU is over the 11 non-void categories: both levels leave out the same pixels.
- ``"ignore_class0"`` (old name ``"ignore_void"``): only class 0's rows are dropped; ego_vehicle
  and outlier are scored as classes (IoU 0 whenever predicted on other pixels).
- ``"void_as_class"``: nothing dropped; class 0 scored like any class.
- ``"toolkit"``: the dataset toolkit's scorer: nothing dropped, every class and every category
  (void included) scored, absent ones with IoU 0, means over all 64 / 12; ``filtered_miou`` is
  its "filtered mean" over classes with non-zero IoU.

A prediction of a dropped class on a kept pixel still counts as a miss for that pixel's class.
Outside ``toolkit``, a class (category) absent from both prediction and label after the protocol
is applied has no IoU (NaN) and is left out of the means; :class:`Scores` lists them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goose_lib.config import PROTOCOLS, EvalProtocol
from goose_lib.ontology import IGNORE_INDEX, Ontology

DEFAULT_PROTOCOL = EvalProtocol()  # "ignore_void_category"
_CHUNK = 1 << 18  # pixels per bincount chunk: keeps the uint16 index array in L2 cache


class MetricError(ValueError):
    """Maps that cannot be scored (ids out of range, mismatched shapes, non-integer dtypes)."""


def _as_numpy_int(x: np.ndarray, what: str, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.integer):
        raise MetricError(f"{where}{what} has dtype {x.dtype}; expected integer class ids (uint8)")
    if x.size:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            bad = lo if lo < 0 else hi
            raise MetricError(f"{where}{what} holds id {bad}, outside 0..255")
    return x.astype(np.uint8)


def _counts_numpy(p: np.ndarray, lab: np.ndarray, k: int) -> np.ndarray:
    """(256, K) counts of ``lab * K + p`` with numpy's bincount (any K <= 255), in chunks that keep
    the uint16 index array cache-resident. Single-threaded whatever torch's thread count."""
    out = np.zeros(256 * k, dtype=np.int64)
    for s in range(0, lab.size, _CHUNK):
        idx = lab[s:s + _CHUNK].astype(np.uint16)
        idx *= k
        idx += p[s:s + _CHUNK]
        out += np.bincount(idx, minlength=256 * k)
    return out.reshape(256, k)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch ops of the calling thread on one thread (OpenMP's thread count is per calling
    thread, so other threads are unaffected); restores the count on exit."""
    import torch

    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _counts_torch_serial(p: np.ndarray, lab: np.ndarray, k: int) -> np.ndarray:
    """(256, K) counts for K <= 128: the int16 index ``lab * K + p`` built by numpy, counted by
    torch's bincount (~2x numpy's, which converts to int64 first) on ONE thread. bincount's
    counting loop is serial anyway; only its min/max passes are parallel, and with 2+ threads on
    a busy machine their OpenMP barriers cost 10-40 ms instead of 0.1 ms."""
    import torch

    idx = lab.astype(np.int16)
    idx *= k
    idx += p
    with _one_torch_thread():
        return torch.bincount(torch.from_numpy(idx), minlength=256 * k).numpy().reshape(256, k)


COUNTERS = {"numpy": _counts_numpy, "torch_serial": _counts_torch_serial}


def pick_counter(num_classes: int) -> str:
    """The CPU counting path: ``"torch_serial"`` for K <= 128 (label * K + pred fits int16),
    else ``"numpy"``. Both are single-threaded, so neither depends on torch's thread count or
    the machine's load. Measured (1 thread): torch_serial is faster at every size from 1000
    pixels (8 vs 12 us) to 2048x1024 (1.2 vs 3.0 ms), so the size does not change the pick."""
    return "torch_serial" if num_classes <= 128 else "numpy"


class ConfusionMatrix:
    """Accumulates the (K, K) confusion matrix of label (rows) against prediction (columns).

    ``num_classes`` must be at most 255 (255 is the ignore label). ``counts`` is read-only in
    spirit: use :meth:`reset` / :meth:`merge` to change it.
    """

    def __init__(self, num_classes: int = 64) -> None:
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX}, got {num_classes}")
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.counts[:] = 0

    def merge(self, other: ConfusionMatrix | np.ndarray) -> None:
        """Add another matrix's counts (e.g. from a worker process)."""
        c = other.counts if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if c.shape != self.counts.shape:
            raise MetricError(f"cannot merge counts of shape {c.shape} into {self.counts.shape}")
        self.counts += c

    def update(self, pred: Any, label: Any, *, where: str | None = None) -> np.ndarray:
        """Count one (prediction, label) pair; return this pair's own (K, K) counts.

        ``pred``/``label``: integer maps of equal shape (HxW, or BxHxW), numpy arrays or torch
        tensors (both on the same device). ``where`` (e.g. the label file) prefixes error messages.
        """
        prefix = f"{where}: " if where else ""
        if tuple(pred.shape) != tuple(label.shape):
            raise MetricError(f"{prefix}prediction shape {tuple(pred.shape)} != label shape "
                              f"{tuple(label.shape)}")
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            torch = None
        if torch is not None and (isinstance(pred, torch.Tensor) or isinstance(label, torch.Tensor)):
            if isinstance(pred, torch.Tensor) and isinstance(label, torch.Tensor) \
                    and pred.device.type != "cpu":
                raw = self._bincount_torch(pred, label, prefix)
            else:
                pred = pred.numpy(force=True) if isinstance(pred, torch.Tensor) else pred
                label = label.numpy(force=True) if isinstance(label, torch.Tensor) else label
                raw = self._bincount_numpy(np.asarray(pred), np.asarray(label), prefix)
        else:
            raw = self._bincount_numpy(np.asarray(pred), np.asarray(label), prefix)
        own = self._check_rows(raw, prefix)
        self.counts += own
        return own

    def _bincount_numpy(self, pred: np.ndarray, label: np.ndarray, prefix: str) -> np.ndarray:
        k = self.num_classes
        p = _as_numpy_int(pred, "prediction", prefix).reshape(-1)
        lab = _as_numpy_int(label, "label", prefix).reshape(-1)
        if p.size and int(p.max()) >= k:
            raise MetricError(f"{prefix}prediction holds id {int(p.max())}, outside 0..{k - 1}")
        # read-only inputs (decoded PNGs) are fine: every path builds its own index array
        return COUNTERS[pick_counter(k)](np.ascontiguousarray(p), np.ascontiguousarray(lab), k)

    def _bincount_torch(self, pred: Any, label: Any, prefix: str) -> np.ndarray:
        import torch

        k = self.num_classes
        for t, what in ((pred, "prediction"), (label, "label")):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise MetricError(f"{prefix}{what} has dtype {t.dtype}; expected integer class ids")
        if label.dtype != torch.uint8 and label.numel():
            lo, hi = torch.aminmax(label)
            if int(lo) < 0 or int(hi) > 255:
                raise MetricError(f"{prefix}label holds id {int(lo) if int(lo) < 0 else int(hi)}, "
                                  f"outside 0..255")
        if pred.numel():
            lo, hi = torch.aminmax(pred)
            if int(lo) < 0 or int(hi) >= k:
                bad = int(lo) if int(lo) < 0 else int(hi)
                raise MetricError(f"{prefix}prediction holds id {bad}, outside 0..{k - 1}")
        idx = label.reshape(-1).to(torch.int32) * k + pred.reshape(-1).to(torch.int32)
        return torch.bincount(idx, minlength=256 * k).cpu().numpy().reshape(256, k)

    def _check_rows(self, raw: np.ndarray, prefix: str) -> np.ndarray:
        k = self.num_classes
        bad_rows = np.flatnonzero(raw[k:IGNORE_INDEX].sum(axis=1)) + k
        if bad_rows.size:
            raise MetricError(f"{prefix}label holds id(s) {bad_rows.tolist()[:10]} outside 0..{k - 1} "
                              f"(and not the ignore value {IGNORE_INDEX})")
        return raw[:k].copy()


@dataclass(frozen=True)
class Scores:
    """Reductions of one confusion matrix (fractions in [0, 1]; NaN = not scored).

    ``class_iou``: (K,) float64; ``support``: (K,) int64 ground-truth pixels per class after the
    protocol; ``category_iou``: {category name: IoU} for the non-void categories;
    ``excluded_classes``: class ids without an IoU (absent from prediction and label, or dropped by
    the protocol); ``excluded_categories``: scored categories absent from both; ``filtered_miou``:
    the mean class IoU over classes with a non-zero IoU (the toolkit's "filtered mean").
    """

    class_iou: np.ndarray
    miou: float
    category_iou: dict[str, float]
    category_miou: float
    composite: float
    excluded_classes: list[int]
    excluded_categories: list[str]
    protocol: str
    support: np.ndarray = field(repr=False)
    filtered_miou: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN -> None; keys miou, category_miou, filtered_miou, composite, class_iou (list of K),
        category_iou, protocol, excluded_classes, excluded_categories, support."""
        def f(v: float) -> float | None:
            return None if np.isnan(v) else float(v)

        return {
            "miou": f(self.miou), "category_miou": f(self.category_miou),
            "filtered_miou": f(self.filtered_miou),
            "composite": f(self.composite),
            "class_iou": [f(v) for v in self.class_iou],
            "category_iou": {k: f(v) for k, v in self.category_iou.items()},
            "protocol": self.protocol,
            "excluded_classes": list(self.excluded_classes),
            "excluded_categories": list(self.excluded_categories),
            "support": [int(v) for v in self.support],
        }


def _iou(counts: np.ndarray) -> np.ndarray:
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(axis=0) + counts.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nan) if np.all(np.isnan(x)) else float(np.nanmean(x))


def apply_protocol(counts: np.ndarray, protocol: EvalProtocol = DEFAULT_PROTOCOL,
                   ontology: Ontology | None = None) -> np.ndarray:
    """The confusion matrix the protocol scores: the ground-truth rows of the classes it drops
    (:meth:`EvalProtocol.dropped_classes`) zeroed. ``ontology`` defaults to the packaged table."""
    out = np.array(counts, dtype=np.int64, copy=True)
    if protocol.void not in PROTOCOLS:
        raise ValueError(f"unknown void protocol {protocol.void!r}")
    dropped = protocol.dropped_classes(ontology or Ontology.load())
    if dropped and max(dropped) >= out.shape[0]:
        raise MetricError(f"confusion matrix has {out.shape[0]} classes, but protocol {protocol.void!r} drops "
                          f"class ids {dropped}: pass the ontology the matrix was counted with")
    out[dropped, :] = 0
    return out


def category_counts(counts: np.ndarray, ontology: Ontology) -> np.ndarray:
    """(G, G) category confusion derived from the (K, K) class confusion."""
    k = counts.shape[0]
    if k != ontology.num_classes:
        raise MetricError(f"confusion matrix has {k} classes, the ontology {ontology.num_classes}")
    onehot = np.zeros((k, ontology.num_categories), dtype=np.int64)
    onehot[np.arange(k), ontology.class_to_category] = 1
    return onehot.T @ counts @ onehot


def compute_scores(counts: np.ndarray, ontology: Ontology | None = None,
                   protocol: EvalProtocol = DEFAULT_PROTOCOL) -> Scores:
    """Class IoU, mIoU, category IoU / mIoU and composite of a (K, K) confusion matrix.

    ``ontology`` defaults to the packaged GOOSE table. See the module docstring for the protocol.
    """
    ontology = ontology or Ontology.load()
    c = apply_protocol(np.asarray(counts), protocol, ontology)
    class_iou = _iou(c)
    class_iou[protocol.dropped_classes(ontology)] = np.nan
    cat_iou_all = _iou(category_counts(c, ontology))
    scored = list(range(ontology.num_categories)) if protocol.scores_void_category else ontology.evaluated_categories
    if not np.isnan(protocol.absent_iou):  # toolkit: absent classes / categories score 0
        class_iou = np.nan_to_num(class_iou, nan=protocol.absent_iou)
        cat_iou_all = np.nan_to_num(cat_iou_all, nan=protocol.absent_iou)
    cat_iou = {ontology.categories[g]: float(cat_iou_all[g]) for g in scored}
    miou = _nanmean(class_iou)
    cmiou = _nanmean(np.array(list(cat_iou.values())))
    return Scores(
        class_iou=class_iou, miou=miou, category_iou=cat_iou, category_miou=cmiou,
        composite=(miou + cmiou) / 2.0,
        excluded_classes=np.flatnonzero(np.isnan(class_iou)).tolist(),
        excluded_categories=[n for n, v in cat_iou.items() if np.isnan(v)],
        protocol=protocol.void, support=c.sum(axis=1),
        filtered_miou=_nanmean(np.where(class_iou > 0, class_iou, np.nan)),
    )


def compute_all_protocols(counts: np.ndarray, ontology: Ontology | None = None) -> dict[str, Scores]:
    """{protocol name: Scores} of one confusion matrix under every protocol (``goose score --protocol all``)."""
    ontology = ontology or Ontology.load()
    return {name: compute_scores(counts, ontology, EvalProtocol(name)) for name in PROTOCOLS}


def score_maps(pred: Any, label: Any, ontology: Ontology | None = None,
               protocol: EvalProtocol = DEFAULT_PROTOCOL) -> Scores:
    """Scores of a single (prediction, label) pair (convenience for tests and notebooks)."""
    ontology = ontology or Ontology.load()
    cm = ConfusionMatrix(ontology.num_classes)
    cm.update(pred, label)
    return compute_scores(cm.counts, ontology, protocol)


def format_scores(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """A text table of ``{name: Scores.to_dict()}``: mIoU, filtered mIoU (over non-zero class IoUs),
    category mIoU and composite in percent."""
    def pct(v: float | None) -> str:
        return "   -  " if v is None else f"{100 * v:6.2f}"

    lines = [f"{'':24s} {'mIoU':>6s} {'filt.':>6s} {'catIoU':>6s} {'comp.':>6s}"]
    for name, d in scores.items():
        lines.append(f"{name:24s} {pct(d['miou'])} {pct(d.get('filtered_miou'))} {pct(d['category_miou'])} "
                     f"{pct(d['composite'])}  "
                     f"(protocol {d['protocol']}, {len(d['excluded_classes'])} classes not scored)")
    return "\n".join(lines)
