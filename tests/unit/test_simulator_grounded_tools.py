"""The grounded actor answers every library and relation tool on world tasks, through the real call handler."""

from __future__ import annotations

import json

import pytest

from mtr.task import Document
from mtr.world import generate_world
from mtr.worldquestions import generate_tasks
from simulator.calls import CallStatus, ToolCallHandler
from simulator.facts import read_fact
from simulator.grounded import CORPUS, BackendError, DocumentSet, GroundedActor
from simulator.taskspecific import find_relation
from simulator.toolmaker import ToolMaker


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


@pytest.fixture(scope="module")
def tasks(world):
    return generate_tasks(world, 200, 0)


@pytest.fixture(scope="module")
def handler(world):
    toolmaker = ToolMaker()
    return ToolCallHandler(GroundedActor(world.documents, tools=toolmaker), toolmaker)


def _call(handler: ToolCallHandler, tool: str, documents: DocumentSet = CORPUS, **arguments: str) -> dict:
    """One call through validation, the actor and the output-schema check; must come back OK."""
    outcome = handler.call(tool, json.dumps(arguments), documents)
    assert outcome.status is CallStatus.OK, outcome.error
    return json.loads(outcome.observation_json)


def test_relation_tools_made_for_each_task_answer_every_hop(handler, tasks):
    """Each hop's relation has a tool among the task's own, and it reads the gold value off the subject's page."""
    checked = set()
    for task in tasks:
        names = {spec.name for spec in handler.toolmaker.make_tools(task).tools}
        for hop in task.decomposition:
            tool = find_relation(hop.relation).tool_name
            assert tool in names, f"{task.question!r} lacks {tool}"
            subject = handler.toolmaker.spec(tool).grounding.subject
            for documents in (CORPUS, DocumentSet.of(task.documents)):
                observation = _call(handler, tool, documents, **{subject: hop.subject})
                assert observation["value"] == hop.answer, observation
                assert observation["source"] == hop.subject
            checked.add((task.question_type, tool))
    assert {kind for kind, _ in checked} == {"bridge", "compositional", "comparison", "inference"}
    assert len({tool for _, tool in checked}) == 14  # every relation the world asks about


def test_lookup_returns_the_sentences_about_the_relation(handler, tasks):
    hop = next(h for t in tasks for h in t.decomposition if h.relation == "directed by")
    observation = _call(handler, "lookup", entity=hop.subject, relation="director")
    assert observation["source"] == hop.subject
    assert any(hop.answer in sentence and "directed by" in sentence for sentence in observation["sentences"])


def test_lookup_misses_are_error_observations(handler, world):
    city = world.cities[0].name
    assert (
        "no page about 'Nobody Anywhere'"
        in _call(handler, "lookup", entity="Nobody Anywhere", relation="father")["error"]
    )
    assert "no sentence about 'spouse'" in _call(handler, "lookup", entity=city, relation="spouse")["error"]
    assert "error" in _call(handler, "get_father", person="zzzz qqqq")


def test_compare_date_diff_and_calculator(handler, world):
    a, b = world.people[0], world.people[1]
    observation = _call(handler, "compare", a=str(a.birth_year), b=str(b.birth_year), criterion="earlier")
    expected = "equal" if a.birth_year == b.birth_year else "a" if a.birth_year < b.birth_year else "b"
    assert observation["result"] == expected and observation["compared_as"] == "date"
    assert _call(handler, "date_diff", start="1901-05-03", end="1950")["years"] == 49
    assert _call(handler, "calculator", expression="(1950 - 1901) * 2") == {
        "expression": "(1950 - 1901) * 2",
        "result": 98,
    }


def test_computation_mistakes_are_readable_error_observations(handler):
    assert "cannot read 'Dorvik'" in _call(handler, "compare", a="Dorvik", b="1901", criterion="earlier")["error"]
    assert "not allowed" in _call(handler, "calculator", expression="__import__('os')")["error"]
    assert "division by zero" in _call(handler, "calculator", expression="1/0")["error"]


def test_relation_arguments_are_validated_by_the_handler(handler):
    outcome = handler.call("get_birth_year", json.dumps({"name": "x"}))
    assert outcome.status is CallStatus.INVALID_ARGUMENTS and "person" in outcome.error


def test_tools_the_actor_does_not_know_are_backend_errors():
    with pytest.raises(BackendError, match="no implementation of tool 'get_favourite_colour'"):
        GroundedActor([Document("a", "b")]).run("get_favourite_colour", {"x": "a"}, CORPUS)


@pytest.mark.parametrize(
    ("text", "relation", "value"),
    [
        (
            "Rain Man is a 1988 film. It was directed by Barry Levinson and released in December 1988.",
            "director",
            "Barry Levinson",
        ),
        (
            "Rain Man is a 1988 film. It was directed by Barry Levinson and released in December 1988.",
            "release_year",
            "December 1988",
        ),
        ("Ada Lovelace (born 10 December 1815) was a mathematician.", "birth_year", "10 December 1815"),
        ("Acme Corp. is headquartered in Springfield; it was founded by Wile Coyote.", "founder", "Wile Coyote"),
        ("Acme Corp. is headquartered in Springfield; it was founded by Wile Coyote.", "headquarters", "Springfield"),
        ("Bert Crane was born in Dorvik in 1901.", "born in", "Dorvik"),
        ("Mira Tovek is a film director by occupation and works for Zalk Press.", "occupation", "film director"),
    ],
)
def test_values_are_read_off_free_text(text, relation, value):
    assert read_fact(text, relation).value == value


def test_unknown_relations_match_sentences_by_word_stems():
    fact = read_fact("Dorvik is a harbour city. Its founding is told in sagas. Its mayor is Bert Crane.", "founded")
    assert fact.sentences == ("Its founding is told in sagas.",) and fact.value is None
    assert read_fact("Dorvik is a harbour city.", "spouse") is None
