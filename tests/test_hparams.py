"""Declarative hyperparameters: parsing command-line text, validation, error messages."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from infoflow_track import HParams, UserError, hparam
from infoflow_track.hparams import parse_assignments, parse_config, specs


@dataclass(frozen=True)
class Demo(HParams):
    widths: tuple[int, ...] = hparam((8, 4), low=1, high=1024, help="hidden widths")
    activation: str = hparam("relu", choices=("relu", "tanh"))
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True)
    bias: bool = hparam(True)


def test_defaults_are_valid_and_frozen() -> None:
    config = Demo()
    assert config.widths == (8, 4)
    with pytest.raises(FrozenInstanceError):
        config.lr = 0.1  # type: ignore[misc]


def test_strings_are_parsed_by_field_type() -> None:
    config = parse_config(
        Demo, {"widths": "256, 128,64", "lr": "0.01", "bias": "false", "activation": "tanh"}
    )
    assert config == Demo(widths=(256, 128, 64), activation="tanh", lr=0.01, bias=False)
    assert config.as_params() == {
        "widths": "256,128,64", "activation": "tanh", "lr": "0.01", "bias": "false"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "named", "valid"),
    [
        ({"depth": "3"}, "'depth'", "widths, activation, lr, bias"),
        ({"lr": "fast"}, "'lr'", "1e-06 <= x <= 1"),
        ({"lr": "5"}, "'lr'", "1e-06 <= x <= 1"),
        ({"lr": "nan"}, "'lr'", "1e-06 <= x <= 1"),
        ({"widths": "8,0"}, "'widths'", "1 <= x <= 1024"),
        ({"widths": "8,,4"}, "'widths'", "list of int"),
        ({"activation": "gelu"}, "'activation'", "relu, tanh"),
        ({"bias": "maybe"}, "'bias'", "true or false"),
    ],
)
def test_bad_values_name_the_key_and_what_is_valid(overrides, named, valid) -> None:
    with pytest.raises(UserError) as info:
        parse_config(Demo, overrides)
    assert named in str(info.value)
    assert valid in str(info.value)


def test_float_fields_store_floats_and_long_values_are_refused() -> None:
    assert Demo(lr=1).lr == 1.0 and isinstance(Demo(lr=1).lr, float)
    assert Demo(lr=1).as_params()["lr"] == parse_config(Demo, {"lr": "1"}).as_params()["lr"]
    with pytest.raises(UserError, match="MLflow records at most 6000"):
        parse_config(Demo, {"widths": ",".join(["1000"] * 1500)})


def test_typed_values_are_checked_too() -> None:
    with pytest.raises(UserError, match="'widths'"):
        Demo(widths=())
    with pytest.raises(UserError, match="'lr'"):
        Demo(lr=True)  # a bool is not a float


@pytest.mark.parametrize("item", ["lr", "=3", "lr=", " =x"])
def test_malformed_assignments_are_rejected(item: str) -> None:
    with pytest.raises(UserError, match="key=value"):
        parse_assignments([item])


def test_assignments_split_on_the_first_equals_sign() -> None:
    assert parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(UserError, match="twice"):
        parse_assignments(["a=1", "a=2"])


def test_specs_describe_type_range_and_help() -> None:
    s = specs(Demo)
    assert list(s) == ["widths", "activation", "lr", "bias"]
    assert s["widths"].type_name == "list of int"
    assert s["widths"].help == "hidden widths"
    assert s["lr"].log and s["lr"].valid_text.endswith("(log scale)")
