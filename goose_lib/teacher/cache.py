"""The on-disk teacher cache: teacher maps of a split, computed once, read by training.

Layout (one folder per key, so changing a parameter never overwrites another key's results)::

    <cache_root>/<key_hash[:16]>/manifest.json          the key (below), written first
    <cache_root>/<key_hash[:16]>/items/<sample key>.npz  one compressed npz per sample

The key is the checkpoint fingerprint (``models.sam3.checkpoint_fingerprint``) plus every
parameter that changes results (:meth:`TeacherConfig.result_key`, :class:`BoxParams`, the box
source and, for predicted boxes, the predictor's id). The oracle teacher (``teacher_kind="oracle"``,
:mod:`goose_lib.teacher.oracle`: the exact labels' masks) has the fingerprint ``"oracle"`` and the
key entry ``teacher_kind: "oracle"`` (SAM3 keys have no such entry), so it never shares a folder
with a SAM3 cache. Each item also stores the key hash and a signature of its source files (size +
mtime of image / label / instances; the oracle's also of its exact label files): an item whose key
hash differs (a foreign cache copied in) or whose sources changed is recomputed, nothing else.

Item arrays: ``teacher_cls``, ``teacher_prob``, ``teacher_region`` (uint8 HxW, see
``teacher.prompt``), ``boxes`` float32 (N,4) image-frame xyxy, ``box_classes`` int64 (N,),
``box_sources`` uint8 (N,) index into ``boxes.SOURCES``, ``box_scores`` float32 (N,),
``key_hash`` and ``source_sig`` (0-d str arrays).

Writes are atomic (``goose_lib.io``): an interrupted run leaves only finished items, and the
next run skips them (resume). ``shard=(i, n)`` processes samples ``i, i+n, ...`` so a cluster
job array can split a split; all shards share the folder.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from goose_lib.config import to_dict
from goose_lib.io import atomic_write_bytes, atomic_write_json, read_json, sha256_json
from goose_lib.teacher.boxes import SOURCES, BoxSet, boxes_from_labels, boxes_from_prediction
from goose_lib.teacher.config import (
    DEFAULT_BOXES,
    DEFAULT_TEACHER,
    TEACHER_KINDS,
    BoxParams,
    TeacherConfig,
    TeacherKind,
)
from goose_lib.teacher.prompt import TeacherMaps

CACHE_VERSION = 1
MANIFEST = "manifest.json"
MAP_NAMES = ("teacher_cls", "teacher_prob", "teacher_region")


class TeacherCacheError(ValueError):
    """A cache folder that cannot be used as asked; the message names the folder or file."""


@runtime_checkable
class ItemTeacher(Protocol):
    """A mask source that reads the whole item (image, labels, ``sample``), not only the image:
    the oracle teacher (its exact labels). A ``prompt.Teacher`` is called with ``predict`` instead."""

    def item_maps(self, item: dict[str, Any], boxes: BoxSet) -> TeacherMaps:
        """Teacher maps of one ``data.decode.load_sample`` item prompted with ``boxes``."""
        ...


def cache_key(fingerprint: str, teacher_cfg: TeacherConfig = DEFAULT_TEACHER, box_params: BoxParams = DEFAULT_BOXES,
              *, box_source: Literal["gt", "prediction"] = "gt", predictor_id: str = "",
              instance_classes: Collection[int] | None = None, teacher_kind: TeacherKind = "sam3") -> dict[str, Any]:
    """Everything a cached result depends on, as a JSON-ready dict (``instance_classes`` only
    when given and the boxes come from ground truth; ``teacher_kind`` only when not ``"sam3"``,
    so SAM3 keys are those written before the oracle existed)."""
    key = {"version": CACHE_VERSION, "checkpoint_fingerprint": fingerprint,
           "teacher": teacher_cfg.result_key(), "boxes": to_dict(box_params), "box_source": box_source,
           "predictor_id": predictor_id if box_source == "prediction" else ""}
    if instance_classes is not None and box_source == "gt":
        key["instance_classes"] = sorted(int(c) for c in instance_classes)
    if teacher_kind != "sam3":
        key["teacher_kind"] = teacher_kind
    return key


def key_dir(cache_root: str | os.PathLike, key: dict[str, Any]) -> Path:
    """The folder of one key under a cache root."""
    return Path(cache_root) / sha256_json(key)[:16]


def source_signature(sample: Any) -> str:
    """size:mtime_ns of the sample's image / label / instance files (changes when they change)."""
    return files_signature([sample.image, sample.labelids, sample.instanceids])


