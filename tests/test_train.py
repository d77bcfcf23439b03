"""Training loop, losses, checkpoints: known answers, exact resume, NaN stop, distillation wiring."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from goose_lib.config import ParameterError, to_dict, validate
from goose_lib.models import checkpoint as ckpt
from goose_lib.train import loop
from goose_lib.train.config import TrainConfig
from goose_lib.train.loop import TrainingDiverged, train
from goose_lib.train.losses import segmentation_loss
from goose_lib.train.sampling import DrawSampler, repeat_factors
from goose_lib.train.step import EMA, lr_factor


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SAM3 at 112x112 input (4x cheaper than the embedded 224 one)."""
    from goose_lib.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck112") / "sam3", image_size=112)


def _cfg(root: Path, ck: Path, **kw) -> TrainConfig:
    base = {"data_root": str(root), "sam3_checkpoint": str(ck), "decoder_channels": 16, "batch_size": 2, "steps": 4,
            "train_limit": 4, "val_limit": 2, "val_interval": 0, "checkpoint_interval": 2, "log_interval": 1,
            "warmup_steps": 2, "lr": 2e-3, "photometric": "standard"}
    return TrainConfig(**(base | kw))


# --- small parts -------------------------------------------------------------------------------

def test_lr_schedule_warmup_then_poly() -> None:
    cfg = TrainConfig(steps=110, warmup_steps=10, poly_power=2.0, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.1 + 0.9 * 0.5 ** 2)
    assert all(a >= b for a, b in itertools.pairwise(f[10:])) and f[-1] > 0.1


def test_repeat_factors_known_answer() -> None:
    presence = np.zeros((10, 3), bool)
    presence[:, 0] = True  # in every image
    presence[0, 1] = True  # class 1 in one image out of ten: f = 0.1
    presence[:5, 2] = True  # class 2 in half the images
    r = repeat_factors(presence, 0.4)
    assert r[0] == pytest.approx(2.0)  # sqrt(0.4 / 0.1)
    assert r[1] == pytest.approx(1.0) and r[9] == pytest.approx(1.0)  # sqrt(0.4/0.5) < 1 -> 1
    assert np.all(repeat_factors(presence, 0.0) == 1)


def test_sampler_shards_ranks_and_resumes_exactly() -> None:
    def take(sampler: DrawSampler, n: int) -> list[tuple[int, int]]:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    single = take(DrawSampler(10, batch_size=6, seed=3), 60)
    r0 = take(DrawSampler(10, batch_size=3, seed=3, rank=0, world_size=2), 30)
    r1 = take(DrawSampler(10, batch_size=3, seed=3, rank=1, world_size=2), 30)
    merged = [x for m in range(10) for x in r0[3 * m:3 * m + 3] + r1[3 * m:3 * m + 3]]
    assert merged == single  # two ranks of batch 3 draw exactly what one process of batch 6 draws
    assert not {g for _, g in r0} & {g for _, g in r1}
    # Every epoch is a permutation of the dataset.
    assert sorted(i for i, _ in single[:10]) == list(range(10))
    assert take(DrawSampler(10, batch_size=6, seed=3, start_micro=4), 12) == single[24:36]
    # Repeat factors: an image with factor 3 appears 3x per epoch.
    rep = DrawSampler(4, batch_size=1, seed=0, factors=np.array([3.0, 1, 1, 1])).epoch(0)
    assert sorted(rep.tolist()) == [0, 0, 0, 1, 2, 3]


def test_ema_follows_the_trainable_weights_only() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    ema = EMA(model, 0.75)
    before = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    after = list(ema.model.parameters())
    torch.testing.assert_close(after[0], before[0])  # frozen: untouched
    torch.testing.assert_close(after[2], before[2] + 0.25)  # 0.75 * old + 0.25 * (old + 1)


