"""Split statistics: per-class pixel / image / instance counts and box sizes, parallel and cached.

Per labelled sample: class pixel counts, which classes occur, and one box per object — per
instance id where the instance map has one on a class whose ``has_instance`` is set in the
mapping CSV (class = the instance's majority class), and per 4-connected component of a class
elsewhere (``is_instance`` = 0; instance ids on classes without instances are ignored). Components are found on
horizontal runs (a few thousand per image) rather than pixels, so the statistics cost little
more than decoding the label PNGs.

``compute_stats`` spreads samples over processes (``workers``, 0 = all cores) with a tqdm bar,
supports ``shard=(i, n)`` (samples ``i::n``, for cluster job arrays; combine with
:func:`merge_stats`), and caches the result under ``paths.home()/"stats-cache"`` keyed on the
split index and every label file's size and mtime.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from goose_lib import paths
from goose_lib.config import DataConfig
from goose_lib.data.decode import DataError, read_gray
from goose_lib.data.embedded import resolve_data_root
from goose_lib.data.layout import Sample, index_split
from goose_lib.io import atomic_write_bytes, sha256_json
from goose_lib.ontology import Ontology

STATS_VERSION = 2  # 2: instance ids only on has_instance classes
BOX_COLUMNS = ("class_id", "x0", "y0", "x1", "y1", "pixels", "is_instance")  # x1, y1 exclusive


@dataclass
class SplitStats:
    """Statistics of (a shard of) a split. Counts are (num_classes,) int64; ``boxes`` (N, 7) int64
    with :data:`BOX_COLUMNS`; ``image_sizes`` maps ``"WxH"`` to a count; ``skipped`` holds the
    messages of samples skipped with ``DataConfig.skip_bad``."""

    split: str
    samples: int
    num_classes: int
    pixel_counts: np.ndarray
    image_counts: np.ndarray
    instance_counts: np.ndarray
    boxes: np.ndarray
    image_sizes: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def pixel_share(self) -> np.ndarray:
        """(K,) fraction of all labelled pixels per class."""
        total = self.pixel_counts.sum()
        return self.pixel_counts / total if total else np.zeros(self.num_classes)

    @property
    def image_share(self) -> np.ndarray:
        """(K,) fraction of samples in which the class occurs."""
        return self.image_counts / self.samples if self.samples else np.zeros(self.num_classes)

    def box_sizes(self, class_id: int) -> np.ndarray:
        """(n, 2) widths and heights of the boxes of one class."""
        b = self.boxes[self.boxes[:, 0] == class_id]
        return np.stack([b[:, 3] - b[:, 1], b[:, 4] - b[:, 2]], axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``goose stats --json`` prints); boxes as per-class medians."""
        w, h = self.boxes[:, 3] - self.boxes[:, 1], self.boxes[:, 4] - self.boxes[:, 2]

        def med(v: np.ndarray) -> list[float | None]:
            return [float(np.median(v[self.boxes[:, 0] == c])) if self.instance_counts[c] else None
                    for c in range(self.num_classes)]

        return {
            "split": self.split, "samples": self.samples, "num_classes": self.num_classes,
            "pixel_counts": self.pixel_counts.tolist(), "image_counts": self.image_counts.tolist(),
            "instance_counts": self.instance_counts.tolist(),
            "pixel_share": [float(x) for x in self.pixel_share],
            "image_share": [float(x) for x in self.image_share],
            "box_count": len(self.boxes), "box_median_width": med(w), "box_median_height": med(h),
            "image_sizes": dict(sorted(self.image_sizes.items())), "skipped": list(self.skipped),
        }

    def to_bytes(self) -> bytes:
        """Lossless ``.npz`` serialisation (for the cache and for shard files)."""
        buf = io.BytesIO()
        meta = {"split": self.split, "samples": self.samples, "num_classes": self.num_classes,
                "image_sizes": self.image_sizes, "skipped": self.skipped, "version": STATS_VERSION}
        np.savez(buf, pixel_counts=self.pixel_counts, image_counts=self.image_counts,
                 instance_counts=self.instance_counts, boxes=self.boxes, meta=np.array(json.dumps(meta)))
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> SplitStats:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(meta["split"], int(meta["samples"]), int(meta["num_classes"]),
                           z["pixel_counts"], z["image_counts"], z["instance_counts"], z["boxes"],
                           dict(meta["image_sizes"]), list(meta["skipped"]))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a statistics file written by goose ({exc})") from exc


