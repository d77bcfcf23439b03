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
from tqdm.auto import tqdm

from goose_lib import paths
from goose_lib.config import DataConfig
from goose_lib.data.decode import DataError, image_size, label_file_problem, read_gray
from goose_lib.data.embedded import resolve_data_root
from goose_lib.data.layout import Sample, index_split
from goose_lib.data.regions import BOX_COLUMNS, region_boxes
from goose_lib.io import atomic_write_bytes, sha256_json
from goose_lib.ontology import Ontology

__all__ = ["BOX_COLUMNS", "SplitStats", "compute_stats", "format_stats", "merge_stats", "region_boxes"]

STATS_VERSION = 3  # 2: instance ids only on has_instance classes; 3: shard, split_samples, index_digest


@dataclass
class SplitStats:
    """Statistics of (a shard of) a split. Counts are (num_classes,) int64; ``boxes`` (N, 7) int64
    with :data:`BOX_COLUMNS`; ``image_sizes`` maps ``"WxH"`` to a count; ``skipped`` holds the
    messages of samples skipped with ``DataConfig.skip_bad``. ``shard`` is ``(i, n)`` for samples
    ``i::n`` of the split (``None``: all of it), ``split_samples`` the size of the whole split and
    ``index_digest`` a digest of its sample keys: :func:`merge_stats` uses them to refuse a shard
    set that does not cover one split exactly once. ``source``: the file it was loaded from."""

    split: str
    samples: int
    num_classes: int
    pixel_counts: np.ndarray
    image_counts: np.ndarray
    instance_counts: np.ndarray
    boxes: np.ndarray
    image_sizes: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None
    split_samples: int | None = None
    index_digest: str = ""
    source: str | None = field(default=None, compare=False)

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
                "image_sizes": self.image_sizes, "skipped": self.skipped, "version": STATS_VERSION,
                "shard": list(self.shard) if self.shard is not None else None,
                "split_samples": self.split_samples, "index_digest": self.index_digest}
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
                shard = meta.get("shard")
                return cls(meta["split"], int(meta["samples"]), int(meta["num_classes"]),
                           z["pixel_counts"], z["image_counts"], z["instance_counts"], z["boxes"],
                           dict(meta["image_sizes"]), list(meta["skipped"]),
                           shard=(int(shard[0]), int(shard[1])) if shard else None,
                           split_samples=meta.get("split_samples"), index_digest=str(meta.get("index_digest", "")),
                           source=str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a statistics file written by goose ({exc})") from exc


def _empty(split: str, k: int) -> SplitStats:
    z = np.zeros(k, np.int64)
    return SplitStats(split, 0, k, z, z.copy(), z.copy(), np.zeros((0, len(BOX_COLUMNS)), np.int64))


def merge_stats(parts: Iterable[SplitStats]) -> SplitStats:
    """Statistics of a whole split from its shards (``compute_stats(..., shard=(i, n))``, e.g.
    files of ``goose stats --shard I/N --out``): the shards must be ``0/n .. n-1/n`` of one split
    index, each exactly once; anything else (a shard given twice, one missing, shards of another
    split, data root or selection) raises ``ValueError`` naming the files and the shards."""
    parts = list(parts)
    if not parts:
        raise ValueError("merge_stats: nothing to merge")
    names = [p.source or f"part {j + 1}" for j, p in enumerate(parts)]
    if len({(p.split, p.num_classes) for p in parts}) != 1:
        raise ValueError(f"merge_stats: parts disagree on split / classes: "
                         f"{sorted({(p.split, p.num_classes) for p in parts})}")
    if old := [n for n, p in zip(names, parts) if not p.index_digest]:
        raise ValueError(f"merge_stats: {old} record no shard (written by an older goose); recompute them "
                         "with `goose stats ROOT --split S --shard I/N --out FILE.npz`")
    shards = [p.shard or (0, 1) for p in parts]
    if len({(p.index_digest, n) for p, (_, n) in zip(parts, shards)}) > 1:
        raise ValueError(f"merge_stats: not shards of one splitting of one index of split {parts[0].split!r} "
                         "(other data root, cameras, excluded scenarios, limit or shard count): " + ", ".join(
                             f"{name} ({i}/{n} of {p.split_samples})" for name, p, (i, n) in zip(names, parts, shards)))
    n = shards[0][1]
    seen: dict[int, list[str]] = {}
    for name, (i, _) in zip(names, shards):
        seen.setdefault(i, []).append(name)
    problems = [f"shard {i}/{n} given {len(files)} times ({', '.join(files)})"
                for i, files in sorted(seen.items()) if len(files) > 1]
    if missing := [f"{i}/{n}" for i in range(n) if i not in seen]:
        problems.append(f"shard(s) {', '.join(missing)} missing")
    if problems:
        raise ValueError(f"merge_stats: the shards do not cover split {parts[0].split!r} exactly once: "
                         + "; ".join(problems))
    merged = _sum(parts)
    merged.split_samples, merged.index_digest = parts[0].split_samples, parts[0].index_digest
    return merged


def _sum(parts: list[SplitStats]) -> SplitStats:
    """Sum of statistics of disjoint parts of one split (no coverage check)."""
    sizes: dict[str, int] = {}
    for p in parts:
        for k, v in p.image_sizes.items():
            sizes[k] = sizes.get(k, 0) + v
    return SplitStats(parts[0].split, sum(p.samples for p in parts), parts[0].num_classes,
                      sum(p.pixel_counts for p in parts), sum(p.image_counts for p in parts),
                      sum(p.instance_counts for p in parts), np.concatenate([p.boxes for p in parts]),
                      sizes, [m for p in parts for m in p.skipped])


def _sample_stats(sample: Sample, num_classes: int,
                  instance_classes: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(pixel counts (K,), boxes, "WxH") of one sample; every problem raises :class:`DataError`."""
    if sample.labelids is None:
        raise DataError(f"{sample.image}: sample has no label (split {sample.split!r} is unlabelled)")
    size = image_size(sample.image)
    if (problem := label_file_problem(sample)) is not None:
        raise DataError(problem)
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
               shard: tuple[int, int] | None, k: int, index: str,
               instance_classes: frozenset[int] = frozenset()) -> str:
    files = []
    for s in samples:
        for p in (s.labelids, s.instanceids):
            try:
                st = p.stat() if p is not None else None
                files.append(None if st is None else (st.st_size, st.st_mtime_ns))
            except OSError:  # missing, a symlink loop: reported when the sample is read
                files.append("missing")
    return sha256_json({"v": STATS_VERSION, "root": str(root), "split": split, "k": k, "shard": shard, "index": index,
                        "skip_bad": cfg.skip_bad, "instance_classes": sorted(instance_classes),
                        "keys": [s.key for s in samples], "files": files})


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
    split_samples, digest = len(samples), sha256_json([s.key for s in samples])[:16]
    if samples[0].labelids is None:
        raise DataError(f"{root / 'labels' / split}: split {split!r} has no labels; statistics need labels")
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
        samples = samples[i::n]
    cache = None
    if use_cache:
        key = _cache_key(root, split, samples, cfg, shard, k, digest, instance_classes)
        cache = paths.home() / "stats-cache" / f"{key[:32]}.npz"
    if cache is not None and cache.exists():
        try:
            cached = SplitStats.load(cache)
            cached.source = None
            return cached
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
    stats = _sum(parts) if parts else _empty(split, k)
    stats.shard = tuple(shard) if shard is not None else None  # type: ignore[assignment]
    stats.split_samples, stats.index_digest = split_samples, digest
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
