"""Hub dataset specs (`hf:ID[:CONFIG][@SPLIT]`): each hub layout converts like the native files, without a network.

Rows are handed in through `load_hub(loader=...)`, or through a stand-in `datasets` module, so these tests run
whether or not the optional `datasets` package is installed; the one test that needs it is skipped otherwise.
"""

import sys
import types

import pytest

from mtr.datasets import DatasetError, RowError, load_tasks, parse_spec
from mtr.hubdatasets import HubSpec, load_hub, parse_hub_spec


def _loader(splits: dict, calls: list | None = None):
    def load(dataset_id, config):
        if calls is not None:
            calls.append((dataset_id, config))
        return splits

    return load


def _fake_datasets(monkeypatch, load_dataset) -> None:
    """Stand in for the `datasets` package, so the default loader runs without it (CI) and without the hub."""
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


# ----------------------------------------------------------------------------------------------- layouts

HOTPOT_HUB = {  # the hub copy: context and supporting_facts as columns
    "id": "5a8b57f25542995d1e6f1371",
    "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
    "answer": "yes",
    "type": "comparison",
    "level": "hard",
    "supporting_facts": {"title": ["Scott Derrickson", "Ed Wood", "Scott Derrickson"], "sent_id": [0, 0, 1]},
    "context": {
        "title": ["Ed Wood", "Scott Derrickson"],
        "sentences": [
            ["Ed Wood is a 1994 film.", " It stars Johnny Depp."],
            ["Scott Derrickson is an American director.", " He lives in Los Angeles."],
        ],
    },
}
HOTPOT_NATIVE = {  # the same question in the file layout, which some hub copies keep
    "_id": "5a8c7595554299585d9e36b6",
    "question": "What government position was held by the woman who portrayed Corliss Archer?",
    "answer": "Chief of Protocol",
    "type": "bridge",
    "supporting_facts": [["Kiss and Tell", 0], ["Shirley Temple", 1]],
    "context": [["Kiss and Tell", ["Kiss and Tell is a 1945 film."]], ["Shirley Temple", ["She was an actress."]]],
}


def test_hotpotqa_hub_layout_and_native_layout_in_one_split():
    calls = []
    splits = {"train": [], "validation": [HOTPOT_HUB, HOTPOT_NATIVE]}
    result = load_hub("hf:hotpotqa/hotpot_qa", on_error="fail", loader=_loader(splits, calls))
    assert calls == [("hotpotqa/hotpot_qa", "distractor")]  # the known id's default config
    assert result.source == "hf:hotpotqa/hotpot_qa:distractor@validation"  # default split resolved
    first, second = result.tasks
    assert first.id == "5a8b57f25542995d1e6f1371"
    assert first.answers == ("yes",) and first.question_type == "comparison" and first.source == "hotpotqa"
    assert [d.title for d in first.documents] == ["Ed Wood", "Scott Derrickson"]
    assert first.documents[1].text == "Scott Derrickson is an American director. He lives in Los Angeles."
    assert [h.subject for h in first.decomposition] == ["Scott Derrickson", "Ed Wood"]
    assert first.hops == 2
    assert second.id == "5a8c7595554299585d9e36b6" and second.answers == ("Chief of Protocol",)
    assert [h.subject for h in second.decomposition] == ["Kiss and Tell", "Shirley Temple"]
    assert second.documents[0].text == "Kiss and Tell is a 1945 film."


