"""What the training loop draws: a deterministic, resumable, rank-sharded stream of samples,
repeat-factor sampling for rare classes, and the dataset wrapper that augments each draw.

The stream is a pure function of ``(seed, draw number)``: epoch ``e`` is a permutation of the
(repeat-factor expanded) sample indices drawn from ``default_rng([seed, 0, e])``; the draw
number ``g`` seeds that draw's augmentation (``default_rng([seed, 1, g])``). Rank ``r`` of ``w`` takes,
from every global micro-batch of ``w * batch`` draws, the ``batch`` draws starting at ``r * batch``
(``DistributedSampler`` semantics: ranks see disjoint samples). Resuming at micro-batch ``m``
therefore reproduces exactly the draws (and augmentations) of the uninterrupted run, whatever the
number of DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch.utils.data
from tqdm.auto import tqdm

from goose_lib.data.decode import read_label


def repeat_factors(presence: np.ndarray, threshold: float) -> np.ndarray:
    """LVIS repeat factors. ``presence`` (N, K) bool: image i contains class k.

    Class factor ``r_k = max(1, sqrt(threshold / f_k))`` with ``f_k`` the fraction of images
    containing k; image factor = the max over its classes (1 for an image without classes).
    ``threshold <= 0`` gives all ones.
    """
    n = presence.shape[0]
    if threshold <= 0 or n == 0:
        return np.ones(n)
    freq = presence.sum(0) / n
    with np.errstate(divide="ignore"):
        class_r = np.where(freq > 0, np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-12))), 1.0)
    per_image = np.where(presence, class_r[None, :], 1.0)
    return per_image.max(1) if presence.shape[1] else np.ones(n)


def class_pixel_counts(samples: Sequence[Any], num_classes: int, *, progress: bool = True) -> np.ndarray:
    """(N, num_classes) int64: pixels of each class in each sample's label map (reads the labels)."""
    out = np.zeros((len(samples), num_classes), dtype=np.int64)
    for i, s in enumerate(tqdm(samples, desc="class pixels", disable=not progress, leave=False)):
        if s.labelids is None:
            continue
        out[i] = np.bincount(read_label(s.labelids, num_classes).ravel(), minlength=num_classes)[:num_classes]
    return out


def class_presence(samples: Sequence[Any], num_classes: int, *, ignore: Sequence[int] = (),
                   progress: bool = True, counts: np.ndarray | None = None) -> np.ndarray:
    """(N, num_classes) bool: which classes each sample's label map contains (reads the labels,
    unless ``counts`` from :func:`class_pixel_counts` is given)."""
    if counts is None:
        counts = class_pixel_counts(samples, num_classes, progress=progress)
    out = counts > 0
    for k in ignore:
        out[:, k] = False
    return out


class DrawSampler(torch.utils.data.Sampler):
    """Infinite stream of ``(sample index, draw number)`` for one rank (see module docstring).

    ``factors``: repeat factor per sample (None = each sample once per epoch); the fractional
    part is rounded stochastically per epoch (as detectron2's ``RepeatFactorTrainingSampler``).
    ``start_micro``: the global micro-batch to start at (resume).
    """

    def __init__(self, n: int, *, batch_size: int, seed: int, factors: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1, start_micro: int = 0) -> None:
        if n < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.factors = None if factors is None else np.asarray(factors, dtype=np.float64)
        self.rank, self.world_size, self.start_micro = rank, world_size, start_micro

    def epoch(self, e: int) -> np.ndarray:
        """The sample indices of epoch ``e``, in drawing order."""
        rng = np.random.default_rng([self.seed, 0, e])
        if self.factors is None:
            idx = np.arange(self.n)
        else:
            whole = np.floor(self.factors)
            reps = whole + (rng.random(self.n) < self.factors - whole)
            idx = np.repeat(np.arange(self.n), reps.astype(np.int64))
        return idx[rng.permutation(len(idx))]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        b, w = self.batch_size, self.world_size
        e, base = 0, 0
        cur = self.epoch(0)
        m = self.start_micro
        while True:
            for j in range(b):
                g = m * b * w + self.rank * b + j
                while g >= base + len(cur):
                    base += len(cur)
                    e += 1
                    cur = self.epoch(e)
                yield int(cur[g - base]), g
            m += 1

    def __len__(self) -> int:  # an infinite stream; len() only for tools that ask
        return math.ceil(self.n / self.world_size)


class DrawDataset(torch.utils.data.Dataset):
    """``dataset[(index, draw)]`` -> ``transform(pre(base[index]), default_rng([seed, 1, draw]))``.

    ``base`` yields raw items (``GooseDataset`` without a transform); ``pre`` runs before the
    augmentation (e.g. attaching teacher maps, which must be cropped with the image).
    """

    def __init__(self, base: torch.utils.data.Dataset, transform: Callable[[dict, np.random.Generator], dict],
                 *, seed: int, pre: Callable[[dict], dict] | None = None) -> None:
        self.base, self.transform, self.seed, self.pre = base, transform, seed, pre

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, draw: tuple[int, int]) -> dict:
        index, g = draw
        item = self.base[index]
        if self.pre is not None:
            item = self.pre(item)
        return self.transform(item, np.random.default_rng([self.seed, 1, g]))


def list_collate(items: list[dict]) -> list[dict]:
    """Validation batches: the items as they are (images and maps of different sizes)."""
    return items


def with_copy_paste(transform: Any, cfg: Any, base: Any, pixels: Any, pre: Any = None) -> tuple[Any, str | None]:
    """``(transform, note)``: ``transform`` wrapped in rare-class copy-paste when ``cfg.copy_paste_classes``
    is set (sources: the training samples holding any of them, from ``pixels`` (N, K) counts), and
    the note for the training log saying what is pasted (or why nothing is)."""
    if not cfg.copy_paste_classes:
        return transform, None
    from goose_lib.data.copy_paste import CopyPasteConfig, CopyPasteTransform

    classes = tuple(int(c) for c in cfg.copy_paste_classes)
    pcfg = CopyPasteConfig(classes=classes, prob=cfg.copy_paste_prob, count=cfg.copy_paste_count)
    held = [c for c in classes if c < pixels.shape[1]]
    sources = [int(i) for i in (pixels[:, held] > 0).any(1).nonzero()[0]] if held else []
    if not sources:
        return transform, f"copy-paste: none of classes {list(classes)} occurs in the training split -> off"
    wrapped = CopyPasteTransform(transform, _Loader(base, pre), sources, pcfg)
    return wrapped, (f"copy-paste: classes {list(classes)} from {len(sources)} source images, "
                     f"prob {pcfg.prob}, {pcfg.count} object(s) per image")


class _Loader:
    """``load(i)`` = ``pre(base[i])`` (picklable for DataLoader workers)."""

    def __init__(self, base: Any, pre: Any) -> None:
        self.base, self.pre = base, pre

    def __call__(self, i: int) -> Any:
        item = self.base[i]
        return self.pre(item) if self.pre is not None else item
