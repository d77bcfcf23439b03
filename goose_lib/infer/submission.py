"""Challenge submissions: predictions in the submission layout, the zip, its validator, its scorer.

Layout (2025 edition): one 8-bit single-channel PNG ``<scenario>/<stem>_labelids.png`` per image
of the split, mirroring ``images/<split>/<scenario>/<stem>_<camera>.png``; pixel = class id
0..63. The zip holds exactly these entries at its top level (no enclosing folder).
Source: the challenge's submission instructions of the 2025 edition as summarised in
``shared/goose/README.md`` ("a zip mirroring the test folder tree with one
``<stem>_labelids.png`` per test image"); the 2026 instructions are not available here.

Several roots / splits in one submission (the 2026 test set is GOOSE test + GOOSE-Ex test, 1,815
images): pass ``sources=[Source(goose_root, "test"), Source(goose_ex_root, "test")]``. The zip
then holds the *union* of their trees, each mirrored as above (their scenario folders do not
collide; two images mapping to one entry are an error naming both); ``Source.prefix`` puts a
source's tree under a folder (e.g. ``"goose_ex/"``) should the organisers ask for that. The
validator checks the union: every image of every source exactly once, nothing else.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from goose_lib.config import DataConfig, EvalProtocol, to_dict
from goose_lib.io import atomic_write_bytes, atomic_write_json, read_json
from goose_lib.metrics import DEFAULT_PROTOCOL, ConfusionMatrix, Scores, compute_scores
from goose_lib.ontology import Ontology

from .tta import DEFAULT_TTA, TTAConfig, predict

PRED_SUFFIX = "_labelids.png"
MAX_LISTED = 20  # problems listed in one error message


class SubmissionError(ValueError):
    """A submission (zip or folder) that does not fit the split; the message names every bad file."""


@dataclass(frozen=True)
class Expected:
    """One prediction a split needs: its relative name, the image it is for, the image's (H, W)."""

    name: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class Source:
    """One root and split of a submission; its entries go under ``prefix`` (``""`` = top level)."""

    root: str
    split: str = "test"
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.endswith("/") or self.prefix.startswith("/") or ".." in self.prefix):
            raise ValueError(f"Source.prefix must be a relative folder ending in '/', got {self.prefix!r}")


def _sources(root: str | os.PathLike | None, split: str, sources: Sequence[Source] | None) -> list[Source]:
    if sources:
        return list(sources)
    if root is None:
        raise ValueError("give a root (and split) or sources")
    return [Source(os.fspath(root), split)]


def _describe(sources: Sequence[Source]) -> str:
    return " + ".join(f"{s.root} {s.split}" for s in sources)


def expected_union(sources: Sequence[Source], *, config: DataConfig | None = None) -> dict[str, Expected]:
    """{entry name: Expected} over every source (see module doc); colliding names are an error."""
    out: dict[str, Expected] = {}
    for src in sources:
        for name, exp in expected_predictions(src.root, src.split, config=config).items():
            full = src.prefix + name
            if full in out:
                raise SubmissionError(f"{exp.image}: same submission entry {full} as {out[full].image}; "
                                      "give the sources distinct prefixes")
            out[full] = Expected(full, exp.image, exp.label)
    return out


def _num_classes(sources: Sequence[Source]) -> int:
    from goose_lib.data.embedded import load_ontology

    counts = {s.root: load_ontology(s.root).num_classes for s in sources}
    if len(set(counts.values())) > 1:
        raise SubmissionError(f"the sources' class tables differ in size: {counts}")
    return next(iter(counts.values()))


def expected_predictions(root: str | os.PathLike, split: str, *, config: DataConfig | None = None
                         ) -> dict[str, Expected]:
    """{``<scenario>/<stem>_labelids.png``: Expected} for every image of the split."""
    from goose_lib.data.layout import index_split
    config = config or DataConfig()
    out: dict[str, Expected] = {}
    for s in index_split(root, split, cameras=config.cameras, exclude_scenarios=config.exclude_scenarios,
                         limit=config.limit):
        name = f"{s.scenario}/{s.stem}{PRED_SUFFIX}"
        if name in out:
            raise SubmissionError(f"{s.image}: same prediction name {name} as {out[name].image} "
                                  f"(two cameras of one stem); restrict the cameras")
        out[name] = Expected(name, s.image, s.labelids)
    if not out:
        raise SubmissionError(f"{root}: split {split!r} has no images")
    return out


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.height, im.width


