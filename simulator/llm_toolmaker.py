"""The LLM tool designer: asks an OpenAI-compatible endpoint for a question's task-specific tools.

The model sees the question, its class and an example of the kind of tool wanted (the rule-made tools of
the same question), and answers with structured output: a list of {name, description, returns,
parameters}. What comes back is only a proposal: the ToolMaker repairs or drops each tool, grounds it as
a relation lookup, and falls back to the rule-made tools when nothing usable (or nothing at all) arrives.

    ToolMaker(designer=LLMToolDesigner(LLMClient("http://127.0.0.1:8000", "model-name")))
"""

from __future__ import annotations

import json

from mtr.task import Task
from simulator.library import ToolSpec
from simulator.llm_client import LLMClient
from simulator.taskspecific import relation_tools
from simulator.toolmaker import DesignedTool, TaskProfile

_TEXT = {"type": "string", "maxLength": 200}
# Tight on purpose: what the decoder cannot write, the repair step does not have to undo.
_PROPERTY = {
    "type": "object",
    "properties": {"type": {"enum": ["string", "integer", "number", "boolean"]}, "description": _TEXT},
    "required": ["type", "description"],
    "additionalProperties": False,
}


def design_schema(max_tools: int) -> dict:
    """The JSON Schema the endpoint must answer with."""
    parameters = {
        "type": "object",
        "properties": {
            "type": {"const": "object"},
            "properties": {"type": "object", "additionalProperties": _PROPERTY, "maxProperties": 3},
            "required": {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 3},
        },
        "required": ["type", "properties", "required"],
        "additionalProperties": False,
    }
    tool = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 64},
            "description": _TEXT,
            "returns": {"type": "string", "maxLength": 60},
            "parameters": parameters,
        },
        "required": ["name", "description", "returns", "parameters"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"tools": {"type": "array", "items": tool, "maxItems": max_tools}},
        "required": ["tools"],
        "additionalProperties": False,
    }


_SYSTEM = (
    "You design tools for answering one multi-hop question from an encyclopedia. Each tool reads ONE fact "
    "(a relation such as 'birth year' or 'director') of ONE entity, named by a string parameter. Give each "
    "tool a snake_case name, a one-sentence description, the relation it returns in 'returns', and its "
    "parameters as a JSON Schema object. Propose at most {max_tools} tools, only ones the question needs. "
    "Answer with JSON only."
)


class LLMToolDesigner:
    """Proposes task-specific tools with an LLM; raises LLMError when the endpoint gives nothing usable."""

    def __init__(self, client: LLMClient, *, max_tools: int = 4, max_tokens: int = 600) -> None:
        if max_tools < 1:
            raise ValueError(f"max_tools must be >= 1, got {max_tools}")
        self.client = client
        self.max_tools = max_tools
        self.max_tokens = max_tokens
        self._schema = design_schema(max_tools)

    def design(self, task: Task, profile: TaskProfile) -> list[DesignedTool]:
        answer = self.client.chat_json(
            self.messages(task, profile), self._schema, name="task_tools", max_tokens=self.max_tokens
        )
        return [_designed(item) for item in answer["tools"]]

    def messages(self, task: Task, profile: TaskProfile) -> list[dict]:
        example = [_as_proposal(spec) for spec in relation_tools(task.question, 1)] or [_GENERIC_EXAMPLE]
        question = (
            f"Question: {task.question}\nQuestion type: {profile.kind}"
            f"{' (asks for a date or number)' if profile.numeric else ''}\n"
            f"Example of the format: {json.dumps({'tools': example})}"
        )
        return [
            {"role": "system", "content": _SYSTEM.format(max_tools=self.max_tools)},
            {"role": "user", "content": question},
        ]


def _designed(item: dict) -> DesignedTool:
    tool = {"name": item["name"], "description": item["description"], "parameters": item["parameters"]}
    return DesignedTool(tool={"type": "function", "function": tool}, relation=item["returns"])


def _as_proposal(spec: ToolSpec) -> dict:
    """A rule-made tool in the answer format, as the example the model imitates."""
    function = spec.tool["function"]
    properties = {
        name: {"type": schema["type"], "description": schema["description"]}
        for name, schema in function["parameters"]["properties"].items()
    }
    parameters = {"type": "object", "properties": properties, "required": function["parameters"]["required"]}
    return {
        "name": function["name"],
        "description": function["description"],
        "returns": spec.grounding.relation.replace("_", " "),
        "parameters": parameters,
    }


_GENERIC_EXAMPLE = {
    "name": "get_occupation",
    "description": "Look up the person's occupation.",
    "returns": "occupation",
    "parameters": {
        "type": "object",
        "properties": {"person": {"type": "string", "description": "The person's name."}},
        "required": ["person"],
    },
}
