"""Atomic writes leave either the old or the new file, never a partial one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from goose_lib import io


def test_atomic_json_roundtrip_with_numpy(tmp_path: Path) -> None:
    p = io.atomic_write_json(tmp_path / "a" / "x.json", {"n": np.int64(3), "f": np.float32(0.5),
                                                          "nan": float("nan"), "arr": np.arange(3)})
    data = json.loads(p.read_text())
    assert data == {"n": 3, "f": 0.5, "nan": None, "arr": [0, 1, 2]}
    assert not list(p.parent.glob(".*tmp"))


def test_failed_write_keeps_previous(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    io.atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        io.atomic_write_json(target, {"v": object()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.json"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "b").write_bytes(data)
    assert io.sha256_file(tmp_path / "b", chunk=1000) == hashlib.sha256(data).hexdigest()


def test_read_json_names_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        io.read_json(tmp_path / "bad.json")


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    try:
        p = io.atomic_write_text(tmp_path / "r.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with io.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced, not merged
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("3")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folders left
