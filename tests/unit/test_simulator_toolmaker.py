"""The ToolMaker hands out valid OpenAI tools and classifies tasks by kind."""

from __future__ import annotations

import pytest

from mtr.task import Task
from mtr.toolschema import instance_errors, tools_by_name, validate_tool
from simulator.toolmaker import DEFAULT_LIBRARY, ToolMaker, ToolSpec, classify_task


def _task(question: str, question_type: str = "") -> Task:
    return Task(id="t", question=question, answers=("x",), question_type=question_type)


def test_made_tools_are_valid_openai_function_tools():
    toolset = ToolMaker().make_tools(_task("Where was Ada born?"))
    tools = [spec.tool for spec in toolset.tools]
    for tool in tools:
        validate_tool(tool)
    assert set(tools_by_name(tools)) == {"search", "open_page"}


@pytest.mark.parametrize(
    ("spec", "good", "bad"),
    [
        (DEFAULT_LIBRARY[0], {"results": [{"title": "A", "text": "a"}]}, {"results": [{"title": "A"}]}),
        (DEFAULT_LIBRARY[1], {"error": "no page titled 'A'"}, {"title": "A", "text": "a", "extra": 1}),
    ],
)
def test_output_schemas_accept_observations_and_reject_malformed_ones(spec, good, bad):
    assert instance_errors(spec.output_schema, good) == []
    assert instance_errors(spec.output_schema, bad) != []


def test_search_query_is_bounded_to_300_characters():
    parameters = ToolMaker().spec("search").tool["function"]["parameters"]
    assert instance_errors(parameters, {"query": "q" * 300}) == []
    assert instance_errors(parameters, {"query": "q" * 301}) != []
    assert instance_errors(parameters, {"query": ""}) != []


def test_invalid_tool_in_library_is_refused_at_construction():
    broken = ToolSpec(tool={"type": "function", "function": {"name": "bad name!"}}, output_schema={})
    with pytest.raises(ValueError, match="bad name"):
        ToolMaker([broken])


@pytest.mark.parametrize(
    ("question_type", "question", "kind"),
    [
        ("comparison", "Who was born first, A or B?", "comparison"),
        ("bridge_comparison", "Which film has the director born later, X or Y?", "comparison"),
        ("bridge", "Where was the founder of Z born?", "bridge"),
        ("compositional", "In which country was the director of X born?", "compositional"),
        ("inference", "Who is the maternal grandfather of C?", "inference"),
        ("", "Who is the paternal grandmother of C?", "inference"),
        ("", "Which company was founded earlier, V or W?", "comparison"),
        ("", "Are A and B both painters?", "comparison"),
        ("", "In which country is the capital of the country of Q?", "compositional"),
        ("", "Where was Ada born?", "bridge"),
    ],
)
def test_task_kind(question_type, question, kind):
    assert classify_task(_task(question, question_type)) == kind
