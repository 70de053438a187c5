"""The one task type inside MTR: a multi-hop question with gold answers and, when known, its evidence.

Every loader (embedded world, HotpotQA, MuSiQue, 2Wiki, Bamboogle) produces `Task`s; services receive
them as `mtr.v1.Task` messages (see `to_proto` / `from_proto`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    title: str
    text: str


@dataclass(frozen=True)
class Hop:
    """One step of a gold decomposition: ask `relation` of `subject`, expect `answer`."""

    question: str
    answer: str
    subject: str = ""
    relation: str = ""


@dataclass(frozen=True)
class Task:
    id: str
    question: str
    answers: tuple[str, ...]
    documents: tuple[Document, ...] = ()
    decomposition: tuple[Hop, ...] = ()
    hops: int = 0
    question_type: str = ""
    source: str = ""
    tools: tuple[dict, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise ValueError(f"task {self.id!r} has an empty question")
        if not self.answers:
            raise ValueError(f"task {self.id!r} has no gold answer")


def to_proto(task: Task):
    """Build the wire message; imported lazily so the dataclass stays usable without protobuf."""
    import json

    from mtr.v1 import task_pb2

    return task_pb2.Task(
        id=task.id,
        question=task.question,
        answers=list(task.answers),
        documents=[task_pb2.Document(title=d.title, text=d.text) for d in task.documents],
        decomposition=[
            task_pb2.Hop(question=h.question, answer=h.answer, subject=h.subject, relation=h.relation)
            for h in task.decomposition
        ],
        hops=task.hops,
        question_type=task.question_type,
        source=task.source,
        tools_json=[json.dumps(t, sort_keys=True) for t in task.tools],
    )


def from_proto(message) -> Task:
    import json

    return Task(
        id=message.id,
        question=message.question,
        answers=tuple(message.answers),
        documents=tuple(Document(d.title, d.text) for d in message.documents),
        decomposition=tuple(Hop(h.question, h.answer, h.subject, h.relation) for h in message.decomposition),
        hops=message.hops,
        question_type=message.question_type,
        source=message.source,
        tools=tuple(json.loads(t) for t in message.tools_json),
    )