MUSIQUE_ROWS = [
    {  # paragraphs and decomposition as records (the JSON Lines layout)
        "id": "2hop__13548_13529",
        "question": "When was the first establishment that McDonaldization is named after opened in the country?",
        "answer": "1974",
        "answer_aliases": ["in 1974", "1974"],
        "answerable": True,
        "paragraphs": [
            {"idx": 0, "title": "McDonaldization", "paragraph_text": "Named after McDonald's.", "is_supporting": True},
            {"idx": 1, "title": "McDonald's Canada", "paragraph_text": "Opened in 1974.", "is_supporting": True},
        ],
        "question_decomposition": [
            {
                "id": 13548,
                "question": "McDonaldization >> named after",
                "answer": "McDonald's",
                "paragraph_support_idx": 0,
            },
            {"id": 13529, "question": "when did the first #1 open?", "answer": "1974", "paragraph_support_idx": 1},
        ],
    },
    {  # the same fields as columns (how `datasets` returns a Sequence of structs)
        "id": "3hop1__1_2_3",
        "question": "Who founded the company that made the console?",
        "answer": "Fusajiro Yamauchi",
        "answer_aliases": [],
        "paragraphs": {
            "idx": [0, 1, 2],
            "title": ["Game Boy", "Nintendo", "Kyoto"],
            "paragraph_text": ["Made by Nintendo.", "Founded by Fusajiro Yamauchi.", "A city."],
            "is_supporting": [True, True, False],
        },
        "question_decomposition": {
            "id": [1, 2, 3],
            "question": ["Game Boy >> manufacturer", "#1 >> founded by", "#2 >> place of birth"],
            "answer": ["Nintendo", "Fusajiro Yamauchi", "Kyoto"],
            "paragraph_support_idx": [0, 1, None],
        },
    },
]


def test_musique_records_and_columns():
    result = load_hub("hf:dgslibisey/MuSiQue", on_error="fail", loader=_loader({"validation": MUSIQUE_ROWS}))
    first, second = result.tasks
    assert first.answers == ("1974", "in 1974") and first.question_type == "2hop" and first.hops == 2
    assert first.decomposition[0].relation == "named after"
    assert first.decomposition[1].subject == "McDonald's Canada"
    assert second.question_type == "3hop" and second.hops == 3
    assert [d.title for d in second.documents] == ["Game Boy", "Nintendo", "Kyoto"]
    assert [h.answer for h in second.decomposition] == ["Nintendo", "Fusajiro Yamauchi", "Kyoto"]
    assert (second.decomposition[1].subject, second.decomposition[2].subject) == ("Nintendo", "")
    assert {t.source for t in result.tasks} == {"musique"}


TWOWIKI_ROWS = [
    {  # framolfese-style: HotpotQA-like columns, evidences as triples
        "_id": "8813f87c0bdd11eba7f7acde48001122",
        "type": "compositional",
        "question": "Who is the mother of the director of film Polish-Russian War?",
        "answer": "Małgorzata Braunek",
        "context": {
            "title": ["Polish-Russian War (film)", "Xawery Żuławski"],
            "sentences": [["A 2009 Polish film."], ["A director.", "Son of Małgorzata Braunek."]],
        },
        "supporting_facts": {"title": ["Polish-Russian War (film)", "Xawery Żuławski"], "sent_id": [0, 1]},
        "evidences": [
            ["Polish-Russian War", "director", "Xawery Żuławski"],
            ["Xawery Żuławski", "mother", "Małgorzata Braunek"],
        ],
    },
    {  # another repack: `content` for sentences, evidences as fact/relation/entity columns
        "id": "b2",
        "type": "comparison",
        "question": "Which film came out first, Blind Shaft or The Mask Of Fu Manchu?",
        "answer": "The Mask Of Fu Manchu",
        "context": {"title": ["Blind Shaft", "The Mask Of Fu Manchu"], "content": [["2003."], ["1932."]]},
        "supporting_facts": {"title": ["Blind Shaft", "The Mask Of Fu Manchu"], "sent_id": [0, 0]},
        "evidences": {
            "fact": ["Blind Shaft", "The Mask Of Fu Manchu"],
            "relation": ["publication date", "publication date"],
            "entity": ["2003", "1932"],
        },
    },
]


