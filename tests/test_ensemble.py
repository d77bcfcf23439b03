"""Checkpoint ensembles: averaged TTA probabilities; an ensemble of one is the model, two
identical members are one; it plugs into predict / evaluate; top-k checkpoints resolve."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from infer_fakes import ColourModel, PositionModel

from goose_lib.infer.ensemble import Ensemble, ensemble_probs, resolve_members
from goose_lib.infer.tta import TTAConfig, predict, predict_probs

MS = TTAConfig(mode="multiscale", scales=(0.75, 1.0, 1.5), base="native", overlap=0.5, flip=True)


def _image(h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("cfg", [TTAConfig(), MS])
def test_ensemble_of_one_equals_the_model(cfg: TTAConfig) -> None:
    model = PositionModel(image_size=16, num_classes=5)
    img = _image()
    assert torch.equal(ensemble_probs([model], img, cfg), predict_probs(model, img, cfg))
    assert np.array_equal(predict(Ensemble([model]), img, cfg), predict(model, img, cfg))


@pytest.mark.parametrize("offload", [False, True])
def test_two_identical_members_equal_one_and_two_different_average(offload: bool) -> None:
    a = PositionModel(image_size=16, num_classes=5, seed=0)
    img = _image()
    one = predict_probs(a, img, MS)
    torch.testing.assert_close(ensemble_probs([a, copy.deepcopy(a)], img, MS, offload=offload), one)
    b = PositionModel(image_size=16, num_classes=5, seed=1)
    mean = (one + predict_probs(b, img, MS)) / 2
    torch.testing.assert_close(ensemble_probs([a, b], img, MS, offload=offload), mean, atol=1e-6, rtol=1e-5)
    assert np.array_equal(predict(Ensemble([a, b], offload=offload), img, MS), mean.argmax(0).numpy())


def test_offload_keeps_members_on_the_cpu_between_images() -> None:
    a, b = ColourModel(image_size=16), ColourModel(image_size=16, seed=1)
    ens = Ensemble([a, b], device="cpu", offload=True)
    predict(ens, _image(), MS)
    assert all(next(m.parameters()).device.type == "cpu" for m in ens.members)
    with pytest.raises(ValueError, match="input sizes"):
        Ensemble([a, ColourModel(image_size=32)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def test_evaluate_accepts_an_ensemble() -> None:
    from goose_lib.infer.evaluate import evaluate
    from goose_lib.ontology import Ontology

    model = ColourModel(image_size=16, num_classes=64)
    items = [{"image": _image(seed=i), "label": np.random.default_rng(i).integers(0, 64, (24, 40)).astype(np.uint8)}
             for i in range(2)]
    single = evaluate(model, items, {"s": MS}, ontology=Ontology.load(), progress=False)
    pair = evaluate(Ensemble([model, copy.deepcopy(model)]), items, {"s": MS}, ontology=Ontology.load(),
                    progress=False)
    np.testing.assert_array_equal(pair.counts["s"], single.counts["s"])


def test_resolve_members_reads_the_best_checkpoints(tmp_path) -> None:
    import json

    run = tmp_path / "training"
    for step in (2, 4):
        (run / "best" / f"step_{step:07d}").mkdir(parents=True)
    (run / "best" / "best.json").write_text(json.dumps([
        {"step": 4, "composite": 0.5, "checkpoint": "best/step_0000004"},
        {"step": 2, "composite": 0.4, "checkpoint": "best/step_0000002"}]))
    final = run / "checkpoints" / "step_0000004"
    final.mkdir(parents=True)
    (final / "run.json").write_text("{}")
    assert resolve_members(str(final), ("x",)) == [str(final), "x"]
    assert resolve_members(str(final), best=1) == [str(run / "best" / "step_0000004")]
    assert resolve_members(str(run), best=5) == [str(run / "best" / "step_0000004"), str(run / "best" / "step_0000002")]
    assert resolve_members(str(tmp_path), best=1) == [str(run / "best" / "step_0000004")]  # a 03_training run
    other = tmp_path / "other" / "checkpoints" / "step_1"
    other.mkdir(parents=True)
    (other / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="keep_best"):
        resolve_members(str(other), best=2)
