"""The request path's values (`types.frozen`): frozen to the type checker, plain slotted
dataclasses at run time. mypy must refuse an assignment to a field of every one of them."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
from mypy import api

from pirouter_py import types
from pirouter_py.types import TextPart

# The modules that make request-path values; importing them registers their classes.
MODULES = ("types", "record", "routing.decide", "routing.policy", "routing.features", "cascade")


def frozen_classes() -> list[type]:
    for name in MODULES:
        importlib.import_module(f"pirouter_py.{name}")
    return list(types.FROZEN)


def test_every_value_is_read_only_to_the_type_checker(tmp_path: Path) -> None:
    classes = frozen_classes()
    assert len(classes) >= 18  # types 12, record 1, decide 1, policy 3, features 1, cascade 1
    lines = []
    for i, cls in enumerate(classes):
        first = dataclasses.fields(cls)[0].name
        lines += [
            f"from {cls.__module__} import {cls.__name__} as C{i}",
            f"def f{i}(v: C{i}) -> None:",
            f"    v.{first} = v.{first}",
        ]
    snippet = tmp_path / "assign.py"
    snippet.write_text("\n".join(lines) + "\n")
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(snippet)]
    )
    refused = [line for line in out.splitlines() if "is read-only" in line]
    assert status == 1 and len(refused) == len(classes), out


@pytest.mark.parametrize("cls", frozen_classes(), ids=lambda c: c.__name__)
def test_values_are_slotted_dataclasses(cls: type) -> None:
    assert dataclasses.is_dataclass(cls) and "__dict__" not in dir(cls) and cls.__slots__


def test_values_compare_and_hash_by_their_fields() -> None:
    a, b = TextPart("hi"), TextPart("hi")
    assert a == b and hash(a) == hash(b) and len({a, b, TextPart("other")}) == 2
    assert dataclasses.replace(a, text="other") == TextPart("other")
