"""Reading one fact off a page: the sentences that state a relation, and the value they give it.

Pages state facts in many wordings, so a relation is found by its phrases ("directed by", "director"),
most specific first, and failing those by shared word stems. The value is read right after the phrase
("... was born in Dorvik, and ..." -> "Dorvik"), or as the first date after it for date relations. When
no value can be read, the sentences alone are still the observation: the policy can read them itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from simulator.taskspecific import Relation, find_relation

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an the of in on at to for by is are was were be been and or with from as its his her their who what which "
    "when where how does did do that this".split()
)
# Words between a relation phrase and its value: "capital is X", "headquarters are in X", "born in X".
_FILLER = re.compile(r"^(?:(?:is|are|was|were|in|of|by|at|to|on|as)\b[\s:]*|[:\s]+)+", re.I)
# Where an entity value ends: a clause break, an "and", a trailing "in 1901", a parenthesis or the end.
_VALUE_END = re.compile(r"[,;]|\.\s*$|\s+and\s|\s+in\s+\d|\s+(?:who|which|where)\s|\s*\(|$")
_DATE = re.compile(
    r"\b\d{1,2}\s+[A-Z][a-z]+\.?,?\s+\d{3,4}\b|\b[A-Z][a-z]+\.?\s+\d{1,2},\s+\d{3,4}\b|\b\d{4}-\d{2}(?:-\d{2})?\b"
    r"|\b[A-Z][a-z]+\s+\d{4}\b|\b\d{3,4}\b"
)
_OCCUPATION = re.compile(r"\bis (?:a|an) (.+?) by (?:occupation|profession)\b", re.I)


@dataclass(frozen=True)
class Fact:
    """The sentences of one page that state a relation, and its value when it could be read off."""

    sentences: tuple[str, ...]
    value: str | None


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def read_fact(text: str, relation: str) -> Fact | None:
    """The fact `relation` (a known relation key or phrase, or free words) states in `text`; None if absent."""
    known = find_relation(relation)
    phrases = known.phrases if known else (relation.strip(),)
    parts = sentences(text)
    for phrase in phrases:
        pattern = re.compile(rf"\b{re.escape(phrase)}\b", re.I)
        matching = [s for s in parts if pattern.search(s)]
        if matching:
            return Fact(tuple(matching), _value(matching[0], pattern, known))
    matching = _by_stems(parts, relation)
    return Fact(tuple(matching), None) if matching else None


def _by_stems(parts: list[str], relation: str) -> list[str]:
    """Sentences sharing the most word stems with the relation ("founding" ~ "founded"); [] when none share any."""
    stems = {w[:5] for w in _WORD.findall(relation.lower().replace("_", " ")) if w not in _STOPWORDS}
    if not stems:
        return []
    scores = [len(stems & {w[:5] for w in _WORD.findall(s.lower())}) for s in parts]
    best = max(scores, default=0)
    return [s for s, score in zip(parts, scores, strict=True) if score == best] if best else []


def _value(sentence: str, pattern: re.Pattern, relation: Relation | None) -> str | None:
    if relation is not None and relation.key == "occupation":
        match = _OCCUPATION.search(sentence)
        if match:
            return match.group(1).strip()
    rest = sentence[pattern.search(sentence).end() :]
    if relation is not None and relation.value == "date":
        date = _DATE.search(rest) or _DATE.search(sentence)
        return date.group(0) if date else None
    rest = _FILLER.sub("", rest)
    value = rest[: _VALUE_END.search(rest).start()].strip()
    return value or None
