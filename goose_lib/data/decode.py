"""Decoding and validating GOOSE files (no torch: cheap to import in worker processes).

Formats returned: images HxWx3 ``uint8`` RGB; label maps HxW ``uint8`` class ids
``0..num_classes-1``; instance maps HxW ``int32``. ``_color.png`` files are never decoded into
ids (snow and hedge share a colour).

Instance encoding assumed (the dataset's own encoding is unverified, see
``shared/goose/README.md``): ``<stem>_instanceids.png`` is an 8- or 16-bit grayscale PNG whose
pixel value is the object id as is, 0 = no instance, ids unique within the image (not per class,
no ``class * 1000 + id`` packing); the class of an object comes from ``_labelids.png``. Ids count
only on classes whose ``has_instance`` is set in ``goose_label_mapping.csv``
(:attr:`Ontology.instance_classes`); other classes are split into connected components.
:func:`instance_anomalies` (run by ``goose check``) names the files that break this: ids on
classes without instances, one id spanning several classes.

Every problem raises :class:`DataError` whose message starts with the offending file's path;
:func:`check_root` collects every problem of a root instead (``goose check``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from goose_lib.config import DataConfig
from goose_lib.data.layout import Sample, index_split
from goose_lib.ontology import Ontology

_GRAY_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


class DataError(ValueError):
    """A file that cannot be used as GOOSE data; the message starts with its path."""


def _open(path: str | os.PathLike, what: str, *, load: bool = True) -> Image.Image:
    """Open ``path`` and (``load``) fully decode it, so truncated files fail here, not later."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file does not exist")
    try:
        img = Image.open(path)
        if load:
            img.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
        raise _decode_error(path, what, exc) from exc
    return img


