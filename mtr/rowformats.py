"""Rows of the benchmarks' native formats: their JSON Schemas, their converters to `Task`, and the errors that
name a bad row.

Shared by the file reader (`mtr.datasets`) and the hub reader (`mtr.hubdatasets`), which both import it; it
imports neither, so the two readers never import each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from mtr.task import Document, Hop, Task

OnError = Literal["skip", "fail"]


class DatasetError(ValueError):
    """A dataset file (or one of its rows, under on_error="fail") cannot be loaded."""


@dataclass(frozen=True)
class RowError:
    """Where a bad row is and why: `unit` says whether `line_or_index` is a 1-based line or a 0-based element."""

    file: str
    line_or_index: int
    reason: str
    unit: str = "line"  # "line" | "element" | "row" (hub rows, 0-based)

    def __str__(self) -> str:
        return f"{self.file}: {self.unit} {self.line_or_index}: {self.reason}"


@dataclass(frozen=True)
class LoadResult:
    """The tasks, the rows skipped, and where they came from (the kind, or the resolved hub spec with its split)."""

    tasks: list[Task]
    skipped: list[RowError] = field(default_factory=list)
    source: str = ""


class RowProblem(ValueError):
    """Raised by converters; the reader attaches the file and position."""


def check_options(on_error: str, limit: int | None) -> None:
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def check_shape(validator: Draft202012Validator, row: Any) -> None:
    error = best_match(validator.iter_errors(row))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path)
    raise RowProblem(f"field {where}: {error.message}" if where else error.message)


# ---------------------------------------------------------------------------------------------- schemas

_STR = {"type": "string"}
_CONTEXT = {  # [[title, [sentence, ...]], ...]
    "type": "array",
    "items": {"type": "array", "prefixItems": [_STR, {"type": "array", "items": _STR}], "minItems": 2},
}
_SUPPORTING = {"type": "array", "items": {"type": "array", "prefixItems": [_STR, {"type": "integer"}], "minItems": 1}}


def _schema(required: list[str], properties: dict) -> Draft202012Validator:
    return Draft202012Validator({"type": "object", "required": required, "properties": properties})


_HOTPOT_SCHEMA = _schema(
    ["_id", "question", "answer", "context", "supporting_facts"],
    {
        "_id": _STR,
        "question": _STR,
        "answer": _STR,
        "type": _STR,
        "context": _CONTEXT,
        "supporting_facts": _SUPPORTING,
    },
)
_MUSIQUE_SCHEMA = _schema(
    ["id", "question", "answer", "paragraphs"],
    {
        "id": _STR,
        "question": _STR,
        "answer": _STR,
        "answer_aliases": {"type": "array", "items": _STR},
        "paragraphs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["title", "paragraph_text"],
                "properties": {"idx": {"type": "integer"}, "title": _STR, "paragraph_text": _STR},
            },
        },
        "question_decomposition": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["question", "answer"],
                "properties": {
                    "question": _STR,
                    "answer": _STR,
                    "paragraph_support_idx": {"type": ["integer", "null"]},
                },
            },
        },
    },
)
_TWOWIKI_SCHEMA = _schema(
    ["_id", "question", "answer", "context"],
    {
        "_id": _STR,
        "type": _STR,
        "question": _STR,
        "answer": _STR,
        "context": _CONTEXT,
        "supporting_facts": _SUPPORTING,
        "evidences": {"type": "array", "items": {"type": "array", "items": _STR, "minItems": 3}},
    },
)
_BAMBOOGLE_SCHEMA = _schema(
    ["question", "golden_answers"],
    {"id": {"type": ["string", "integer"]}, "question": _STR, "golden_answers": {"type": "array", "items": _STR}},
)


# ------------------------------------------------------------------------------------------- converters


def _answers(*candidates: str) -> tuple[str, ...]:
    """Gold first, then aliases; blanks and repeats dropped. No gold at all is a row error."""
    answers = tuple(dict.fromkeys(a.strip() for a in candidates if a.strip()))
    if not candidates or not candidates[0].strip():
        raise RowProblem("empty answer")
    return answers


def _question(row: dict) -> str:
    if not row["question"].strip():
        raise RowProblem("empty question")
    return row["question"].strip()


def _context_documents(context: list) -> tuple[Document, ...]:
    # HotpotQA sentences carry their leading space and 2Wiki's do not: normalise to single spaces.
    return tuple(Document(title, " ".join(s.strip() for s in sents if s.strip())) for title, sents, *_ in context)


def _supporting_titles(row: dict) -> list[str]:
    return list(dict.fromkeys(fact[0] for fact in row.get("supporting_facts", [])))


def _hotpotqa(row: dict, position: int) -> Task:
    titles = _supporting_titles(row)
    return Task(
        id=row["_id"],
        question=_question(row),
        answers=_answers(row["answer"]),
        documents=_context_documents(row["context"]),
        decomposition=tuple(Hop(question="", answer="", subject=t) for t in titles),
        hops=len(titles),
        question_type=row.get("type", ""),
        source="hotpotqa",
    )


def _musique_hop(step: dict, titles: dict[int, str]) -> Hop:
    """MuSiQue writes some hops as "subject >> relation"; the relation is then the part after ">>"."""
    subject = titles.get(step.get("paragraph_support_idx"), "")
    left, sep, right = step["question"].partition(">>")
    return Hop(question=step["question"], answer=step["answer"], subject=subject, relation=right.strip() if sep else "")


def _musique(row: dict, position: int) -> Task:
    titles = {p.get("idx", i): p["title"] for i, p in enumerate(row["paragraphs"])}
    decomposition = tuple(_musique_hop(s, titles) for s in row.get("question_decomposition", []))
    prefix = row["id"].split("__", 1)[0]  # "2hop", "3hop1", "4hop3": hop count then a template number
    n_hops = prefix.split("hop", 1)[0] if "hop" in prefix else ""
    return Task(
        id=row["id"],
        question=_question(row),
        answers=_answers(row["answer"], *row.get("answer_aliases", [])),
        documents=tuple(Document(p["title"], p["paragraph_text"]) for p in row["paragraphs"]),
        decomposition=decomposition,
        hops=len(decomposition),
        question_type=f"{n_hops}hop" if n_hops.isdigit() else "",
        source="musique",
    )


def _twowiki(row: dict, position: int) -> Task:
    evidences = row.get("evidences", [])
    decomposition = tuple(Hop(question="", answer=obj, subject=subj, relation=rel) for subj, rel, obj, *_ in evidences)
    return Task(
        id=row["_id"],
        question=_question(row),
        answers=_answers(row["answer"]),
        documents=_context_documents(row["context"]),
        decomposition=decomposition,
        hops=len(decomposition) or len(_supporting_titles(row)),
        question_type=row.get("type", ""),
        source="2wiki",
    )


_BAMBOOGLE_HOPS = 2  # every Bamboogle question is a two-hop compositional question by construction


def _bamboogle(row: dict, position: int) -> Task:
    return Task(
        id=str(row.get("id", f"bamboogle_{position}")),
        question=_question(row),
        answers=_answers(*row["golden_answers"]) if row["golden_answers"] else _answers(),
        hops=_BAMBOOGLE_HOPS,
        question_type="compositional",
        source="bamboogle",
    )


def bamboogle_csv_task(row: list[str], line: int) -> Task:
    if len(row) < 2:
        raise RowProblem(f"expected 2 columns (Question, Answer), found {len(row)}")
    return _bamboogle({"id": f"bamboogle_{line}", "question": row[0], "golden_answers": [row[1]]}, line)


FORMATS: dict[str, tuple[Callable[[Any, int], Task], Draft202012Validator | None]] = {
    "hotpotqa": (_hotpotqa, _HOTPOT_SCHEMA),
    "musique": (_musique, _MUSIQUE_SCHEMA),
    "2wiki": (_twowiki, _TWOWIKI_SCHEMA),
    "bamboogle": (_bamboogle, _BAMBOOGLE_SCHEMA),
}


def convert_row(kind: str, row: Any, position: int) -> Task:
    """Check a row in `kind`'s native layout against its schema and convert it (raises RowProblem/ValueError)."""
    convert, validator = FORMATS[kind]
    if validator is not None:
        check_shape(validator, row)
    return convert(row, position)


def plain_qa_task(row: dict, position: int, source: str) -> Task:
    """A task from a bare `question` + `golden_answers` row (no evidence), attributed to `source`."""
    check_shape(_BAMBOOGLE_SCHEMA, row)
    return Task(
        id=str(row.get("id", f"{source}_{position}")),
        question=_question(row),
        answers=_answers(*row["golden_answers"]) if row["golden_answers"] else _answers(),
        source=source,
    )
