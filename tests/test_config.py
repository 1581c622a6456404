"""Recipes: unknown keys, wrong types and missing files are user errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from ssl_ft.config import apply_overrides, from_dict, load_recipe, parse_override, to_dict
from ssl_ft.errors import UserError


@dataclass
class Inner:
    epochs: int = 1
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"
    crop: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"inner.epochs must be >= 1, got {self.epochs}")


@dataclass
class Outer:
    name: str = "x"
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)


def test_valid_recipe_and_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: y\ninner:\n  epochs: 3\n  lr: 1\n  crop: [0.2, 1]\n")
    cfg = load_recipe(p, Outer, ["inner.mode=b", "limit=256", "extra.k=v"])
    assert cfg.name == "y" and cfg.limit == 256
    assert cfg.inner == Inner(epochs=3, lr=1.0, mode="b", crop=(0.2, 1.0))
    assert isinstance(cfg.inner.lr, float)
    assert to_dict(cfg)["inner"]["crop"] == [0.2, 1.0]
    assert cfg.extra == {"k": "v"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nmae: y\n", "unknown key nmae"),
        ("inner:\n  epoch: 3\n", "unknown key inner.epoch"),
        ("inner:\n  epochs: three\n", "inner.epochs = 'three' has the wrong type"),
        ("inner:\n  epochs: 2.5\n", "inner.epochs = 2.5"),
        ("inner:\n  mode: c\n", "inner.mode = 'c' is not allowed"),
        ("inner:\n  epochs: 0\n", "inner.epochs must be >= 1, got 0"),
        ("inner: 3\n", "inner = 3 has the wrong type"),
        ("limit: true\n", "limit = True has the wrong type"),
        ("- a\n- b\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_bad_recipes_name_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as err:
        load_recipe(p, Outer)
    assert needle in str(err.value)
    assert str(p) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="nope.yaml"):
        load_recipe(tmp_path / "nope.yaml", Outer)


@pytest.mark.parametrize("bad", ["epochs", "=3", "a..b=1", ""])
def test_bad_override_syntax(bad):
    with pytest.raises(UserError, match="key=value"):
        parse_override(bad)


def test_override_values_are_yaml():
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=/tmp/x") == (["a"], "/tmp/x")
    with pytest.raises(UserError, match="name is not a mapping"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_from_dict_wrong_override_type():
    with pytest.raises(UserError, match="command line: inner.lr = 'fast'"):
        load_recipe(None, Outer, ["inner.lr=fast"])
    assert from_dict(Outer, {}).inner.epochs == 1


@pytest.mark.parametrize(("text", "value"), [("1e6", 1e6), ("1E-3", 1e-3), ("1.0e6", 1e6),
                                             ("-2e+2", -200.0), (" 5e1 ", 50.0)])
def test_float_keys_take_the_numbers_yaml_1_1_leaves_as_strings(tmp_path, text, value):
    assert load_recipe(None, Outer, [f"inner.lr={text}"]).inner.lr == value
    p = tmp_path / "r.yaml"
    p.write_text(f"inner:\n  lr: {text}\n")
    lr = load_recipe(p, Outer).inner.lr
    assert isinstance(lr, float) and lr == value
    with pytest.raises(UserError, match="limit = '1e3' has the wrong type"):  # ints stay strict
        load_recipe(None, Outer, ["limit=1e3"])


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_non_finite_floats_are_refused(text):
    with pytest.raises(UserError, match=r"inner.lr = .* must be a finite number"):
        load_recipe(None, Outer, [f"inner.lr={text}"])


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_recipe_file_is_refused(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=f"recipe {p} is empty"):
        load_recipe(p, Outer)
    p.write_text("{}\n")  # an explicit empty mapping runs the defaults
    assert load_recipe(p, Outer) == Outer()
