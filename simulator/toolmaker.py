"""The ToolMaker: which OpenAI function tools a task gets, and what their observations must look like.

For now every task gets the same grounded library (`search`, `open_page`); each tool carries an output
JSON Schema that stays server-side and checks every observation before it is returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mtr.task import Task
from mtr.toolschema import argument_errors, instance_errors, validate_tool

TASK_KINDS = ("comparison", "bridge", "compositional", "inference")


@dataclass(frozen=True)
class ToolSpec:
    """One tool: the OpenAI function tool the policy sees and the schema its observations obey."""

    tool: dict
    output_schema: dict

    @property
    def name(self) -> str:
        return self.tool["function"]["name"]


@dataclass(frozen=True)
class ToolSet:
    tools: tuple[ToolSpec, ...]
    task_kind: str


def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_PAGE_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "text": {"type": "string"}},
    "required": ["title", "text"],
    "additionalProperties": False,
}
# A lookup that finds nothing is a normal tool answer the policy should read, not a failed call.
_MISS_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
    "additionalProperties": False,
}

SEARCH = ToolSpec(
    tool=_function(
        "search",
        "Search the encyclopedia. Returns the best-matching pages (title and text).",
        {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": 300,
                "description": "Keywords, e.g. an entity name and the fact you need.",
            }
        },
        ["query"],
    ),
    output_schema={
        "type": "object",
        "properties": {"results": {"type": "array", "items": _PAGE_SCHEMA}},
        "required": ["results"],
        "additionalProperties": False,
    },
)
OPEN_PAGE = ToolSpec(
    tool=_function(
        "open_page",
        "Open the encyclopedia page with exactly this title (case does not matter).",
        {"title": {"type": "string", "minLength": 1, "maxLength": 300, "description": "The page title."}},
        ["title"],
    ),
    output_schema={"oneOf": [_PAGE_SCHEMA, _MISS_SCHEMA]},
)
DEFAULT_LIBRARY = (SEARCH, OPEN_PAGE)


class ToolMaker:
    """Hands out the tools of a task; every schema passed `validate_tool` before it can leave."""

    def __init__(self, library: Sequence[ToolSpec] = DEFAULT_LIBRARY) -> None:
        for spec in library:
            validate_tool(spec.tool)
            # Compiling both schemas now keeps that cost (milliseconds) out of the first call's latency.
            argument_errors(spec.tool, {})
            instance_errors(spec.output_schema, {})
        self._specs = {spec.name: spec for spec in library}
        if len(self._specs) != len(library):
            raise ValueError(f"tool library has duplicate names: {[s.name for s in library]}")

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def make_tools(self, task: Task) -> ToolSet:
        tools = tuple(self._specs.values())
        for spec in tools:
            validate_tool(spec.tool)
        return ToolSet(tools=tools, task_kind=classify_task(task))


# Kinship and other implied relations: 2Wiki's "inference" questions ask for them.
_INFERENCE_WORDS = re.compile(
    r"\b(grand(father|mother|son|daughter|parent|child)|uncle|aunt|nephew|niece|cousin|in-law|sibling)\b", re.I
)
_COMPARISON_WORDS = re.compile(
    r"\b(which|who)\b.*\b(first|earlier|later|older|younger|more|less|larger|smaller|longer|shorter|higher"
    r"|lower|bigger|both|same)\b|\bboth\b|\bthe same\b",
    re.I,
)
_NESTED_POSSESSIVE = re.compile(r"\b(of|'s)\b.*\b(of|'s)\b", re.I)


def classify_task(task: Task) -> str:
    """One of TASK_KINDS, from the dataset's own label when it has one, else roughly from the question."""
    label = task.question_type.strip().lower()
    # 2Wiki's "bridge_comparison" is a comparison that needs a bridge first; comparing is the harder part.
    for kind in TASK_KINDS:
        if kind in label:
            return kind
    question = task.question
    if _INFERENCE_WORDS.search(question):
        return "inference"
    if _COMPARISON_WORDS.search(question):
        return "comparison"
    if _NESTED_POSSESSIVE.search(question):
        return "compositional"
    return "bridge"