def _decode_prediction(data: bytes | Path, where: str, num_classes: int) -> tuple[np.ndarray | None, str | None]:
    """(HxW uint8 ids, None) or (None, what is wrong)."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            if im.mode not in ("L", "P"):
                return None, f"{where}: PNG mode {im.mode}, expected 8-bit single channel (L)"
            arr = np.asarray(im if im.mode == "L" else Image.frombytes("L", im.size, im.tobytes()))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is reported with the file
        return None, f"{where}: not a readable PNG ({exc})"
    if arr.size and int(arr.max()) >= num_classes:
        return None, f"{where}: holds class id {int(arr.max())}, valid ids are 0..{num_classes - 1}"
    return arr, None


def _entries(path: Path) -> Iterator[tuple[str, bytes | Path]]:
    """(relative name, bytes or file path) of every file in a zip or folder."""
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and not f.name.startswith("."):  # the manifest, provenance records
                yield f.relative_to(path).as_posix(), f
        return
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, zf.read(info)
    except zipfile.BadZipFile as exc:
        raise SubmissionError(f"{path}: not a zip file ({exc})") from exc


def _raise(path: Path, problems: list[str]) -> None:
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise SubmissionError(f"{path}: {len(problems)} problem(s):\n  {listed}{more}")


def _check(path: Path, expected: dict[str, Expected], num_classes: int, what: str, *,
           progress: bool = False) -> Iterator[tuple[Expected, np.ndarray]]:
    """Validate every entry of ``path`` against ``expected``; yield (expected, prediction) pairs.

    Problems are collected over all files and raised together at the end (before the caller
    can use partial results, it must exhaust the iterator).
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: submission does not exist")
    problems: list[str] = []
    seen: set[str] = set()
    entries = list(_entries(path))
    for name, data in tqdm(entries, desc="check predictions", disable=not progress):
        where = f"{path}/{name}" if path.is_dir() else f"{path}:{name}"
        if name in seen:
            problems.append(f"{where}: duplicate entry")
            continue
        seen.add(name)
        exp = expected.get(name)
        if exp is None:
            problems.append(f"{where}: unexpected file (no image <scenario>/"
                            f"{name.rsplit('/', 1)[-1].replace(PRED_SUFFIX, '_<camera>.png')} in {what})")
            continue
        arr, err = _decode_prediction(data, where, num_classes)
        if err is not None:
            problems.append(err)
            continue
        assert arr is not None
        hw = _image_size(exp.image)
        if arr.shape != hw:
            problems.append(f"{where}: size {arr.shape[1]}x{arr.shape[0]} (WxH), image {exp.image} is "
                            f"{hw[1]}x{hw[0]}")
            continue
        yield exp, arr
    for name in sorted(set(expected) - seen):
        problems.append(f"{expected[name].image}: no prediction (expected {name})")
    _raise(path, problems)


def validate_submission(path: str | os.PathLike, root: str | os.PathLike | None = None, *, split: str = "test",
                        config: DataConfig | None = None, progress: bool = False,
                        sources: Sequence[Source] | None = None) -> int:
    """Check a submission zip (or folder): every image of the split (of every source in
    ``sources``, instead of ``root``/``split``) has exactly one prediction of the image's size with
    valid ids, and nothing else is in it. Returns the number of predictions; raises
    :class:`SubmissionError` naming every bad, missing or unexpected file."""
    srcs = _sources(root, split, sources)
    expected = expected_union(srcs, config=config)
    return sum(1 for _ in _check(Path(path), expected, _num_classes(srcs), _describe(srcs), progress=progress))


def prediction_counts(pred: str | os.PathLike, root: str | os.PathLike, *, split: str = "val",
                      config: DataConfig | None = None, progress: bool = False) -> tuple[np.ndarray, Ontology]:
    """The raw (K, K) confusion matrix of predictions in the submission layout (folder or zip)
    against the split's labels, and the ontology it was counted with (score it under any protocol).

    Missing, extra, unreadable or wrong-size predictions raise :class:`SubmissionError` naming
    the files (nothing is scored then)."""
    from goose_lib.data.decode import read_label
    from goose_lib.data.embedded import load_ontology

    ontology = load_ontology(root)
    expected = expected_predictions(root, split, config=config)
    if any(e.label is None for e in expected.values()):
        raise SubmissionError(f"{root}: split {split!r} has no labels to score against")
    cm = ConfusionMatrix(ontology.num_classes)
    for exp, arr in _check(Path(pred), expected, ontology.num_classes, f"{root} {split}", progress=progress):
        assert exp.label is not None
        cm.update(arr, read_label(exp.label, ontology.num_classes), where=str(exp.label))
    return cm.counts, ontology