def _empty(split: str, k: int) -> SplitStats:
    z = np.zeros(k, np.int64)
    return SplitStats(split, 0, k, z, z.copy(), z.copy(), np.zeros((0, len(BOX_COLUMNS)), np.int64))


def merge_stats(parts: Iterable[SplitStats]) -> SplitStats:
    """Sum of statistics of disjoint shards of one split."""
    parts = list(parts)
    if not parts:
        raise ValueError("merge_stats: nothing to merge")
    if len({(p.split, p.num_classes) for p in parts}) != 1:
        raise ValueError(f"merge_stats: parts disagree on split / classes: "
                         f"{sorted({(p.split, p.num_classes) for p in parts})}")
    sizes: dict[str, int] = {}
    for p in parts:
        for k, v in p.image_sizes.items():
            sizes[k] = sizes.get(k, 0) + v
    return SplitStats(parts[0].split, sum(p.samples for p in parts), parts[0].num_classes,
                      sum(p.pixel_counts for p in parts), sum(p.image_counts for p in parts),
                      sum(p.instance_counts for p in parts), np.concatenate([p.boxes for p in parts]),
                      sizes, [m for p in parts for m in p.skipped])


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest member) of each of ``n`` nodes joined by edges ``a[i]-b[i]`` (pointer jumping)."""
    parent = np.arange(n)
    while len(a):
        pa, pb = parent[a], parent[b]
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        keep = lo != hi
        if not keep.any():
            break
        np.minimum.at(parent, hi[keep], lo[keep])  # hook roots onto smaller roots
        while True:  # shortcut until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        a, b = a[keep], b[keep]
    return parent


def _group_boxes(group: np.ndarray, m: int, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
                 area: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Union boxes and summed areas of the items of each of ``m`` groups."""
    gx0, gy0 = np.full(m, w, np.int64), np.full(m, h, np.int64)
    gx1, gy1 = np.zeros(m, np.int64), np.zeros(m, np.int64)
    np.minimum.at(gx0, group, x0)
    np.minimum.at(gy0, group, y0)
    np.maximum.at(gx1, group, x1)
    np.maximum.at(gy1, group, y1)
    return gx0, gy0, gx1, gy1, np.bincount(group, weights=area, minlength=m).astype(np.int64)


