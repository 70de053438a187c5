"""Designed tools with mechanical faults are repaired (each fix reported); hopeless ones are dropped with a reason."""

from __future__ import annotations

import copy

import pytest

from mtr.toolschema import validate_tool
from simulator.repair import repair_tool


def _tool(**function: object) -> dict:
    base = {
        "name": "get_director",
        "description": "Who directed the film.",
        "parameters": {"type": "object", "properties": {"film": {"type": "string"}}, "required": ["film"]},
    }
    return {"type": "function", "function": {**base, **function}}


def test_a_valid_tool_passes_untouched():
    repair = repair_tool(_tool())
    assert (repair.tool, repair.fixes, repair.dropped) == (_tool(), (), "")


@pytest.mark.parametrize(
    ("name", "fixed"),
    [
        ("get director", "get_director"),
        ("get.director()", "get_director"),
        ("  Get-Director  ", "Get-Director"),
        ("x" * 80, "x" * 64),
        ("__get__director__", "get_director"),
    ],
)
def test_bad_names_are_fixed_to_the_openai_pattern(name, fixed):
    repair = repair_tool(_tool(name=name))
    assert repair.tool["function"]["name"] == fixed
    assert repair.fixes == (f"name: {name!r} -> {fixed!r}",)
    validate_tool(repair.tool)


def test_parameters_get_type_object_and_python_type_names_become_json_schema_ones():
    repair = repair_tool(_tool(parameters={"properties": {"film": {"type": "str"}, "n": {"type": "int"}}}))
    assert repair.tool["function"]["parameters"] == {
        "type": "object",
        "properties": {"film": {"type": "string"}, "n": {"type": "integer"}},
    }
    assert [fix.split(":")[0] for fix in repair.fixes] == ["parameters", "property_type", "property_type"]


def test_required_names_that_do_not_exist_are_dropped():
    repair = repair_tool(
        _tool(
            parameters={
                "type": "object",
                "properties": {"film": {"type": "string"}},
                "required": ["film", "year", "film"],
            }
        )
    )
    assert repair.tool["function"]["parameters"]["required"] == ["film"]
    assert repair.fixes == ("required: dropped ['year'] (not defined in properties, or repeated)",)


def test_a_bare_function_is_wrapped_and_a_missing_description_derived():
    bare = {"name": "get_director", "parameters": {"type": "object", "properties": {"film": {"type": "string"}}}}
    repair = repair_tool(bare)
    assert repair.tool["type"] == "function"
    assert repair.tool["function"]["description"] == "Get director."
    assert [fix.split(":")[0] for fix in repair.fixes] == ["wrap", "description"]


def test_properties_whose_schema_is_not_an_object_are_dropped():
    parameters = {"type": "object", "properties": {"film": {"type": "string"}, "bad": "string"}, "required": ["bad"]}
    repair = repair_tool(_tool(parameters=parameters))
    assert repair.tool["function"]["parameters"] == {
        "type": "object",
        "properties": {"film": {"type": "string"}},
        "required": [],
    }


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("get_director", "not a JSON object but str"),
        ({"type": "function", "function": "get_director"}, "no 'function' object"),
        (_tool(name=None), "no usable name (None)"),
        (_tool(name="!!!"), "no usable name ('!!!')"),
        (_tool(parameters={"type": "object", "properties": {"film": {"type": 12}}}), "not a valid JSON Schema"),
    ],
)
def test_hopeless_tools_are_dropped_with_a_reason(candidate, reason):
    repair = repair_tool(candidate)
    assert repair.tool is None
    assert reason in repair.dropped


def test_the_input_is_never_modified():
    candidate = _tool(name="get director", parameters={"properties": {"film": {"type": "str"}}, "required": ["x"]})
    before = copy.deepcopy(candidate)
    repair_tool(candidate)
    assert candidate == before
