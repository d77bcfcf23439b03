"""Each default is written once: every notebook parameter and CLI option that is also a field of a
component's config has that component's default (the notebooks' literal parameter cells are held
against these classes by tests/test_notebook_structure.py)."""

from __future__ import annotations

import dataclasses

import pytest

from goose_lib.cli import build_parser
from goose_lib.config import DEFAULT_CAMERAS, DataConfig, EvalProtocol
from goose_lib.infer.config import TTAConfig
from goose_lib.models.config import StudentConfig
from goose_lib.params import ErrorAnalysisParams, ExplorationParams, TeacherParams, TrainingParams
from goose_lib.paths import UNTRAINED
from goose_lib.teacher.config import AdaptConfig, BoxParams, SelectionRule, TeacherConfig
from goose_lib.train.config import STUDENT_FIELDS, TrainConfig

# (parameter class, component class, {parameter field: component field}); None = same names
SHARED = [
    (ExplorationParams, DataConfig, {n: n for n in ("data_root", "limit", "exclude_scenarios", "skip_bad")}),
    (ErrorAnalysisParams, DataConfig, {n: n for n in ("data_root", "limit", "exclude_scenarios")}),
    (ErrorAnalysisParams, TTAConfig, {"flip": "flip", "overlap": "overlap", "window_batch": "window_batch",
                                      "autocast": "autocast", "tta_base": "base"}),
    (ErrorAnalysisParams, EvalProtocol, {"protocol": "void"}),
    (TeacherParams, DataConfig, {"data_root": "data_root"}),
    (TeacherParams, StudentConfig, {"sam3_checkpoint": "sam3_checkpoint"}),
    (TeacherParams, BoxParams, {"min_area": "min_area", "box_margin": "margin", "box_margin_px": "margin_px",
                                "max_boxes": "max_boxes", "use_instances": "use_instances"}),
    (TeacherParams, TeacherConfig, {n: n for n in ("multimask", "mask_threshold", "tie_margin", "overlap",
                                                   "no_memory_level", "box_batch")}),
    (TeacherParams, AdaptConfig, {"adapt_lr": "lr", "adapt_images_per_step": "images_per_step", "seed": "seed"}),
    (TeacherParams, SelectionRule, {n: n for n in ("criterion", "margin", "min_pixels", "min_images", "max_classes")}),
    (TrainConfig, StudentConfig, {n: n for n in STUDENT_FIELDS}),
    (TrainConfig, DataConfig, {"data_root": "data_root", "exclude_scenarios": "exclude_scenarios"}),
    (TrainingParams, TrainConfig, {f.name: f.name for f in dataclasses.fields(TrainConfig)}),
]


def _defaults(cls: type) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("params, component, names", SHARED,
                         ids=[f"{p.__name__}-{c.__name__}" for p, c, _ in SHARED])
def test_notebook_parameters_take_their_components_defaults(params, component, names) -> None:
    mine, theirs = _defaults(params), _defaults(component)
    assert {p: mine[p] for p in names} == {p: theirs[c] for p, c in names.items()}


def _parsed(argv: list[str]) -> dict:
    return vars(build_parser().parse_args(argv))


def test_cli_defaults_are_the_components_defaults() -> None:
    data = DataConfig()
    for verb in (["check"], ["stats"], ["score", "pred"], ["teacher"],
                 ["evaluate", "--checkpoint", "c"], ["predict", "--checkpoint", "c", "--out", "o"],
                 ["submit", "--checkpoint", "c"]):
        assert _parsed(verb)["data_root"] == data.data_root, verb
    for verb in (["check"], ["stats"]):
        got = _parsed(verb)
        assert tuple(got["cameras"]) == DEFAULT_CAMERAS == data.cameras
        assert tuple(got["exclude_scenarios"]) == data.exclude_scenarios and got["limit"] == data.limit
    for verb in (["score", "pred"], ["evaluate", "--checkpoint", "c"]):
        assert _parsed(verb)["protocol"] == EvalProtocol().void
    teacher = _parsed(["teacher"])
    assert teacher["sam3_checkpoint"] == StudentConfig().sam3_checkpoint == TeacherParams().sam3_checkpoint
    assert teacher["checkpoint"] == UNTRAINED == TeacherParams().checkpoint


def test_cli_options_built_from_dataclasses_fall_back_to_their_defaults() -> None:
    from goose_lib.cli.common import given
    from goose_lib.cli.infer import _modes

    # nothing given: the TTAConfig options are absent, so TTAConfig's own defaults apply
    args = build_parser().parse_args(["evaluate", "--checkpoint", "c"])
    assert given(args, TTAConfig) == {} and _modes(args) == {"single": TTAConfig()}
    args = build_parser().parse_args(["evaluate", "--checkpoint", "c", "--scales", "1", "2", "--overlap", "0.5"])
    assert _modes(args)["multiscale"] == TTAConfig(mode="multiscale", scales=(1.0, 2.0), overlap=0.5)
    args = build_parser().parse_args(["train", "--out-dir", "x"])
    assert given(args, TrainConfig) == {}
    # every option's help is its field's comment (written once, next to the default)
    helps = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert helps["decoder_channels"].startswith("decoder width") and "default: 32" in helps["decoder_channels"]
    assert all(helps[f.name] and not helps[f.name].startswith("(default") for f in dataclasses.fields(TrainConfig))


def test_untrained_student_matches_the_training_architecture() -> None:
    assert StudentConfig().decoder_channels == TrainConfig().decoder_channels == TrainConfig().student_config().decoder_channels
    assert TrainConfig().student_config() == StudentConfig()
