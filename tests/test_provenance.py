"""goose_lib.reports.provenance: fingerprints that change exactly when their inputs change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from goose_lib.reports import provenance

KINDS = {"data_root": "data_root", "checkpoint": "checkpoint", "sam3_checkpoint": "sam3_checkpoint"}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_data_fingerprint_tracks_content_and_reads_only_changed_files(tmp_path: Path, monkeypatch) -> None:
    import hashlib
    import os

    files = {"images/train/s1/a_windshield_vis.png": "aaaa", "labels/train/s1/a_labelids.png": "bb"}
    one = provenance.data_fingerprint(_tree(tmp_path / "one", files))
    two = provenance.data_fingerprint(_tree(tmp_path / "two", files))
    assert one["sha256"] == two["sha256"] and one["files"] == 2 and one["bytes"] == 6
    expect = hashlib.sha256(b"aaaa").hexdigest()
    assert provenance.content_hashes(tmp_path / "one")["images/train/s1/a_windshield_vis.png"] == (4, expect)
    (tmp_path / "two" / ".cache").mkdir()  # hidden files and folders (caches) do not count
    (tmp_path / "two" / ".cache" / "index.json").write_text("{}")
    assert provenance.data_fingerprint(tmp_path / "two")["sha256"] == one["sha256"]
    reads: list[str] = []
    real = provenance._file_sha256
    monkeypatch.setattr(provenance, "_file_sha256", lambda path: reads.append(path.name) or real(path))
    assert provenance.data_fingerprint(tmp_path / "two")["sha256"] == one["sha256"] and reads == []  # cached
    label = tmp_path / "two" / "labels/train/s1/a_labelids.png"
    label.write_text("bc")  # same size, new content: a new print (names and sizes alone would not see it)
    os.utime(label, ns=(1, 1))  # whatever the clock: the size or mtime differs from the cached entry
    changed = provenance.data_fingerprint(tmp_path / "two")
    assert changed["sha256"] != one["sha256"] and reads == ["a_labelids.png"]  # only the changed file read
    label.write_text("bb")
    os.utime(label, ns=(2, 2))  # same content again, only the mtime moved: the same print
    assert provenance.data_fingerprint(tmp_path / "two")["sha256"] == one["sha256"]
    (tmp_path / "one" / "images/train/s1/a_windshield_vis.png").rename(tmp_path / "one" / "images/train/s1/b.png")
    assert provenance.data_fingerprint(tmp_path / "one")["sha256"] != one["sha256"]

def test_checkpoint_hash_tracks_content(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"config.json": "{}", "model.safetensors": "weights-1"})
    b = _tree(tmp_path / "b", {"config.json": "{}", "model.safetensors": "weights-1"})
    assert provenance.checkpoint_hash(a) == provenance.checkpoint_hash(b)
    (b / "model.safetensors").write_text("weights-2")  # same size, new content
    assert provenance.checkpoint_hash(a) != provenance.checkpoint_hash(b)
    assert provenance.checkpoint_hash(a / "config.json") == provenance.checkpoint_hash(b / "config.json")


def test_input_fingerprints_pick_inputs_by_name_relative_to_the_run(tmp_path: Path) -> None:
    data = _tree(tmp_path / "data", {"images/x.png": "1"})
    _tree(tmp_path / "reports" / "train" / "ckpt", {"model.safetensors": "w"})
    run_dir = tmp_path / "reports" / "eval"
    got = provenance.input_fingerprints(
        {"data_root": str(data), "checkpoint": "../train/ckpt", "split": "val", "seed": 0,
         "checkpoint_name": "../train/ckpt"}, run_dir, kinds=KINDS)
    assert got["data"]["data_root"]["files"] == 1
    # only declared inputs count: "checkpoint_name" looks like one but is not declared
    assert got["checkpoints"] == {"checkpoint": provenance.checkpoint_hash(tmp_path / "reports/train/ckpt")}
    with pytest.raises(FileNotFoundError, match="nope: checkpoint does not exist"):
        provenance.input_fingerprints({"checkpoint": "../nope"}, run_dir, kinds=KINDS)
    assert provenance.input_fingerprints({"checkpoint": "untrained"}, run_dir, kinds=KINDS)["checkpoints"] == {}
    # a list of checkpoints (an ensemble) is fingerprinted member by member
    _tree(tmp_path / "reports" / "train2" / "ckpt", {"model.safetensors": "v"})
    ens = provenance.input_fingerprints({"ensemble_checkpoints": ["../train/ckpt", "../train2/ckpt"]}, run_dir,
                                        kinds={"ensemble_checkpoints": "checkpoint"})
    assert ens["checkpoints"] == {
        "ensemble_checkpoints[0]": provenance.checkpoint_hash(tmp_path / "reports/train/ckpt"),
        "ensemble_checkpoints[1]": provenance.checkpoint_hash(tmp_path / "reports/train2/ckpt")}


def test_embedded_data_root_is_fingerprinted(tiny_root: Path) -> None:
    got = provenance.input_fingerprints({"data_root": str(tiny_root)}, kinds=KINDS)
    assert got["data"]["data_root"]["files"] > 0
    assert got["data"]["data_root"] == provenance.data_fingerprint(tiny_root)


def test_params_hash_code_version_and_libraries() -> None:
    assert provenance.params_hash({"a": 1, "b": [1, 2]}) == provenance.params_hash({"b": [1, 2], "a": 1})
    assert provenance.params_hash({"a": 1}) != provenance.params_hash({"a": 2})
    code = provenance.code_version()
    assert re.fullmatch(r"[0-9a-f]{64}", code["source_hash"])
    if code["commit"] is not None:  # a git checkout
        assert re.fullmatch(r"[0-9a-f]{40}", code["commit"]) and isinstance(code["dirty"], bool)
    libs = provenance.library_versions()
    assert libs["torch"].startswith("2.") and libs["papermill"] and "transformers" in libs
    prov = provenance.collect(notebook="n.ipynb", params={"seed": 3}, inputs={}, seed=3,
                              started="t", wall_s=1.23456)
    assert prov["seed"] == 3 and prov["wall_s"] == 1.235 and prov["device"]["device"] == "cpu"
