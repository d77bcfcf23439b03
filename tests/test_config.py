"""Strict parameter validation: unknown names, wrong types and bad values fail loudly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from goose_lib.config import DataConfig, EvalProtocol, ParameterError, to_dict, validate, validate_namespace
from goose_lib.params import NOTEBOOK_PARAMS


@dataclass(frozen=True)
class _P:
    name: str = "a"
    steps: int = 3
    lr: float = 0.1
    scales: tuple[float, ...] = (1.0,)
    limit: int | None = None
    flag: bool = False


def test_defaults_and_coercion() -> None:
    p = validate(_P, {"lr": 1, "scales": [0.5, 1]})
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert p.scales == (0.5, 1.0)
    assert p.steps == 3 and p.limit is None


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['stpes'\].*'steps'"):
        validate(_P, {"stpes": 4})


@pytest.mark.parametrize("name,value", [("steps", 2.5), ("steps", True), ("lr", "0.1"),
                                        ("scales", [1, "x"]), ("flag", 1), ("limit", "3")])
def test_wrong_types_name_the_field(name: str, value: object) -> None:
    with pytest.raises(ParameterError, match=rf"_P\.{name}"):
        validate(_P, {name: value})


def test_post_init_errors_become_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="limit must be >= 1"):
        validate(DataConfig, {"limit": 0})


def test_validate_namespace_picks_fields_only() -> None:
    ns = {"steps": 7, "In": [], "_oh": {}, "np": object()}
    assert validate_namespace(_P, ns).steps == 7


def test_protocol_literal() -> None:
    assert validate(EvalProtocol, {"void": "void_as_class"}).void == "void_as_class"
    with pytest.raises(ParameterError):
        validate(EvalProtocol, {"void": "drop"})


def test_to_dict_is_json_ready() -> None:
    assert to_dict(_P()) == {"name": "a", "steps": 3, "lr": 0.1, "scales": [1.0], "limit": None, "flag": False}


@pytest.mark.parametrize("name", sorted(NOTEBOOK_PARAMS))
def test_notebook_param_defaults_validate(name: str) -> None:
    cls = NOTEBOOK_PARAMS[name]
    validate(cls, to_dict(cls()))
