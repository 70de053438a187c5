"""Loaders for the four real multi-hop benchmarks in the formats their authors publish, plus the embedded world.

A dataset is named by a spec string (`hotpotqa:PATH`, `musique:PATH`, `2wiki:PATH`, `bamboogle:PATH`,
`synthetic`, `hf:ID[:CONFIG][@SPLIT]`); `load_tasks` turns it into `mtr.task.Task`s. Real files are messy, so a
malformed row is reported with its file and line (JSON Lines, 1-based) or element index (JSON arrays, 0-based) and
either skipped (`on_error="skip"`, listed in `LoadResult.skipped`) or raised as `DatasetError` (`on_error="fail"`).
Row shapes are checked with JSON Schema (types and required fields); emptiness is checked by the converters.

Hugging Face hub datasets (`hf:`) need the optional `datasets` package (`pip install datasets`) and a reachable
hub. ID is `NAME` or `OWNER/NAME`; CONFIG defaults to the known one for the benchmark ids below (e.g. `distractor`
for HotpotQA); SPLIT defaults to the first of `validation`, `dev`, `test` the dataset has (Bamboogle only has
`test`). Examples: `hf:hotpotqa/hotpot_qa`, `hf:bdsaglam/musique:answerable@train`,
`hf:RUC-NLPIR/FlashRAG_datasets:bamboogle`. The split is streamed, so only the rows read are downloaded. The hub
copies re-encode the native rows (HotpotQA's `context` becomes `{"title": [...], "sentences": [[...]]}`, MuSiQue's
paragraphs may become columns), so each row's layout is detected and normalised to the native one before the same
schemas and converters run; a row of an unknown id that has a question and `answer` or `golden_answers` still loads.
Bad hub rows are reported as `hf:ID split S: row N: reason` (N 0-based).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from mtr.task import Document, Hop, Task

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


class _RowProblem(ValueError):
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
        parse_hub_spec(path)  # a malformed id fails when the config is validated, not after a hub round trip
    return DatasetSpec(kind, path.strip())


def load_tasks(spec: DatasetSpec | str, on_error: OnError = "skip", limit: int | None = None) -> LoadResult:
    """Load up to `limit` tasks of a dataset; bad rows are skipped and listed, or raise, per `on_error`."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    _check_options(on_error, limit)
    if spec.kind == "synthetic":
        return _load_synthetic(limit)
    if spec.kind == "hf":
        return load_hub(spec.path, on_error, limit)
    if spec.kind not in FILE_KINDS:
        raise ValueError(f"unknown dataset kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
    return _load_file(spec.kind, Path(spec.path), on_error, limit)


def _check_options(on_error: str, limit: int | None) -> None:
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
    with closing(rows):  # a `limit` leaves the reader mid-file; close it now, not at garbage collection
        for position, unit, row in rows:
            if limit is not None and len(tasks) >= limit:
                break
            try:
                if isinstance(row, Exception):
                    raise row
                if validator is not None:
                    _check_shape(validator, row)
                tasks.append(convert(row, position))
            except ValueError as problem:  # row problems, and Task's own checks
                error = RowError(str(path), position, str(problem), unit)
                if on_error == "fail":
                    raise DatasetError(f"{kind} {error}") from problem
                skipped.append(error)
    return LoadResult(tasks=tasks, skipped=skipped, source=kind)


# ------------------------------------------------------------------------------------------------ readers

Row = tuple[int, str, Any]  # (position, "line" | "element", parsed row or the parse error)


def _open_text(path: Path):
    try:
        return path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise DatasetError(f"cannot open dataset file {path}: {error.strerror or error}") from error


def _json_rows(path: Path) -> Iterator[Row]:
    """A JSON array (`.json`) or JSON Lines (anything else whose first character is not '[')."""
    with _open_text(path) as handle:
        head = handle.read(1)
        while head and head.isspace():
            head = handle.read(1)
        if not head:
            raise DatasetError(f"dataset file {path} is empty")
        handle.seek(0)
        if head == "[" or path.suffix.lower() == ".json":
            yield from _json_array_rows(path, handle)
        else:
            yield from _jsonl_rows(path, handle)


def _json_array_rows(path: Path, handle) -> Iterator[Row]:
    try:
        data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"dataset file {path} is not valid JSON: {error}") from error
    if not isinstance(data, list):
        raise DatasetError(f"dataset file {path} must hold a JSON array of rows, found {type(data).__name__}")
    for index, row in enumerate(data):
        yield index, "element", row


