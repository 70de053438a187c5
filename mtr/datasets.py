"""Loaders for the four real multi-hop benchmarks in the formats their authors publish, plus the embedded world.

A dataset is named by a spec string (`hotpotqa:PATH`, `musique:PATH`, `2wiki:PATH`, `bamboogle:PATH`,
`synthetic`, `hf:ID[:CONFIG][@SPLIT]`); `load_tasks` turns it into `mtr.task.Task`s. Real files are messy, so a
malformed row is reported with its file and line (JSON Lines, 1-based) or element index (JSON arrays, 0-based) and
either skipped (`on_error="skip"`, listed in `LoadResult.skipped`) or raised as `DatasetError` (`on_error="fail"`).
Row shapes are checked with JSON Schema (types and required fields); emptiness is checked by the converters.

Hub datasets (`hf:`) are read by `mtr.hubdatasets`, imported only when such a spec is used.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from mtr.task import Document, Hop, Task

log = logging.getLogger(__name__)

FILE_KINDS = ("hotpotqa", "musique", "2wiki", "bamboogle")
KINDS = (*FILE_KINDS, "synthetic", "hf")
DEFAULT_SYNTHETIC_N = 24  # the embedded world's default eval size (config `world.n_eval`)

OnError = Literal["skip", "fail"]


class DatasetError(ValueError):
    """A dataset file (or one of its rows, under on_error="fail") cannot be loaded."""


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # one of KINDS
    path: str = ""  # file path for file kinds, "ID[:CONFIG][@SPLIT]" for "hf", "" for "synthetic"


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


def parse_spec(spec: str) -> DatasetSpec:
    """Split "kind:path" (the path may itself contain colons); reject unknown kinds and missing paths early."""
    text = spec.strip()
    if text == "synthetic":
        return DatasetSpec("synthetic")
    kind, sep, path = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r} in spec {spec!r}; expected one of {', '.join(KINDS)}")
    if kind == "synthetic":
        raise ValueError(f"dataset spec {spec!r}: 'synthetic' takes no path")
    if not sep or not path.strip():
        what = "a hub dataset id" if kind == "hf" else "a file path"
        raise ValueError(f"dataset spec {spec!r} is missing {what}: write '{kind}:{'ID' if kind == 'hf' else 'PATH'}'")
    if kind == "hf":
        from mtr.hubdatasets import parse_hub_spec

        parse_hub_spec(path)  # a malformed id fails when the config is validated, not after a hub round trip
    return DatasetSpec(kind, path.strip())


def load_tasks(spec: DatasetSpec | str, on_error: OnError = "skip", limit: int | None = None) -> LoadResult:
    """Load up to `limit` tasks of a dataset; bad rows are skipped and listed, or raise, per `on_error`."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    check_options(on_error, limit)
    if spec.kind == "synthetic":
        return _load_synthetic(limit)
    if spec.kind == "hf":
        from mtr.hubdatasets import load_hub  # the hub reader (and its optional `datasets` package) only on demand

        return load_hub(spec.path, on_error, limit)
    if spec.kind not in FILE_KINDS:
        raise ValueError(f"unknown dataset kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
    return _load_file(spec.kind, Path(spec.path), on_error, limit)


def check_options(on_error: str, limit: int | None) -> None:
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def _load_synthetic(limit: int | None) -> LoadResult:
    from mtr.world import embedded_tasks  # the world generator is only needed for this kind

    n = DEFAULT_SYNTHETIC_N if limit is None else limit
    _, tasks = embedded_tasks(0, 0, n)
    return LoadResult(tasks=tasks, skipped=[], source="synthetic")


def _load_file(kind: str, path: Path, on_error: OnError, limit: int | None) -> LoadResult:
    if kind == "bamboogle" and path.suffix.lower() == ".csv":
        rows, convert, validator = _csv_rows(path), _bamboogle_csv, None
    else:
        rows, (convert, validator) = _json_rows(path), _FORMATS[kind]
    tasks: list[Task] = []
    skipped: list[RowError] = []
    seen = _SeenIds()
    with closing(rows):  # a `limit` leaves the reader mid-file; close it now, not at garbage collection
        for position, unit, row in rows:
            if limit is not None and len(tasks) >= limit:
                break
            try:
                if isinstance(row, Exception):
                    raise row
                if validator is not None:
                    _check_shape(validator, row)
                tasks.append(seen.unique(convert(row, position), f"{unit} {position}"))
            except ValueError as problem:  # row problems, and Task's own checks
                error = RowError(str(path), position, str(problem), unit)
                if on_error == "fail":
                    raise DatasetError(f"{kind} {error}") from problem
                skipped.append(error)
    if not tasks and limit != 0:
        # Nothing usable is never a quiet success: a file of another format, or an empty one.
        if skipped:
            raise DatasetError(
                f"{kind} dataset {path}: none of its {len(skipped)} rows is a {kind} row (first: {skipped[0]}); "
                f"is it another format? (kinds: {', '.join(FILE_KINDS)})"
            )
        raise DatasetError(f"{kind} dataset {path} holds no rows")
    return LoadResult(tasks=tasks, skipped=skipped, source=kind)


class _SeenIds:
    """Ids are keys everywhere downstream (ledgers, caches, paired evaluation): each must name one question.

    A row repeating an earlier row's id and question is a duplicate (skipped, naming the first); a different
    question reusing an id keeps its row under the id suffixed with its position, so it is neither lost nor
    mistaken for the first."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[Task, str]] = {}

    def unique(self, task: Task, where: str) -> Task:
        earlier = self._first.get(task.id)
        if earlier is None:
            self._first[task.id] = (task, where)
            return task
        first, first_where = earlier
        if (first.question, first.answers) == (task.question, task.answers):
            raise RowProblem(f"duplicate of {first_where} (same id {task.id!r} and question)")
        renamed = dataclasses.replace(task, id=f"{task.id}@{where.replace(' ', '')}")
        log.warning(
            "id %r of %s is already used by %s for another question; kept as %r",
            task.id,
            where,
            first_where,
            renamed.id,
        )
        self._first[renamed.id] = (renamed, where)
        return renamed


# ------------------------------------------------------------------------------------------------ readers

Row = tuple[int, str, Any]  # (position, "line" | "element", parsed row or the parse error)


_BOM = b"\xef\xbb\xbf"


def _open_text(path: Path):
    try:
        return path.open(encoding="utf-8-sig", newline="")  # a UTF-8 byte-order mark is not part of row 1
    except OSError as error:
        raise DatasetError(f"cannot open dataset file {path}: {error.strerror or error}") from error


def _open_bytes(path: Path):
    try:
        return path.open("rb")
    except OSError as error:
        raise DatasetError(f"cannot open dataset file {path}: {error.strerror or error}") from error


def _json_rows(path: Path) -> Iterator[Row]:
    """A JSON array (`.json`) or JSON Lines (anything else whose first character is not '[').

    Read as bytes and decoded row by row, so a row that is not UTF-8 is that row's problem, not the file's.
    """
    with _open_bytes(path) as handle:
        head = handle.read(4096).removeprefix(_BOM).lstrip()
        if not head and not handle.read(1):
            raise DatasetError(f"dataset file {path} is empty")
        handle.seek(0)
        if head[:1] == b"[" or path.suffix.lower() == ".json":
            yield from _json_array_rows(path, handle)
        else:
            yield from _jsonl_rows(path, handle)


def _json_array_rows(path: Path, handle) -> Iterator[Row]:
    try:
        data = json.loads(handle.read().removeprefix(_BOM).decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DatasetError(f"dataset file {path} is not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"dataset file {path} is not valid JSON: {error}") from error
    except RecursionError:
        raise DatasetError(f"dataset file {path} is nested too deeply to be a dataset") from None
    if not isinstance(data, list):
        raise DatasetError(f"dataset file {path} must hold a JSON array of rows, found {type(data).__name__}")
    for index, row in enumerate(data):
        yield index, "element", row


def _parse_line(raw: bytes) -> Any:
    """One JSON Lines row, or the RowProblem that says why it is not one."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return RowProblem(f"not UTF-8 text (byte {error.start} of the line)")
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        return RowProblem(f"invalid JSON: {error.msg} at column {error.colno}")
    except RecursionError:
        return RowProblem("JSON nested too deeply")


def _jsonl_rows(path: Path, handle) -> Iterator[Row]:
    """Lazily, so `limit` stops early; a file none of whose lines parse is not JSON Lines at all."""
    parsed_any = False
    failures: list[Row] = []
    for number, raw in enumerate(handle, start=1):
        if number == 1:
            raw = raw.removeprefix(_BOM)
        if not raw.strip():
            continue
        row = _parse_line(raw)
        if isinstance(row, Exception) and not parsed_any:
            failures.append((number, "line", row))  # held back until one line parses
            continue
        if not parsed_any:
            parsed_any = True
            yield from failures
        yield number, "line", row
    if not parsed_any:
        first = f"; line {failures[0][0]}: {failures[0][2]}" if failures else ""
        raise DatasetError(
            f"dataset file {path} is neither a JSON array nor JSON Lines (no line parses as JSON{first})"
        )


def _csv_rows(path: Path) -> Iterator[Row]:
    """The original Bamboogle release: a two-column CSV with a `Question,Answer` header."""
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["question", "answer"]:
                raise DatasetError(f"dataset file {path} must start with a 'Question,Answer' header, found {header!r}")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                yield reader.line_num, "line", row
        except UnicodeDecodeError as error:
            raise DatasetError(
                f"dataset file {path} is not UTF-8 text (after line {reader.line_num}, byte {error.start} of a read)"
            ) from None
        except csv.Error as error:
            raise DatasetError(f"dataset file {path}: line {reader.line_num}: not CSV ({error})") from None


def _check_shape(validator: Draft202012Validator, row: Any) -> None:
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


def _bamboogle_csv(row: list[str], line: int) -> Task:
    if len(row) < 2:
        raise RowProblem(f"expected 2 columns (Question, Answer), found {len(row)}")
    return _bamboogle({"id": f"bamboogle_{line}", "question": row[0], "golden_answers": [row[1]]}, line)


_FORMATS: dict[str, tuple[Callable[[Any, int], Task], Draft202012Validator | None]] = {
    "hotpotqa": (_hotpotqa, _HOTPOT_SCHEMA),
    "musique": (_musique, _MUSIQUE_SCHEMA),
    "2wiki": (_twowiki, _TWOWIKI_SCHEMA),
    "bamboogle": (_bamboogle, _BAMBOOGLE_SCHEMA),
}


def convert_row(kind: str, row: Any, position: int) -> Task:
    """Check a row in `kind`'s native layout against its schema and convert it (raises RowProblem/ValueError)."""
    convert, validator = _FORMATS[kind]
    if validator is not None:
        _check_shape(validator, row)
    return convert(row, position)


def plain_qa_task(row: dict, position: int, source: str) -> Task:
    """A task from a bare `question` + `golden_answers` row (no evidence), attributed to `source`."""
    _check_shape(_BAMBOOGLE_SCHEMA, row)
    return Task(
        id=str(row.get("id", f"{source}_{position}")),
        question=_question(row),
        answers=_answers(*row["golden_answers"]) if row["golden_answers"] else _answers(),
        source=source,
    )
