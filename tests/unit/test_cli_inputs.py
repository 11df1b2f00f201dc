"""Parsing the command line's --param and --handlers values (no task is run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flowkit.console.inputs import check_handlers, load_handlers, parse_params
from flowkit.errors import ConfigError
from flowkit.worker.handlers.base import Handler


class Noop(Handler):
    pass


def test_param_values_are_json_when_they_parse_else_strings() -> None:
    params = parse_params(["day=2026-11-23", "limit=10", "dry=true", "tags=[1,2]", "q=a=b", "empty="])
    assert params == {"day": "2026-11-23", "limit": 10, "dry": True, "tags": [1, 2], "q": "a=b", "empty": ""}


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_param_without_key_or_equals_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_params([bad])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([Noop()], "must be a dict"),
        ({}, "the dict is empty"),
        ({"r": Noop}, r"maps to the class Noop; pass an instance: Noop\(\)"),
        ({"r": object()}, "role 'r' maps to a object, not a Handler"),
        ({1: Noop()}, "role 1 must be a string"),
    ],
)
def test_handlers_must_be_a_dict_of_handler_instances(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_handlers(value, "mod:H")


def test_handler_spec_needs_module_and_attr() -> None:
    with pytest.raises(ConfigError, match="expected MODULE:ATTR"):
        load_handlers("just_a_module")


def test_handler_spec_names_the_missing_module_and_attribute(tmp_path: Path) -> None:
    (tmp_path / "cli_inputs_mod.py").write_text(
        "from flowkit import Handler\nclass H(Handler):\n    pass\nHANDLERS = {'r': H()}\n"
    )
    try:
        with pytest.raises(ConfigError, match="cannot import module 'cli_inputs_nope'"):
            load_handlers("cli_inputs_nope:X", search_path=tmp_path)
        with pytest.raises(ConfigError, match=r"has no attribute 'X' \(dicts it defines: HANDLERS\)"):
            load_handlers("cli_inputs_mod:X", search_path=tmp_path)
        assert list(load_handlers("cli_inputs_mod:HANDLERS", search_path=tmp_path)) == ["r"]
    finally:
        sys.modules.pop("cli_inputs_mod", None)
        sys.path.remove(str(tmp_path.resolve()))


def test_an_error_inside_the_handler_module_is_reported_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "cli_inputs_broken.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    try:
        with pytest.raises(ConfigError, match=r"RuntimeError: boom \(.*cli_inputs_broken.py:2\)"):
            load_handlers("cli_inputs_broken:HANDLERS", search_path=tmp_path)
    finally:
        sys.path.remove(str(tmp_path.resolve()))