def _jsonl_rows(path: Path, handle) -> Iterator[Row]:
    """Lazily, so `limit` stops early; a file none of whose lines parse is not JSON Lines at all."""
    parsed_any = False
    failures: list[Row] = []
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as error:
            row = _RowProblem(f"invalid JSON: {error.msg} at column {error.colno}")
        if isinstance(row, Exception) and not parsed_any:
            failures.append((number, "line", row))  # held back until one line parses
            continue
        if not parsed_any:
            parsed_any = True
            yield from failures
        yield number, "line", row
    if not parsed_any:
        raise DatasetError(f"dataset file {path} is neither a JSON array nor JSON Lines (no line parses as JSON)")


def _csv_rows(path: Path) -> Iterator[Row]:
    """The original Bamboogle release: a two-column CSV with a `Question,Answer` header."""
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["question", "answer"]:
            raise DatasetError(f"dataset file {path} must start with a 'Question,Answer' header, found {header!r}")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            yield reader.line_num, "line", row


def _check_shape(validator: Draft202012Validator, row: Any) -> None:
    error = best_match(validator.iter_errors(row))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path)
    raise _RowProblem(f"field {where}: {error.message}" if where else error.message)


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
        raise _RowProblem("empty answer")
    return answers


def _question(row: dict) -> str:
    if not row["question"].strip():
        raise _RowProblem("empty question")
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
        raise _RowProblem(f"expected 2 columns (Question, Answer), found {len(row)}")
    return _bamboogle({"id": f"bamboogle_{line}", "question": row[0], "golden_answers": [row[1]]}, line)


_FORMATS: dict[str, tuple[Callable[[Any, int], Task], Draft202012Validator | None]] = {
    "hotpotqa": (_hotpotqa, _HOTPOT_SCHEMA),
    "musique": (_musique, _MUSIQUE_SCHEMA),
    "2wiki": (_twowiki, _TWOWIKI_SCHEMA),
    "bamboogle": (_bamboogle, _BAMBOOGLE_SCHEMA),
}


# ------------------------------------------------------------------------------------------ hub datasets

HubLoader = Callable[[str, "str | None"], Mapping[str, Iterable[Any]]]
"""(dataset id, config) -> {split name: rows}; rows are read lazily, only as far as `limit` needs."""

HUB_SYNTAX = "hf:ID[:CONFIG][@SPLIT]"
_HUB_SPEC = re.compile(r"(?P<id>[\w.-]+(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?(?:@(?P<split>[\w.-]+))?")
DEFAULT_SPLITS = ("validation", "dev", "test")  # the first one a dataset has; Bamboogle-like sets only have test


@dataclass(frozen=True)
class HubSpec:
    """A hub dataset: `config` and `split` are None until given or resolved."""

    dataset_id: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        config = f":{self.config}" if self.config else ""
        split = f"@{self.split}" if self.split else ""
        return f"hf:{self.dataset_id}{config}{split}"


@dataclass(frozen=True)
class _HubSet:
    kind: str  # the benchmark its rows come from: the converter for rows that carry the benchmark's fields
    config: str | None = None  # the config used when the spec names none


# Hub ids are case-insensitive, so keys are lower case. Rows are still checked one by one: the id only decides
# between layouts a row cannot tell apart (HotpotQA and 2Wiki look alike) and names the source of bare QA rows.
_HUB_SETS = {
    "hotpotqa/hotpot_qa": _HubSet("hotpotqa", "distractor"),
    "hotpot_qa": _HubSet("hotpotqa", "distractor"),
    "bdsaglam/musique": _HubSet("musique"),
    "dgslibisey/musique": _HubSet("musique"),
    "framolfese/2wikimultihopqa": _HubSet("2wiki"),
    "xanhho/2wikimultihopqa": _HubSet("2wiki"),
    "chiayewken/bamboogle": _HubSet("bamboogle"),
}
# FlashRAG holds many benchmarks, one per config, all as bare `id, question, golden_answers` rows.
_FLASHRAG_ID = "ruc-nlpir/flashrag_datasets"
_FLASHRAG_CONFIGS = {"bamboogle": "bamboogle", "hotpotqa": "hotpotqa", "musique": "musique", "2wikimultihopqa": "2wiki"}


def parse_hub_spec(text: str) -> HubSpec:
    """`ID[:CONFIG][@SPLIT]` (the part after `hf:`), e.g. `hotpotqa/hotpot_qa:distractor@validation`."""
    match = _HUB_SPEC.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"hub dataset spec 'hf:{text.strip()}' is malformed: write {HUB_SYNTAX}, e.g. "
            "'hf:hotpotqa/hotpot_qa:distractor@validation' (ID is NAME or OWNER/NAME)"
        )
    return HubSpec(match["id"], match["config"], match["split"])