def test_augmented_draws_do_not_depend_on_worker_processes(tiny_root) -> None:
    from goose_lib.data.augment import PHOTOMETRIC_PRESETS, GeometryConfig, TrainTransform
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.train.sampling import DrawDataset

    base = GooseDataset(tiny_root, "train")
    draws = DrawDataset(base, TrainTransform(64, GeometryConfig(), PHOTOMETRIC_PRESETS["aggressive"]), seed=5)

    def batches(workers: int) -> list[dict]:
        sampler = DrawSampler(len(base), batch_size=2, seed=5, start_micro=3)
        loader = torch.utils.data.DataLoader(draws, batch_size=2, sampler=sampler, num_workers=workers)
        it = iter(loader)
        return [next(it) for _ in range(3)]

    for a, b in zip(batches(0), batches(1)):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["key"] == b["key"]


def test_segmentation_loss_matches_torch_and_handles_all_ignored() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    label = torch.randint(0, 5, (2, 4, 4))
    label[0, 0] = 255
    ref = F.cross_entropy(logits, label, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, label.to(torch.uint8)), ref)
    empty = segmentation_loss(logits, torch.full((2, 4, 4), 255))
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.count_nonzero(logits.grad) == 0
    with pytest.raises(ValueError, match="does not match"):
        segmentation_loss(logits, label[:, :2])


def test_config_validation_and_notebook_params_agree() -> None:
    from goose_lib.params import NOTEBOOK_PARAMS, TrainingParams

    with pytest.raises(ParameterError, match="batch_size"):
        validate(TrainConfig, {"batch_size": 0})
    with pytest.raises(ParameterError, match="photometric"):
        validate(TrainConfig, {"photometric": "extreme"})
    assert NOTEBOOK_PARAMS["03_training"] is TrainingParams
    nb = {f.name: f.default for f in dataclasses.fields(TrainingParams)}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in nb, f"TrainingParams lacks {f.name}"
        assert nb[f.name] == f.default, f"default of {f.name} differs"
    assert loop.config_from_params(TrainingParams()) == TrainConfig()


# --- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_round_trip_without_the_sam3_folder(small_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    from goose_lib.models.student import StudentConfig, build_student

    student = build_student(StudentConfig(sam3_checkpoint=str(small_ckpt), decoder_channels=16)).eval()
    out = ckpt.save_student(tmp_path / "c", student, params={"note": "x"}, info={"step": 7})
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "run.json", "vision_config.json"]
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    monkeypatch.setattr("goose_lib.models.embedded.resolve_sam3_checkpoint", lambda v: (_ for _ in ()).throw(AssertionError(v)))
    loaded = ckpt.load_student(out)
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), student(x))
    assert ckpt.load_run(out)["step"] == 7
    state = load_file(str(out / "model.safetensors"))
    state.pop(next(iter(state)))
    from safetensors.torch import save_file

    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(ckpt.CheckpointLoadError, match="missing"):
        ckpt.load_student(out)
    with pytest.raises(ckpt.CheckpointLoadError, match="not a student checkpoint"):
        ckpt.load_student(tmp_path)


# --- the loop ----------------------------------------------------------------------------------

def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.find_latest(run) / "model.safetensors"))