def files_signature(files: Sequence[str | os.PathLike | None]) -> str:
    """``size:mtime_ns`` of each file, ``-`` for None, joined by ``|``."""
    parts = []
    for p in files:
        if p is None:
            parts.append("-")
        else:
            st = Path(p).stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def item_path(folder: str | os.PathLike, sample_key: str) -> Path:
    return Path(folder) / "items" / f"{sample_key}.npz"


def write_item(path: Path, maps: TeacherMaps, key_hash: str, source_sig: str) -> None:
    """One sample's teacher output as a compressed npz, atomically."""
    buf = io.BytesIO()
    b = maps.boxes
    np.savez_compressed(
        buf, teacher_cls=maps.teacher_cls, teacher_prob=maps.teacher_prob, teacher_region=maps.teacher_region,
        boxes=b.xyxy.astype(np.float32), box_classes=b.classes.astype(np.int64),
        box_sources=np.array([SOURCES.index(s) for s in b.sources], np.uint8),
        box_scores=maps.box_scores.astype(np.float32), key_hash=np.array(key_hash), source_sig=np.array(source_sig))
    atomic_write_bytes(path, buf.getvalue())


def read_item(path: str | os.PathLike) -> dict[str, Any]:
    """An item as a dict: the three maps, ``boxes`` (a BoxSet), ``box_scores``, ``key_hash``, ``source_sig``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile / ValueError on a truncated or foreign file
        raise TeacherCacheError(f"{path}: unreadable teacher cache item ({exc}); delete it to recompute") from exc
    missing = [k for k in (*MAP_NAMES, "boxes", "box_classes", "box_sources", "key_hash") if k not in d]
    if missing:
        raise TeacherCacheError(f"{path}: teacher cache item lacks {missing}; delete it to recompute")
    h, w = d["teacher_cls"].shape
    boxes = BoxSet(d["boxes"].reshape(-1, 4), d["box_classes"], tuple(SOURCES[i] for i in d["box_sources"]),
                   np.zeros(len(d["box_classes"]), np.int64), h, w)
    out = {k: d[k] for k in MAP_NAMES}
    out.update(boxes=boxes, box_scores=d.get("box_scores", np.zeros(len(boxes), np.float32)),
               key_hash=str(d["key_hash"]), source_sig=str(d.get("source_sig", "")))
    return out


def item_meta(path: str | os.PathLike) -> tuple[str, str] | None:
    """(key_hash, source_sig) of an item, reading only those two entries (fast resume check);
    None when the file is unreadable or lacks them."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["key_hash"]), str(z["source_sig"])
    except Exception:  # noqa: BLE001 - a truncated / foreign file is simply recomputed
        return None


@dataclass(frozen=True)
class CacheReport:
    """What one :func:`build_teacher_cache` call did."""

    folder: Path
    total: int  # samples in this shard
    computed: int
    reused: int


