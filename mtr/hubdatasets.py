"""Hugging Face hub datasets (`hf:ID[:CONFIG][@SPLIT]` specs) for the loaders in `mtr.datasets`.

They need the optional `datasets` package (extra `hub`) and a reachable hub. ID is `NAME` or `OWNER/NAME`; CONFIG
defaults to the known one for the benchmark ids below (e.g. `distractor` for HotpotQA); SPLIT defaults to the first
of `validation`, `dev`, `test` the dataset has (Bamboogle only has `test`). Examples: `hf:hotpotqa/hotpot_qa`,
`hf:bdsaglam/musique:answerable@train`, `hf:RUC-NLPIR/FlashRAG_datasets:bamboogle`. The split is streamed, so only
the rows read are downloaded. The hub copies re-encode the native rows (HotpotQA's `context` becomes
`{"title": [...], "sentences": [[...]]}`, MuSiQue's paragraphs may become columns), so each row's layout is detected
and normalised to the native one before the same schemas and converters run; a row of an unknown id that has a
question and `answer` or `golden_answers` still loads. Bad hub rows are reported as `hf:ID split S: row N: reason`
(N 0-based).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

from mtr.rowformats import (
    DatasetError,
    LoadResult,
    OnError,
    RowError,
    RowProblem,
    check_options,
    convert_row,
    plain_qa_task,
)
from mtr.task import Task

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
    check_options(on_error, limit)
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
        raise RowProblem(f"expected a row of named fields, found {type(row).__name__}")
    kind = _row_kind(row, hint)
    if kind == "qa":
        return plain_qa_task(_hub_qa(row), index, hint or "hf")
    return convert_row(kind, _HUB_NORMALISERS[kind](row), index)


def _row_kind(row: Mapping, hint: str | None) -> str:
    if "paragraphs" in row:
        return "musique"
    if "context" in row:
        return "2wiki" if "evidences" in row or hint == "2wiki" else "hotpotqa"
    if _has(row, "question", "Question") and _has(row, "golden_answers", "answer", "Answer"):
        return "bamboogle" if hint == "bamboogle" else "qa"
    shown = ", ".join(sorted(str(k) for k in row)[:12])
    raise RowProblem(
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
        raise RowProblem(f"field {name}: JSON text that does not parse: {error.msg}") from error


def _records(value: Any, name: str) -> Any:
    """Columns -> records: `datasets` returns a sequence of structs as one dict of equally long lists."""
    value = _decoded(value, name)
    if not isinstance(value, Mapping):
        return value  # a list of records or pairs already; anything else is left for the schema to report
    if not all(isinstance(column, list) for column in value.values()):
        raise RowProblem(f"field {name}: a dict of columns must hold lists, found {sorted(value)}")
    lengths = {key: len(column) for key, column in value.items()}
    if len(set(lengths.values())) > 1:
        raise RowProblem(f"field {name}: columns of different lengths {lengths}")
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
    raise RowProblem(f"field {field_name}/{index}: missing {' or '.join(names)}")


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


_HUB_NORMALISERS: dict[str, Callable[[Mapping], dict]] = {
    "hotpotqa": _hub_hotpotqa,
    "2wiki": _hub_hotpotqa,  # the same layout, plus evidences
    "musique": _hub_musique,
    "bamboogle": _hub_qa,
}
