"""Harvest (tool call -> grounded observation) pairs for training a ToolActor model, through the real farm.

Which calls: for every training question, the calls a good policy makes — a search for the question, and
for each hop of its gold decomposition (or each of its own documents) a search for the hop's question and
its subject and an open_page of the subject — plus, for task tools with one string argument, a call on each
hop subject. Exact tools (compare, date_diff, calculator) are never harvested: a model never answers them.
Each call is answered by the farm's grounded actor over gRPC, exactly as during training.

What is kept out: any pair whose observation shows a page a held-out question needs (its hop subjects and
its own documents), so a ToolActor model never learns the evaluation's facts. With noisy pairs on, each
call also gets a noisy pair (ZeroSearch): the observation of the same tool for another question's call.

The pairs file is append-only JSONL, one chat record per pair with a key (tool, canonical arguments,
documents, quality); re-running skips keys already there and drops a line cut short by a crash, so the
harvest is resumable and never holds a pair twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtr.simclient import SimulatorClient, ToolCallRequest
from mtr.task import Document, Task
from mtr.toolprompt import EXACT_TOOL_NAMES, Quality, actor_messages, canonical_json, observation_text

log = logging.getLogger("mtr.toolmodel")

_BATCH = 256  # calls per farm request
HELDOUT_CALL_SHARE = 0.1  # calls never trained on, for measuring fidelity


@dataclass(frozen=True)
class PlannedCall:
    task_id: str
    tool: dict  # the OpenAI function tool the call is made to
    arguments: dict
    documents: tuple[Document, ...] = ()
    answers: tuple[str, ...] = ()  # what the call should surface (its hop's answer); fidelity checks for it

    @property
    def name(self) -> str:
        return self.tool["function"]["name"]

    @property
    def split(self) -> str:
        """'heldout' for a stable share of calls (both qualities of a call on the same side), else 'train':
        the fidelity benchmark asks the trained model calls it never saw, about facts it saw elsewhere."""
        digest = hashlib.sha1(f"{self.name}\0{canonical_json(self.arguments)}".encode()).digest()
        return "heldout" if digest[0] < round(256 * HELDOUT_CALL_SHARE) else "train"

    def key(self, quality: Quality) -> str:
        digest = hashlib.sha1()
        for part in (self.name, canonical_json(self.arguments), _documents_key(self.documents), quality):
            digest.update(part.encode("utf-8") + b"\0")
        return digest.hexdigest()


@dataclass
class HarvestStats:
    planned: int = 0
    already: int = 0
    written: int = 0
    held_out: int = 0  # pairs left out because they show a held-out question's page
    failed: int = 0  # calls the farm answered with an error status (a bad planned argument)

    def as_dict(self) -> dict:
        return dict(vars(self))


def _documents_key(documents: Sequence[Document]) -> str:
    return hashlib.sha1("\0".join(f"{d.title}\0{d.text}" for d in documents).encode("utf-8")).hexdigest()[:16]


def held_out_titles(tasks: Iterable[Task]) -> set[str]:
    """Pages the held-out questions need: their hop subjects and their own documents (case-folded)."""
    titles = set()
    for task in tasks:
        titles.update(hop.subject.casefold() for hop in task.decomposition if hop.subject)
        titles.update(doc.title.casefold() for doc in task.documents)
    return titles


def shown_titles(observation: object) -> set[str]:
    """Every page an observation shows: the values of its `title` and `source` fields, at any depth."""
    found: set[str] = set()
    if isinstance(observation, dict):
        for key, value in observation.items():
            if key in ("title", "source") and isinstance(value, str):
                found.add(value.casefold())
            else:
                found |= shown_titles(value)
    elif isinstance(observation, list):
        for item in observation:
            found |= shown_titles(item)
    return found


def plan_calls(task: Task) -> list[PlannedCall]:
    """The calls a good policy makes for `task`, on the tools it was given, without repeats."""
    tools = {tool["function"]["name"]: tool for tool in task.tools}
    planned: dict[tuple[str, str], PlannedCall] = {}

    def add(name: str, arguments: dict, answers: tuple[str, ...]) -> None:
        if name in tools and name not in EXACT_TOOL_NAMES:
            call = PlannedCall(task.id, tools[name], arguments, task.documents, answers)
            planned.setdefault((name, canonical_json(arguments)), call)

    add("search", {"query": task.question}, task.answers)
    steps = [(hop.question, hop.subject, (hop.answer,)) for hop in task.decomposition if hop.subject]
    if not steps:  # a benchmark question without a decomposition: its own documents
        steps = [("", doc.title, task.answers) for doc in task.documents]
    for question, subject, answers in steps:
        if question:
            add("search", {"query": question}, answers)
        add("search", {"query": subject}, answers)
        add("open_page", {"title": subject}, answers)
        for name, tool in tools.items():
            if name not in ("search", "open_page") and (parameter := _single_string_parameter(tool)):
                add(name, {parameter: subject}, answers)
    return list(planned.values())


def _single_string_parameter(tool: dict) -> str | None:
    parameters = tool["function"].get("parameters", {})
    required = parameters.get("required", [])
    if len(required) != 1:
        return None
    spec = parameters.get("properties", {}).get(required[0], {})
    return required[0] if spec.get("type") == "string" else None


class PairsFile:
    """Append-only JSONL of training pairs keyed for resume and de-duplication."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._recover()

    def _recover(self) -> None:
        """Read the keys back; a last line without its newline (a crash mid-write) is dropped."""
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            log.warning(
                "%s: dropped a line cut short (%d bytes) by an interrupted harvest", self.path, len(raw) - len(complete)
            )
            self.path.write_bytes(complete)
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            try:
                self.keys.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{self.path}: line {number} is not a harvest pair ({error})") from None

    def append(self, records: Iterable[dict]) -> int:
        written = 0
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                if record["key"] in self.keys:
                    continue
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.keys.add(record["key"])
                written += 1
            handle.flush()
        return written