def test_twowiki_columns_and_evidence_layouts():
    result = load_hub("hf:framolfese/2WikiMultihopQA", on_error="fail", loader=_loader({"validation": TWOWIKI_ROWS}))
    first, second = result.tasks
    assert first.id == "8813f87c0bdd11eba7f7acde48001122" and first.question_type == "compositional"
    assert first.answers == ("Małgorzata Braunek",) and first.hops == 2
    assert (first.decomposition[1].subject, first.decomposition[1].relation) == ("Xawery Żuławski", "mother")
    assert first.decomposition[1].answer == "Małgorzata Braunek"
    assert first.documents[1].text == "A director. Son of Małgorzata Braunek."
    assert second.id == "b2" and [d.text for d in second.documents] == ["2003.", "1932."]
    pairs = [(h.subject, h.answer) for h in second.decomposition]
    assert pairs == [("Blind Shaft", "2003"), ("The Mask Of Fu Manchu", "1932")]
    assert {t.source for t in result.tasks} == {"2wiki"}


def test_twowiki_id_decides_rows_without_evidences():
    row = {key: value for key, value in TWOWIKI_ROWS[0].items() if key != "evidences"}
    twowiki = load_hub("hf:xanhho/2WikiMultihopQA", loader=_loader({"dev": [row]})).tasks[0]
    assert twowiki.source == "2wiki" and twowiki.hops == 2  # hops from supporting facts
    unknown = load_hub("hf:someone/multihop", loader=_loader({"dev": [row]})).tasks[0]
    assert unknown.source == "hotpotqa"  # context without evidences reads as HotpotQA


def test_nested_fields_stored_as_json_text():
    row = {**HOTPOT_NATIVE, "context": '[["Kiss and Tell", ["A film."]]]', "supporting_facts": '[["Kiss and Tell", 0]]'}
    task = load_hub("hf:someone/hotpot-json", on_error="fail", loader=_loader({"validation": [row]})).tasks[0]
    assert task.documents[0].text == "A film." and task.hops == 1


def test_bamboogle_only_has_test_split():
    rows = [{"Question": "Who was president when Citibank was founded?", "Answer": "James Madison"}]
    result = load_hub("hf:chiayewken/bamboogle", loader=_loader({"test": rows}))
    assert result.source == "hf:chiayewken/bamboogle@test"
    (task,) = result.tasks
    assert task.answers == ("James Madison",) and task.id == "bamboogle_0"
    assert (task.question_type, task.hops, task.source, task.documents) == ("compositional", 2, "bamboogle", ())


def test_flashrag_config_names_the_benchmark():
    rows = [{"id": "test_0", "question": "Who?", "golden_answers": ["james madison", "Madison"], "metadata": {}}]
    calls = []
    bamboogle = load_hub("hf:RUC-NLPIR/FlashRAG_datasets:bamboogle", loader=_loader({"test": rows}, calls)).tasks[0]
    assert calls == [("RUC-NLPIR/FlashRAG_datasets", "bamboogle")]
    assert (bamboogle.id, bamboogle.answers, bamboogle.source) == ("test_0", ("james madison", "Madison"), "bamboogle")
    assert bamboogle.hops == 2
    musique = load_hub("hf:RUC-NLPIR/FlashRAG_datasets:musique", loader=_loader({"dev": rows})).tasks[0]
    assert (musique.source, musique.hops, musique.question_type) == ("musique", 0, "")  # no evidence in these rows


def test_unknown_id_with_question_and_answer_loads():
    rows = [
        {"question": "What is two plus two?", "answer": "four", "answer_aliases": ["4"]},
        {"id": 7, "question": "Capital of France?", "golden_answers": ["Paris"]},
        {"prompt": "no question field", "completion": "x"},
    ]
    result = load_hub("hf:someone/qa", loader=_loader({"validation": rows}))
    assert [(t.id, t.answers, t.source, t.hops) for t in result.tasks] == [
        ("hf_0", ("four", "4"), "hf", 0),
        ("7", ("Paris",), "hf", 0),
    ]
    (error,) = result.skipped
    assert str(error).startswith("hf:someone/qa split validation: row 2: unrecognised row layout")
    assert "completion, prompt" in error.reason