def region_boxes(label: np.ndarray, instances: np.ndarray | None = None,
                 instance_classes: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (256,) int64 and boxes (N, 7) int64 of one HxW label map (+ optional instance map).

    Rows of ``boxes`` follow :data:`BOX_COLUMNS`: one per instance id > 0 (class = majority
    class of its pixels, box over all its pixels) and one per 4-connected component of a class
    among pixels without instance. ``instance_classes``: the classes whose instance ids count
    (:attr:`Ontology.instance_classes`; None = every class); ids on other classes are treated
    as 0. Works on horizontal runs: O(pixels) only for finding them.
    """
    h, w = label.shape
    if instances is not None and instance_classes is not None:
        lut = np.zeros(max(256, int(label.max()) + 1), bool)
        lut[[int(c) for c in instance_classes]] = True
        instances = np.where(lut[label], instances, 0)
    flat = label.ravel()
    brk = np.empty(h * w, bool)
    np.not_equal(flat[1:], flat[:-1], out=brk[1:])
    if instances is not None:
        iflat = instances.ravel()
        np.logical_or(brk[1:], iflat[1:] != iflat[:-1], out=brk[1:])
    brk[::w] = True  # every row starts a run
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], h * w)
    ry, rx0 = np.divmod(starts, w)
    rx1, lengths = ends - ry * w, ends - starts
    rcls = flat[starts].astype(np.int64)
    rins = iflat[starts].astype(np.int64) if instances is not None else np.zeros_like(rcls)
    pixels = np.bincount(rcls, weights=lengths, minlength=256).astype(np.int64)
    # vertical links: an overlap of runs in rows y and y+1 begins at one of the two runs' starts
    up = np.flatnonzero(ry < h - 1)
    lo = np.flatnonzero(ry > 0)
    a = np.concatenate([up, np.searchsorted(starts, starts[lo] - w, side="right") - 1])
    b = np.concatenate([np.searchsorted(starts, starts[up] + w, side="right") - 1, lo])
    same = (rcls[a] == rcls[b]) & (rins[a] == rins[b])
    root = _components(len(starts), a[same], b[same])
    roots = np.flatnonzero(root == np.arange(len(starts)))
    comp = np.searchsorted(roots, root)  # component index of each run
    cx0, cy0, cx1, cy1, carea = _group_boxes(comp, len(roots), rx0, ry, rx1, ry + 1, lengths, w, h)
    ccls, cins = rcls[roots], rins[roots]
    stuff = cins == 0
    parts = [np.stack([ccls[stuff], cx0[stuff], cy0[stuff], cx1[stuff], cy1[stuff], carea[stuff],
                       np.zeros(int(stuff.sum()), np.int64)], axis=1)]
    if not stuff.all():  # instances: union of their components, majority class
        thing = ~stuff
        ids, grp = np.unique(cins[thing], return_inverse=True)
        ix0, iy0, ix1, iy1, iarea = _group_boxes(grp, len(ids), cx0[thing], cy0[thing], cx1[thing],
                                                 cy1[thing], carea[thing], w, h)
        pair, pinv = np.unique(grp * 256 + ccls[thing], return_inverse=True)
        parea = np.bincount(pinv, weights=carea[thing])
        order = np.lexsort((-parea, pair // 256))  # per instance, largest class first
        first = order[np.unique(pair[order] // 256, return_index=True)[1]]
        icls = pair[first] % 256
        parts.append(np.stack([icls, ix0, iy0, ix1, iy1, iarea, np.ones(len(ids), np.int64)], axis=1))
    return pixels, np.concatenate(parts)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk without decoding (PIL for anything else)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        raise DataError(f"{path}: image file does not exist") from None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise DataError(f"{path}: cannot read the image header ({type(exc).__name__}: {exc})") from exc


def _sample_stats(sample: Sample, num_classes: int,
                  instance_classes: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(pixel counts (K,), boxes, "WxH") of one sample; every problem raises :class:`DataError`."""
    if sample.labelids is None:
        raise DataError(f"{sample.image}: sample has no label (split {sample.split!r} is unlabelled)")
    size = _png_size(sample.image)
    if not sample.labelids.is_file():
        raise DataError(f"{sample.image}: image has no label file (expected {sample.labelids})")
    label = read_gray(sample.labelids, "label map")
    inst = None
    if sample.instanceids is not None:
        inst = read_gray(sample.instanceids, "instance map")
    for path, arr in ((sample.labelids, label), (sample.instanceids, inst)):
        if arr is not None and arr.shape[::-1] != size:
            raise DataError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from its image "
                            f"{sample.image} ({size[0]}x{size[1]})")
    if label.dtype != np.uint8:
        label = label.astype(np.int64)
    pixels, boxes = region_boxes(label, inst, instance_classes)
    if len(pixels) > num_classes and pixels[num_classes:].any():
        bad = (np.flatnonzero(pixels[num_classes:]) + num_classes).tolist()
        raise DataError(f"{sample.labelids}: label ids {bad[:10]} outside the class table 0..{num_classes - 1}")
    return pixels[:num_classes], boxes, f"{size[0]}x{size[1]}"


def _chunk_stats(args: tuple[list[Sample], str, int, bool, frozenset[int]]) -> SplitStats:
    samples, split, k, skip_bad, instance_classes = args
    out = _empty(split, k)
    boxes = []
    for s in samples:
        try:
            pixels, b, size = _sample_stats(s, k, instance_classes)
        except DataError as exc:
            if not skip_bad:
                raise
            out.skipped.append(str(exc))
            continue
        out.samples += 1
        out.pixel_counts += pixels
        out.image_counts += pixels > 0
        np.add.at(out.instance_counts, b[:, 0], 1)
        out.image_sizes[size] = out.image_sizes.get(size, 0) + 1
        boxes.append(b)
    if boxes:
        out.boxes = np.concatenate(boxes)
    return out