def pair_record(call: PlannedCall, quality: Quality, observation: dict) -> dict:
    messages = actor_messages(call.tool, call.arguments, quality)
    messages.append({"role": "assistant", "content": observation_text(observation)})
    return {
        "key": call.key(quality),
        "task_id": call.task_id,
        "tool": call.name,
        "quality": quality,
        "split": call.split,
        "answers": list(call.answers),
        "messages": messages,
    }


def harvest(
    train: Sequence[Task],
    held_out: Sequence[Task],
    simulator: SimulatorClient,
    pairs: PairsFile,
    *,
    noisy: bool = True,
    seed: int = 0,
) -> HarvestStats:
    """Ask the farm for every planned call of `train` not yet in `pairs`; append the pairs it may keep."""
    forbidden = held_out_titles(held_out)
    calls = [call for task in train for call in plan_calls(task)]
    stats = HarvestStats(planned=len(calls))
    qualities: tuple[Quality, ...] = ("useful", "noisy") if noisy else ("useful",)
    todo = [c for c in calls if any(c.key(q) not in pairs.keys for q in qualities)]
    stats.already = len(calls) - len(todo)
    for done, batch in enumerate(_batches(todo, _BATCH)):
        # A noisy pair answers a call with what the same tool returned for another question's call.
        donors = [_donor(call, calls, seed) for call in batch] if noisy else []
        asked = batch + [d for d in donors if d is not None]
        results = simulator.call_many(
            [ToolCallRequest(c.task_id, c.name, canonical_json(c.arguments), c.documents) for c in asked]
        )
        by_call = dict(zip(map(id, asked), results, strict=True))
        records = []
        for index, call in enumerate(batch):
            result = by_call[id(call)]
            if not result.ok:
                stats.failed += 1
                continue
            candidates: list[tuple[Quality, dict]] = [("useful", result.observation)]
            donor = donors[index] if noisy else None
            if donor is not None and by_call[id(donor)].ok:
                candidates.append(("noisy", by_call[id(donor)].observation))
            for quality, observation in candidates:
                if shown_titles(observation) & forbidden:
                    stats.held_out += 1
                else:
                    records.append(pair_record(call, quality, observation))
        stats.written += pairs.append(records)
        asked_so_far = min(len(todo), (done + 1) * _BATCH)
        log.info("harvest: %d/%d calls answered, %d pairs written", asked_so_far, len(todo), stats.written)
    return stats


def _donor(call: PlannedCall, calls: Sequence[PlannedCall], seed: int) -> PlannedCall | None:
    """A call of the same tool for another question (its documents are unrelated to `call`'s), drawn from the
    call's own seed: a resumed harvest picks the same donor as the run it continues."""
    rng = random.Random(f"{seed}:{call.key('noisy')}")
    for _ in range(8):
        other = calls[rng.randrange(len(calls))]
        if other.name == call.name and other.task_id != call.task_id:
            return other
    return None


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_pairs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def tool_counts(records: Iterable[dict]) -> Counter:
    return Counter((r["tool"], r["quality"]) for r in records)
