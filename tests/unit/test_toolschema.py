"""Tool-definition checks and argument/observation validation."""

import copy

import pytest

from mtr.toolschema import ToolSchemaError, argument_errors, instance_errors, tools_by_name, validate_tool


def make_tool(name: str = "search", **parameters) -> dict:
    schema = {
        "type": "object",
        "properties": {"query": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1}},
        "required": ["query"],
        "additionalProperties": False,
    }
    schema.update(parameters)
    return {"type": "function", "function": {"name": name, "description": "Search documents.", "parameters": schema}}


def test_valid_tool_passes():
    validate_tool(make_tool())
    assert list(tools_by_name([make_tool("a"), make_tool("b")])) == ["a", "b"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.update(type="tool"), "'type' must be 'function'"),
        (lambda t: t["function"].update(name="web search"), "name must be 1-64 characters"),
        (lambda t: t["function"].update(name="x" * 65), "name must be 1-64 characters"),
        (lambda t: t["function"].update(description="  "), "'description' must be a non-empty string"),
        (lambda t: t["function"].pop("parameters"), "'parameters' must be a JSON Schema object"),
        (lambda t: t["function"]["parameters"].update(type="array"), 'must have "type": "object"'),
        (lambda t: t["function"]["parameters"]["properties"].update(top_k={"type": "int"}), "not a valid JSON Schema"),
        (lambda t: t["function"]["parameters"].update(required=["query", "lang"]), "'required' names properties"),
    ],
)
def test_invalid_tools_are_rejected_with_the_tool_named(mutate, expected):
    tool = copy.deepcopy(make_tool())
    mutate(tool)
    with pytest.raises(ToolSchemaError, match=expected) as caught:
        validate_tool(tool)
    assert "search" in str(caught.value) or "web search" in str(caught.value) or "x" * 65 in str(caught.value)


def test_tool_without_function_object_is_rejected():
    with pytest.raises(ToolSchemaError, match="needs a 'function' object"):
        validate_tool({"type": "function", "name": "search"})


def test_duplicate_names_are_rejected():
    with pytest.raises(ToolSchemaError, match="'search' is defined twice"):
        tools_by_name([make_tool(), make_tool()])


def test_argument_errors_name_path_and_reason():
    tool = make_tool()
    assert argument_errors(tool, {"query": "paris", "top_k": 3}) == []
    assert argument_errors(tool, {}) == ["$: 'query' is a required property"]
    assert argument_errors(tool, {"query": "x", "top_k": 0}) == ["$.top_k: 0 is less than the minimum of 1"]
    errors = argument_errors(tool, {"query": 5, "lang": "en"})
    assert len(errors) == 2
    assert any("unexpected" in error and "lang" in error for error in errors)
    assert "$.query: 5 is not of type 'string'" in errors


def test_non_object_arguments_are_an_error():
    assert argument_errors(make_tool(), ["paris"]) == ["$: arguments must be a JSON object, got array"]
    assert argument_errors(make_tool(), None) == ["$: arguments must be a JSON object, got null"]


def test_instance_errors_for_observations():
    schema = {"type": "object", "properties": {"results": {"type": "array", "items": {"type": "string"}}}}
    assert instance_errors(schema, {"results": ["a", "b"]}) == []
    assert instance_errors(schema, {"results": ["a", 2]}) == ["$.results[1]: 2 is not of type 'string'"]


def test_invalid_schema_for_instance_errors_is_reported():
    with pytest.raises(ToolSchemaError, match="not a valid JSON Schema"):
        instance_errors({"type": "nonsense"}, {})


def test_long_values_are_shortened_in_messages():
    (error,) = instance_errors({"type": "string"}, {"blob": "y" * 2000})
    assert len(error) <= 300 and error.endswith("…")


def test_validation_sees_content_not_a_stale_cache():
    tool = make_tool()
    assert argument_errors(tool, {"query": "x", "top_k": 0}) != []
    del tool["function"]["parameters"]["properties"]["top_k"]["minimum"]
    assert argument_errors(tool, {"query": "x", "top_k": 0}) == []