def test_train_writes_log_and_checkpoints_and_resumes_exactly(tiny_root, small_ckpt, tmp_path, monkeypatch) -> None:
    cfg = _cfg(tiny_root, small_ckpt, ema=0.5, steps=4, val_interval=4)
    full = train(cfg, tmp_path / "full", progress=False)
    assert full.step == 4 and full.resumed_from is None
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "val_composite" in r] == [4]
    assert 0.0 <= full.val["composite"] <= 1.0 and len(full.val["class_iou"]) == 64
    run = ckpt.load_run(full.checkpoint)
    assert run["step"] == 4 and run["params"]["ema"] == 0.5 and len(run["rng"]) == 1
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    assert isinstance(ckpt.load_student(full.checkpoint), torch.nn.Module)

    # Kill the same run during step 3 (after the step-2 checkpoint), then resume it.
    real_step = loop.train_step

    def killed(state, batches):
        if state.step == 2:
            raise KeyboardInterrupt
        return real_step(state, batches)

    monkeypatch.setattr(loop, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", progress=False)
    monkeypatch.setattr(loop, "train_step", real_step)
    assert ckpt.find_latest(tmp_path / "killed").name == "step_0000002"
    resumed = train(cfg, tmp_path / "killed", progress=False)
    assert resumed.resumed_from == 2 and resumed.step == 4
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=k)
    losses_full = [r["loss"] for r in full.history if "loss" in r]
    losses_res = [r["loss"] for r in resumed.history if "loss" in r]
    assert losses_res == pytest.approx(losses_full, rel=1e-5)
    # A finished run resumes to the same result; other parameters in the same folder are refused.
    with pytest.raises(ValueError, match="other parameters"):
        train(dataclasses.replace(cfg, lr=1.0), tmp_path / "killed", progress=False)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_root, small_ckpt, tmp_path,
                                                                            monkeypatch) -> None:
    calls = {"n": 0}
    real = segmentation_loss

    def poisoned(logits, label, **kw):
        calls["n"] += 1
        out = real(logits, label, **kw)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr("goose_lib.train.losses.segmentation_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 3.*step_0000002"):
        train(_cfg(tiny_root, small_ckpt, steps=4), tmp_path / "nan", progress=False)
    good = ckpt.find_latest(tmp_path / "nan")
    assert good.name == "step_0000002"
    assert all(torch.isfinite(t).all() for t in load_file(str(good / "model.safetensors")).values())
    rows = [json.loads(x) for x in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "diverged" and rows[-1]["step"] == 3


# --- distillation wiring -----------------------------------------------------------------------

def test_distillation_with_empty_selection_trains_without_it_and_says_so(tiny_root, small_ckpt, tmp_path) -> None:
    sel = tmp_path / "selection.json"
    sel.write_text(json.dumps({"classes": []}))
    cfg = _cfg(tiny_root, small_ckpt, steps=1, distill_mode="soft", distill_selection=str(sel),
               repeat_threshold=0.5)  # also runs repeat-factor sampling
    with pytest.warns(UserWarning, match="WITHOUT distillation"):
        res = train(cfg, tmp_path / "run", progress=False)
    assert any("WITHOUT distillation" in n for n in res.notes)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "note" and "WITHOUT" in r["message"] for r in rows)
    assert ckpt.load_run(res.checkpoint)["distill_active"] is False


def _fake_cache(root: Path, out: Path) -> Path:
    """A teacher cache written by the real cache writer, with a box-filling fake teacher."""
    from goose_lib.data.layout import index_split
    from goose_lib.teacher.cache import build_teacher_cache
    from goose_lib.teacher.prompt import TeacherMaps

    class BoxTeacher:  # every box becomes a full-confidence mask of its class
        def predict(self, images, boxsets):
            out = []
            for img, boxes in zip(images, boxsets):
                region = np.full(img.shape[:2], 255, np.uint8)
                for (x0, y0, x1, y1), c in zip(boxes.xyxy.astype(int), boxes.classes):
                    region[y0:y1 + 1, x0:x1 + 1] = c
                out.append(TeacherMaps(region.copy(), np.where(region < 255, 230, 0).astype(np.uint8), region,
                                       boxes, np.ones(len(boxes.classes), np.float32)))
            return out

    samples = index_split(root, "train")[:4]
    return build_teacher_cache(samples, out, fingerprint="fake", teacher=BoxTeacher(), progress=False).folder


