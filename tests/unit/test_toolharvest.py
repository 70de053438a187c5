"""Harvesting ToolActor training pairs: which calls, what is kept out, resume without duplicates."""

import json

import pytest

from controller.stages.toolharvest import PairsFile, harvest, held_out_titles, plan_calls, shown_titles
from mtr.simclient import ToolResult
from mtr.task import Document, Hop, Task
from mtr.toolprompt import EXACT_TOOL_NAMES, actor_messages


def _tool(name, parameters):
    properties = {p: {"type": "string"} for p in parameters}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} tool.",
            "parameters": {"type": "object", "properties": properties, "required": list(parameters)},
        },
    }


TOOLS = (
    _tool("search", ["query"]),
    _tool("open_page", ["title"]),
    _tool("get_birthplace", ["person"]),
    _tool("calculator", ["expression"]),
    _tool("compare", ["a", "b", "criterion"]),
)


def _task(task_id, subjects, question="Where was the director of Gold born?"):
    hops = tuple(Hop(f"What about {s}?", f"answer-{s}", subject=s, relation="born_in") for s in subjects)
    return Task(task_id, question, ("x",), decomposition=hops, hops=len(hops), tools=TOOLS)


def test_a_task_gets_the_calls_a_good_policy_makes_and_never_an_exact_tool():
    calls = plan_calls(_task("t1", ["Ana Vell", "Velgrad"]))
    shown = {(c.name, json.dumps(c.arguments)) for c in calls}
    assert ("search", '{"query": "Where was the director of Gold born?"}') in shown
    assert ("search", '{"query": "What about Ana Vell?"}') in shown
    assert ("open_page", '{"title": "Velgrad"}') in shown
    assert ("get_birthplace", '{"person": "Ana Vell"}') in shown
    assert not {c.name for c in calls} & EXACT_TOOL_NAMES
    assert len(shown) == len(calls)  # no call twice


def test_a_benchmark_task_without_decomposition_uses_its_own_documents():
    docs = (Document("Gold (film)", "Gold is a film."), Document("Ana Vell", "Ana Vell directed Gold."))
    task = Task("h1", "Who directed Gold?", ("Ana Vell",), documents=docs, tools=TOOLS[:2])
    calls = plan_calls(task)
    assert {("open_page", c.arguments.get("title")) for c in calls if c.name == "open_page"} == {
        ("open_page", "Gold (film)"),
        ("open_page", "Ana Vell"),
    }
    assert all(c.documents == docs for c in calls)


def test_pages_of_held_out_questions_are_recognised_in_any_observation():
    held = held_out_titles([_task("e1", ["Bo Kran"]), Task("h", "q?", ("a",), documents=(Document("Lisk", "t"),))])
    assert held == {"bo kran", "lisk"}
    observation = {"results": [{"title": "Ana Vell", "text": "..."}, {"title": "Bo Kran", "text": "..."}]}
    assert shown_titles(observation) == {"ana vell", "bo kran"}
    assert shown_titles({"entity": "x", "source": "Lisk", "evidence": ["..."]}) == {"lisk"}


class FakeFarm:
    """Answers like the grounded actor: a search shows the page titled by the query's last word."""

    def __init__(self):
        self.asked = []

    def call_many(self, calls):
        self.asked += calls
        results = []
        for call in calls:
            arguments = json.loads(call.arguments_json)
            if call.name == "get_birthplace" and arguments["person"] == "Broken":
                results.append(ToolResult({"error": "bad"}, "invalid_arguments", "bad", False, "r0"))
                continue
            title = next(iter(arguments.values())).rstrip("?").split()[-1]
            results.append(ToolResult({"results": [{"title": title, "text": f"{title} text"}]}, "ok", "", False, "r0"))
        return results


def test_harvest_keeps_held_out_pages_out_writes_noisy_pairs_and_resumes(tmp_path):
    train = [_task("t1", ["Vell"]), _task("t2", ["Kran"]), _task("t3", ["Broken"])]
    held_out = [_task("e1", ["Kran"])]
    farm = FakeFarm()
    pairs = PairsFile(tmp_path / "pairs.jsonl")
    stats = harvest(train, held_out, farm, pairs, noisy=True, seed=1)
    records = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert stats.written == len(records) > 0 and stats.held_out > 0 and stats.failed == 1
    assert not any("Kran" in r["messages"][2]["content"] for r in records)  # never a held-out page
    assert {r["quality"] for r in records} == {"useful", "noisy"}
    noisy = next(r for r in records if r["quality"] == "noisy" and r["task_id"] == "t1")
    assert "Vell" not in noisy["messages"][2]["content"]  # another question's facts
    first = records[0]
    assert first["messages"][:2] == actor_messages(
        next(t for t in TOOLS if t["function"]["name"] == first["tool"]),
        json.loads(first["messages"][1]["content"]),
        first["quality"],
    )
    assert len({r["key"] for r in records}) == len(records)

    # A crash mid-line: the cut line is dropped, and a re-run writes only what is missing, never twice.
    raw = (tmp_path / "pairs.jsonl").read_bytes()
    lines = raw.splitlines(keepends=True)
    (tmp_path / "pairs.jsonl").write_bytes(b"".join(lines[:-2]) + lines[-2][:10])
    again = harvest(train, held_out, FakeFarm(), PairsFile(tmp_path / "pairs.jsonl"), noisy=True, seed=1)
    resumed = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert again.written == 2 and len(resumed) == len(records)
    assert sorted(r["key"] for r in resumed) == sorted(r["key"] for r in records)
    third = harvest(train, held_out, FakeFarm(), PairsFile(tmp_path / "pairs.jsonl"), noisy=True, seed=1)
    assert third.written == 0


def test_a_pairs_file_that_is_not_one_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"key": "a"}\n{"no key": 1}\n')
    with pytest.raises(ValueError, match="line 2 is not a harvest pair"):
        PairsFile(path)
