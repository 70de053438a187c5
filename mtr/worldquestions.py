"""Multi-hop questions about the embedded world (`mtr.world`), of the benchmarks' four types, with gold
decompositions: `generate_tasks` and the train / held-out split `embedded_tasks`. Every hop's fact is stated
on its subject's page in words holding the relation phrase, so an offline agent can answer it with a search.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mtr.task import Hop, Task
from mtr.world import QUESTION_TYPES, World, generate_world

# --------------------------------------------------------------------------------------------- questions

# relation phrase (as written on the subject's page) -> (entity attribute, sub-question about the subject)
_FACTS: dict[str, tuple[str, str]] = {
    "occupation": ("occupation", "What is the occupation of {}?"),
    "works for": ("employer", "Which company does {} work for?"),
    "born in": ("birth_city", "Where was {} born?"),
    "birth year": ("birth_year", "In which year was {} born?"),
    "father": ("father", "Who is the father of {}?"),
    "mother": ("mother", "Who is the mother of {}?"),
    "married to": ("spouse", "Who is {} married to?"),
    "country": ("country", "Which country is {} in?"),
    "capital": ("capital", "What is the capital of {}?"),
    "founded in": ("founded", "When was {} founded?"),
    "founder": ("founder", "Who founded {}?"),
    "headquarters": ("headquarters", "Where are the headquarters of {}?"),
    "directed by": ("director", "Who directed {}?"),
    "released in": ("released", "When was {} released?"),
}


@dataclass(frozen=True)
class _ChainKind:
    """A question answered by following `path` from a start entity; "{}" in `template` is that entity."""

    question_type: str
    template: str
    start: str  # the World table the start entity comes from
    path: tuple[str, ...]


@dataclass(frozen=True)
class _ComparisonKind:
    """ "Which of two entities comes first by `relation`?": the gold is the one with the smaller value."""

    template: str
    table: str
    relation: str


_C, _P = "compositional", "people"
_KINDS: tuple[_ChainKind, ...] = (
    _ChainKind("bridge", "In which country is the city where {} was born?", _P, ("born in", "country")),
    _ChainKind("bridge", "In which city was the director of {} born?", "films", ("directed by", "born in")),
    _ChainKind("bridge", "Who founded the company that {} works for?", _P, ("works for", "founder")),
    _ChainKind("bridge", "In which country are the headquarters of {}?", "companies", ("headquarters", "country")),
    _ChainKind("bridge", "What is the occupation of the father of {}?", _P, ("father", "occupation")),
    _ChainKind("bridge", "When was the city where {} was born founded?", _P, ("born in", "founded in")),
    _ChainKind("bridge", "In which year was the director of {} born?", "films", ("directed by", "birth year")),
    _ChainKind("bridge", "Where was the founder of {} born?", "companies", ("founder", "born in")),
    _ChainKind("bridge", "What is the capital of the country where {} is?", "cities", ("country", "capital")),
    _ChainKind(_C, "In which country was the director of {} born?", "films", ("directed by", "born in", "country")),
    _ChainKind(
        _C,
        "In which country are the headquarters of the company that {} works for?",
        _P,
        ("works for", "headquarters", "country"),
    ),
    _ChainKind(_C, "In which country was the father of {} born?", _P, ("father", "born in", "country")),
    _ChainKind(_C, "In which country was the founder of {} born?", "companies", ("founder", "born in", "country")),
    _ChainKind(
        _C,
        "In which year was the founder of the company that {} works for born?",
        _P,
        ("works for", "founder", "birth year"),
    ),
    _ChainKind(
        _C,
        "In which city are the headquarters of the company that the director of {} works for?",
        "films",
        ("directed by", "works for", "headquarters"),
    ),
    _ChainKind(
        _C,
        "In which country are the headquarters of the company that the director of {} works for?",
        "films",
        ("directed by", "works for", "headquarters", "country"),
    ),
    _ChainKind(
        _C,
        "In which country was the founder of the company that {} works for born?",
        _P,
        ("works for", "founder", "born in", "country"),
    ),
    _ChainKind(
        _C,
        "In which country are the headquarters of the company that the father of {} works for?",
        _P,
        ("father", "works for", "headquarters", "country"),
    ),
    _ChainKind("inference", "Who is the paternal grandfather of {}?", _P, ("father", "father")),
    _ChainKind("inference", "Who is the paternal grandmother of {}?", _P, ("father", "mother")),
    _ChainKind("inference", "Who is the maternal grandfather of {}?", _P, ("mother", "father")),
    _ChainKind("inference", "Who is the maternal grandmother of {}?", _P, ("mother", "mother")),
    _ChainKind("inference", "Who is the father-in-law of {}?", _P, ("married to", "father")),
    _ChainKind("inference", "Who is the mother-in-law of {}?", _P, ("married to", "mother")),
)
_COMPARISONS: tuple[_ComparisonKind, ...] = (
    _ComparisonKind("Who was born first, {} or {}?", _P, "birth year"),
    _ComparisonKind("Which film was released earlier, {} or {}?", "films", "released in"),
    _ComparisonKind("Which company was founded earlier, {} or {}?", "companies", "founded in"),
    _ComparisonKind("Which city was founded earlier, {} or {}?", "cities", "founded in"),
)


@dataclass(frozen=True)
class _Question:
    text: str
    gold: str
    hops: tuple[Hop, ...]
    question_type: str


def _fact(world: World, subject: str, relation: str) -> Hop | None:
    attribute, question = _FACTS[relation]
    value = getattr(world.entity(subject), attribute, None)
    return None if value is None else Hop(question.format(subject), str(value), subject, relation)


def _chain(world: World, kind: _ChainKind, start: str) -> _Question | None:
    """Walk `kind.path` from `start`; None when a fact is missing or the answer is given away by the question."""
    hops: list[Hop] = []
    subject = start
    for relation in kind.path:
        hop = _fact(world, subject, relation)
        if hop is None:
            return None
        hops.append(hop)
        subject = hop.answer
    text = kind.template.format(start)
    if subject.lower() in text.lower():
        return None
    return _Question(text, subject, tuple(hops), kind.question_type)


def _chain_stream(world: World, kind: _ChainKind, rng: random.Random) -> Iterator[_Question]:
    starts = [e.name for e in getattr(world, kind.start)]
    rng.shuffle(starts)
    for start in starts:
        question = _chain(world, kind, start)
        if question is not None:
            yield question


def _comparison_stream(world: World, kind: _ComparisonKind, rng: random.Random) -> Iterator[_Question]:
    """All untied pairs of the table, in random order and random order within each pair."""
    facts = [_fact(world, e.name, kind.relation) for e in getattr(world, kind.table)]
    pairs = [(a, b) for a, b in itertools.combinations(facts, 2) if a is not None and b is not None]
    pairs = [(a, b) for a, b in pairs if int(a.answer) != int(b.answer)]
    rng.shuffle(pairs)
    for a, b in pairs:
        if rng.random() < 0.5:
            a, b = b, a
        first = a if int(a.answer) < int(b.answer) else b
        yield _Question(kind.template.format(a.subject, b.subject), first.subject, (a, b), "comparison")


def _round_robin(streams: Iterable[Iterator[_Question]]) -> Iterator[_Question]:
    """Take from each stream in turn, dropping the exhausted ones, so every kind of a type gets its share."""
    active = deque(streams)
    while active:
        stream = active.popleft()
        item = next(stream, None)
        if item is not None:
            active.append(stream)
            yield item


def _type_streams(world: World, rng: random.Random) -> dict[str, Iterator[_Question]]:
    streams: dict[str, list[Iterator[_Question]]] = {t: [] for t in QUESTION_TYPES}
    for kind in _KINDS:
        streams[kind.question_type].append(_chain_stream(world, kind, rng))
    streams["comparison"] = [_comparison_stream(world, kind, rng) for kind in _COMPARISONS]
    return {t: _round_robin(s) for t, s in streams.items()}


def _answers(gold: str) -> tuple[str, ...]:
    """Gold plus a natural alias: film titles are also said without their leading article."""
    return (gold, gold[4:]) if gold.startswith("The ") else (gold,)


def _to_task(world: World, question: _Question, task_id: str) -> Task:
    titles = list(dict.fromkeys(h.subject for h in question.hops))  # hop order, deduplicated
    return Task(
        id=task_id,
        question=question.text,
        answers=_answers(question.gold),
        documents=tuple(world.document(t) for t in titles),
        decomposition=question.hops,
        hops=len(question.hops),
        question_type=question.question_type,
        source="synthetic",
    )


def generate_tasks(world: World, count: int, seed: int) -> list[Task]:
    """`count` unique questions cycling through `QUESTION_TYPES`, ids "w{seed}-{index:05d}".

    Raises ValueError when the world runs out of unique questions of a type before `count` is reached.
    """
    if count < 0:
        raise ValueError(f"generate_tasks: count must be >= 0, got {count}")
    rng = random.Random(f"mtr-tasks-{seed}")
    streams = _type_streams(world, rng)
    seen: set[str] = set()
    tasks: list[Task] = []
    for index in range(count):
        question_type = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        question = next((q for q in streams[question_type] if q.text not in seen), None)
        if question is None:
            made = sum(t.question_type == question_type for t in tasks)
            needed = len(range(QUESTION_TYPES.index(question_type), count, len(QUESTION_TYPES)))
            raise ValueError(
                f"the world of seed {world.seed} has only {made} unique {question_type} questions, but {count} "
                f"tasks need {needed} (types are cycled evenly); ask for fewer tasks"
            )
        seen.add(question.text)
        tasks.append(_to_task(world, question, f"w{seed}-{index:05d}"))
    return tasks


def embedded_tasks(seed: int, n_train: int, n_eval: int) -> tuple[list[Task], list[Task]]:
    """(train, eval) questions of the world of `seed`, disjoint.

    Eval is drawn first, so the held-out set depends only on (seed, n_eval) and stays comparable across
    runs that train on different amounts of data.
    """
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"embedded_tasks: n_train and n_eval must be >= 0, got {n_train} and {n_eval}")
    try:
        tasks = generate_tasks(generate_world(seed), n_eval + n_train, seed)
    except ValueError as error:
        wanted = f"n_train={n_train} + n_eval={n_eval}"
        raise ValueError(f"embedded world cannot provide {wanted} questions: {error}") from error
    return tasks[n_eval:], tasks[:n_eval]
