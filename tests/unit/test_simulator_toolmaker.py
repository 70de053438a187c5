"""The ToolMaker classifies tasks, picks utilities by class, adds relation tools, and repairs or drops designed ones."""

from __future__ import annotations

import pytest

from mtr.task import Task
from mtr.toolschema import instance_errors, tools_by_name, validate_tool
from mtr.world import generate_world
from mtr.worldquestions import generate_tasks
from simulator.library import LIBRARY, RELATION_OUTPUT_SCHEMA
from simulator.toolmaker import (
    DEFAULT_LIBRARY,
    DesignedTool,
    TaskProfile,
    ToolMaker,
    ToolSpec,
    classify_task,
    profile_task,
)


def _task(question: str, question_type: str = "") -> Task:
    return Task(id="t", question=question, answers=("x",), question_type=question_type)


def _names(toolmaker: ToolMaker, question: str, question_type: str = "") -> list[str]:
    return [spec.name for spec in toolmaker.make_tools(_task(question, question_type)).tools]


def test_made_tools_are_valid_openai_function_tools():
    for task in generate_tasks(generate_world(0), 40, 0):
        toolset = ToolMaker().make_tools(task)
        tools = [spec.tool for spec in toolset.tools]
        for tool in tools:
            validate_tool(tool)
        names = set(tools_by_name(tools))
        assert {"search", "open_page", "lookup"} <= names
        assert toolset.source == "rules"


def test_fixed_library_gives_every_task_exactly_those_tools():
    toolmaker = ToolMaker(DEFAULT_LIBRARY)
    assert _names(toolmaker, "Who was born first, A or B?") == ["search", "open_page"]
    assert toolmaker.spec("get_birth_year") is None  # a fixed ToolMaker knows nothing else


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


@pytest.mark.parametrize(
    ("question", "numeric", "arithmetic"),
    [
        ("When was Dorvik founded?", True, False),
        ("In which year was the director of X born?", True, False),
        ("Who was born first, A or B?", True, False),
        ("Which film came out earlier, X or Y?", True, False),
        ("Is A older than B?", True, False),
        ("How many years after X was born was Y born?", True, True),
        ("How old was A when B was released?", True, True),
        ("Where was Ada born?", False, False),
        ("Who is the father-in-law of C?", False, False),
    ],
)
def test_numeric_and_arithmetic_questions(question, numeric, arithmetic):
    assert profile_task(_task(question)) == TaskProfile(classify_task(_task(question)), numeric, arithmetic)


def test_utilities_are_chosen_by_class():
    toolmaker = ToolMaker()
    assert _names(toolmaker, "Where was Ada born?")[:3] == ["search", "open_page", "lookup"]
    assert "compare" not in _names(toolmaker, "Where was Ada born?")
    born_first = _names(toolmaker, "Who was born first, A or B?", "comparison")
    assert "compare" in born_first and "calculator" not in born_first
    both = _names(toolmaker, "Are A and B both painters?", "comparison")
    assert "compare" in both and "date_diff" not in both
    gap = _names(toolmaker, "How many years after A was born was B born?")
    assert {"compare", "date_diff", "calculator"} <= set(gap)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Who was born first, A or B?", {"get_birth_year"}),
        ("In which city was the director of X born?", {"get_director", "get_birth_place"}),
        ("Who founded the company that A works for?", {"get_founder", "get_employer"}),
        ("Which company was founded earlier, V or W?", {"get_founding_year"}),
        ("Who is the maternal grandmother of C?", {"get_father", "get_mother"}),
        ("Who is the father-in-law of C?", {"get_spouse", "get_father"}),
        ("When was the film X released?", {"get_release_year"}),
        ("What is the capital of the country where Q is?", {"get_capital", "get_country"}),
    ],
)
def test_relation_tools_follow_the_question(question, expected):
    names = set(_names(ToolMaker(), question))
    assert expected <= names
    assert len(names - set(LIBRARY)) <= 4


def test_relation_tools_are_known_to_any_toolmaker_by_name():
    """A call may reach a replica that never made the task's tools: the name alone must be enough."""
    made = ToolMaker().make_tools(_task("In which year was the director of X born?"))
    fresh = ToolMaker()
    for spec in made.tools:
        assert fresh.spec(spec.name) == spec
    birth_year = fresh.spec("get_birth_year")
    assert birth_year.tool["function"]["parameters"]["required"] == ["person"]
    assert birth_year.grounding.relation == "birth_year"
    assert fresh.spec("get_no_such_relation") is None


