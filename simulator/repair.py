"""Repairs tool definitions a designer (usually an LLM) wrote, or says why one cannot be used.

The common faults are mechanical: a name with spaces, parameters without `"type": "object"`, Python type
names ("str"), `required` naming properties that do not exist. Those are fixed and each fix is reported;
anything still invalid afterwards (`mtr.toolschema.validate_tool`) is dropped with the reason. The input
is never modified.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from mtr.toolschema import ToolSchemaError, validate_tool

_NAME_MAX = 64
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
# Type names designers borrow from Python or other languages, and their JSON Schema spelling.
_TYPE_ALIASES = {
    "str": "string",
    "text": "string",
    "int": "integer",
    "float": "number",
    "double": "number",
    "bool": "boolean",
    "dict": "object",
    "list": "array",
    "none": "null",
}


@dataclass(frozen=True)
class Repair:
    """The outcome for one tool: the usable tool (None when dropped), what was fixed, and why it was dropped.

    Each fix reads "<kind>: <detail>" (kinds: wrap, type, name, description, parameters, properties,
    property_type, required), so fixes can be counted by kind.
    """

    tool: dict | None
    fixes: tuple[str, ...] = ()
    dropped: str = ""


def repair_tool(candidate: object) -> Repair:
    """A valid OpenAI function tool made from `candidate`, with the list of fixes, or the reason it was dropped."""
    if not isinstance(candidate, dict):
        return Repair(None, dropped=f"not a JSON object but {type(candidate).__name__}")
    tool, fixes = copy.deepcopy(candidate), []
    if "function" not in tool and "name" in tool:
        tool = {"type": "function", "function": tool}
        fixes.append("wrap: a bare function definition -> {type: function, function: ...}")
    function = tool.get("function")
    if not isinstance(function, dict):
        return Repair(None, tuple(fixes), "no 'function' object")
    if tool.get("type") != "function":
        fixes.append(f"type: {tool.get('type')!r} -> 'function'")
        tool["type"] = "function"
    name = _repair_name(function, fixes)
    if name is None:
        return Repair(None, tuple(fixes), f"no usable name ({function.get('name')!r})")
    _repair_description(function, fixes)
    function["parameters"] = _repair_parameters(function.get("parameters"), fixes)
    try:
        validate_tool(tool)
    except ToolSchemaError as error:
        return Repair(None, tuple(fixes), str(error))
    return Repair(tool, tuple(fixes))


def _repair_name(function: dict, fixes: list[str]) -> str | None:
    name = function.get("name")
    if not isinstance(name, str):
        return None
    fixed = _BAD_NAME_CHARS.sub("_", name.strip()).strip("_-")[:_NAME_MAX].rstrip("_-")
    fixed = re.sub(r"_+", "_", fixed)
    if not fixed:
        return None
    if fixed != name:
        fixes.append(f"name: {name!r} -> {fixed!r}")
        function["name"] = fixed
    return fixed


def _repair_description(function: dict, fixes: list[str]) -> None:
    description = function.get("description")
    if isinstance(description, str) and description.strip():
        return
    function["description"] = function["name"].replace("_", " ").replace("-", " ").strip().capitalize() + "."
    fixes.append("description: missing -> derived from the name")


def _repair_parameters(parameters: object, fixes: list[str]) -> dict:
    if not isinstance(parameters, dict):
        fixes.append(f"parameters: {type(parameters).__name__} -> an empty object schema")
        return {"type": "object", "properties": {}}
    if parameters.get("type") != "object":
        fixes.append(f"parameters: type {parameters.get('type')!r} -> 'object'")
        parameters["type"] = "object"
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict):
        fixes.append("properties: not an object -> {}")
        properties = {}
    parameters["properties"] = _repair_properties(properties, fixes)
    _repair_required(parameters, fixes)
    return parameters


def _repair_properties(properties: dict, fixes: list[str]) -> dict:
    kept = {}
    for name, schema in properties.items():
        if not isinstance(schema, dict):
            fixes.append(f"properties: dropped {name!r}, its schema is not an object")
            continue
        declared = schema.get("type")
        if isinstance(declared, str) and declared.lower() in _TYPE_ALIASES:
            schema["type"] = _TYPE_ALIASES[declared.lower()]
            fixes.append(f"property_type: {name!r} {declared!r} -> {schema['type']!r}")
        kept[name] = schema
    return kept


def _repair_required(parameters: dict, fixes: list[str]) -> None:
    if "required" not in parameters:
        return
    required = parameters["required"]
    if not isinstance(required, list):
        fixes.append("required: not a list -> dropped")
        del parameters["required"]
        return
    kept = list(dict.fromkeys(r for r in required if isinstance(r, str) and r in parameters["properties"]))
    if kept != required:
        missing = [r for r in required if r not in kept]
        fixes.append(f"required: dropped {missing} (not defined in properties, or repeated)")
        parameters["required"] = kept
