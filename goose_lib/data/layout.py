"""Finding GOOSE files on disk: splits, scenarios, cameras, and the cached split index.

Layout of a GOOSE root (see ``/work/shared/goose/README.md``)::

    <root>/goose_label_mapping.csv
    <root>/images/<split>/<scenario>/<stem>_<camera>.png
    <root>/labels/<split>/<scenario>/<stem>_labelids.png      # 8-bit class ids
    <root>/labels/<split>/<scenario>/<stem>_instanceids.png   # 8/16-bit instance ids (optional)
    <root>/labels/<split>/<scenario>/<stem>_color.png         # visualisation only, never decoded

A split without a ``labels/<split>`` folder (the test split) yields samples whose label paths
are ``None``. In a labelled split every image gets the path of its expected ``_labelids.png``
whether or not it exists: a missing label is reported when the sample is loaded or checked
(never silently turned into "unlabelled").

Indexing the train split (~28,000 images) walks ~100 folders, so the index is cached as JSON
under ``goose_lib.paths.home()/"index-cache"``, keyed on the root's absolute path, the split and
the options, and invalidated when any scenario folder's mtime (files added, removed or renamed)
changes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from goose_lib import paths
from goose_lib.config import DEFAULT_CAMERAS
from goose_lib.io import atomic_write_text, sha256_json

KNOWN_CAMERAS: tuple[str, ...] = DEFAULT_CAMERAS + ("windshield_nir",)
LABEL_SUFFIXES = {"labelids": "_labelids.png", "instanceids": "_instanceids.png", "color": "_color.png"}
INDEX_VERSION = 2


class LayoutError(ValueError):
    """A folder that is not a GOOSE root / split; the message starts with the folder."""


@dataclass(frozen=True)
class Sample:
    """One image of a split and the paths of its label files (``None``: not available)."""

    split: str
    scenario: str
    stem: str
    camera: str
    image: Path
    labelids: Path | None
    instanceids: Path | None
    color: Path | None

    @property
    def key(self) -> str:
        """``split/scenario/stem_camera``: unique within a root, the key of every cache."""
        return f"{self.split}/{self.scenario}/{self.stem}_{self.camera}"


def split_image_name(name: str, cameras: Iterable[str] = KNOWN_CAMERAS) -> tuple[str, str] | None:
    """``"<stem>_<camera>.png"`` -> ``(stem, camera)``, or ``None`` when no camera suffix matches.

    Camera names contain underscores, so the longest matching known suffix wins
    (``..._windshield_vis.png`` -> camera ``windshield_vis``).
    """
    if not name.endswith(".png"):
        return None
    base = name[:-4]
    for cam in sorted(set(cameras), key=len, reverse=True):
        if base.endswith("_" + cam) and len(base) > len(cam) + 1:
            return base[: -len(cam) - 1], cam
    return None


def list_splits(root: str | os.PathLike) -> list[str]:
    """Split folders under ``root/images`` (sorted); :class:`LayoutError` if not a GOOSE root."""
    root = Path(root)
    images = _images_dir(root)
    return sorted(p.name for p in images.iterdir() if p.is_dir())


def _images_dir(root: Path) -> Path:
    if not root.is_dir():
        raise LayoutError(f"{root}: data root does not exist or is not a folder")
    images = root / "images"
    if not images.is_dir():
        raise LayoutError(
            f"{root}: not a GOOSE root (no images/ folder); expected "
            "images/<split>/<scenario>/<stem>_<camera>.png and labels/<split>/... "
            "(write a synthetic one with `goose synth OUT`)"
        )
    return images


def _scenario_dirs(folder: Path) -> dict[str, tuple[Path, int]]:
    """Scenario name -> (folder, mtime_ns) for every sub-folder of ``folder`` (empty if missing)."""
    out: dict[str, tuple[Path, int]] = {}
    if not folder.is_dir():
        return out
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir():
                out[e.name] = (Path(e.path), e.stat().st_mtime_ns)
    return out


def _fingerprint(img_root: Path, lbl_root: Path) -> dict[str, object]:
    """Cheap tree fingerprint: mtimes of the split folders and of every scenario folder."""
    def mt(p: Path) -> int | None:
        try:
            return p.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    return {
        "images": mt(img_root),
        "labels": mt(lbl_root),
        "image_scenarios": {k: v[1] for k, v in sorted(_scenario_dirs(img_root).items())},
        "label_scenarios": {k: v[1] for k, v in sorted(_scenario_dirs(lbl_root).items())},
    }


def _cache_path(root: Path, split: str, cameras: Sequence[str], exclude: Sequence[str]) -> Path:
    key = sha256_json({"v": INDEX_VERSION, "root": str(root), "split": split,
                       "cameras": sorted(cameras), "exclude": sorted(exclude)})
    return paths.home() / "index-cache" / f"{key[:24]}.json"


def _scan(root: Path, split: str, cameras: Sequence[str], exclude: Sequence[str]) -> list[Sample]:
    img_root, lbl_root = root / "images" / split, root / "labels" / split
    labelled = lbl_root.is_dir()
    known = set(KNOWN_CAMERAS) | set(cameras)
    unknown: list[str] = []
    samples: list[Sample] = []
    for scenario, (folder, _) in sorted(_scenario_dirs(img_root).items()):
        if scenario in exclude:
            continue
        label_files: set[str] = set()
        if labelled and (lbl_root / scenario).is_dir():
            label_files = {e.name for e in os.scandir(lbl_root / scenario)}
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if e.is_file())
        for name in names:
            parsed = split_image_name(name, known)
            if parsed is None:
                if name.endswith(".png"):
                    unknown.append(str(folder / name))
                continue
            stem, cam = parsed
            if cam not in cameras:
                continue
            lbl = {k: lbl_root / scenario / f"{stem}{suf}" for k, suf in LABEL_SUFFIXES.items()}
            samples.append(Sample(
                split=split, scenario=scenario, stem=stem, camera=cam, image=folder / name,
                labelids=lbl["labelids"] if labelled else None,
                instanceids=lbl["instanceids"] if lbl["instanceids"].name in label_files else None,
                color=lbl["color"] if lbl["color"].name in label_files else None,
            ))
    if unknown:
        warnings.warn(f"{unknown[0]}: no known camera suffix {sorted(known)}; "
                      f"{len(unknown)} such PNG file(s) in split {split!r} ignored", stacklevel=3)
    samples.sort(key=lambda s: s.key)
    return samples


def _to_rows(samples: list[Sample]) -> list[list[object]]:
    """Compact cache rows ``[scenario, stem, camera, has_instanceids, has_color]``."""
    return [[s.scenario, s.stem, s.camera, int(s.instanceids is not None), int(s.color is not None)]
            for s in samples]


def _from_rows(root: Path, split: str, labelled: bool, rows: list[list[object]]) -> list[Sample]:
    img_root, lbl_root = root / "images" / split, root / "labels" / split
    out = []
    for scenario, stem, camera, has_inst, has_color in rows:
        lbl = lbl_root / str(scenario) / str(stem)
        out.append(Sample(
            split, str(scenario), str(stem), str(camera), img_root / str(scenario) / f"{stem}_{camera}.png",
            Path(f"{lbl}_labelids.png") if labelled else None,
            Path(f"{lbl}_instanceids.png") if has_inst else None,
            Path(f"{lbl}_color.png") if has_color else None,
        ))
    return out


def index_split(root: str | os.PathLike, split: str, *, cameras: Sequence[str] = DEFAULT_CAMERAS,
                exclude_scenarios: Sequence[str] = (), limit: int | None = None,
                use_cache: bool = True) -> list[Sample]:
    """Every image of ``split`` under ``root`` (a data-root value: a folder or an embedded
    dataset's name) as :class:`Sample`, sorted by ``key``.

    ``cameras``: camera suffixes to keep (``windshield_nir`` is not in the default);
    ``exclude_scenarios``: scenario folder names to drop; ``limit``: the first N samples.
    Raises :class:`LayoutError` for a non-GOOSE folder, a missing split or a split with no
    image of the selected cameras. The result is cached (see module docstring).
    """
    from goose_lib.data.embedded import is_embedded, resolve_data_root

    root = (resolve_data_root(root) if is_embedded(root) else Path(root).expanduser()).resolve()
    images = _images_dir(root)
    img_root = images / split
    if not img_root.is_dir():
        raise LayoutError(f"{img_root}: no such split; splits here: {list_splits(root)}")
    cameras, exclude = tuple(cameras), tuple(exclude_scenarios)
    if not cameras:
        raise LayoutError(f"{root}: no camera selected")
    fp = _fingerprint(img_root, root / "labels" / split)
    cache = _cache_path(root, split, cameras, exclude)
    samples: list[Sample] | None = None
    if use_cache and cache.exists():
        try:
            data = json.loads(cache.read_text())
            if data.get("fingerprint") == fp:
                samples = _from_rows(root, split, bool(data["labelled"]), data["samples"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            samples = None  # unreadable cache: rebuild it
    if samples is None:
        samples = _scan(root, split, cameras, exclude)
        if use_cache:
            try:
                atomic_write_text(cache, json.dumps({
                    "root": str(root), "split": split, "fingerprint": fp,
                    "labelled": (root / "labels" / split).is_dir(), "samples": _to_rows(samples)}))
            except OSError as exc:  # a read-only home must not stop the data from loading
                warnings.warn(f"{cache}: cannot write the index cache ({exc})", stacklevel=2)
    if not samples:
        raise LayoutError(f"{img_root}: no images of cameras {list(cameras)}"
                          + (f" outside excluded scenarios {list(exclude)}" if exclude else "")
                          + " (expected <scenario>/<stem>_<camera>.png)")
    return samples[:limit] if limit is not None else samples


def holdout_scenarios(samples: Sequence[Sample], fraction: float, seed: int = 0) -> list[str]:
    """A fixed, seeded choice of ``ceil(fraction * n)`` of the ``n`` scenarios among ``samples``
    (at least one, at most n - 1 when n > 1), sorted: the same samples and seed give the same
    scenarios on every machine. ``fraction`` 0 -> [] (no hold-out)."""
    import math

    import numpy as np

    if not 0 <= fraction < 1:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    names = sorted({s.scenario for s in samples})
    if fraction == 0 or not names:
        return []
    k = min(max(1, math.ceil(fraction * len(names))), max(len(names) - 1, 1))
    picked = np.random.default_rng([seed, 0x401D]).permutation(len(names))[:k]
    return sorted(names[i] for i in picked)