class _Designer:
    """Stands in for the LLM designer: returns fixed proposals, or raises."""

    def __init__(self, proposals: list[DesignedTool] | Exception) -> None:
        self.proposals = proposals

    def design(self, task: Task, profile: TaskProfile) -> list[DesignedTool]:
        if isinstance(self.proposals, Exception):
            raise self.proposals
        return self.proposals


def _proposal(name: object = "get_release_date", **function: object) -> DesignedTool:
    parameters = {"type": "object", "properties": {"film": {"type": "string"}}, "required": ["film"]}
    tool = {"type": "function", "function": {"name": name, "description": "Release date.", "parameters": parameters}}
    tool["function"].update(function)
    return DesignedTool(tool=tool, relation="released in")


def test_designed_tools_are_repaired_grounded_and_callable_by_name():
    proposal = _proposal("get release date!", parameters={"properties": {"film": {"type": "str"}}, "required": ["x"]})
    toolmaker = ToolMaker(designer=_Designer([proposal]))
    toolset = toolmaker.make_tools(_task("When was X released?"))
    assert toolset.source == "llm"
    spec = toolmaker.spec("get_release_date")
    assert spec is not None and spec in toolset.tools
    assert spec.tool["function"]["parameters"] == {
        "type": "object",
        "properties": {"film": {"type": "string"}},
        "required": [],
    }
    assert (spec.grounding.relation, spec.grounding.subject) == ("release_year", "film")
    assert spec.output_schema == RELATION_OUTPUT_SCHEMA
    assert toolmaker.stats.repaired == {"name": 1, "parameters": 1, "property_type": 1, "required": 1}


def test_unusable_designs_are_dropped_with_reasons_and_the_rules_take_over():
    proposals = [
        DesignedTool(tool="not a tool", relation="x"),
        _proposal("search"),  # would shadow the library tool
        _proposal(parameters={"type": "object", "properties": {"year": {"type": "integer"}}}),
        _proposal(name=42),
    ]
    toolmaker = ToolMaker(designer=_Designer(proposals))
    toolset = toolmaker.make_tools(_task("When was X released?"))
    assert toolset.source == "rules_fallback"
    assert "get_release_year" in [spec.name for spec in toolset.tools]
    assert toolmaker.stats.dropped == {
        "not a JSON object but str": 1,
        "name clashes with a library tool": 1,
        "no string parameter to name the entity": 1,
        "no usable name": 1,
    }
    assert toolmaker.stats.fallbacks == {"no usable designed tool": 1}


def test_designer_failure_falls_back_to_rules_and_is_counted():
    toolmaker = ToolMaker(designer=_Designer(ConnectionError("endpoint down")))
    toolset = toolmaker.make_tools(_task("Who directed X?"))
    assert toolset.source == "rules_fallback"
    assert "get_director" in [spec.name for spec in toolset.tools]
    assert toolmaker.stats.fallbacks == {"designer failed: ConnectionError": 1}


def test_a_designed_name_that_means_something_else_is_renamed():
    """Two designs under one name would make calls ambiguous; the second gets a content suffix."""
    other = _proposal("get_birth_year", description="Something else entirely.")
    toolmaker = ToolMaker(designer=_Designer([other]))
    (designed,) = [s for s in toolmaker.make_tools(_task("When was X born?")).tools if s.name not in LIBRARY]
    assert designed.name.startswith("get_birth_year_") and len(designed.name) == len("get_birth_year_") + 6
    assert toolmaker.spec("get_birth_year").tool["function"]["description"] != "Something else entirely."
    assert toolmaker.spec(designed.name) == designed
    assert toolmaker.stats.repaired["rename"] == 1


def test_a_tool_designed_twice_is_offered_once():
    toolmaker = ToolMaker(designer=_Designer([_proposal(), _proposal()]))
    names = [spec.name for spec in toolmaker.make_tools(_task("When was X released?")).tools]
    assert names.count("get_release_date") == 1 and names[:3] == ["search", "open_page", "lookup"]


def test_an_invalid_output_schema_is_refused_naming_the_tool():
    spec = ToolSpec(LIBRARY["search"].tool, output_schema={"type": "no such type"})
    with pytest.raises(ValueError, match="tool 'search': the output schema is invalid"):
        ToolMaker([spec])