# -------------------------------------------------------------------------------------------- bad rows


def _bad_rows() -> list:
    return [
        HOTPOT_HUB,
        {**HOTPOT_HUB, "context": {"title": ["A", "B"], "sentences": [["only one"]]}},  # row 1: columns differ
        "not a row",  # row 2
        {**HOTPOT_HUB, "answer": " "},  # row 3
        {key: value for key, value in HOTPOT_HUB.items() if key != "question"},  # row 4
        {**HOTPOT_HUB, "context": "[not json"},  # row 5
        {**HOTPOT_HUB, "supporting_facts": [{"title": "Ed Wood"}]},  # row 6: record without sent_id
        {**HOTPOT_HUB, "id": "last"},
    ]


def test_bad_hub_rows_are_skipped_with_split_and_row():
    result = load_hub("hf:hotpotqa/hotpot_qa@validation", loader=_loader({"validation": _bad_rows()}))
    assert [t.id for t in result.tasks] == ["5a8b57f25542995d1e6f1371", "last"]
    assert [(e.file, e.line_or_index, e.unit) for e in result.skipped] == [
        ("hf:hotpotqa/hotpot_qa:distractor split validation", n, "row") for n in (1, 2, 3, 4, 5, 6)
    ]
    reasons = [e.reason for e in result.skipped]
    assert "field context: columns of different lengths" in reasons[0]
    assert reasons[1] == "expected a row of named fields, found str"
    assert reasons[2] == "empty answer"
    assert "'question' is a required property" in reasons[3]
    assert reasons[4].startswith("field context: JSON text that does not parse")
    assert reasons[5] == "field supporting_facts/0: missing sent_id"
    assert str(result.skipped[0]).startswith("hf:hotpotqa/hotpot_qa:distractor split validation: row 1: field")


def test_bad_hub_row_fails_with_split_and_row():
    with pytest.raises(DatasetError, match=r"^hf:hotpotqa/hotpot_qa:distractor split validation: row 1: field context"):
        load_hub("hf:hotpotqa/hotpot_qa", on_error="fail", loader=_loader({"validation": _bad_rows()}))


def test_limit_stops_reading_the_stream():
    pulled = []

    def rows():
        for i in range(100):
            pulled.append(i)
            yield {"question": f"q{i}?", "answer": f"a{i}"}

    result = load_hub("hf:someone/qa", limit=3, loader=_loader({"validation": rows()}))
    assert [t.id for t in result.tasks] == ["hf_0", "hf_1", "hf_2"]
    assert len(pulled) <= 4


def test_stream_failing_midway_is_a_load_error():
    def rows():
        yield {"question": "q?", "answer": "a"}
        raise OSError("connection reset by peer")

    with pytest.raises(
        DatasetError,
        match=r"hf:someone/qa split validation: reading row 1 from the hub failed: "
        r"OSError: connection reset by peer",
    ):
        load_hub("hf:someone/qa", loader=_loader({"validation": rows()}))


# ---------------------------------------------------------------------------------------------- splits


def test_explicit_split_and_missing_splits():
    splits = {"train": [{"question": "q?", "answer": "a"}], "validation": []}
    assert load_hub("hf:someone/qa@train", loader=_loader(splits)).source == "hf:someone/qa@train"
    assert load_hub("hf:someone/qa", loader=_loader(splits)).tasks == []  # validation preferred over train
    with pytest.raises(DatasetError, match=r"'hf:someone/qa@test' has no split 'test'; it has train, validation"):
        load_hub("hf:someone/qa@test", loader=_loader(splits))
    with pytest.raises(DatasetError, match=r"none of the default splits validation, dev, test \(it has train\)"):
        load_hub("hf:someone/qa", loader=_loader({"train": []}))


