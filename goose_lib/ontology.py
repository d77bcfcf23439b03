"""The GOOSE class table: 64 classes, their colours, and the 12-category grouping.

Read from a dataset's own ``goose_label_mapping.csv`` (columns ``class_name,label_key,
has_instance,hex``) when present, else from the table packaged with the library. The category
grouping is data (``resources/goose_category_mappings.json``), not code: pass another mapping
to :meth:`Ontology.load` to evaluate with a different grouping.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

MAPPING_CSV = "goose_label_mapping.csv"
REQUIRED_COLUMNS = ("class_name", "label_key", "has_instance", "hex")
VOID_CATEGORY = "void"
IGNORE_INDEX = 255  # label value ignored by losses and metrics (padding, dropped void)
# Classes with instance ids in the packaged table (the real has_instance values are unverified).
_THING_CLASSES = frozenset({
    "traffic_cone", "obstacle", "street_light", "car", "bicycle", "person", "bus", "traffic_light",
    "motorcycle", "boom_barrier", "rider", "animal", "truck", "on_rails", "caravan", "trailer",
    "rock", "pole", "traffic_sign", "misc_sign", "kick_scooter", "heavy_machinery", "container",
    "barrel", "military_vehicle", "tree_trunk",
})


class OntologyError(ValueError):
    """A class table or category mapping that cannot be used; the message names the file."""


@dataclass(frozen=True)
class GooseClass:
    id: int
    name: str
    color: tuple[int, int, int]
    category: str
    has_instance: bool


def _hex_to_rgb(value: str, where: str) -> tuple[int, int, int]:
    v = value.strip().lstrip("#")
    if len(v) != 6:
        raise OntologyError(f"{where}: bad hex colour {value!r}")
    try:
        return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)
    except ValueError as exc:
        raise OntologyError(f"{where}: bad hex colour {value!r}") from exc


def _parse_bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "t"):
        return True
    if v in ("0", "false", "no", "n", "f", ""):
        return False
    raise OntologyError(f"{where}: bad has_instance value {value!r}")


def default_category_mapping() -> dict[int, str]:
    """The packaged 12-category grouping (class id -> category name)."""
    text = resources.files("goose_lib.resources").joinpath("goose_category_mappings.json").read_text()
    return {int(k): v for k, v in json.loads(text)["fine_to_category"].items()}


def packaged_mapping_rows() -> list[dict[str, str]]:
    """The packaged class table in the dataset's own CSV layout (for the synthetic writer)."""
    text = resources.files("goose_lib.resources").joinpath("goose_classes.csv").read_text()
    rows = []
    for r in csv.DictReader(text.splitlines()):
        rows.append({
            "class_name": r["class_name"], "label_key": r["label_key"],
            "has_instance": "1" if r["class_name"] in _THING_CLASSES else "0", "hex": r["hex"],
        })
    return rows


class Ontology:
    """64 classes and the categories they group into (index 0 of ``categories`` is void)."""

    def __init__(self, classes: list[GooseClass], categories: list[str], source: str) -> None:
        ids = [c.id for c in classes]
        if ids != list(range(len(classes))):
            raise OntologyError(f"{source}: label keys must be 0..{len(classes) - 1} without gaps")
        self.classes = tuple(classes)
        self.categories = tuple(categories)
        self.source = source
        cat_index = {name: i for i, name in enumerate(self.categories)}
        self.class_to_category = np.array([cat_index[c.category] for c in classes], dtype=np.int64)
        self.palette = np.array([c.color for c in classes], dtype=np.uint8)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    @property
    def instance_classes(self) -> frozenset[int]:
        """Ids of the classes whose ``has_instance`` is set in the class table: only their pixels'
        instance ids mean objects; every other class is boxed by connected components."""
        return frozenset(c.id for c in self.classes if c.has_instance)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def evaluated_categories(self) -> list[int]:
        """Category indices that enter the category mIoU (all but void)."""
        return [i for i, c in enumerate(self.categories) if c != VOID_CATEGORY]

    def index(self, name: str) -> int:
        for c in self.classes:
            if c.name == name:
                return c.id
        raise KeyError(f"unknown class {name!r}")

    @classmethod
    def load(cls, root: str | Path | None = None, category_mapping: Mapping[int, str] | None = None
             ) -> Ontology:
        """Class table of the dataset at ``root`` (its ``goose_label_mapping.csv``), else packaged."""
        mapping = dict(category_mapping) if category_mapping is not None else default_category_mapping()
        csv_path = Path(root) / MAPPING_CSV if root is not None else None
        if csv_path is not None and csv_path.exists():
            rows, source = cls._read_csv(csv_path), str(csv_path)
        else:
            rows, source = packaged_mapping_rows(), "goose_lib/resources/goose_classes.csv"
        classes = []
        for i, r in enumerate(rows):
            where = f"{source} row {i + 2}"
            try:
                cid = int(r["label_key"])
            except ValueError as exc:
                raise OntologyError(f"{where}: label_key {r['label_key']!r} is not an integer") from exc
            if cid not in mapping:
                raise OntologyError(f"{where}: class id {cid} has no category in the category mapping")
            classes.append(GooseClass(cid, r["class_name"].strip(), _hex_to_rgb(r["hex"], where),
                                      mapping[cid], _parse_bool(r["has_instance"], where)))
        classes.sort(key=lambda c: c.id)
        cats = [VOID_CATEGORY] + sorted({c.category for c in classes} - {VOID_CATEGORY},
                                        key=lambda n: min(c.id for c in classes if c.category == n))
        return cls(classes, cats, source)

    @staticmethod
    def _read_csv(path: Path) -> list[dict[str, str]]:
        # utf-8-sig: tolerate a byte-order mark (spreadsheet exports); header names are stripped
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            try:
                reader.fieldnames = [n.strip() for n in (reader.fieldnames or [])]
                missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
                if missing:
                    raise OntologyError(
                        f"{path}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}, "
                        f"found {reader.fieldnames}"
                    )
                rows = list(reader)
            except UnicodeDecodeError as exc:
                raise OntologyError(f"{path}: not a UTF-8 CSV file ({exc})") from exc
        if not rows:
            raise OntologyError(f"{path}: no class rows")
        for i, r in enumerate(rows):
            empty = [c for c in REQUIRED_COLUMNS if r.get(c) is None]
            if empty:
                raise OntologyError(f"{path} row {i + 2}: no value for column(s) {empty}")
        return rows

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """HxW class ids -> HxWx3 uint8 colours (ids outside the table raise)."""
        if label.size and int(label.max()) >= self.num_classes:
            raise OntologyError(f"label id {int(label.max())} outside the class table (0..{self.num_classes - 1})")
        return self.palette[label]

