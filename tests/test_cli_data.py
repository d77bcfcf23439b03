"""`goose synth`, `goose check`, `goose stats` through the real entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from goose_lib.cli import main
from goose_lib.data.layout import index_split
from goose_lib.data.stats import compute_stats


def test_synth_writes_a_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert main(["synth", str(out), "--seed", "5", "--train", "2", "--val", "1", "--test", "1"]) == 0
    assert str(out) in capsys.readouterr().out
    assert [len(index_split(out, s, use_cache=False)) for s in ("train", "val", "test")] == [2, 1, 1]
    assert main(["synth", str(out)]) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err


def test_check_ok_and_every_problem_named(tiny_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--data-root", str(tiny_root), "--workers", "1"]) == 0
    assert "OK (15 samples)" in capsys.readouterr().err
    root = Path(shutil.copytree(tiny_root, tmp_path / "root"))
    a, b = index_split(root, "train", use_cache=False)[:2]
    a.instanceids.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    lab = np.asarray(Image.open(b.labelids)).copy()
    lab[-1, -1] = 250
    Image.fromarray(lab).save(b.labelids)
    assert main(["check", "--data-root", str(root), "--split", "train", "--workers", "1"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{a.instanceids}: cannot decode instance map")
    assert lines[1].startswith(f"{b.labelids}: label ids [250] outside the class table")
    assert "2 problem(s) in 8 checked sample(s)" in err
    assert main(["check", "--data-root", str(tmp_path / "nothing")]) == 2
    assert main(["check", "--data-root", str(tmp_path)]) == 2
    assert "not a GOOSE root" in capsys.readouterr().err


def test_stats_json(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--data-root", str(tiny_root), "--split", "val", "--json", "--workers", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    ref = compute_stats(tiny_root, "val", workers=1, progress=False)
    assert d["split"] == "val" and d["samples"] == 4
    assert len(d["pixel_counts"]) == 64 and d["pixel_counts"] == ref.pixel_counts.tolist()
    assert d["image_counts"] == ref.image_counts.tolist() and d["instance_counts"] == ref.instance_counts.tolist()
    assert sum(d["image_sizes"].values()) == 4


def test_stats_table_shards_and_merge(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--data-root", str(tiny_root), "--split", "train", "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert "split train: 8 samples" in table and " sky " in table
    files = [str(tmp_path / f"s{i}.npz") for i in range(2)]
    for i, f in enumerate(files):
        assert main(["stats", "--data-root", str(tiny_root), "--split", "train", "--shard", f"{i}/2", "--out", f,
                     "--json", "--workers", "1"]) == 0
    assert [json.loads(x)["samples"] for x in capsys.readouterr().out.splitlines()] == [4, 4]
    assert main(["stats", "--merge", *files, "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["pixel_counts"] == compute_stats(tiny_root, "train", progress=False).pixel_counts.tolist()
    assert main(["stats", "--data-root", str(tiny_root), "--shard", "x"]) == 2
    assert main(["stats", "--data-root", str(tiny_root), "--split", "test"]) == 2
    assert "has no labels" in capsys.readouterr().err


@pytest.mark.slow
def test_stats_json_in_a_subprocess(tiny_root: Path, goose_home: Path) -> None:
    """The installed entry point: JSON alone on stdout (the progress bar goes to stderr)."""
    res = subprocess.run([sys.executable, "-m", "goose_lib", "stats", "--data-root", str(tiny_root), "--split", "val",
                          "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(res.stdout)["samples"] == 4