def _decode_error(path: Path, what: str, exc: Exception) -> DataError:
    return DataError(f"{path}: cannot decode {what} ({type(exc).__name__}: {exc}); "
                     "the file is corrupt or truncated, re-extract it")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A camera image as HxWx3 ``uint8`` RGB (grayscale and RGBA are converted)."""
    img = _open(path, "image")
    if img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        raise DataError(f"{path}: unsupported image mode {img.mode!r}; expected 8-bit RGB or gray")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


_ZERO_COPY = {"L": np.uint8, "I;16": np.dtype("<u2"), "I;16B": np.dtype(">u2")}


def read_gray(path: str | os.PathLike, what: str = "label map") -> np.ndarray:
    """A single-channel 8- or 16-bit PNG as an HxW array (uint8 / uint16 / int32 as stored).

    L and I;16 files are decoded straight into the returned array (PIL's decoder writes into a
    buffer-mapped image), which saves the bytes copy of ``np.asarray(img)``; any other mode, or
    a PIL that does not keep the mapped image, falls back to ``np.asarray``.
    """
    path = Path(path)
    img = _open(path, what, load=False)
    if img.mode not in _GRAY_MODES:
        hint = " (is this a _color.png? colours cannot be decoded into ids)" if img.mode in ("RGB", "RGBA") else ""
        raise DataError(f"{path}: {what} has mode {img.mode!r}, expected a single-channel "
                        f"8- or 16-bit PNG{hint}")
    try:
        dtype = _ZERO_COPY.get(img.mode)
        if dtype is not None:
            arr = np.empty(img.size[::-1], dtype)
            target = Image.frombuffer(img.mode, img.size, arr, "raw", img.mode, 0, 1).im
            img.im = target
            img.load()
            if img.im is target:
                return arr
        img.load()
        return np.asarray(img)
    except Exception as exc:  # see _open
        raise _decode_error(path, what, exc) from exc
    finally:
        img.close()


def read_label(path: str | os.PathLike, num_classes: int = 64) -> np.ndarray:
    """A ``_labelids.png`` as HxW ``uint8`` class ids; ids ``>= num_classes`` raise :class:`DataError`."""
    arr = read_gray(path, "label map")
    if arr.size:
        hi = int(arr.max())
        if hi >= num_classes:
            bad = np.unique(arr[arr >= num_classes])
            raise DataError(f"{path}: label ids {bad[:10].tolist()} outside the class table "
                            f"0..{num_classes - 1} ({int((arr >= num_classes).sum())} pixels)")
    return arr.astype(np.uint8, copy=False)


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """An ``_instanceids.png`` (8- or 16-bit gray) as HxW ``int32``; 0 = no instance."""
    arr = read_gray(path, "instance map").astype(np.int32)
    if arr.size and int(arr.min()) < 0:
        raise DataError(f"{path}: negative instance ids")
    return arr


def _check_size(path: Path, arr: np.ndarray, image_path: Path, shape: tuple[int, ...]) -> None:
    if arr.shape[:2] != shape[:2]:
        raise DataError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from its image "
                        f"{image_path} ({shape[1]}x{shape[0]})")


def load_sample(sample: Sample, *, num_classes: int = 64) -> dict[str, Any]:
    """Decode one sample: ``{"image", "label", "instances", "sample"}``.

    ``label`` / ``instances`` are ``None`` where the split has no labels / no instance map.
    A labelled sample whose ``_labelids.png`` is missing raises :class:`DataError`.
    """
    image = read_image(sample.image)
    label = instances = None
    if sample.labelids is not None:
        if not sample.labelids.is_file():
            raise DataError(f"{sample.image}: image has no label file (expected {sample.labelids})")
        label = read_label(sample.labelids, num_classes)
        _check_size(sample.labelids, label, sample.image, image.shape)
    if sample.instanceids is not None:
        instances = read_instances(sample.instanceids)
        _check_size(sample.instanceids, instances, sample.image, image.shape)
    return {"image": image, "label": label, "instances": instances, "sample": sample}


def missing_files(sample: Sample) -> list[str]:
    """Problems found by ``stat`` alone (no decoding): missing image / label files."""
    out = []
    if not sample.image.is_file():
        out.append(f"{sample.image}: image file does not exist")
    if sample.labelids is not None and not sample.labelids.is_file():
        out.append(f"{sample.image}: image has no label file (expected {sample.labelids})")
    return out


def instance_anomalies(path: str | os.PathLike, label: np.ndarray, instances: np.ndarray,
                       ontology: Ontology) -> list[str]:
    """Where an instance map breaks the assumed encoding (module docstring), each line naming
    ``path``: instance ids on classes without ``has_instance``, and ids spanning several classes."""
    out: list[str] = []
    if label.shape != instances.shape:
        return out
    on = instances > 0
    if not on.any():
        return out
    cls, ids = label[on].astype(np.int64), instances[on].astype(np.int64)
    lut = np.zeros(max(256, int(cls.max()) + 1), bool)
    lut[list(ontology.instance_classes)] = True
    stuff = ~lut[cls]
    if stuff.any():
        counts = np.bincount(cls[stuff])
        bad = ", ".join(f"{ontology.names[c] if c < ontology.num_classes else c} ({c}): {int(counts[c])} px"
                        for c in np.flatnonzero(counts)[:8])
        out.append(f"{path}: instance ids on classes without instances (has_instance=0 in the class "
                   f"table {ontology.source}): {bad}")
    pairs = np.unique(ids * 65536 + cls)
    pid = pairs // 65536
    multi = np.unique(pid[np.flatnonzero(pid[1:] == pid[:-1])])
    if len(multi):
        shown = []
        for i in multi[:5]:
            names = [ontology.names[c] if c < ontology.num_classes else str(c) for c in pairs[pid == i] % 65536]
            shown.append(f"id {int(i)}: {'/'.join(names)}")
        out.append(f"{path}: {len(multi)} instance id(s) span several classes ({'; '.join(shown)})")
    return out


def validate_sample(sample: Sample, num_classes: int = 64, ontology: Ontology | None = None) -> list[str]:
    """Every problem of one sample (decodability, modes, id range, sizes, and with ``ontology``
    the instance anomalies of :func:`instance_anomalies`), each starting with a path."""
    problems: list[str] = []
    shapes: dict[Path, tuple[int, ...]] = {}
    arrays: dict[Path, np.ndarray] = {}

    def attempt(path: Path, reader: Callable[[Path], np.ndarray]) -> None:
        try:
            arrays[path] = reader(path)
            shapes[path] = arrays[path].shape[:2]
        except DataError as exc:
            problems.append(str(exc))

    attempt(sample.image, read_image)
    if sample.labelids is not None:
        if not sample.labelids.is_file():
            problems.append(f"{sample.image}: image has no label file (expected {sample.labelids})")
        else:
            attempt(sample.labelids, lambda p: read_label(p, num_classes))
    if sample.instanceids is not None:
        attempt(sample.instanceids, read_instances)
    if sample.image in shapes:
        h, w = shapes[sample.image]
        for path in (sample.labelids, sample.instanceids):
            if path in shapes and shapes[path] != (h, w):
                ph, pw = shapes[path]
                problems.append(f"{path}: size {pw}x{ph} differs from its image {sample.image} ({w}x{h})")
    if ontology is not None and sample.labelids in arrays and sample.instanceids in arrays:
        problems += instance_anomalies(sample.instanceids, arrays[sample.labelids], arrays[sample.instanceids],
                                       ontology)
    return problems


def orphan_labels(root: str | os.PathLike, split: str) -> list[str]:
    """``_labelids.png`` files of ``split`` without any image (of any camera) of the same stem."""
    from goose_lib.data.layout import KNOWN_CAMERAS, split_image_name

    root = Path(root)
    lbl_root, img_root = root / "labels" / split, root / "images" / split
    if not lbl_root.is_dir():
        return []
    out = []
    for scen in sorted(p for p in lbl_root.iterdir() if p.is_dir()):
        img_dir = img_root / scen.name
        stems = set()
        if img_dir.is_dir():
            stems = {parsed[0] for parsed in (split_image_name(p.name, KNOWN_CAMERAS) for p in img_dir.iterdir())
                     if parsed is not None}
        for lbl in sorted(scen.glob("*_labelids.png")):
            if lbl.name[: -len("_labelids.png")] not in stems:
                out.append(f"{lbl}: label without an image (no {img_dir}/<stem>_<camera>.png)")
    return out


def _validate_chunk(args: tuple[list[Sample], int, Ontology | None]) -> list[str]:
    samples, num_classes, ontology = args
    return [p for s in samples for p in validate_sample(s, num_classes, ontology)]


def check_root(root: str | os.PathLike, splits: Sequence[str] | None = None, *, config: DataConfig | None = None,
               workers: int = 1, progress: bool = True) -> tuple[int, list[str]]:
    """Validate a GOOSE root: class table, pairing, decodability, sizes and id range of every file,
    and instance maps against the class table's ``has_instance`` (:func:`instance_anomalies`).

    Returns ``(samples checked, problems)``; every problem names its file. ``splits`` None =
    every split under ``images/``. ``workers`` > 1 decodes in that many processes (0 = all cores).
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from goose_lib.data.embedded import is_embedded, resolve_data_root
    from goose_lib.data.layout import LayoutError, list_splits
    from goose_lib.ontology import OntologyError

    cfg = config or DataConfig()
    root = resolve_data_root(root) if is_embedded(root) else Path(root)
    problems: list[str] = []
    ontology: Ontology | None = None
    try:
        ontology = Ontology.load(root)
        num_classes = ontology.num_classes
    except OntologyError as exc:
        problems.append(str(exc))
        num_classes = 64
    samples: list[Sample] = []
    for split in (splits or list_splits(root)):
        try:
            samples += index_split(root, split, cameras=cfg.cameras, exclude_scenarios=cfg.exclude_scenarios,
                                   limit=cfg.limit, use_cache=False)
        except LayoutError as exc:
            problems.append(str(exc))
        problems += orphan_labels(root, split)
    if workers == 0:
        workers = os.cpu_count() or 1
    chunks = [(samples[i:i + 16], num_classes, ontology) for i in range(0, len(samples), 16)]
    with tqdm(total=len(samples), desc="check", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(chunks) <= 1:
            results = map(_validate_chunk, chunks)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_validate_chunk, chunks)
        try:
            for chunk, found in zip(chunks, results):
                problems += found
                bar.update(len(chunk[0]))
        finally:
            if pool is not None:
                pool.shutdown()
    return len(samples), problems
