"""Loaders for the four real multi-hop benchmarks in the formats their authors publish, plus the embedded world.

A dataset is named by a spec string (`hotpotqa:PATH`, `musique:PATH`, `2wiki:PATH`, `bamboogle:PATH`,
`synthetic`, `hf:ID[:CONFIG][@SPLIT]`); `load_tasks` turns it into `mtr.task.Task`s. Real files are messy, so a
malformed row is reported with its file and line (JSON Lines, 1-based) or element index (JSON arrays, 0-based) and
either skipped (`on_error="skip"`, listed in `LoadResult.skipped`) or raised as `DatasetError` (`on_error="fail"`).
Row shapes are checked with JSON Schema (types and required fields); emptiness is checked by the converters.

Hub datasets (`hf:`) are read by `mtr.hubdatasets`, imported only when such a spec is used. Row schemas and
converters, shared by both readers, are in `mtr.rowformats`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtr.rowformats import (  # re-exported: callers import the row errors and options from here
    FORMATS,
    DatasetError,
    LoadResult,
    OnError,
    RowError,
    RowProblem,
    bamboogle_csv_task,
    check_options,
    check_shape,
)
from mtr.task import Task

log = logging.getLogger(__name__)

FILE_KINDS = ("hotpotqa", "musique", "2wiki", "bamboogle")
KINDS = (*FILE_KINDS, "synthetic", "hf")
DEFAULT_SYNTHETIC_N = 24  # the embedded world's default eval size (config `world.n_eval`)


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # one of KINDS
    path: str = ""  # file path for file kinds, "ID[:CONFIG][@SPLIT]" for "hf", "" for "synthetic"


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


def _load_synthetic(limit: int | None) -> LoadResult:
    from mtr.worldquestions import embedded_tasks  # the world generator is only needed for this kind

    n = DEFAULT_SYNTHETIC_N if limit is None else limit
    _, tasks = embedded_tasks(0, 0, n)
    return LoadResult(tasks=tasks, skipped=[], source="synthetic")


def _load_file(kind: str, path: Path, on_error: OnError, limit: int | None) -> LoadResult:
    if kind == "bamboogle" and path.suffix.lower() == ".csv":
        rows, convert, validator = _csv_rows(path), bamboogle_csv_task, None
    else:
        rows, (convert, validator) = _json_rows(path), FORMATS[kind]
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
                    check_shape(validator, row)
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