def test_parse_hub_spec():
    assert parse_hub_spec("hotpotqa/hotpot_qa") == HubSpec("hotpotqa/hotpot_qa")
    assert parse_hub_spec("RUC-NLPIR/FlashRAG_datasets:bamboogle@test") == HubSpec(
        "RUC-NLPIR/FlashRAG_datasets", "bamboogle", "test"
    )
    assert parse_hub_spec("hotpot_qa@train") == HubSpec("hotpot_qa", None, "train")
    assert str(HubSpec("a/b", "c", "d")) == "hf:a/b:c@d"
    for bad in ("a/b/c", "a/b:", "a/b@", "a b", "a/b@x:y"):
        with pytest.raises(ValueError, match=r"malformed: write hf:ID\[:CONFIG\]\[@SPLIT\]"):
            parse_hub_spec(bad)
    with pytest.raises(ValueError, match="malformed"):
        parse_spec("hf:a/b/c")  # checked with the rest of the config, before any hub access


# ------------------------------------------------------------------------------ the `datasets` package


def test_missing_datasets_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(
        DatasetError,
        match=r"'hf:hotpotqa/hotpot_qa'.*needs the optional `datasets` package.*"
        r"pip install datasets",
    ):
        load_tasks("hf:hotpotqa/hotpot_qa")


def test_unreachable_hub_names_the_id_and_the_error(monkeypatch):
    def load_dataset(path, name=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub\n(LocalEntryNotFoundError)")

    _fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(DatasetError) as caught:
        load_tasks("hf:framolfese/2WikiMultihopQA@validation")
    message = str(caught.value)
    assert message.startswith("hub dataset 'hf:framolfese/2WikiMultihopQA@validation': cannot load it")
    assert message.endswith(
        "ConnectionError: Couldn't reach 'framolfese/2WikiMultihopQA' on the Hub (LocalEntryNotFoundError)"
    )
    assert "\n" not in message


def test_default_loader_streams_the_named_config(monkeypatch):
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return {"validation": [HOTPOT_HUB]}

    _fake_datasets(monkeypatch, load_dataset)
    result = load_tasks("hf:hotpotqa/hotpot_qa", on_error="fail")
    assert calls == [("hotpotqa/hotpot_qa", "distractor", {"streaming": True})]
    assert [t.id for t in result.tasks] == [HOTPOT_HUB["id"]]


def test_real_datasets_package_row_shapes(tmp_path, monkeypatch):
    """The `datasets` package itself: a Sequence of structs comes back as columns, a List of structs as records."""
    datasets = pytest.importorskip("datasets")
    text, Sequence = datasets.Value("string"), datasets.Sequence
    features = datasets.Features(
        {
            **{key: text for key in ("id", "question", "answer", "type")},
            "supporting_facts": Sequence({"title": text, "sent_id": datasets.Value("int32")}),
            "context": Sequence({"title": text, "sentences": Sequence(text)}),
        }
    )
    row = {key: HOTPOT_HUB[key] for key in features}
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_list([row], features=features).to_parquet(str(tmp_path / "data" / "validation-0.parquet"))
    real = datasets.load_dataset  # the hub id is redirected to the local folder; everything else is the real package
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, streaming: real(str(tmp_path), streaming=True))
    (task,) = load_tasks("hf:hotpotqa/hotpot_qa", on_error="fail").tasks
    assert task.id == HOTPOT_HUB["id"] and [h.subject for h in task.decomposition] == ["Scott Derrickson", "Ed Wood"]
    assert task.documents[0].text == "Ed Wood is a 1994 film. It stars Johnny Depp."


def test_load_result_rows_compare_like_file_rows():
    result = load_hub("hf:someone/qa", loader=_loader({"validation": [{"question": "q?", "answer": ""}]}))
    assert result.skipped == [RowError("hf:someone/qa split validation", 0, "empty answer", "row")]
