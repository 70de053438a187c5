"""Validation of OpenAI-style function tools, of the arguments sent to them and of the JSON they return.

The ToolMaker writes tools, the ToolActor answers calls against them and the trace parser checks a policy's
arguments; all of them use these checks so that "valid" means the same thing everywhere. Compiled
validators are cached by schema content because the simulator validates thousands of calls a second
against a handful of schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CACHE_SIZE = 4096
_MAX_MESSAGE = 300
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


class ToolSchemaError(ValueError):
    """A tool definition or JSON Schema that cannot be used; the message names the tool and the fault."""


def validate_tool(tool: dict) -> None:
    """Check one tool's shape and its parameters schema; raise ToolSchemaError saying what is wrong."""
    problem = _tool_problem(_cache_key(tool, "tool"))
    if problem is not None:
        raise ToolSchemaError(problem)


def tools_by_name(tools: Sequence[dict]) -> dict[str, dict]:
    """Index validated tools by function name; two tools with one name would make calls ambiguous."""
    index: dict[str, dict] = {}
    for tool in tools:
        validate_tool(tool)
        name = tool["function"]["name"]
        if name in index:
            raise ToolSchemaError(f"tool {name!r} is defined twice; tool names must be unique")
        index[name] = tool
    return index


def argument_errors(tool: dict, arguments: object) -> list[str]:
    """Readable problems ("<json path>: <reason>") of call arguments against the tool's parameters; [] if valid."""
    validate_tool(tool)
    if not isinstance(arguments, dict):
        return [f"$: arguments must be a JSON object, got {_json_type(arguments)}"]
    return instance_errors(tool["function"]["parameters"], arguments)


def instance_errors(schema: dict, instance: object) -> list[str]:
    """Readable problems of any JSON value against a JSON Schema (draft 2020-12); [] if valid."""
    validator = _validator(_cache_key(schema, "schema"))
    errors = sorted(validator.iter_errors(instance), key=lambda error: (error.json_path, error.message))
    return [_shorten(f"{error.json_path}: {error.message}") for error in errors]


def _cache_key(value: object, what: str) -> str:
    # Content, not identity, is the key: tools arrive as fresh dicts from the wire on every request.
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ToolSchemaError(f"{what} is not plain JSON: {error}") from error


@lru_cache(maxsize=_CACHE_SIZE)
def _validator(key: str) -> Draft202012Validator:
    schema = json.loads(key)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        raise ToolSchemaError(f"not a valid JSON Schema (draft 2020-12): {_schema_error(error)}") from error
    return Draft202012Validator(schema)


@lru_cache(maxsize=_CACHE_SIZE)
def _tool_problem(key: str) -> str | None:
    tool = json.loads(key)
    if not isinstance(tool, dict):
        return f"a tool must be a JSON object, got {_json_type(tool)}"
    function = tool.get("function")
    if not isinstance(function, dict):
        return f"tool {_shorten(key, 80)} needs a 'function' object"
    label = f"tool {function.get('name')!r}"
    if tool.get("type") != "function":
        return f"{label}: 'type' must be 'function', got {tool.get('type')!r}"
    if not isinstance(function.get("name"), str) or not _NAME.fullmatch(function["name"]):
        return f"{label}: the name must be 1-64 characters of letters, digits, '_' or '-'"
    description = function.get("description")
    if not isinstance(description, str) or not description.strip():
        return f"{label}: 'description' must be a non-empty string"
    problem = _parameters_problem(function.get("parameters"))
    return None if problem is None else f"{label}: {problem}"


def _parameters_problem(parameters: object) -> str | None:
    if not isinstance(parameters, dict):
        return f"'parameters' must be a JSON Schema object, got {_json_type(parameters)}"
    if parameters.get("type") != "object":
        return f'\'parameters\' must have "type": "object", got {parameters.get("type")!r}'
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as error:
        return f"'parameters' is not a valid JSON Schema (draft 2020-12): {_schema_error(error)}"
    properties = parameters.get("properties", {})
    missing = [name for name in parameters.get("required", []) if name not in properties]
    if missing:
        return f"'required' names properties that 'properties' does not define: {missing}"
    return None


def _schema_error(error: SchemaError) -> str:
    return _shorten(f"{error.json_path}: {error.message}")


def _json_type(value: object) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _shorten(text: str, limit: int = _MAX_MESSAGE) -> str:
    # jsonschema repeats the whole offending value in its message; a huge observation would drown the reason.
    return text if len(text) <= limit else text[: limit - 1] + "…"
