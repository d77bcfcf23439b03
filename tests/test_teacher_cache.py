"""Teacher cache: written once, resumed after a kill without recomputing, keyed on checkpoint and
parameters (a foreign cache is detected, not reused), per-item invalidation, shards, bad files."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from goose_lib.teacher.boxes import BoxParams
from goose_lib.teacher.cache import (
    TeacherCacheError,
    build_teacher_cache,
    cache_key,
    item_path,
    key_dir,
    open_cache,
    read_item,
)
from goose_lib.teacher.prompt import Teacher, TeacherConfig

BP = BoxParams(max_boxes=4)  # few boxes per image: these tests are about the cache, not the model


def _samples(root, split="val", n=3):
    from goose_lib.data.layout import index_split

    return index_split(root, split, use_cache=False)[:n]


class _Killed(Exception):
    pass


class _DiesAfter:
    """A teacher that is 'killed' after ``n`` images (as a job would be)."""

    def __init__(self, teacher: Teacher, n: int) -> None:
        self.teacher, self.n = teacher, n

    def predict(self, images, boxsets):
        if self.teacher.calls["images"] >= self.n:
            raise _Killed()
        return self.teacher.predict(images, boxsets)


def test_written_once_then_reused_without_loading_a_model(root, tracker, tmp_path) -> None:
    samples = _samples(root)
    built = []

    def factory():
        built.append(1)
        return Teacher(tracker)

    rep = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp-A", teacher=factory, box_params=BP, progress=False)
    assert (rep.total, rep.computed, rep.reused) == (len(samples), len(samples), 0) and built == [1]
    rep2 = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp-A", teacher=factory, box_params=BP, progress=False)
    assert (rep2.computed, rep2.reused) == (0, len(samples)) and built == [1]  # no model loaded
    from goose_lib.data.decode import load_sample

    for s in samples:
        it = read_item(item_path(rep.folder, s.key))
        label = load_sample(s)["label"]
        assert it["teacher_cls"].shape == label.shape and it["teacher_cls"].dtype == np.uint8
        assert set(it["boxes"].sources) <= {"instance", "component"}
        inside = it["teacher_region"] != 255
        assert set(np.unique(it["teacher_region"][inside])) <= set(it["boxes"].classes.tolist())
        assert (it["teacher_prob"][~inside] == 0).all()
    assert open_cache(rep.folder)["key"]["checkpoint_fingerprint"] == "fp-A"


def test_killed_run_resumes_without_recomputing_finished_images(root, tracker, tmp_path) -> None:
    samples = _samples(root, "train", n=5)
    first = Teacher(tracker)
    with pytest.raises(_Killed):
        build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=_DiesAfter(first, 2), box_params=BP, progress=False)
    assert first.calls["encode"] == 2
    second = Teacher(tracker)
    rep = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=second, box_params=BP, progress=False)
    assert rep.computed == len(samples) - 2 and rep.reused == 2
    assert second.calls["encode"] == len(samples) - 2  # model calls only for the unfinished images
    leftovers = [p for p in rep.folder.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_cache_of_another_checkpoint_is_detected_not_reused(root, tracker, tmp_path) -> None:
    samples = _samples(root)
    a = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp-A", teacher=Teacher(tracker), box_params=BP, progress=False)
    key_b = cache_key("fp-B", box_params=BP)
    with pytest.raises(TeacherCacheError, match="checkpoint_fingerprint"):
        open_cache(a.folder, expected_key=key_b)
    t = Teacher(tracker)
    b = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp-B", teacher=t, box_params=BP, progress=False)
    assert b.folder != a.folder and b.computed == len(samples) and t.calls["encode"] == len(samples)
    # an item of A copied into B's folder is recognised by its key hash and recomputed
    victim = samples[0].key
    shutil.copy(item_path(a.folder, victim), item_path(b.folder, victim))
    t2 = Teacher(tracker)
    again = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp-B", teacher=t2, box_params=BP, progress=False)
    assert again.computed == 1 and t2.calls["encode"] == 1
    # a manifest that does not match its folder's key is refused
    (b.folder / "manifest.json").write_text((a.folder / "manifest.json").read_text())
    with pytest.raises(TeacherCacheError, match="manifest.json"):
        build_teacher_cache(samples, tmp_path / "c", fingerprint="fp-B", teacher=t2, box_params=BP, progress=False)


def test_parameters_invalidate_exactly_what_they_must(root, tracker, tmp_path) -> None:
    samples = _samples(root)
    base = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker), box_params=BP, progress=False)
    # a result-neutral field (box_batch) keeps the key; a box or mask parameter changes it
    same = key_dir(tmp_path / "c", cache_key("fp", TeacherConfig(box_batch=2), BP))
    assert same == base.folder
    assert key_dir(tmp_path / "c", cache_key("fp", box_params=BoxParams(min_area=3))) != base.folder
    assert key_dir(tmp_path / "c", cache_key("fp", TeacherConfig(mask_threshold=0.6))) != base.folder
    # a changed label file invalidates that sample only
    lab = samples[1].labelids
    st = os.stat(lab)
    os.utime(lab, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    t = Teacher(tracker)
    rep = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=t, box_params=BP, progress=False)
    assert rep.computed == 1 and t.calls["encode"] == 1


def test_shards_split_the_split(root, tracker, tmp_path) -> None:
    samples = _samples(root, "train")
    r0 = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker), shard=(0, 2),
                             box_params=BP, progress=False)
    r1 = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker), shard=(1, 2),
                             box_params=BP, progress=False)
    assert r0.folder == r1.folder and r0.computed + r1.computed == len(samples)
    assert all(item_path(r0.folder, s.key).exists() for s in samples)
    with pytest.raises(ValueError, match="shard"):
        build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=None, shard=(2, 2))


def test_truncated_item_is_named_and_recomputed(root, tracker, tmp_path) -> None:
    samples = _samples(root)
    rep = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker), box_params=BP, progress=False)
    p = item_path(rep.folder, samples[0].key)
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(TeacherCacheError, match=str(p.name)):
        read_item(p)
    again = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker), box_params=BP, progress=False)
    assert again.computed == 1
    with pytest.raises(TeacherCacheError, match="not a teacher cache"):
        open_cache(tmp_path)


def test_unlabelled_split_needs_prediction_boxes(root, tracker, tmp_path) -> None:
    samples = _samples(root, "test")
    with pytest.raises(TeacherCacheError, match="no label"):
        build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker), box_params=BP, progress=False)
    pred = lambda im: np.where(np.arange(im.shape[0])[:, None] < im.shape[0] // 2, 53, 50).astype(np.uint8) \
        * np.ones(im.shape[:2], np.uint8)
    rep = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=Teacher(tracker),
                              box_source="prediction", predict_fn=pred, predictor_id="toy", box_params=BP, progress=False)
    it = read_item(item_path(rep.folder, samples[0].key))
    assert set(it["boxes"].sources) == {"prediction"} and set(it["boxes"].classes.tolist()) == {50, 53}


def test_student_is_parked_while_the_teacher_runs(root, tracker, tmp_path) -> None:
    """box_source="prediction": all boxes are predicted first, then the teacher is built, run and
    freed inside offload() (where a real Predictor parks its weights on the CPU), so a full-size
    student and teacher never share the GPU."""
    import contextlib

    events: list[str] = []
    state = {"parked": False}

    def student(im: np.ndarray) -> np.ndarray:
        assert not state["parked"], "the student ran while parked"
        events.append("student")
        return np.where(np.arange(im.shape[0])[:, None] < im.shape[0] // 2, 53, 50).astype(np.uint8) \
            * np.ones(im.shape[:2], np.uint8)

    @contextlib.contextmanager
    def offload():
        state["parked"] = True
        events.append("park")
        yield
        events.append("restore")
        state["parked"] = False

    class CountingTeacher(Teacher):
        def predict(self, images, boxsets):
            assert state["parked"], "the teacher ran beside the student"
            events.append("teacher")
            return super().predict(images, boxsets)

    def teacher() -> Teacher:
        assert state["parked"], "the teacher was built beside the student"
        events.append("teacher built")
        return CountingTeacher(tracker)

    samples = _samples(root, "test")
    rep = build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=teacher, box_source="prediction",
                              predict_fn=student, predictor_id="toy", box_params=BP, offload=offload, progress=False)
    assert rep.computed == 3
    assert events == ["student"] * 3 + ["park", "teacher built"] + ["teacher"] * 3 + ["restore"]
    it = read_item(item_path(rep.folder, samples[2].key))
    assert set(it["boxes"].sources) == {"prediction"} and set(it["boxes"].classes.tolist()) == {50, 53}
    events.clear()
    build_teacher_cache(samples, tmp_path / "c", fingerprint="fp", teacher=teacher, box_source="prediction",
                        predict_fn=student, predictor_id="toy", box_params=BP, offload=offload, progress=False)
    assert events == []  # all cached: no model runs, nothing is moved


def test_predictor_offloaded_parks_the_weights_on_the_cpu_and_restores_them() -> None:
    from types import SimpleNamespace

    import torch

    from goose_lib.infer.predictor import Predictor

    class FakeGpuModel:  # records .to(); its weights "live" on cuda:1
        def __init__(self) -> None:
            self.device, self.moves = torch.device("cuda", 1), []

        def parameters(self):
            return iter([SimpleNamespace(device=self.device)])

        def to(self, device):
            self.moves.append(str(device))
            self.device = torch.device(device)
            return self

    model = FakeGpuModel()
    p = Predictor(predict=lambda im: im, label="toy", id="x", model=model)
    with p.offloaded():
        assert model.device.type == "cpu"
    assert model.moves == ["cpu", "cuda:1"]
    with Predictor(predict=lambda im: im, label="toy", id="x").offloaded():
        pass  # no model: nothing to move


def test_cli_teacher_caches_and_resumes(root, tmp_path, capsys) -> None:
    import json

    from goose_lib.cli import main

    args = ["teacher", "--data-root", str(root), "--split", "val", "--limit", "2", "--max-boxes", "3", "--cache-dir",
            str(tmp_path / "c"), "--no-progress", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["computed"], first["reused"], first["total"]) == (2, 0, 2)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["computed"], second["reused"]) == (0, 2) and second["cache"] == first["cache"]
    assert main(args[:-1] + ["--shard", "x"]) == 2
    assert "I/N" in capsys.readouterr().err


def test_cli_teacher_on_an_unlabelled_split_with_predicted_boxes(root, tmp_path, capsys) -> None:
    import json

    from goose_lib.cli import main

    args = ["teacher", "--data-root", str(root), "--split", "test", "--limit", "1", "--boxes", "prediction", "--max-boxes", "3",
            "--cache-dir", str(tmp_path / "c"), "--no-progress", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["computed"] == 1
    items = list((tmp_path / "c").rglob("*.npz"))
    it = read_item(items[0])
    assert set(it["boxes"].sources) <= {"prediction"}
    assert open_cache(out["cache"])["key"]["predictor_id"]