def open_cache(folder: str | os.PathLike, *, expected_key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and check a key folder's manifest. With ``expected_key``, a cache written with another
    checkpoint or other parameters raises :class:`TeacherCacheError` (it is never reused)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise TeacherCacheError(f"{folder}: not a teacher cache (no {MANIFEST}); build it with "
                                "goose teacher or teacher.cache.build_teacher_cache")
    manifest = read_json(path)
    if expected_key is not None and manifest.get("key") != expected_key:
        diff = sorted(k for k in set(expected_key) | set(manifest.get("key", {}))
                      if expected_key.get(k) != manifest.get("key", {}).get(k))
        raise TeacherCacheError(f"{path}: teacher cache was written with a different {diff} "
                                "(e.g. another checkpoint); rebuild it for this one")
    return manifest


def build_teacher_cache(samples: Sequence[Any], cache_root: str | os.PathLike, *, fingerprint: str,
                        teacher: Callable[[], Any] | Any, teacher_cfg: TeacherConfig = DEFAULT_TEACHER,
                        box_params: BoxParams = DEFAULT_BOXES, box_source: Literal["gt", "prediction"] = "gt",
                        predict_fn: Callable[[np.ndarray], np.ndarray] | None = None, predictor_id: str = "",
                        shard: tuple[int, int] = (0, 1), num_classes: int = 64,
                        instance_classes: Collection[int] | None = None,
                        offload: Callable[[], AbstractContextManager[Any]] | None = None,
                        teacher_kind: TeacherKind = "sam3", signature: Callable[[Any], str] = source_signature,
                        progress: bool = True) -> CacheReport:
    """Compute missing teacher items of ``samples`` (``data.layout.Sample``) under ``cache_root``.

    ``teacher``: a ``prompt.Teacher`` or a zero-argument factory returning one, called only if
    something must be computed (a fully cached split loads no model); or an :class:`ItemTeacher`
    (the oracle, with ``teacher_kind="oracle"`` for the key and its ``signature`` of a sample's
    files for the items). ``box_source="prediction"``
    needs ``predict_fn`` (image HxWx3 uint8 -> HxW uint8) and a ``predictor_id`` naming it
    (e.g. the student checkpoint's hash) for the key. ``instance_classes``: classes whose instance
    ids make ground-truth boxes (the dataset's :attr:`Ontology.instance_classes`; None = every
    class's); part of the key when given.

    GPU memory: the student and the teacher never run side by side. With predicted boxes every
    missing item's boxes are predicted first; then the teacher is built and run inside
    ``offload()`` (e.g. :meth:`goose_lib.infer.predictor.Predictor.offloaded`, which parks the
    student's weights on the CPU), freed, and only then is the student given back its device.
    """
    from tqdm.auto import tqdm

    from goose_lib.data.decode import load_sample

    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    if box_source == "prediction" and (predict_fn is None or not predictor_id):
        raise ValueError("box_source='prediction' needs predict_fn and predictor_id")
    key = cache_key(fingerprint, teacher_cfg, box_params, box_source=box_source, predictor_id=predictor_id,
                    instance_classes=instance_classes, teacher_kind=teacher_kind)
    key_hash = sha256_json(key)
    folder = key_dir(cache_root, key)
    if (folder / MANIFEST).exists():
        open_cache(folder, expected_key=key)
    else:
        atomic_write_json(folder / MANIFEST, {"key": key, "key_hash": key_hash})
    mine = list(samples)[i::n]
    todo = []
    for s in mine:
        p = item_path(folder, s.key)
        if p.exists() and item_meta(p) == (key_hash, signature(s)):
            continue
        todo.append(s)
    if not todo:
        return CacheReport(folder, len(mine), 0, len(mine))
    predicted: dict[str, BoxSet] = {}
    if box_source == "prediction":
        assert predict_fn is not None
        for s in tqdm(todo, desc="student boxes", disable=not progress):
            predicted[s.key] = boxes_from_prediction(predict_fn(load_sample(s, num_classes=num_classes)["image"]),
                                                     params=box_params)
    with offload() if offload is not None else contextlib.nullcontext():
        model = teacher() if callable(teacher) and not hasattr(teacher, "predict") else teacher
        for s in tqdm(todo, desc="teacher", disable=not progress):
            item = load_sample(s, num_classes=num_classes)
            if box_source == "gt":
                if item.get("label") is None:
                    raise TeacherCacheError(f"{s.image}: no label for ground-truth boxes; use box_source='prediction'")
                boxes = boxes_from_labels(item["label"], item.get("instances"), params=box_params,
                                          instance_classes=instance_classes)
            else:
                boxes = predicted.pop(s.key)
            maps = (model.item_maps(item, boxes) if isinstance(model, ItemTeacher)
                    else model.predict([item["image"]], [boxes])[0])
            write_item(item_path(folder, s.key), maps, key_hash, signature(s))
        del model
        _release_memory()  # the teacher's memory goes back before the student returns
    return CacheReport(folder, len(mine), len(todo), len(mine) - len(todo))


def _release_memory() -> None:
    """Collect a dropped model and hand its CUDA memory back."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def cache_split(sam3_checkpoint: str | os.PathLike, data_root: str, split: str, cache_root: str | os.PathLike, *,
                teacher_cfg: TeacherConfig = DEFAULT_TEACHER, box_params: BoxParams = DEFAULT_BOXES,
                box_source: Literal["gt", "prediction"] = "gt", predictor: Callable[[np.ndarray], np.ndarray] | None = None,
                predictor_id: str = "", limit: int | None = None, exclude_scenarios: Sequence[str] = (),
                shard: tuple[int, int] = (0, 1), device: str = "auto",
                offload: Callable[[], AbstractContextManager[Any]] | None = None,
                teacher_kind: TeacherKind = "sam3", progress: bool = True) -> CacheReport:
    """Teacher outputs for a split; the model is loaded only when an item is missing.

    ``sam3_checkpoint``: the teacher's SAM3 checkpoint (a folder or an embedded name).
    ``teacher_kind="oracle"``: the masks are the exact labels' (:mod:`goose_lib.teacher.oracle`;
    ``sam3_checkpoint`` is not read; a root without ``labels_exact`` raises ``ExactLabelsMissing``).
    ``box_source="prediction"`` prompts with components of ``predictor``'s output (image HxWx3 uint8
    -> HxW class ids, e.g. :func:`goose_lib.infer.tta.predictor` of a student; ``predictor_id``
    names it in the cache key), so unlabelled splits work too. ``offload``: while the teacher
    runs, parks the student elsewhere (see :func:`build_teacher_cache`). Ground-truth boxes use
    instance ids only on the data root's ``has_instance`` classes.
    """
    from goose_lib.data.embedded import load_ontology
    from goose_lib.data.layout import index_split

    if box_source == "prediction" and (predictor is None or not predictor_id):
        raise ValueError("cache_split: box_source='prediction' needs a predictor and its predictor_id")
    instance_classes = load_ontology(data_root).instance_classes
    if teacher_kind == "oracle":
        from goose_lib.teacher.oracle import ORACLE, OracleTeacher

        oracle = OracleTeacher(data_root, cfg=teacher_cfg, box_params=box_params, instance_classes=instance_classes)
        fingerprint, teacher = ORACLE, oracle

        def signature(sample: Any) -> str:
            return files_signature(oracle.signature_files(sample))
    elif teacher_kind == "sam3":
        from goose_lib.models.sam3 import checkpoint_fingerprint
        from goose_lib.teacher.prompt import load_teacher

        fingerprint, signature = checkpoint_fingerprint(sam3_checkpoint), source_signature
        teacher = functools.partial(load_teacher, sam3_checkpoint, cfg=teacher_cfg, device=device)
    else:
        raise ValueError(f"cache_split: teacher_kind must be one of {TEACHER_KINDS}, got {teacher_kind!r}")
    samples = index_split(data_root, split, exclude_scenarios=exclude_scenarios, limit=limit)
    return build_teacher_cache(samples, cache_root, fingerprint=fingerprint, teacher=teacher, teacher_cfg=teacher_cfg,
                               box_params=box_params, box_source=box_source, predict_fn=predictor,
                               predictor_id=predictor_id, shard=shard, instance_classes=instance_classes,
                               offload=offload, teacher_kind=teacher_kind, signature=signature, progress=progress)