@pytest.mark.parametrize("mode", ["soft", "replace"])
def test_distillation_is_wired_into_the_loss(tiny_root, small_ckpt, tmp_path, monkeypatch, mode) -> None:
    from goose_lib.train import distill

    cache = _fake_cache(tiny_root, tmp_path / "cache")
    seen = []
    real_loss, real_replace = distill.distill_loss, distill.replace_labels

    def spy_loss(logits, tcls, tprob, tregion, classes, **kw):
        seen.append(("loss", tuple(tregion.shape), tuple(classes)))
        return real_loss(logits, tcls, tprob, tregion, classes, **kw)

    def spy_replace(label, tcls, tprob, tregion, classes, **kw):
        seen.append(("replace", tuple(tregion.shape), tuple(classes)))
        return real_replace(label, tcls, tprob, tregion, classes, **kw)

    monkeypatch.setattr(distill, "distill_loss", spy_loss)
    monkeypatch.setattr(distill, "replace_labels", spy_replace)
    cfg = _cfg(tiny_root, small_ckpt, steps=2, distill_mode=mode, distill_classes=(1, 2, 3, 4, 5),
               teacher_cache=str(cache))
    res = train(cfg, tmp_path / "run", progress=False)
    kind = "loss" if mode == "soft" else "replace"
    assert seen == [(kind, (2, 112, 112), (1, 2, 3, 4, 5))] * 2
    assert ckpt.load_run(res.checkpoint)["distill_active"] is True
    assert np.isfinite([r["loss"] for r in res.history if "loss" in r]).all()


def test_cli_train_runs_headless(tiny_root, small_ckpt, tmp_path) -> None:
    from goose_lib.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--out-dir", str(out), "--data-root", str(tiny_root), "--sam3-checkpoint", str(small_ckpt),
               "--decoder-channels", "16", "--batch-size", "2", "--steps", "1", "--train-limit", "2",
               "--val-limit", "1", "--scale-range", "0.75", "1.5", "--no-progress"])
    assert rc == 0
    run = ckpt.load_run(ckpt.find_latest(out))
    assert run["params"]["scale_range"] == [0.75, 1.5] and run["params"]["steps"] == 1
    from goose_lib.reports import provenance

    rec = json.loads((out / "provenance.json").read_text())  # as a notebook run records
    assert rec["notebook"] == "goose train" and rec["seed"] == 0 and rec["params"]["steps"] == 1
    assert rec["params_sha256"] == provenance.params_hash(rec["params"])
    assert rec["inputs"]["data"]["data_root"] == provenance.data_fingerprint(tiny_root)
    assert rec["inputs"]["checkpoints"]["sam3_checkpoint"] == provenance.checkpoint_hash(small_ckpt)
    assert main(["train", "--out-dir", str(out), "--batch-size", "0"]) == 2
    assert to_dict(TrainConfig())["distill_classes"] == []


def test_leaderboard_options_train_log_and_keep_the_best(tiny_root, small_ckpt, tmp_path) -> None:
    """Issue 13's training options together: class-balanced CE + category term + copy-paste of the
    rarest training class + top-2 checkpoints by validation composite."""
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.train.sampling import class_pixel_counts

    base = GooseDataset(tiny_root, "train", config=TrainConfig(data_root=str(tiny_root)).data_config(4))
    totals = class_pixel_counts(base.samples, 64, progress=False).sum(0)
    rare = int(np.flatnonzero(totals == totals[totals > 0].min())[0])
    cfg = _cfg(tiny_root, small_ckpt, steps=4, val_interval=1, loss="class_balanced", category_loss_weight=0.3,
               copy_paste_classes=(rare,), copy_paste_prob=1.0, keep_best=2)
    result = train(cfg, tmp_path / "run", progress=False)
    notes = [r["message"] for r in result.history if r.get("event") == "note"]
    assert any(n.startswith(f"copy-paste: classes [{rare}] from ") for n in notes)
    best = ckpt.best_checkpoints(tmp_path / "run")
    ranking = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    vals = {r["step"]: r["val_composite"] for r in result.history if "val_composite" in r}
    assert len(best) == 2 == len(ranking) and all(p.is_dir() for p in best)
    assert [r["composite"] for r in ranking] == sorted(vals.values(), reverse=True)[:2]
    assert sorted(p.name for p in (tmp_path / "run" / "best").iterdir() if p.is_dir()) == \
        sorted(f"step_{r['step']:07d}" for r in ranking)
    run = ckpt.load_run(best[0])
    assert run["params"]["loss"] == "class_balanced" and run["params"]["copy_paste_classes"] == [rare]
    assert isinstance(ckpt.load_student(best[0]), torch.nn.Module)
