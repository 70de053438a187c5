"""Benchmark loaders: the shared native-format samples load fully, and malformed rows are reported where they are."""

import json
from pathlib import Path

import pytest

from mtr.datasets import DatasetError, DatasetSpec, RowError, load_tasks, parse_spec

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLES = {
    "hotpotqa": DATA / "hotpotqa" / "hotpot_dev_distractor_sample.json",
    "musique": DATA / "musique" / "musique_ans_dev_sample.jsonl",
    "2wiki": DATA / "2wikimultihopqa" / "dev_sample.json",
    "bamboogle": DATA / "bamboogle" / "test.jsonl",
}


def _sample(kind: str) -> Path:
    path = SAMPLES[kind]
    if not path.is_file():
        pytest.skip(f"benchmark sample {path} is absent (expected in ../shared/data next to the repository)")
    return path


def _load(kind: str, **kwargs):
    return load_tasks(f"{kind}:{_sample(kind)}", on_error="fail", **kwargs)


@pytest.mark.parametrize(("kind", "count"), [("hotpotqa", 200), ("musique", 200), ("2wiki", 164), ("bamboogle", 60)])
def test_samples_load_completely(kind, count):
    result = _load(kind)
    assert len(result.tasks) == count
    assert result.skipped == []
    assert result.source == kind
    assert {t.source for t in result.tasks} == {kind}
    assert len({t.id for t in result.tasks}) == count


def test_hotpotqa_fields():
    tasks = {t.id: t for t in _load("hotpotqa").tasks}
    rush = tasks["5a7f6fd75542992e7d278cfa"]
    assert rush.answers == ("Rush",)
    assert rush.question_type == "bridge"
    assert [h.subject for h in rush.decomposition] == ["Nobody's Hero", "Neil Peart"]
    assert rush.hops == 2
    porcaro = rush.documents[0]
    assert porcaro.title == "Jeff Porcaro"
    assert "American drummer, songwriter, and record producer. In a career" in porcaro.text
    assert {t.question_type for t in tasks.values()} == {"bridge", "comparison"}
    assert all(len(t.documents) >= 2 and t.hops >= 1 for t in tasks.values())


def test_musique_fields():
    tasks = {t.id: t for t in _load("musique").tasks}
    task = tasks["2hop__574419_270105"]
    assert task.question == "What is the seat of the county where Van Hook Township is located?"
    assert task.answers[0] == "Stanley"
    assert task.question_type == "2hop" and task.hops == 2
    first, second = task.decomposition
    assert (first.answer, first.relation) == ("Mountrail County", "located in the administrative territorial entity")
    assert second.subject == "Mountrail County Courthouse"  # title of the paragraph the hop is supported by
    assert len(task.documents) == 20
    assert {t.question_type for t in tasks.values()} == {"2hop", "3hop", "4hop"}
    assert all(t.hops == int(t.question_type[0]) for t in tasks.values())
    assert any(len(t.answers) > 1 for t in tasks.values()), "answer_aliases should follow the gold answer"


def test_twowiki_fields():
    tasks = {t.id: t for t in _load("2wiki").tasks}
    task = tasks["b088d3ca08e211ebbda4ac1f6bf848b6"]
    assert task.answers == ("Free Guy",)
    assert task.question_type == "bridge_comparison"
    assert task.hops == 4
    assert task.decomposition[0].subject == "Forbidden Ground"
    assert task.decomposition[0].relation == "director"
    assert task.decomposition[0].answer == "Pál Gábor"
    assert task.documents[0].title == "Pál Gábor"
    assert "film director and screenwriter. He directed 20 films" in task.documents[0].text
    types = {t.question_type for t in tasks.values()}
    assert types == {"comparison", "compositional", "bridge_comparison", "inference"}


def test_bamboogle_fields():
    tasks = _load("bamboogle").tasks
    first = tasks[0]
    assert first.id == "test_0"
    assert first.question == "Who was president of the United States in the year that Citibank was founded?"
    assert first.answers == ("james madison",)
    assert first.documents == () and first.question_type == "compositional"


def test_limit_stops_early():
    assert len(_load("musique", limit=7).tasks) == 7
    assert len(_load("hotpotqa", limit=0).tasks) == 0


def test_synthetic_spec_uses_embedded_world():
    result = load_tasks("synthetic", limit=5)
    assert len(result.tasks) == 5
    assert result.source == "synthetic"
    assert result.tasks == load_tasks(DatasetSpec("synthetic"), limit=5).tasks


# ------------------------------------------------------------------------------------------ malformed rows


def _good_musique(i: int) -> dict:
    return {
        "id": f"2hop__{i}",
        "question": f"question {i}?",
        "answer": f"answer {i}",
        "answer_aliases": [],
        "paragraphs": [{"idx": 0, "title": "T", "paragraph_text": "text", "is_supporting": True}],
        "question_decomposition": [],
    }