def _cache_key(root: Path, split: str, samples: Sequence[Sample], cfg: DataConfig,
               shard: tuple[int, int] | None, k: int, instance_classes: frozenset[int] = frozenset()) -> str:
    files = []
    for s in samples:
        for p in (s.labelids, s.instanceids):
            try:
                st = p.stat() if p is not None else None
                files.append(None if st is None else (st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                files.append("missing")
    return sha256_json({"v": STATS_VERSION, "root": str(root), "split": split, "k": k, "shard": shard,
                        "skip_bad": cfg.skip_bad, "instance_classes": sorted(instance_classes), "keys": [s.key for s in samples], "files": files})


def _workers(workers: int) -> int:
    if workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compute_stats(root: str | os.PathLike, split: str, *, config: DataConfig | None = None, workers: int = 0,
                  use_cache: bool = True, progress: bool = True,
                  shard: tuple[int, int] | None = None) -> SplitStats:
    """Statistics of a labelled split (see module docstring).

    ``root``: a GOOSE root or ``"embedded"``; ``config``: cameras / excluded scenarios / limit /
    skip_bad (its ``root`` is ignored); ``workers``: processes (0 = all cores, 1 = in-process);
    ``shard=(i, n)``: only samples ``i::n``. Bad files raise :class:`DataError` unless
    ``config.skip_bad`` (then they are counted in ``skipped`` with a warning).
    """
    cfg = config or DataConfig()
    root = resolve_data_root(root).resolve()
    ontology = Ontology.load(root)
    k, instance_classes = ontology.num_classes, ontology.instance_classes
    samples = index_split(root, split, cameras=cfg.cameras, exclude_scenarios=cfg.exclude_scenarios,
                          limit=cfg.limit)
    if samples[0].labelids is None:
        raise DataError(f"{root / 'labels' / split}: split {split!r} has no labels; statistics need labels")
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
        samples = samples[i::n]
    cache = None
    if use_cache:
        key = _cache_key(root, split, samples, cfg, shard, k, instance_classes)
        cache = paths.home() / "stats-cache" / f"{key[:32]}.npz"
    if cache is not None and cache.exists():
        try:
            return SplitStats.load(cache)
        except DataError:
            pass  # unreadable cache: recompute
    nproc = min(_workers(workers), max(1, len(samples)))
    chunk = max(1, min(32, len(samples) // (nproc * 4) or 1))
    jobs = [(samples[j:j + chunk], split, k, cfg.skip_bad, instance_classes) for j in range(0, len(samples), chunk)]
    parts: list[SplitStats] = []
    with tqdm(total=len(samples), desc=f"stats {split}", unit="img", disable=not progress) as bar:
        if nproc == 1:
            results: Iterable[SplitStats] = map(_chunk_stats, jobs)
            for part, job in zip(results, jobs):
                parts.append(part)
                bar.update(len(job[0]))
        else:
            with ProcessPoolExecutor(max_workers=nproc) as pool:
                for part, job in zip(pool.map(_chunk_stats, jobs), jobs):
                    parts.append(part)
                    bar.update(len(job[0]))
    stats = merge_stats(parts) if parts else _empty(split, k)
    if stats.skipped:
        warnings.warn(f"{root}: statistics of split {split!r} skipped {len(stats.skipped)} bad sample(s), "
                      f"e.g. {stats.skipped[0]}", stacklevel=2)
    if cache is not None:
        try:
            stats.save(cache)
        except OSError as exc:  # a read-only home must not lose the computed result
            warnings.warn(f"{cache}: cannot write the statistics cache ({exc})", stacklevel=2)
    return stats


def format_stats(stats: SplitStats, ontology: Ontology) -> str:
    """A text table of a split's statistics: per class (most pixels first) pixel and image shares,
    regions and the median box (what ``goose stats`` prints)."""
    d = stats.to_dict()
    lines = [f"split {stats.split}: {stats.samples} samples, {d['box_count']} boxes, sizes {d['image_sizes']}",
             f"{'id':>3} {'class':<20} {'pixels %':>9} {'images %':>9} {'regions':>8}  median box"]
    for c in np.argsort(-stats.pixel_counts, kind="stable"):
        if stats.pixel_counts[c] == 0:
            continue
        box = (f"{d['box_median_width'][c]:.0f}x{d['box_median_height'][c]:.0f}"
               if d["box_median_width"][c] is not None else "-")
        lines.append(f"{c:>3} {ontology.names[c]:<20} {100 * stats.pixel_share[c]:>9.3f} "
                     f"{100 * stats.image_share[c]:>9.1f} {stats.instance_counts[c]:>8}  {box}")
    return "\n".join(lines)
