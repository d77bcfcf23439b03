"""Issue 15 cases 7 and 8: a NaN loss ends ``goose train`` with the message (no traceback), exit 2
and the last good checkpoint kept; a split without labels is refused before the first step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from goose_lib.data.decode import DataError
from goose_lib.models import checkpoint as ckpt
from goose_lib.train.loop import TrainConfig, train
from goose_lib.train.losses import segmentation_loss


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from goose_lib.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck112") / "sam3", image_size=112)


def _args(root: Path, ck: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--out-dir", str(out), "--data-root", str(root), "--sam3-checkpoint", str(ck),
            "--decoder-channels", "16", "--batch-size", "2", "--train-limit", "4", "--val-limit", "2",
            "--val-interval", "0", "--checkpoint-interval", "2", "--photometric", "standard", "--no-progress", *extra]


def test_cli_nan_loss_prints_the_message_keeps_the_checkpoint_exits_2(tiny_root, small_ckpt, tmp_path, monkeypatch,
                                                                       capsys) -> None:
    from goose_lib.cli import main

    calls = {"n": 0}

    def poisoned(logits, label, **kw):
        calls["n"] += 1
        out = segmentation_loss(logits, label, **kw)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr("goose_lib.train.losses.segmentation_loss", poisoned)
    out = tmp_path / "nan"
    assert main(_args(tiny_root, small_ckpt, out, "--steps", "4")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith(f"goose train: {out}: training stopped, loss is nan at step 3")
    assert f"last good checkpoint: {out / 'checkpoints' / 'step_0000002'}" in err and "grad_clip" in err
    good = ckpt.find_latest(out)
    assert good.name == "step_0000002"  # the last good one, nothing written for step 3
    assert all(torch.isfinite(t).all() for t in load_file(str(good / "model.safetensors")).values())


@pytest.mark.parametrize("field", ["train_split", "val_split"])
def test_split_without_labels_is_refused_before_the_first_step(tiny_root, small_ckpt, tmp_path, monkeypatch,
                                                               field) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the model was built / a step ran before the splits were checked")

    monkeypatch.setattr("goose_lib.train.loop.make_state", never)
    monkeypatch.setattr("goose_lib.train.loop.train_step", never)
    cfg = TrainConfig(data_root=str(tiny_root), sam3_checkpoint=str(small_ckpt), steps=1, **{field: "test"})
    with pytest.raises(DataError) as err:
        train(cfg, tmp_path / "run", progress=False)
    assert str(err.value) == (f"{tiny_root.resolve() / 'labels' / 'test'}: {field} 'test' has no labels (no such "
                              "folder); training and validation need a labelled split such as 'train' or 'val'")
    assert not (tmp_path / "run").exists()  # nothing written


def test_cli_val_split_test_fails_at_once(tiny_root, small_ckpt, tmp_path, monkeypatch, capsys) -> None:
    from goose_lib.cli import main

    monkeypatch.setattr("goose_lib.train.loop.make_state", lambda *a, **k: pytest.fail("model built"))
    assert main(_args(tiny_root, small_ckpt, tmp_path / "run", "--steps", "1", "--val-split", "test")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyError" not in err and "val_split 'test' has no labels" in err
