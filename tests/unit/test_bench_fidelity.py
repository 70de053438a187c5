"""The ToolActor fidelity measures on known observations."""

import json

import pytest

from bench.toolmodel_fidelity import carries, heldout_calls, score
from mtr.simclient import ToolResult


def _pair(grounded, answers, split="heldout", quality="useful"):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "{}"}]
    messages.append({"role": "assistant", "content": json.dumps(grounded)})
    return {
        "task_id": "t",
        "tool": "search",
        "split": split,
        "quality": quality,
        "answers": answers,
        "messages": messages,
    }


def test_answer_bearing_is_normalized_containment_of_whole_words():
    assert carries({"results": [{"title": "Ana", "text": "She was born in Velgrad."}]}, ["velgrad"])
    assert not carries({"text": "Velgradia is far."}, ["Velgrad"])
    assert not carries({"text": "anything"}, [""])


def test_fidelity_counts_valid_bearing_and_f1_against_the_grounded_observation():
    grounded = {"results": [{"title": "Ana Vell", "text": "Ana Vell was born in Velgrad."}]}
    pairs = [_pair(grounded, ["Velgrad"]), _pair(grounded, ["Velgrad"]), _pair({"error": "no page"}, ["Oskar"])]
    results = [
        ToolResult(grounded, "ok", "", False, "r"),
        ToolResult({"results": [{"title": "Ana Vell", "text": "Ana Vell was born in Oskar."}]}, "ok", "", False, "r"),
        ToolResult({"error": "x"}, "backend_error", "the ToolActor model wrote no JSON object", False, "r"),
    ]
    measured = score(pairs, results)
    assert measured["schema_valid_rate"] == pytest.approx(2 / 3)
    assert (measured["answer_bearing_calls"], measured["answer_bearing_rate"]) == (2, 0.5)
    assert 0.5 < measured["token_f1"] < 1.0 and measured["errors"] == ["the ToolActor model wrote no JSON object"]


def test_only_held_out_useful_pairs_are_asked(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [_pair({}, [], "train"), _pair({}, [], "heldout", "noisy"), _pair({}, ["a"], "heldout")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [r["answers"] for r in heldout_calls(path)] == [["a"]]


def test_the_simreal_table_pairs_the_gaps_that_matter():
    from bench.simreal import markdown, table

    real = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}
    em = {
        ("sft", "real"): {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0},
        ("grounded", "real"): real,
        ("simulated", "real"): {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0},
        ("simulated", "simulated"): {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0},
    }
    result = table(em)
    assert result["cells"]["grounded|real"]["em"] == 0.5
    sim_to_real = result["gaps"]["sim_to_real: simulated-trained - grounded-trained, evaluated real"]
    assert sim_to_real["gain"] == -0.25 and sim_to_real["n_paired"] == 4
    assert result["gaps"]["simulated: evaluated simulated - real"]["gain"] == 0.5
    shown = markdown({"table": result})
    assert "| grounded | 0.500 [" in shown and "| base-actor | - | - |" in shown
