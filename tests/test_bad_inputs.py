"""Issue 15: every bad input is a clear error naming the file (data, class table, stats shards,
closed pipes). Each silent case is checked against a known answer (the good input passes)."""

from __future__ import annotations

import builtins
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from goose_lib.data.decode import DataError, check_root, load_sample, read_instances, read_label
from goose_lib.data.layout import index_split
from goose_lib.data.stats import SplitStats, compute_stats, merge_stats
from goose_lib.ontology import MAPPING_CSV, Ontology, OntologyError, packaged_mapping_rows


def _first(root: Path, split: str = "train"):
    return index_split(root, split, use_cache=False)[0]


# --- 1: label / instance maps must be lossless PNGs (by signature) ----------------------------------

def test_jpeg_saved_as_labelids_png_is_an_error_naming_the_file(root: Path) -> None:
    assert check_root(root, ["train"], progress=False)[1] == []  # the good root passes
    s = _first(root)
    label = read_label(s.labelids)
    Image.fromarray(label).save(s.labelids, format="JPEG", quality=90)
    wrong = int((np.asarray(Image.open(s.labelids)) != label).sum())
    assert wrong > 0  # the silent damage the check must catch: ids changed by compression
    with pytest.raises(DataError) as err:
        read_label(s.labelids)
    assert str(err.value).startswith(f"{s.labelids}: label map is a JPEG file, not a PNG")
    _n, problems = check_root(root, ["train"], progress=False)
    assert [p.split(": ")[0] for p in problems] == [str(s.labelids)]
    assert "lossless PNG" in problems[0]


def test_instance_map_in_another_format_is_an_error(tmp_path: Path) -> None:
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    good, bad = tmp_path / "a_instanceids.png", tmp_path / "b_instanceids.png"
    Image.fromarray(ids).save(good)
    Image.fromarray(ids).save(bad, format="TIFF")  # lossless, but not a PNG: still refused
    assert read_instances(good).tolist() == ids.tolist()
    with pytest.raises(DataError, match=r"b_instanceids.png: instance map is a TIFF file, not a PNG"):
        read_instances(bad)


# --- 3: a GOOSE class table is 64 classes, ids 0..63 ------------------------------------------------