def load_hub(
    spec: HubSpec | str, on_error: OnError = "skip", limit: int | None = None, loader: HubLoader | None = None
) -> LoadResult:
    """Load up to `limit` tasks of one split of a hub dataset; `loader` replaces the `datasets` package (tests)."""
    if isinstance(spec, str):
        spec = parse_hub_spec(spec.removeprefix("hf:"))
    _check_options(on_error, limit)
    known = _HUB_SETS.get(spec.dataset_id.lower())
    if spec.config is None and known is not None:
        spec = replace(spec, config=known.config)
    splits = _open_hub(spec, loader or _datasets_loader)
    spec = replace(spec, split=_pick_split(spec, list(splits)))
    hint = _FLASHRAG_CONFIGS.get(spec.config or "") if spec.dataset_id.lower() == _FLASHRAG_ID else None
    hint = hint or (known.kind if known is not None else None)
    label = f"{replace(spec, split=None)} split {spec.split}"
    tasks: list[Task] = []
    skipped: list[RowError] = []
    with closing(_hub_rows(splits[spec.split], label)) as rows:
        for index, row in rows:
            if limit is not None and len(tasks) >= limit:
                break
            try:
                tasks.append(_hub_task(row, index, hint))
            except ValueError as problem:  # row problems, and Task's own checks
                error = RowError(label, index, str(problem), "row")
                if on_error == "fail":
                    raise DatasetError(str(error)) from problem
                skipped.append(error)
    return LoadResult(tasks=tasks, skipped=skipped, source=str(spec))


def _datasets_loader(dataset_id: str, config: str | None) -> Mapping[str, Iterable[Any]]:
    """Streamed: a non-streaming load downloads and prepares every split (HotpotQA's train is ~360 MB)."""
    try:
        import datasets
    except ImportError as error:
        raise DatasetError(
            f"hub dataset 'hf:{dataset_id}': reading the Hugging Face hub needs the optional `datasets` package "
            f"({error}); install it with `pip install datasets`, or download the benchmark file and use 'KIND:PATH'"
        ) from error
    return datasets.load_dataset(dataset_id, config, streaming=True)


def _describe(error: BaseException) -> str:
    """One line, whatever the hub client raised: its type and its message, without the traceback."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message[:500]}" if message else type(error).__name__


def _open_hub(spec: HubSpec, loader: HubLoader) -> Mapping[str, Iterable[Any]]:
    try:
        splits = loader(spec.dataset_id, spec.config)
    except DatasetError:
        raise
    except Exception as error:  # the hub client raises many types (connection, not found, offline mode, ...)
        raise DatasetError(
            f"hub dataset '{spec}': cannot load it from the Hugging Face hub (is the hub reachable, and are the id "
            f"and config right? spec syntax: {HUB_SYNTAX}): {_describe(error)}"
        ) from error
    if not isinstance(splits, Mapping):
        raise DatasetError(f"hub dataset '{spec}': expected its splits by name, got {type(splits).__name__}")
    return splits


def _pick_split(spec: HubSpec, available: list[str]) -> str:
    if spec.split is not None:
        if spec.split in available:
            return spec.split
        raise DatasetError(
            f"hub dataset '{spec}' has no split {spec.split!r}; it has {', '.join(available) or 'none'} "
            f"(spec syntax: {HUB_SYNTAX})"
        )
    for split in DEFAULT_SPLITS:
        if split in available:
            return split
    raise DatasetError(
        f"hub dataset '{spec}' has none of the default splits {', '.join(DEFAULT_SPLITS)} (it has "
        f"{', '.join(available) or 'none'}); name one as {HUB_SYNTAX}"
    )


def _hub_rows(rows: Iterable[Any], label: str) -> Iterator[tuple[int, Any]]:
    """Number the rows; a streamed split can fail mid-way (network), and that is a load error, not a row error."""
    iterator = iter(rows)
    index = 0
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            raise DatasetError(f"{label}: reading row {index} from the hub failed: {_describe(error)}") from error
        yield index, row
        index += 1


# --------------------------------------------------------------------------------------- hub row layouts


def _hub_task(row: Any, index: int, hint: str | None) -> Task:
    """Detect the row's benchmark layout, rewrite it into the native layout, then check and convert as for files."""
    if not isinstance(row, Mapping):
        raise _RowProblem(f"expected a row of named fields, found {type(row).__name__}")
    kind = _row_kind(row, hint)
    if kind == "qa":
        native = _hub_qa(row)
        _check_shape(_BAMBOOGLE_SCHEMA, native)
        return _plain_qa(native, index, hint or "hf")
    native = _HUB_NORMALISERS[kind](row)
    convert, validator = _FORMATS[kind]
    _check_shape(validator, native)
    return convert(native, index)


