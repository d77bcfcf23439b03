"""Submission writer / validator / scorer and the score, submit, evaluate CLI verbs."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from infer_fakes import ColourModel
from PIL import Image

from goose_lib.cli import main
from goose_lib.config import DataConfig, EvalProtocol
from goose_lib.data.dataset import GooseDataset
from goose_lib.infer.evaluate import evaluate
from goose_lib.infer.submission import (
    SubmissionError,
    expected_predictions,
    score_predictions,
    validate_submission,
    write_predictions,
    write_submission,
    zip_predictions,
)
from goose_lib.infer.tta import TTAConfig


def _png(arr: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _rewrite(src: Path, dst: Path, *, drop: str | None = None, add: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename != drop:
                zout.writestr(info.filename, zin.read(info))
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


@pytest.fixture(scope="module")
def submission(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = ColourModel(image_size=32, num_classes=64)
    out = tmp_path_factory.mktemp("sub") / "sub.zip"
    return write_submission(model, tiny_root, out, progress=False)


def test_submission_layout_mirrors_test_tree(submission: Path, tiny_root: Path) -> None:
    expected = expected_predictions(tiny_root, "test")
    with zipfile.ZipFile(submission) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(expected)
        for name in names:
            img = Image.open(io.BytesIO(zf.read(name)))
            assert img.mode == "L" and img.size == Image.open(expected[name].image).size
    for name, exp in expected.items():
        scenario, rest = name.split("/")
        assert exp.image.parent.name == scenario and exp.image.name.startswith(rest[:-len("_labelids.png")])
    assert validate_submission(submission, tiny_root) == len(expected) == 3


def test_validator_names_every_bad_file(submission: Path, tiny_root: Path, tmp_path: Path) -> None:
    expected = sorted(expected_predictions(tiny_root, "test"))
    first, second = expected[0], expected[1]
    h, w = np.asarray(Image.open(io.BytesIO(zipfile.ZipFile(submission).read(first)))).shape
    bad = _rewrite(submission, tmp_path / "bad.zip", drop=first, add={
        "extra/thing_labelids.png": _png(np.zeros((h, w), np.uint8)),
    })
    with pytest.raises(SubmissionError) as exc:
        validate_submission(bad, tiny_root)
    msg = str(exc.value)
    assert msg.startswith(str(bad)) and "2 problem(s)" in msg
    assert f"no prediction (expected {first})" in msg and "extra/thing_labelids.png: unexpected file" in msg

    cases = {
        "size": (_png(np.zeros((h + 1, w), np.uint8)), "size"),
        "ids": (_png(np.full((h, w), 64, np.uint8)), "holds class id 64"),
        "mode": (_png(np.zeros((h, w, 3), np.uint8), "RGB"), "PNG mode RGB"),
        "junk": (b"not a png", "not a readable PNG"),
    }
    for tag, (data, needle) in cases.items():
        z = _rewrite(submission, tmp_path / f"{tag}.zip", drop=second, add={second: data})
        with pytest.raises(SubmissionError, match=needle) as exc:
            validate_submission(z, tiny_root)
        assert f"{z}:{second}" in str(exc.value)
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = _rewrite(submission, tmp_path / "dup.zip", add={second: _png(np.zeros((h, w), np.uint8))})
    with pytest.raises(SubmissionError, match="duplicate entry"):
        validate_submission(dup, tiny_root)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"x")
    with pytest.raises(SubmissionError, match="not a zip"):
        validate_submission(junk, tiny_root)


def test_score_equals_evaluate_and_cli(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = ColourModel(image_size=32, num_classes=64)
    pred_dir = write_predictions(model, tiny_root, tmp_path / "val_pred", split="val", progress=False)
    calls = model.calls
    write_predictions(model, tiny_root, pred_dir, split="val", progress=False)  # resumable: nothing redone
    assert model.calls == calls
    flipped = tmp_path / "flipped"  # another TTA in the same folder: everything predicted afresh
    write_predictions(model, tiny_root, flipped, split="val", progress=False)
    calls = model.calls
    write_predictions(model, tiny_root, flipped, split="val", tta=TTAConfig(flip=True), progress=False)
    assert model.calls == calls + 2 * 4  # 4 val images, 2 views each
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SubmissionError, match="not written by write_predictions"):
        write_predictions(model, tiny_root, foreign, split="val", progress=False)
    for void in ("ignore_void_category", "ignore_void", "void_as_class", "toolkit"):
        protocol = EvalProtocol(void)
        scores = score_predictions(pred_dir, tiny_root, split="val", protocol=protocol)
        ref = evaluate(model, GooseDataset(tiny_root, "val"), {"s": TTAConfig()}, protocol, progress=False)
        np.testing.assert_allclose(scores.class_iou, ref.scores["s"].class_iou)
        assert scores.composite == pytest.approx(ref.scores["s"].composite)
        assert main(["score", str(pred_dir), "--data-root", str(tiny_root), "--split", "val", "--protocol", void, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert set(out) >= {"miou", "category_miou", "composite", "class_iou", "category_iou", "protocol"}
        assert len(out["class_iou"]) == 64 and out["protocol"] == protocol.void
        assert out["composite"] == pytest.approx(scores.composite)
        assert len(out["category_iou"]) == (12 if void == "toolkit" else 11)
    assert main(["score", str(pred_dir), "--data-root", str(tiny_root), "--split", "val", "--protocol", "all",
                 "--json"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert list(every) == ["ignore_void_category", "ignore_class0", "void_as_class", "toolkit"]
    for name, d in every.items():
        assert d["composite"] == pytest.approx(score_predictions(pred_dir, tiny_root, split="val",
                                                                 protocol=EvalProtocol(name)).composite)
    assert main(["score", str(pred_dir), "--data-root", str(tiny_root), "--split", "val", "--protocol", "all"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in every) and "filt." in table
    # a missing prediction is an error naming the image
    victim = min(pred_dir.rglob("*_labelids.png"))
    victim.unlink()
    assert main(["score", str(pred_dir), "--data-root", str(tiny_root), "--split", "val"]) == 2
    assert "no prediction" in capsys.readouterr().err
    with pytest.raises(SubmissionError, match="no labels"):
        score_predictions(pred_dir, tiny_root, split="test")


def test_zip_of_a_limited_split_and_folder_validation(tiny_root: Path, tmp_path: Path) -> None:
    model = ColourModel(image_size=32, num_classes=64)
    cfg = DataConfig(limit=2)
    d = write_predictions(model, tiny_root, tmp_path / "p", split="val", config=cfg, progress=False,
                          tta=TTAConfig(mode="multiscale", scales=(0.5, 1.0), flip=True))
    assert validate_submission(d, tiny_root, split="val", config=cfg) == 2
    z = zip_predictions(d, tmp_path / "p.zip")
    assert validate_submission(z, tiny_root, split="val", config=cfg) == 2
    with pytest.raises(SubmissionError, match="no prediction"):
        validate_submission(z, tiny_root, split="val")  # the full split needs all 4


def _assert_provenance(path: Path, command: str, data_root: Path, checkpoint: Path) -> None:
    """The same record as a notebook run: code version, parameters hash, content fingerprints of the
    data root and the student checkpoint, library versions, device, wall time."""
    from goose_lib.reports import provenance

    rec = json.loads(path.read_text())
    assert rec["notebook"] == command and rec["params_sha256"] == provenance.params_hash(rec["params"])
    assert {"commit", "dirty"} <= set(rec["code"]) and rec["libraries"]["torch"] and rec["wall_s"] >= 0
    assert rec["inputs"]["data"]["data_root"] == provenance.data_fingerprint(data_root)
    assert rec["inputs"]["checkpoints"]["checkpoint"] == provenance.checkpoint_hash(checkpoint)
    assert rec["device"]["device"] == "cpu"


@pytest.mark.slow
def test_cli_evaluate_and_submit_with_a_student_checkpoint(tiny_root: Path, tiny_checkpoint: Path,
                                                          tmp_path: Path) -> None:
    from goose_lib.models.checkpoint import load_student, save_student

    student = load_student("untrained", device="cpu")
    ckpt = tmp_path / "ckpt"
    save_student(ckpt, student, params={})
    ev = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(tiny_root), "--split", "val", "--limit", "1", "--scales", "1",
                 "--out", str(ev), "--no-progress"]) == 0
    summary = json.loads((ev / "eval_summary.json").read_text())
    assert set(summary["modes"]) == {"single", "multiscale"} and summary["images"] == 1
    # scale 1 multiscale == single
    assert summary["modes"]["single"]["class_iou"] == summary["modes"]["multiscale"]["class_iou"]
    _assert_provenance(ev / "provenance.json", "goose evaluate", tiny_root, ckpt)
    # an ensemble of two identical checkpoints (one on the device at a time), Gaussian blend: the same
    shutil.copytree(ckpt, tmp_path / "ckpt2")
    ev2 = tmp_path / "ev2"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(tiny_root), "--split", "val", "--limit", "1",
                 "--scales", "1",
                 "--ensemble", str(tmp_path / "ckpt2"), "--offload", "--blend", "gaussian", "--out", str(ev2),
                 "--no-progress"]) == 0
    summary2 = json.loads((ev2 / "eval_summary.json").read_text())
    assert summary2["modes"]["multiscale"]["tta"]["blend"] == "gaussian"
    for mode in ("single", "multiscale"):
        assert summary2["modes"][mode]["class_iou"] == pytest.approx(summary["modes"][mode]["class_iou"], nan_ok=True)
    prov = json.loads((ev2 / "provenance.json").read_text())
    assert "ensemble[0]" in json.dumps(prov)  # the second member is fingerprinted as an input too
    out = tmp_path / "s.zip"
    assert main(["submit", "--checkpoint", str(ckpt), "--data-root", str(tiny_root), "--out", str(out), "--no-progress"]) == 0
    assert validate_submission(out, tiny_root) == 3
    _assert_provenance(Path(f"{out}.provenance.json"), "goose submit", tiny_root, ckpt)
    shutil.rmtree(ckpt)
    assert main(["submit", "--checkpoint", str(ckpt), "--data-root", str(tiny_root), "--out", str(out)]) == 2


def test_sharded_predictions_cover_the_split_once(tiny_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Job-array shards write disjoint images into one folder; their union scores like one pass."""
    model = ColourModel(image_size=32, num_classes=64)
    out = tmp_path / "pred"
    write_predictions(model, tiny_root, out, split="val", shard=(0, 2), progress=False)
    first = sorted(p.relative_to(out) for p in out.rglob("*_labelids.png"))
    assert len(first) == 2  # images 0 and 2 of the 4 val images
    with pytest.raises(SubmissionError, match="no prediction"):
        score_predictions(out, tiny_root, split="val")
    calls = model.calls
    write_predictions(model, tiny_root, out, split="val", shard=(1, 2), progress=False)
    assert model.calls == calls + 2
    whole = write_predictions(model, tiny_root, tmp_path / "whole", split="val", progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*_labelids.png")) == \
        sorted(p.relative_to(whole) for p in whole.rglob("*_labelids.png"))
    np.testing.assert_array_equal(score_predictions(out, tiny_root, split="val").class_iou,
                                  score_predictions(whole, tiny_root, split="val").class_iou)
    assert main(["predict", "--checkpoint", "untrained", "--data-root", str(tiny_root), "--split", "val", "--out", str(tmp_path / "cli"),
                 "--shard", "1/2", "--no-progress"]) == 0
    assert len(list((tmp_path / "cli").rglob("*_labelids.png"))) == 2
    assert main(["predict", "--checkpoint", "untrained", "--data-root", str(tiny_root), "--out", str(tmp_path / "x"), "--shard", "2/2"]) == 2
    assert "shard index" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ex_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second root standing for GOOSE-Ex: the tiny root's test split under other scenario names."""
    root = tmp_path_factory.mktemp("goose_ex") / "root"
    shutil.copytree(tiny_root, root)
    for scen in sorted((root / "images" / "test").iterdir()):
        scen.rename(scen.with_name(f"ex_{scen.name}"))
    return root


def test_one_submission_covers_several_roots_and_the_validator_checks_the_union(
        tiny_root: Path, ex_root: Path, tmp_path: Path) -> None:
    from goose_lib.infer.submission import Source, expected_union

    sources = [Source(str(tiny_root), "test"), Source(str(ex_root), "test")]
    union = expected_union(sources)
    goose, ex = expected_predictions(tiny_root, "test"), expected_predictions(ex_root, "test")
    assert sorted(union) == sorted([*goose, *ex]) and len(union) == 6
    out = write_submission(ColourModel(image_size=32, num_classes=64), None, tmp_path / "sub.zip",
                           sources=sources, progress=False)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(union)
    assert validate_submission(out, sources=sources) == 6
    # validated against one root only, the other's entries are unexpected
    with pytest.raises(SubmissionError) as err:
        validate_submission(out, tiny_root)
    assert str(err.value).count("unexpected file") == 3 and all(n in str(err.value) for n in ex)
    # a missing GOOSE-Ex prediction is named by its image
    gone = min(ex)
    with pytest.raises(SubmissionError, match="no prediction") as err:
        validate_submission(_rewrite(out, tmp_path / "short.zip", drop=gone), sources=sources)
    assert str(ex[gone].image) in str(err.value) and "1 problem(s)" in str(err.value)


def test_colliding_sources_need_a_prefix(tiny_root: Path, tmp_path: Path) -> None:
    from goose_lib.infer.submission import Source, expected_union

    with pytest.raises(SubmissionError, match="same submission entry"):
        expected_union([Source(str(tiny_root)), Source(str(tiny_root))])
    union = expected_union([Source(str(tiny_root)), Source(str(tiny_root), prefix="ex/")])
    assert len(union) == 6 and sum(n.startswith("ex/") for n in union) == 3
    with pytest.raises(ValueError, match="prefix"):
        Source(str(tiny_root), prefix="../up/")


def test_cli_submit_also_adds_a_second_root(tiny_root: Path, ex_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    from goose_lib.infer.submission import Source

    out = tmp_path / "both.zip"
    assert main(["submit", "--checkpoint", "untrained", "--data-root", str(tiny_root), "--also", str(ex_root),
                 "--out", str(out), "--no-progress"]) == 0
    assert "(2 roots)" in capsys.readouterr().out
    assert validate_submission(out, sources=[Source(str(tiny_root)), Source(str(ex_root))]) == 6
