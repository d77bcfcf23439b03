"""The class table: packaged and from a dataset's goose_label_mapping.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from goose_lib.ontology import IGNORE_INDEX, MAPPING_CSV, Ontology, OntologyError, packaged_mapping_rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def test_packaged_table_has_64_classes_and_12_categories() -> None:
    ont = Ontology.load()
    assert ont.num_classes == 64 and len(ont.names) == 64
    assert ont.num_categories == 12 and ont.categories[0] == "void"
    assert len(ont.evaluated_categories) == 11
    assert ont.names[0] == "undefined" and ont.names[53] == "sky" and ont.names[63] == "military_vehicle"
    assert ont.index("traffic_cone") == 1
    assert ont.categories[ont.class_to_category[ont.index("ego_vehicle")]] == "void"
    assert ont.categories[ont.class_to_category[ont.index("car")]] == "vehicle"
    assert ont.palette.shape == (64, 3) and ont.palette.dtype == np.uint8
    assert IGNORE_INDEX == 255


def test_snow_and_hedge_share_a_colour() -> None:
    ont = Ontology.load()
    snow, hedge = ont.index("snow"), ont.index("hedge")
    assert tuple(ont.palette[snow]) == tuple(ont.palette[hedge]) == (0xD1, 0x57, 0xA0)
    colours = {tuple(c) for c in ont.palette}
    assert len(colours) == 63  # exactly one shared colour: a colour image cannot be decoded into ids


def test_dataset_csv_is_preferred_over_the_packaged_table(tmp_path: Path) -> None:
    rows = packaged_mapping_rows()
    rows[53] = {**rows[53], "hex": "#0000ff", "has_instance": "1"}  # sky recoloured in "this dataset"
    _write_csv(tmp_path / MAPPING_CSV, rows, ["class_name", "label_key", "has_instance", "hex"])
    ont = Ontology.load(tmp_path)
    assert ont.source == str(tmp_path / MAPPING_CSV)
    assert tuple(ont.palette[53]) == (0, 0, 255)
    assert ont.classes[53].has_instance and not Ontology.load().classes[53].has_instance
    assert ont.num_classes == 64 and ont.num_categories == 12


def test_tiny_root_csv_matches_packaged_table(tiny_root: Path) -> None:
    with open(tiny_root / MAPPING_CSV, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["class_name", "label_key", "has_instance", "hex"]
        assert len(list(reader)) == 64
    a, b = Ontology.load(tiny_root), Ontology.load()
    assert a.names == b.names and np.array_equal(a.palette, b.palette)
    assert [c.has_instance for c in a.classes] == [c.has_instance for c in b.classes]
    assert a.classes[Ontology.load().index("car")].has_instance


def test_csv_missing_columns_names_file_and_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / MAPPING_CSV, packaged_mapping_rows(), ["class_name", "label_key", "hex"])
    with pytest.raises(OntologyError) as err:
        Ontology.load(tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "has_instance" in msg and "missing column" in msg


def test_csv_bad_values_name_the_row(tmp_path: Path) -> None:
    rows = packaged_mapping_rows()
    rows[5] = {**rows[5], "hex": "#12zz45"}
    path = _write_csv(tmp_path / MAPPING_CSV, rows, ["class_name", "label_key", "has_instance", "hex"])
    with pytest.raises(OntologyError, match=r"row 7: bad hex colour") as err:
        Ontology.load(tmp_path)
    assert str(err.value).startswith(str(path))


def test_custom_category_mapping() -> None:
    import json
    from importlib import resources

    data = json.loads(resources.files("goose_lib.resources").joinpath("goose_category_mappings.json").read_text())
    variant = {int(k): v for k, v in data["goose_m2f_variant"].items()}
    ont = Ontology.load(category_mapping=variant)
    assert ont.categories[ont.class_to_category[ont.index("ego_vehicle")]] == "vehicle"
    assert ont.categories[ont.class_to_category[ont.index("rock")]] == "terrain"
    with pytest.raises(OntologyError, match="no category"):
        Ontology.load(category_mapping={k: v for k, v in variant.items() if k != 7})


def test_colorize_rejects_ids_outside_the_table() -> None:
    ont = Ontology.load()
    label = np.array([[0, 53], [2, 59]], np.uint8)
    rgb = ont.colorize(label)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[1, 0]) == tuple(rgb[1, 1])
    with pytest.raises(OntologyError, match="64"):
        ont.colorize(np.array([[64]], np.uint8))


def test_csv_with_byte_order_mark_and_padded_header(tmp_path: Path) -> None:
    rows = packaged_mapping_rows()
    text = "class_name, label_key, has_instance, hex\n" + "".join(
        f"{r['class_name']},{r['label_key']},{r['has_instance']},{r['hex']}\n" for r in rows)
    (tmp_path / MAPPING_CSV).write_bytes(b"\xef\xbb\xbf" + text.encode())
    ont = Ontology.load(tmp_path)
    assert ont.names == Ontology.load().names and np.array_equal(ont.palette, Ontology.load().palette)


def test_csv_short_row_and_binary_file(tmp_path: Path) -> None:
    path = tmp_path / MAPPING_CSV
    path.write_text("class_name,label_key,has_instance,hex\nundefined,0,0,#000000\ntraffic_cone,1\n")
    with pytest.raises(OntologyError, match=r"row 3: no value for column\(s\) \['has_instance', 'hex'\]") as err:
        Ontology.load(tmp_path)
    assert str(err.value).startswith(str(path))
    path.write_bytes(b"\xff\xfe\x00garbage\x00\xff")
    with pytest.raises(OntologyError, match="not a UTF-8 CSV"):
        Ontology.load(tmp_path)