def _row_kind(row: Mapping, hint: str | None) -> str:
    if "paragraphs" in row:
        return "musique"
    if "context" in row:
        return "2wiki" if "evidences" in row or hint == "2wiki" else "hotpotqa"
    if _has(row, "question", "Question") and _has(row, "golden_answers", "answer", "Answer"):
        return "bamboogle" if hint == "bamboogle" else "qa"
    shown = ", ".join(sorted(str(k) for k in row)[:12])
    raise _RowProblem(
        f"unrecognised row layout (fields: {shown}); expected question with answer or golden_answers, plus "
        "context (HotpotQA, 2Wiki) or paragraphs (MuSiQue) for evidence"
    )


def _has(row: Mapping, *names: str) -> bool:
    return any(name in row for name in names)


def _field(row: Mapping, *names: str) -> Any:
    return next((row[name] for name in names if name in row), None)


def _decoded(value: Any, name: str) -> Any:
    """Some hub copies store nested fields as JSON text because Arrow cannot hold `[title, [sentences]]` pairs."""
    if not isinstance(value, str) or value.lstrip()[:1] not in ("[", "{"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise _RowProblem(f"field {name}: JSON text that does not parse: {error.msg}") from error


def _records(value: Any, name: str) -> Any:
    """Columns -> records: `datasets` returns a sequence of structs as one dict of equally long lists."""
    value = _decoded(value, name)
    if not isinstance(value, Mapping):
        return value  # a list of records or pairs already; anything else is left for the schema to report
    if not all(isinstance(column, list) for column in value.values()):
        raise _RowProblem(f"field {name}: a dict of columns must hold lists, found {sorted(value)}")
    lengths = {key: len(column) for key, column in value.items()}
    if len(set(lengths.values())) > 1:
        raise _RowProblem(f"field {name}: columns of different lengths {lengths}")
    count = next(iter(lengths.values()), 0)
    return [{key: column[i] for key, column in value.items()} for i in range(count)]


def _tuples(value: Any, name: str, slots: tuple[tuple[str, ...], ...]) -> Any:
    """Records -> the native positional lists; each slot lists the names hub copies use for that position."""
    records = _records(value, name)
    if not isinstance(records, list):
        return records
    return [
        [_slot(item, slot, name, i) for slot in slots] if isinstance(item, Mapping) else item
        for i, item in enumerate(records)
    ]


def _slot(item: Mapping, names: tuple[str, ...], field_name: str, index: int) -> Any:
    for name in names:
        if name in item:
            return item[name]
    raise _RowProblem(f"field {field_name}/{index}: missing {' or '.join(names)}")


_TITLED = (("title",), ("sentences", "content"))  # context: [title, [sentence, ...]]
_FACT = (("title",), ("sent_id",))  # supporting_facts: [title, sentence index]
_TRIPLE = (("subject", "fact"), ("relation",), ("object", "entity"))  # evidences: [subject, relation, object]


def _with_id(row: Mapping) -> dict:
    """HotpotQA's hub copy names the id `id`; the native files (and 2Wiki) name it `_id`."""
    native = dict(row)
    if "_id" not in native and "id" in native:
        native["_id"] = native["id"]
    return native


def _hub_hotpotqa(row: Mapping) -> dict:
    native = _with_id(row)
    for key, slots in (("context", _TITLED), ("supporting_facts", _FACT), ("evidences", _TRIPLE)):
        if key in native:
            native[key] = _tuples(native[key], key, slots)
    return native


def _hub_musique(row: Mapping) -> dict:
    native = dict(row)
    for key in ("paragraphs", "question_decomposition"):
        if key in native:
            native[key] = _records(native[key], key)
    return native


def _hub_qa(row: Mapping) -> dict:
    """Bare question-answer rows (FlashRAG's `golden_answers`, Bamboogle's `Question`/`Answer`, plain `answer`)."""
    answers = _field(row, "golden_answers", "answer", "Answer")
    if isinstance(answers, str):
        answers = [answers, *(row.get("answer_aliases") or [])]
    native = {"question": _field(row, "question", "Question"), "golden_answers": answers}
    row_id = _field(row, "id", "_id")
    return native if row_id is None else {**native, "id": row_id}


def _plain_qa(row: dict, position: int, source: str) -> Task:
    return Task(
        id=str(row.get("id", f"{source}_{position}")),
        question=_question(row),
        answers=_answers(*row["golden_answers"]) if row["golden_answers"] else _answers(),
        source=source,
    )


_HUB_NORMALISERS: dict[str, Callable[[Mapping], dict]] = {
    "hotpotqa": _hub_hotpotqa,
    "2wiki": _hub_hotpotqa,  # the same layout, plus evidences
    "musique": _hub_musique,
    "bamboogle": _hub_qa,
}
