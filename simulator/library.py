"""The predefined utility tools every ToolMaker draws from, each with the output schema its observations obey.

`search` and `open_page` read pages; `lookup` returns the sentences of an entity's page about a relation;
`compare`, `date_diff` and `calculator` do the exact computations multi-hop answers need. Output schemas
stay server-side: the call handler checks every observation against them before the policy sees it.
A `Grounding` says how the grounded actor answers a tool, so tools made per task (e.g. `get_birth_year`)
are answerable without code of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# What the grounded actor does for a tool; "relation" tools read one fact of one entity from its page.
OPERATIONS = ("search", "open_page", "lookup", "compare", "date_diff", "calculator", "relation")
# Exact computations: simulating them with an LLM could only make them wrong.
COMPUTED_OPERATIONS = frozenset({"compare", "date_diff", "calculator"})


@dataclass(frozen=True)
class Grounding:
    """How to answer a tool from documents: the operation and, for "relation" tools, which fact of which argument."""

    operation: str
    relation: str = ""
    subject: str = ""

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown grounding operation {self.operation!r}; expected one of {OPERATIONS}")
        if self.operation == "relation" and not (self.relation and self.subject):
            raise ValueError("a 'relation' grounding needs both the relation and the subject argument's name")


@dataclass(frozen=True)
class ToolSpec:
    """One tool: the OpenAI function tool the policy sees and the schema its observations obey.

    `grounding` defaults to the operation named like the tool, which is right for the library tools.
    """

    tool: dict
    output_schema: dict
    grounding: Grounding | None = None

    @property
    def name(self) -> str:
        return self.tool["function"]["name"]

    @property
    def operation(self) -> str:
        return self.grounding.operation if self.grounding else self.name


class ToolResolver(Protocol):
    """Anything that can say what a tool name means (the ToolMaker, or the standard tools alone)."""

    def spec(self, name: str) -> ToolSpec | None: ...


def function_tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    """An OpenAI function tool whose parameters admit exactly `properties`."""
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


def text_parameter(description: str, max_length: int = 300) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "description": description}


def closed_object(properties: dict, required: list[str] | None = None) -> dict:
    """An object schema with exactly these properties, all required unless told otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def or_miss(found: dict) -> dict:
    """A tool's output: what it found, or an error the policy should read (a miss is an answer, not a failure)."""
    return {"anyOf": [found, MISS_SCHEMA]}


_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
MISS_SCHEMA = closed_object({"error": _STRING})
PAGE_SCHEMA = closed_object({"title": _STRING, "text": _STRING})
# The observation of every relation tool, whoever designed it, so any made tool is answerable.
RELATION_OUTPUT_SCHEMA = or_miss(
    closed_object(
        {
            "entity": _STRING,
            "relation": _STRING,
            "value": {"type": ["string", "null"]},
            "evidence": {**_STRINGS, "minItems": 1},
            "source": _STRING,
        }
    )
)

SEARCH = ToolSpec(
    tool=function_tool(
        "search",
        "Search the encyclopedia. Returns the best-matching pages (title and text).",
        {"query": text_parameter("Keywords, e.g. an entity name and the fact you need.")},
        ["query"],
    ),
    output_schema=closed_object({"results": {"type": "array", "items": PAGE_SCHEMA}}),
)
OPEN_PAGE = ToolSpec(
    tool=function_tool(
        "open_page",
        "Open the encyclopedia page with exactly this title (case does not matter).",
        {"title": text_parameter("The page title.")},
        ["title"],
    ),
    output_schema={"oneOf": [PAGE_SCHEMA, MISS_SCHEMA]},
)
LOOKUP = ToolSpec(
    tool=function_tool(
        "lookup",
        "Read one fact from an entity's page: the sentences of that page that mention the relation.",
        {
            "entity": text_parameter("The entity whose page to read, e.g. a person, film or company name.", 200),
            "relation": text_parameter("The fact you need, e.g. 'birth year', 'directed by', 'founder'.", 100),
        },
        ["entity", "relation"],
    ),
    output_schema=or_miss(
        closed_object(
            {"entity": _STRING, "relation": _STRING, "source": _STRING, "sentences": {**_STRINGS, "minItems": 1}}
        )
    ),
)
COMPARISON_CRITERIA = ("earlier", "later", "larger", "smaller", "same")
COMPARE = ToolSpec(
    tool=function_tool(
        "compare",
        "Compare two values (numbers, dates or text): which is earlier/later/larger/smaller, or are they the same.",
        {
            "a": text_parameter("The first value, e.g. 1901, 3 May 1901, 12.5 or a name.", 200),
            "b": text_parameter("The second value.", 200),
            "criterion": {"type": "string", "enum": list(COMPARISON_CRITERIA), "description": "What to compare by."},
        },
        ["a", "b", "criterion"],
    ),
    output_schema=or_miss(
        closed_object(
            {
                "a": _STRING,
                "b": _STRING,
                "criterion": {"enum": list(COMPARISON_CRITERIA)},
                "result": {"enum": ["a", "b", "equal", "different"]},
                "compared_as": {"enum": ["number", "date", "text"]},
                "explanation": _STRING,
            }
        )
    ),
)
DATE_DIFF = ToolSpec(
    tool=function_tool(
        "date_diff",
        "Time from start to end: whole years (and days when both are full dates). Negative when end is earlier.",
        {
            "start": text_parameter("A date or a year, e.g. 1901, 1901-05-03 or 3 May 1901.", 100),
            "end": text_parameter("A date or a year.", 100),
        },
        ["start", "end"],
    ),
    output_schema=or_miss(
        closed_object(
            {"start": _STRING, "end": _STRING, "years": {"type": "integer"}, "days": {"type": ["integer", "null"]}}
        )
    ),
)
CALCULATOR = ToolSpec(
    tool=function_tool(
        "calculator",
        "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, abs, min, max, round.",
        {"expression": text_parameter("e.g. (1950 - 1901) / 2", 200)},
        ["expression"],
    ),
    output_schema=or_miss(closed_object({"expression": _STRING, "result": {"type": "number"}})),
)

# The tools the rollout loop and the oracle AutoAgent rely on; a ToolMaker given only these is the old fixed set.
MINIMAL_LIBRARY = (SEARCH, OPEN_PAGE)
LIBRARY: dict[str, ToolSpec] = {spec.name: spec for spec in (SEARCH, OPEN_PAGE, LOOKUP, COMPARE, DATE_DIFF, CALCULATOR)}