def score_predictions(pred: str | os.PathLike, root: str | os.PathLike, *, split: str = "val",
                      protocol: EvalProtocol = DEFAULT_PROTOCOL, config: DataConfig | None = None,
                      progress: bool = False) -> Scores:
    """Score predictions in the submission layout (folder or zip) against the split's labels
    (:func:`prediction_counts` reduced under ``protocol``)."""
    counts, ontology = prediction_counts(pred, root, split=split, config=config, progress=progress)
    return compute_scores(counts, ontology, protocol)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


MANIFEST = ".goose_predictions.json"  # what produced a predictions folder (for safe resuming)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Cheap identity of a model's weights: names, shapes and the first 256 values of every tensor."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()


def write_predictions(model: torch.nn.Module, root: str | os.PathLike | None, out_dir: str | os.PathLike, *,
                      split: str = "test", tta: TTAConfig = DEFAULT_TTA, config: DataConfig | None = None,
                      shard: tuple[int, int] | None = None, progress: bool = True,
                      sources: Sequence[Source] | None = None) -> Path:
    """Predict every image of ``split`` into ``out_dir`` in the submission layout. Returns ``out_dir``.
    ``sources`` instead of ``root``/``split``: the union of several (module doc).

    ``shard=(i, n)`` predicts only images i, i+n, ... (sorted order), so the tasks of a cluster
    job array can share one ``out_dir``; score the union with :func:`score_predictions`.

    Resumable: each file is written atomically and ``out_dir/.goose_predictions.json`` records the
    model fingerprint, TTA and split; a rerun with the same ones keeps existing predictions, one
    with another model / TTA / split starts afresh. A non-empty folder without that record is
    refused (it is not ours to overwrite).
    """
    from goose_lib.data.decode import read_image

    out = Path(out_dir)
    srcs = _sources(root, split, sources)
    expected = expected_union(srcs, config=config)
    manifest: dict = {"model": model_fingerprint(model), "tta": to_dict(tta), "split": split}
    if sources:
        manifest = {"model": manifest["model"], "tta": manifest["tta"], "sources": [to_dict(s) for s in srcs]}
    record = out / MANIFEST
    if record.is_file():
        if read_json(record) != manifest:
            for f in out.rglob(f"*{PRED_SUFFIX}"):
                f.unlink()
    elif out.exists() and any(MANIFEST not in p.name for p in out.iterdir()):  # another shard's record
        # being written (its temporary file) does not make the folder foreign
        raise SubmissionError(f"{out}: folder exists and was not written by write_predictions; "
                              f"remove it or choose another folder")
    atomic_write_json(record, manifest)
    was_training = model.training
    model.eval()
    try:
        items = list(expected.items())
        if shard is not None:
            items = items[shard[0]::shard[1]]
        for name, exp in tqdm(items, desc=f"predict {_describe(srcs)}", disable=not progress):
            target = out / name
            if target.is_file():
                continue
            atomic_write_bytes(target, _png(predict(model, read_image(exp.image), tta)))
    finally:
        model.train(was_training)
    return out


def zip_predictions(pred_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Zip a predictions folder (its ``*_labelids.png`` at the zip's top level), atomically."""
    pred_dir, out = Path(pred_dir), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed
            for f in sorted(pred_dir.rglob(f"*{PRED_SUFFIX}")):
                zf.write(f, f.relative_to(pred_dir).as_posix())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def write_submission(model: torch.nn.Module, root: str | os.PathLike | None, out: str | os.PathLike, *,
                     split: str = "test", tta: TTAConfig = DEFAULT_TTA, config: DataConfig | None = None,
                     work_dir: str | os.PathLike | None = None, progress: bool = True,
                     sources: Sequence[Source] | None = None) -> Path:
    """Predict ``split`` (or every source of ``sources``), zip it to ``out`` and validate the zip
    (the union, for several sources); returns ``out``.

    Predictions are staged in ``work_dir`` (default ``<out without .zip>_predictions``), which
    makes an interrupted run resumable; delete it to predict afresh (e.g. with another model).
    """
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.stem + "_predictions")
    write_predictions(model, root, work, split=split, tta=tta, config=config, progress=progress, sources=sources)
    zip_predictions(work, out)
    validate_submission(out, root, split=split, config=config, sources=sources)
    return out
