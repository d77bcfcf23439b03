"""Hand-curated teacher targets: the mask lab's export, written and read back.

Layout of an export folder (written whole and atomically, ``io.atomic_dir``; per sample key
``<split>/<scenario>/<stem>_<camera>``, as in the submission layout one PNG per map)::

    <export>/mask_lab.json                     manifest (below)
    <export>/<key>_labelids.png                teacher_cls   (8-bit L, class ids, 255 = none)
    <export>/<key>_prob.png                    teacher_prob  (8-bit L, round(255 * p))
    <export>/<key>_region.png                  teacher_region (8-bit L, 255 outside every box)
    <export>/<key>_box<NN>.png                 box NN's own mask (8-bit L, 0 / 255), for people and tools

``mask_lab.json``: ``{"kind": "goose-mask-lab", "version": 1, "teacher": {"fingerprint",
"config"}, "samples": [{"key", "height", "width", "files": {"teacher_cls", "teacher_prob",
"teacher_region"}, "boxes": [{"xyxy", "class_id", "class_name", "source", "score", "mask"}]}]}``
(paths relative to the export folder; ``xyxy`` image-frame pixels as in ``teacher.boxes``).
The maps are those of ``teacher.prompt.compose`` over the accepted boxes, i.e. what the
teacher cache would hold for these boxes.

Reading: :func:`read_curated_item` returns the dict of ``teacher.cache.read_item`` (three maps,
``boxes``, ``box_scores``, ``key_hash``, ``source_sig``). :func:`curated_cache` turns an export
into a teacher-cache key folder (``manifest.json`` + ``items/*.npz``), so the comparison
(``teacher.selection.compare``) and distillation (``train.distill.TeacherTargets``, i.e. the
training notebook's ``teacher_cache``) take it unchanged as an extra, hand-curated target set.
Training reads a teacher item for every sample: pass ``base=`` the split's teacher cache folder
to fill the samples the export lacks (the curated masks replace the teacher's where they exist).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from goose_lib.io import atomic_dir, atomic_write_json, read_json, sha256_file, sha256_json
from goose_lib.teacher.boxes import SOURCES, BoxSet
from goose_lib.teacher.prompt import TeacherMaps

MANIFEST = "mask_lab.json"
KIND = "goose-mask-lab"
VERSION = 1
MAP_SUFFIX = {"teacher_cls": "labelids", "teacher_prob": "prob", "teacher_region": "region"}


class CuratedError(ValueError):
    """An export folder that cannot be read; the message names the file and the problem."""


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode != "L":
                raise CuratedError(f"{path}: expected an 8-bit grey (L) PNG, got mode {img.mode}")
            return np.asarray(img, np.uint8).copy()
    except FileNotFoundError:
        raise CuratedError(f"{path}: missing file named in {MANIFEST}") from None
    except OSError as exc:
        raise CuratedError(f"{path}: unreadable PNG ({exc})") from exc


def write_curated(folder: str | os.PathLike, samples: Mapping[str, tuple[TeacherMaps, list[np.ndarray]]], *,
                  class_names: list[str] | None = None, teacher_fingerprint: str = "",
                  teacher_config: Mapping[str, Any] | None = None) -> Path:
    """Write an export: ``samples`` maps a sample key to (its teacher maps, one HxW bool mask per
    box). Replaces ``folder`` atomically; returns it."""
    folder = Path(folder)
    entries = []
    with atomic_dir(folder) as tmp:
        for key, (maps, box_masks) in sorted(samples.items()):
            b = maps.boxes
            if len(box_masks) != len(b):
                raise ValueError(f"{key}: {len(b)} boxes but {len(box_masks)} masks")
            files = {}
            for name, suffix in MAP_SUFFIX.items():
                rel = f"{key}_{suffix}.png"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(_png(getattr(maps, name)))
                files[name] = rel
            boxes = []
            for j, m in enumerate(box_masks):
                rel = f"{key}_box{j:02d}.png"
                (tmp / rel).write_bytes(_png(np.asarray(m, bool).astype(np.uint8) * 255))
                c = int(b.classes[j])
                boxes.append({"xyxy": [float(v) for v in b.xyxy[j]], "class_id": c,
                              "class_name": class_names[c] if class_names else str(c), "source": b.sources[j],
                              "score": float(maps.box_scores[j]), "mask": rel})
            entries.append({"key": key, "height": b.height, "width": b.width, "files": files, "boxes": boxes})
        atomic_write_json(tmp / MANIFEST, {"kind": KIND, "version": VERSION,
                                           "teacher": {"fingerprint": teacher_fingerprint,
                                                       "config": dict(teacher_config or {})},
                                           "samples": entries})
    return folder


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked manifest of an export folder."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CuratedError(f"{Path(folder)}: not a mask-lab export (no {MANIFEST}); write one with MaskLab.export")
    manifest = read_json(path)
    if manifest.get("kind") != KIND or manifest.get("version") != VERSION:
        raise CuratedError(f"{path}: kind/version {manifest.get('kind')!r}/{manifest.get('version')!r}, "
                           f"expected {KIND!r}/{VERSION}")
    return manifest


def curated_keys(folder: str | os.PathLike) -> list[str]:
    """Sample keys in an export, sorted."""
    return sorted(e["key"] for e in read_manifest(folder)["samples"])


def read_curated_item(folder: str | os.PathLike, key: str, *, manifest: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """One sample of an export as ``teacher.cache.read_item`` returns it (maps, ``boxes``
    BoxSet, ``box_scores``, ``key_hash`` = the manifest's hash, ``source_sig`` = "")."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    entry = next((e for e in manifest["samples"] if e["key"] == key), None)
    if entry is None:
        raise KeyError(f"{folder / MANIFEST}: no sample {key!r}")
    h, w = int(entry["height"]), int(entry["width"])
    out: dict[str, Any] = {}
    for name in MAP_SUFFIX:
        arr = _read_png(folder / entry["files"][name])
        if arr.shape != (h, w):
            raise CuratedError(f"{folder / entry['files'][name]}: shape {arr.shape}, manifest says {(h, w)}")
        out[name] = arr
    rows = entry["boxes"]
    bad = [r["source"] for r in rows if r["source"] not in SOURCES]
    if bad:
        raise CuratedError(f"{folder / MANIFEST}: {key}: unknown box source(s) {sorted(set(bad))}")
    xyxy = np.array([r["xyxy"] for r in rows], np.float32).reshape(-1, 4)
    out["boxes"] = BoxSet(xyxy, np.array([r["class_id"] for r in rows], np.int64),
                          tuple(r["source"] for r in rows), np.zeros(len(rows), np.int64), h, w)
    out["box_scores"] = np.array([r["score"] for r in rows], np.float32)
    out["key_hash"] = sha256_json(manifest)
    out["source_sig"] = ""
    return out


def curated_cache(folder: str | os.PathLike, cache_root: str | os.PathLike, *,
                  base: str | os.PathLike | None = None) -> Path:
    """A teacher-cache key folder under ``cache_root`` holding the export's samples (keyed by the
    manifest file's hash, so a changed export gets a new folder); returns it. The manifest's
    ``key.checkpoint_fingerprint`` is the teacher's fingerprint recorded in the export.

    ``base``: a teacher-cache key folder (e.g. a split's ``cache_split(...).folder``) whose items
    fill in every sample the export lacks, so training on the whole split reads the curated masks
    where there are some and the teacher's elsewhere."""
    import shutil

    from goose_lib.teacher.cache import MANIFEST as CACHE_MANIFEST
    from goose_lib.teacher.cache import item_path, open_cache, write_item

    folder = Path(folder)
    manifest = read_manifest(folder)
    key = {"kind": KIND, "export": str(folder.resolve()), "export_sha256": sha256_file(folder / MANIFEST),
           "checkpoint_fingerprint": manifest["teacher"].get("fingerprint", "")}
    if base is not None:
        base_manifest = open_cache(base)
        key["base"] = {"folder": str(Path(base).resolve()), "key_hash": base_manifest.get("key_hash", "")}
    key_hash = sha256_json(key)
    out = Path(cache_root) / f"curated-{key_hash[:16]}"
    if (out / CACHE_MANIFEST).is_file():
        return out
    with atomic_dir(out) as tmp:
        if base is not None:
            items = Path(base) / "items"
            for src in items.rglob("*.npz"):
                dst = tmp / "items" / src.relative_to(items)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        for entry in manifest["samples"]:
            d = read_curated_item(folder, entry["key"], manifest=manifest)
            maps = TeacherMaps(d["teacher_cls"], d["teacher_prob"], d["teacher_region"], d["boxes"], d["box_scores"])
            write_item(item_path(tmp, entry["key"]), maps, key_hash, "")
        atomic_write_json(tmp / CACHE_MANIFEST, {"key": key, "key_hash": key_hash})
    return out
