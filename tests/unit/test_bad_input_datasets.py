"""Bad bytes in dataset files: a bad row is that row's problem (named with file and line), a file that is
not a dataset is an error naming the file, and a byte-order mark is not a bad first row."""

import json

import pytest

from mtr.datasets import DatasetError, load_tasks


def _row(i):
    return {
        "_id": f"h{i}",
        "question": f"q{i}?",
        "answer": "x",
        "context": [["T", ["s."]]],
        "supporting_facts": [["T", 0]],
    }


def _lines(*rows: bytes) -> bytes:
    return b"".join(row + b"\n" for row in rows)


GOOD = [json.dumps(_row(i)).encode() for i in range(3)]


@pytest.mark.parametrize(
    ("content", "kept", "skipped_words"),
    [
        (b"\xef\xbb\xbf" + _lines(*GOOD), 3, None),  # a UTF-8 BOM
        (_lines(GOOD[0], b'{"_id": "bad", "question": "caf\xe9?"}', GOOD[1]), 2, "line 2: not UTF-8 text"),
        (_lines(GOOD[0], b"[" * 100_000 + b"]" * 100_000, GOOD[1]), 2, "line 2: JSON nested too deeply"),
        (_lines(GOOD[0], b"{not json", GOOD[1], GOOD[2]), 3, "line 2: invalid JSON"),
    ],
)
def test_a_bad_row_is_skipped_with_file_and_line_and_the_rest_kept(tmp_path, content, kept, skipped_words):
    path = tmp_path / "hotpot.jsonl"
    path.write_bytes(content)
    result = load_tasks(f"hotpotqa:{path}", on_error="skip")
    assert len(result.tasks) == kept
    if skipped_words is None:
        assert result.skipped == [] and result.tasks[0].id == "h0"
    else:
        assert skipped_words in str(result.skipped[0]) and str(path) in str(result.skipped[0])
        with pytest.raises(DatasetError, match=skipped_words):
            load_tasks(f"hotpotqa:{path}", on_error="fail")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("random.jsonl", bytes(range(256)) * 40, "is neither a JSON array nor JSON Lines"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("latin1.json", b'[{"_id": "a", "question": "caf\xe9"}]', "is not UTF-8 text"),
        ("empty.jsonl", b"\xef\xbb\xbf  \n", "is empty"),
        ("latin1.csv", b"Question,Answer\ncaf\xe9?,x\n", "is not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_a_dataset_is_an_error_naming_it(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    kind = "bamboogle" if name.endswith(".csv") else "hotpotqa"
    with pytest.raises(DatasetError, match=words) as caught:
        load_tasks(f"{kind}:{path}", on_error="skip")
    assert str(path) in str(caught.value)


def test_a_repeated_id_is_a_duplicate_or_a_distinct_question_never_a_lost_one(tmp_path):
    other = {**_row(0), "question": "a different question?"}
    rows = [_row(0), _row(1), _row(0), other]
    path = tmp_path / "hotpot.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = load_tasks(f"hotpotqa:{path}")
    assert [t.id for t in result.tasks] == ["h0", "h1", "h0@line4"]
    assert result.tasks[2].question == "a different question?"
    assert len(result.skipped) == 1 and "line 3: duplicate of line 1" in str(result.skipped[0])


@pytest.mark.parametrize(
    ("kind", "content", "words"),
    [
        ("musique", "".join(json.dumps(_row(i)) + "\n" for i in range(3)), "none of its 3 rows is a musique row"),
        ("hotpotqa", "[]", "holds no rows"),
    ],
)
def test_a_file_with_no_usable_row_is_an_error_not_a_quiet_zero(tmp_path, kind, content, words):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=words):
        load_tasks(f"{kind}:{path}", on_error="skip")