def _write_jsonl(tmp_path: Path) -> Path:
    lines = [
        json.dumps(_good_musique(1)),
        "{not json",  # line 2
        json.dumps(_without(_good_musique(3), "question")),  # line 3
        json.dumps({**_good_musique(4), "answer": "  "}),  # line 4
        json.dumps({**_good_musique(5), "answer_aliases": "x"}),  # line 5: wrong type
        json.dumps(_good_musique(6)),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


def test_jsonl_bad_rows_are_skipped_with_line_numbers(tmp_path):
    path = _write_jsonl(tmp_path)
    result = load_tasks(f"musique:{path}", on_error="skip")
    assert [t.id for t in result.tasks] == ["2hop__1", "2hop__6"]
    assert [(e.line_or_index, e.unit) for e in result.skipped] == [(2, "line"), (3, "line"), (4, "line"), (5, "line")]
    assert all(e.file == str(path) for e in result.skipped)
    reasons = [e.reason for e in result.skipped]
    assert "invalid JSON" in reasons[0]
    assert "'question' is a required property" in reasons[1]
    assert reasons[2] == "empty answer"
    assert "answer_aliases" in reasons[3] and "array" in reasons[3]


def test_jsonl_bad_row_fails_with_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path)
    with pytest.raises(DatasetError, match=rf"{path.name}: line 2: invalid JSON"):
        load_tasks(f"musique:{path}", on_error="fail")


def test_json_array_bad_element(tmp_path):
    good = {"_id": "a", "question": "q?", "answer": "x", "context": [["T", ["s."]]], "supporting_facts": [["T", 0]]}
    bad = {**good, "_id": "b", "context": [["T", "not a list"]]}
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([good, bad, "not an object"]), encoding="utf-8")
    result = load_tasks(f"hotpotqa:{path}")
    assert [t.id for t in result.tasks] == ["a"]
    assert [(e.line_or_index, e.unit) for e in result.skipped] == [(1, "element"), (2, "element")]
    assert "context/0/1" in result.skipped[0].reason
    with pytest.raises(DatasetError, match=r"element 1: field context/0/1"):
        load_tasks(f"hotpotqa:{path}", on_error="fail")


def test_unreadable_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(DatasetError, match="missing.json"):
        load_tasks(f"2wiki:{missing}")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not json", encoding="utf-8")
    with pytest.raises(DatasetError, match="garbage.json is not valid JSON"):
        load_tasks(f"2wiki:{garbage}")
    not_lines = tmp_path / "garbage.jsonl"
    not_lines.write_text("nope\nstill nope\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="garbage.jsonl is neither"):
        load_tasks(f"bamboogle:{not_lines}")
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"question": "q"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="JSON array"):
        load_tasks(f"hotpotqa:{scalar}")


def test_bamboogle_csv_layout(tmp_path):
    path = tmp_path / "bamboogle.csv"
    path.write_text(
        'Question,Answer\n"Who founded the firm, and when?",Ada Lovelace\nWhat is missing?,\n\nLast one?,Yes\n',
        encoding="utf-8",
    )
    result = load_tasks(f"bamboogle:{path}")
    assert [(t.question, t.answers) for t in result.tasks] == [
        ("Who founded the firm, and when?", ("Ada Lovelace",)),
        ("Last one?", ("Yes",)),
    ]
    assert result.skipped == [RowError(str(path), 3, "empty answer", "line")]
    assert all(t.question_type == "compositional" and t.source == "bamboogle" for t in result.tasks)
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("Who?,Me\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="Question,Answer"):
        load_tasks(f"bamboogle:{headerless}")


# --------------------------------------------------------------------------------------------------- specs


def test_parse_spec():
    assert parse_spec("hotpotqa:data/dev.json") == DatasetSpec("hotpotqa", "data/dev.json")
    assert parse_spec("2wiki:C:/data/dev.json") == DatasetSpec("2wiki", "C:/data/dev.json")
    assert parse_spec("synthetic") == DatasetSpec("synthetic", "")
    assert parse_spec("hf:hotpotqa/hotpot_qa") == DatasetSpec("hf", "hotpotqa/hotpot_qa")
    assert parse_spec("hf:RUC-NLPIR/FlashRAG_datasets:bamboogle@test") == DatasetSpec(
        "hf", "RUC-NLPIR/FlashRAG_datasets:bamboogle@test"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("squad:dev.json", "unknown dataset kind 'squad'"),
        ("hotpotqa", "missing a file path"),
        ("musique:  ", "missing a file path"),
        ("hf:", "missing a hub dataset id"),
        ("hf:a/b/c", r"malformed: write hf:ID\[:CONFIG\]\[@SPLIT\]"),
        ("synthetic:x", "takes no path"),
    ],
)
def test_parse_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_bad_on_error_value():
    with pytest.raises(ValueError, match="on_error"):
        load_tasks("synthetic", on_error="ignore")