def _write_mapping(root: Path, rows: list[dict[str, str]]) -> Path:
    path = root / MAPPING_CSV
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["class_name", "label_key", "has_instance", "hex"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_mapping_csv_must_hold_ids_0_to_63(tmp_path: Path) -> None:
    rows = packaged_mapping_rows()
    assert Ontology.load(tmp_path).num_classes == 64  # no CSV: the packaged table
    path = _write_mapping(tmp_path, rows)
    assert Ontology.load(tmp_path).num_classes == 64
    _write_mapping(tmp_path, rows[:63])  # the case: last row dropped
    with pytest.raises(OntologyError) as err:
        Ontology.load(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: a GOOSE class table has 64 classes with ids 0..63, this one has 63 row(s)")
    assert "missing id(s) [63]" in msg and "extra" not in msg and "num_classes=None" in msg
    _write_mapping(tmp_path, rows[:5] + rows[6:] + [{**rows[7], "label_key": "64"}, {**rows[9], "label_key": "9"}])
    with pytest.raises(OntologyError, match=r"missing id\(s\) \[5\]; extra id\(s\) \[64\]; repeated id\(s\) \[9\]"):
        Ontology.load(tmp_path)


def test_a_different_class_table_is_an_explicit_opt_in(tmp_path: Path) -> None:
    _write_mapping(tmp_path, packaged_mapping_rows()[:63])
    ont = Ontology.load(tmp_path, num_classes=None)
    assert ont.num_classes == 63 and ont.names[-1] == Ontology.load().names[62]
    _write_mapping(tmp_path, packaged_mapping_rows()[1:])
    with pytest.raises(OntologyError, match=r"ids must be 0..62 without gaps.*missing id\(s\) \[0\]"):
        Ontology.load(tmp_path, num_classes=None)


def test_check_reports_a_63_class_mapping(root: Path) -> None:
    _write_mapping(root, packaged_mapping_rows()[:63])
    _, problems = check_root(root, ["val"], progress=False)
    assert len(problems) == 1 and problems[0].startswith(str(root / MAPPING_CSV))


# --- 6: symlink loops are reported per file -----------------------------------------------------------

def _loop(path: Path) -> None:
    other = path.with_name("loop_partner")
    path.unlink()
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def test_symlink_loop_on_an_image_in_check_and_stats(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from goose_lib.cli import main

    s = _first(root)
    _loop(s.image)
    n, problems = check_root(root, ["train"], progress=False)
    assert n == 8 and problems == [(f"{s.image}: image file is a symbolic link loop (Too many levels of symbolic "
                                   "links); fix or remove the link")]
    with pytest.raises(DataError, match=f"^{s.image}: image file is a symbolic link loop"):
        load_sample(s)
    with pytest.raises(DataError, match=f"^{s.image}: image file is a symbolic link loop"):
        compute_stats(root, "train", workers=1, progress=False, use_cache=False)
    with pytest.warns(UserWarning, match="skipped 1 bad sample"):
        skipped = compute_stats(root, "train", workers=1, progress=False, use_cache=False,
                                config=__import__("goose_lib.config", fromlist=["DataConfig"]).DataConfig(skip_bad=True))
    assert skipped.samples == 7 and "symbolic link loop" in skipped.skipped[0]
    capsys.readouterr()
    assert main(["check", "--data-root", str(root), "--split", "train", "--workers", "1"]) == 1
    assert main(["stats", "--data-root", str(root), "--split", "train", "--workers", "1", "--no-cache"]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and f"goose stats: {s.image}: image file is a symbolic link loop" in out.err
    assert f"{s.image}: image file is a symbolic link loop" in out.out


def test_symlink_loop_on_a_label_file(root: Path) -> None:
    s = _first(root)
    _loop(s.labelids)
    _, problems = check_root(root, ["train"], progress=False)
    assert problems == [(f"{s.labelids}: label map file is a symbolic link loop (Too many levels of symbolic "
                        "links); fix or remove the link")]


# --- 9: an unreadable file says "permission denied" ----------------------------------------------------

def _deny(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make ``path`` unreadable: chmod where it bites, else (running as root) an open() that refuses."""
    os.chmod(path, 0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


@pytest.mark.parametrize("which", ["image", "labelids"])
def test_unreadable_file_says_permission_denied(root: Path, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    s = _first(root)
    path = getattr(s, which)
    _deny(monkeypatch, path)
    what = "image" if which == "image" else "label map"
    _, problems = check_root(root, ["train"], progress=False)
    assert problems == [(f"{path}: cannot read {what}: permission denied; make the file readable (chmod / chown), "
                        "it is not corrupt")]
    with pytest.raises(DataError, match="permission denied") as err:
        compute_stats(root, "train", workers=1, progress=False, use_cache=False)
    assert str(err.value).startswith(str(path)) and "corrupt or truncated" not in str(err.value)


def test_unreadable_mapping_csv_says_permission_denied(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = root / MAPPING_CSV
    _deny(monkeypatch, path)
    with pytest.raises(OntologyError, match=f"^{path}: cannot read the class table: permission denied"):
        Ontology.load(root)


# --- 2: merging statistics shards covers the split exactly once ---------------------------------------

def test_merge_refuses_overlapping_or_incomplete_shards(tiny_root: Path, tmp_path: Path) -> None:
    full = compute_stats(tiny_root, "train", workers=1, progress=False)
    files = []
    for i in range(3):
        files.append(tmp_path / f"s{i}.npz")
        compute_stats(tiny_root, "train", workers=1, progress=False, shard=(i, 3)).save(files[-1])
    parts = [SplitStats.load(f) for f in files]
    merged = merge_stats(parts)
    assert merged.samples == full.samples == 8  # known answer: the whole split once
    assert np.array_equal(merged.pixel_counts, full.pixel_counts)
    with pytest.raises(ValueError, match=rf"shard 1/3 given 2 times \({files[1]}, {files[1]}\)"):
        merge_stats([*parts, SplitStats.load(files[1])])
    with pytest.raises(ValueError, match=r"do not cover split 'train' exactly once: shard\(s\) 2/3 missing"):
        merge_stats(parts[:2])
    with pytest.raises(ValueError, match=r"shard 0/1 given 2 times"):  # a whole split given twice
        merge_stats([full, full])
    half = compute_stats(tiny_root, "train", workers=1, progress=False, shard=(0, 2))
    with pytest.raises(ValueError, match=r"not shards of one splitting.*s0.npz \(0/3 of 8\).*\(0/2 of 8\)"):
        merge_stats([parts[0], parts[1], parts[2], half])
    other = compute_stats(tiny_root, "train", workers=1, progress=False, shard=(2, 3),
                          config=__import__("goose_lib.config", fromlist=["DataConfig"]).DataConfig(limit=6))
    with pytest.raises(ValueError, match=r"not shards of one splitting.*\(2/3 of 6\)"):
        merge_stats([parts[0], parts[1], other])


def test_cli_merge_names_the_repeated_shard(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from goose_lib.cli import main

    files = [str(tmp_path / f"s{i}.npz") for i in range(2)]
    for i, f in enumerate(files):
        assert main(["stats", "--data-root", str(tiny_root), "--shard", f"{i}/2", "--out", f, "--json", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["stats", "--merge", files[0], files[0], "--json"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and f"shard 0/2 given 2 times ({files[0]}, {files[0]}); shard(s) 1/2 missing" in out.err
    assert main(["stats", "--merge", *files, "--json"]) == 0
    assert '"samples": 8' in capsys.readouterr().out


# --- 15: a closed pipe ends quietly ------------------------------------------------------------------

def test_stats_json_into_a_closed_pipe_has_no_traceback(tiny_root: Path, goose_home: Path) -> None:
    env = {**os.environ, "GOOSE_SAM3_HOME": str(goose_home), "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "goose_lib", "stats", "--data-root", str(tiny_root), "--json", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line is written (`| head -c 0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0  # the reader stopping early is not an error
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err
