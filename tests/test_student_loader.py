"""The one student loader (goose_lib.models.checkpoint.load_student) and the one evaluation: the
composite training reports is the composite notebook 04 / `goose evaluate` report for mode single."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from goose_lib.config import DataConfig
from goose_lib.data.dataset import GooseDataset
from goose_lib.infer.config import TTAConfig
from goose_lib.infer.evaluate import evaluate
from goose_lib.models import checkpoint as ckpt
from goose_lib.models.sam3 import load_vision_encoder
from goose_lib.train.config import TrainConfig
from goose_lib.train.loop import train


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from goose_lib.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck112") / "sam3", image_size=112)


@pytest.fixture(scope="module")
def trained(tiny_root: Path, small_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = TrainConfig(data_root=str(tiny_root), sam3_checkpoint=str(small_ckpt), decoder_channels=16, batch_size=2,
                      steps=6, train_limit=4, val_limit=3, val_interval=0, checkpoint_interval=3, warmup_steps=2,
                      lr=3e-3, photometric="standard")
    run = tmp_path_factory.mktemp("run") / "training"
    return cfg, train(cfg, run, progress=False)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_checkpoint_a_run_folder_and_a_notebook_run_load_the_same_student(trained) -> None:
    _, result = trained
    final = ckpt.load_student(result.checkpoint)
    by_run = ckpt.load_student(result.out_dir)  # latest.json -> the newest checkpoint
    # a 03_training run folder (training/), with the record the ablation runner writes beside it
    (result.out_dir.parent / "run.json").write_text(json.dumps({"name": "train", "notebook": "03_training",
                                                                "status": "ok"}))
    by_notebook_run = ckpt.load_student(result.out_dir.parent)
    assert by_run.source == by_notebook_run.source == str(result.checkpoint) == final.source
    for a, b in ((final, by_run), (final, by_notebook_run)):
        sa, sb = _state(a), _state(b)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not final.training and final.description == f"student checkpoint {result.checkpoint}"


def test_untrained_student_on_a_given_sam3_checkpoint(small_ckpt: Path) -> None:
    before = torch.get_rng_state()
    a = ckpt.load_student("untrained", sam3_checkpoint=small_ckpt, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    b = ckpt.load_student("untrained", sam3_checkpoint=small_ckpt, seed=3)
    c = ckpt.load_student("untrained", sam3_checkpoint=small_ckpt, seed=4)
    enc = load_vision_encoder(small_ckpt).state_dict()
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[f"encoder.{k}"], v) for k, v in enc.items())  # the given SAM3 encoder
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # seeded decoder
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if k.startswith("decoder."))
    assert "UNTRAINED" in a.description and a.source == "untrained" and a.image_size == 112
    # the architecture training builds by default (one StudentConfig, one default)
    assert a.config == TrainConfig(sam3_checkpoint=str(small_ckpt)).student_config()


def test_bad_sources_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope: student checkpoint folder does not exist"):
        ckpt.load_student(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointLoadError, match="empty: not a student checkpoint"):
        ckpt.load_student(tmp_path / "empty")
    # a notebook run whose training failed before its first checkpoint: only the runner's record
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "run.json").write_text(json.dumps({"notebook": "03_training", "status": "failed"}))
    with pytest.raises(ckpt.CheckpointLoadError, match="failed/run.json: .*a notebook run's record"):
        ckpt.load_student(tmp_path / "failed")


def test_training_reports_the_composite_evaluation_reports_for_mode_single(trained, tiny_root: Path) -> None:
    cfg, result = trained
    model = ckpt.load_student(result.out_dir)
    data = GooseDataset(tiny_root, cfg.val_split, config=DataConfig(limit=cfg.val_limit))
    scores = evaluate(model, data, {"single": TTAConfig()}, progress=False).scores["single"].to_dict()
    assert scores["composite"] == pytest.approx(result.val["composite"], abs=1e-12)
    assert scores["class_iou"] == pytest.approx(result.val["class_iou"], abs=1e-12, nan_ok=True)


def test_a_copied_run_folder_still_loads(trained, tmp_path: Path) -> None:
    # latest.json is relative: a moved run folder keeps working
    _, result = trained
    moved = tmp_path / "moved"
    shutil.copytree(result.out_dir, moved)
    assert ckpt.load_student(moved).source.startswith(str(moved))
