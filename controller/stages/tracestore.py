"""The traces file of `mtr synth` and its ledger: what makes synthesis resumable and its acceptance countable.

`traces.jsonl` holds only accepted traces, one OpenAI chat record per line (what fine-tuning tools read).
`traces.ledger.jsonl` records every decided question (accepted, or rejected with the reason), in order.
A trace line is written before its ledger line, so after a crash the store repairs itself on open: a
partial last line is cut, and a trace whose ledger line never made it is dropped (that question is
simply done again). A re-run skips every question the ledger already holds.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mtr.grammar import Trace, to_openai
from mtr.task import Task


class TraceStoreError(RuntimeError):
    """The traces file and its ledger disagree in a way a crash cannot explain."""


@dataclass
class DatasetAcceptance:
    attempted: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.accepted / self.attempted if self.attempted else 0.0

    def as_dict(self) -> dict:
        return {
            "attempted": self.attempted,
            "accepted": self.accepted,
            "acceptance_rate": round(self.rate, 4),
            "rejected": dict(self.rejected.most_common()),
        }


def task_key(task: Task) -> str:
    return f"{task.source or 'task'}:{task.id}"


class TraceStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        stem = self.path.name.removesuffix(".jsonl")
        self.ledger_path = self.path.with_name(f"{stem}.ledger.jsonl")
        self.report_path = self.path.with_name(f"{stem}.report.json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: list[dict] = []
        self._recover()
        self.done = {entry["key"] for entry in self.entries}

    # -- recovery ---------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        ledger_lines = _complete_lines(self.ledger_path)
        for number, line in enumerate(ledger_lines, start=1):
            try:
                entry = json.loads(line)
                entry["key"], entry["status"], entry["dataset"]  # noqa: B018 - presence check
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise TraceStoreError(f"{self.ledger_path}: line {number} is not a ledger entry ({error})") from None
            self.entries.append(entry)
        accepted = sum(entry["status"] == "accepted" for entry in self.entries)
        traces = _complete_lines(self.path)
        # A crash between a trace line and its ledger line leaves one trace more than the ledger; anything
        # beyond that is not an interrupted `mtr synth` (another file, or a deleted ledger): never cut it.
        if len(traces) > accepted + 1 or (traces and not self.ledger_path.exists() and len(traces) > 1):
            raise TraceStoreError(
                f"{self.path} holds {len(traces)} lines but its ledger {self.ledger_path} records {accepted} accepted "
                "traces, so it is not a traces file this command was writing; nothing was changed. Choose another "
                "--out (or move that file away to start over)"
            )
        if len(traces) < accepted:
            raise TraceStoreError(
                f"{self.path} holds {len(traces)} traces but {self.ledger_path} records {accepted} accepted; "
                "restore the traces file, or delete both files to start over"
            )
        _rewrite(self.path, traces[:accepted])
        _rewrite(self.ledger_path, ledger_lines)

    # -- writing ----------------------------------------------------------------------------------------------
    def accept(self, dataset: str, task: Task, trace: Trace, teacher: str) -> None:
        _append(self.path, to_openai(trace))
        self._decide(dataset, task, "accepted", teacher=teacher, tool_calls=len(trace.tool_calls))

    def reject(self, dataset: str, task: Task, reason: str, teacher: str) -> None:
        self._decide(dataset, task, "rejected", teacher=teacher, reason=reason)

    def _decide(self, dataset: str, task: Task, status: str, **details) -> None:
        entry = {"key": task_key(task), "dataset": dataset, "task_id": task.id, "status": status, **details}
        _append(self.ledger_path, entry)
        self.entries.append(entry)
        self.done.add(entry["key"])

    # -- reporting --------------------------------------------------------------------------------------------
    def acceptance(self) -> dict[str, DatasetAcceptance]:
        per_dataset: dict[str, DatasetAcceptance] = defaultdict(DatasetAcceptance)
        for entry in self.entries:
            stats = per_dataset[entry["dataset"]]
            stats.attempted += 1
            if entry["status"] == "accepted":
                stats.accepted += 1
            else:
                stats.rejected[entry.get("reason", "unknown")] += 1
        return dict(per_dataset)

    def write_report(self, skipped_rows: dict[str, int], seconds: float, teacher: str) -> dict:
        """`seconds`: this run; `seconds_total`: every run that wrote this file (a resumed synth adds up)."""
        earlier = 0.0
        if self.report_path.exists():
            try:
                previous = json.loads(self.report_path.read_text(encoding="utf-8"))
                earlier = float(previous.get("seconds_total", previous.get("seconds", 0.0)))
            except (ValueError, TypeError, AttributeError):
                earlier = 0.0
        report = {
            "traces": str(self.path),
            "teacher": teacher,
            "seconds": round(seconds, 2),
            "seconds_total": round(earlier + seconds, 2),
            "datasets": {name: stats.as_dict() for name, stats in self.acceptance().items()},
            "skipped_rows": skipped_rows,
        }
        self.report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        return report


def _complete_lines(path: Path) -> list[str]:
    """Lines that were fully written (end in a newline); a torn last line from a crash is left out."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    return [line for line in lines[:-1] if line.strip()]


def _rewrite(path: Path, lines: list[str]) -> None:
    """Cut the file back to `lines` only when it holds something else (a torn line, a trace without ledger)."""
    wanted = "".join(f"{line}\n" for line in lines)
    if path.exists() and path.read_text(encoding="utf-8") != wanted:
        path.write_text(wanted, encoding="utf-8")


def _append(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
