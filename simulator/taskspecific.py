"""Task-specific tools from a question: `get_birth_year(person)`, `get_director(film)`, ... one per relation asked.

A relation tool is fully determined by its relation (name, parameter, description, output schema), so any
replica can rebuild it from its name alone (`standard_spec`): a call may reach a replica that did not make
the task's tools. The relation vocabulary covers the embedded world and the facts the benchmarks ask most.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from simulator.library import LIBRARY, RELATION_OUTPUT_SCHEMA, Grounding, ToolSpec, function_tool, text_parameter

RELATION_TOOL_PREFIX = "get_"


@dataclass(frozen=True)
class Relation:
    """A fact of an entity: how pages state it (`phrases`, most specific first) and what kind its value is."""

    key: str  # the tool is f"get_{key}"
    subject: str  # the kind of entity asked about; also the tool's parameter name
    phrases: tuple[str, ...]
    value: str  # "date" (a year or date), "entity" (a name) or "text"
    description: str

    @property
    def tool_name(self) -> str:
        return RELATION_TOOL_PREFIX + self.key


_RELATIONS = (
    Relation("birth_year", "person", ("birth year", "year of birth", "born"), "date", "the year the person was born"),
    Relation(
        "birth_place",
        "person",
        ("born in", "birthplace", "place of birth", "born at"),
        "entity",
        "where the person was born",
    ),
    Relation("death_year", "person", ("death year", "died in", "died"), "date", "the year the person died"),
    Relation("occupation", "person", ("occupation", "profession", "worked as"), "text", "the person's occupation"),
    Relation(
        "employer",
        "person",
        ("works for", "worked for", "employer", "employed by"),
        "entity",
        "the company the person works for",
    ),
    Relation("father", "person", ("father",), "entity", "the person's father"),
    Relation("mother", "person", ("mother",), "entity", "the person's mother"),
    Relation("spouse", "person", ("married to", "spouse", "wife", "husband"), "entity", "the person's spouse"),
    Relation("nationality", "person", ("nationality", "citizen of"), "entity", "the person's nationality"),
    Relation("director", "film", ("directed by", "director"), "entity", "who directed the film"),
    Relation("release_year", "film", ("released in", "release", "released"), "date", "the year the film was released"),
    Relation("author", "work", ("written by", "author", "wrote"), "entity", "who wrote the work"),
    Relation("founder", "organization", ("founder", "founded by"), "entity", "who founded the organization"),
    Relation(
        "founding_year",
        "entity",
        ("founded in", "established in", "founded", "established"),
        "date",
        "the year the company, city or organization was founded",
    ),
    Relation(
        "headquarters",
        "company",
        ("headquarters", "headquartered in", "based in"),
        "entity",
        "where the company's headquarters are",
    ),
    Relation(
        "country",
        "place",
        ("in the country of", "country of", "country", "located in"),
        "entity",
        "the country the place is in",
    ),
    Relation("capital", "country", ("capital",), "entity", "the capital of the country"),
)
RELATIONS: dict[str, Relation] = {relation.key: relation for relation in _RELATIONS}


def slug(text: str) -> str:
    """Lower-case words joined by '_' ("Birth year" -> "birth_year"); the form of keys and tool names."""
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))


def find_relation(text: str) -> Relation | None:
    """The known relation `text` names, by key ("birth_year"), tool name or one of its phrases ("directed by")."""
    key = slug(text).removeprefix(RELATION_TOOL_PREFIX)
    if key in RELATIONS:
        return RELATIONS[key]
    spaced = key.replace("_", " ")
    return next((r for r in _RELATIONS if spaced in r.phrases), None)


def relation_spec(relation: Relation) -> ToolSpec:
    """The tool that reads `relation` of one entity; the same relation always gives the same tool."""
    tool = function_tool(
        relation.tool_name,
        f"Get {relation.description}: the value and the sentence stating it.",
        {relation.subject: text_parameter(f"Name of the {relation.subject}.", 200)},
        [relation.subject],
    )
    grounding = Grounding("relation", relation=relation.key, subject=relation.subject)
    return ToolSpec(tool=tool, output_schema=RELATION_OUTPUT_SCHEMA, grounding=grounding)


_SPECS = {relation.tool_name: relation_spec(relation) for relation in _RELATIONS}


def standard_spec(name: str) -> ToolSpec | None:
    """A library tool or a standard relation tool, by name; None for anything else."""
    return LIBRARY.get(name) or _SPECS.get(name)


class StandardTools:
    """Resolves the tools every replica knows without being told: the library and the relation tools."""

    def spec(self, name: str) -> ToolSpec | None:
        return standard_spec(name)


# ----------------------------------------------------------------------------------------- from questions

# Questions about time: they need a year tool rather than a place tool, and compare/date arithmetic.
_DATE_WORDS = r"\b(when|year|years|date|first|earlier|later|older|younger|oldest|youngest|before|after|age)\b"
_BIRTH_PLACE = r"\bwhere\b[^?]*\bborn\b|\b(city|country|place|town)\b[^?]*\bborn\b|\bborn in (?!\d)|birthplace"
_BORN_WHEN = r"\bborn\b[^?]*" + _DATE_WORDS + "|" + _DATE_WORDS + r"[^?]*\bborn\b|\b(older|younger|oldest|youngest)\b"
_FOUNDER = r"\bfounder\b|\bwho (founded|established|started)\b|\bfounded by\b"
_FOUNDED_WHEN = r"\b(when|year)\b[^?]*\b(founded|established)\b|\b(founded|established)\b[^?]*\b(first|earlier|later)\b"
_PARENT_WORDS = r"grand(father|mother|parent)|-in-law|\bparents?\b"
_RULES: tuple[tuple[str, str], ...] = (
    (_FOUNDER, "founder"),
    (_FOUNDED_WHEN, "founding_year"),
    (_BORN_WHEN, "birth_year"),
    (_BIRTH_PLACE, "birth_place"),
    (r"\b(died|death)\b", "death_year"),
    (r"\bdirect(or|ed)\b", "director"),
    (r"\b(released?|came out)\b", "release_year"),
    (r"\b(written|wrote|author)\b", "author"),
    (r"\bheadquarter", "headquarters"),
    (r"\bcapital\b", "capital"),
    (r"\b(nationality|citizen|same country)\b", "nationality"),
    (r"\bcountry\b", "country"),
    (r"\bworks? for\b|\bemploy", "employer"),
    (r"\b(father|paternal)\b|" + _PARENT_WORDS, "father"),
    (r"\b(mother|maternal)\b|" + _PARENT_WORDS, "mother"),
    (r"\b(married|spouse|wife|husband)\b|-in-law", "spouse"),
    (r"\b(occupation|profession|job)\b", "occupation"),
)
_COMPILED = tuple((re.compile(pattern, re.I), key) for pattern, key in _RULES)


def question_relations(question: str) -> tuple[Relation, ...]:
    """The relations a question asks about, in vocabulary order (which keeps made tool lists stable)."""
    return tuple(RELATIONS[key] for pattern, key in _COMPILED if pattern.search(question))


def is_date_question(question: str) -> bool:
    return re.search(_DATE_WORDS, question, re.I) is not None


def relation_tools(question: str, limit: int = 4) -> tuple[ToolSpec, ...]:
    """At most `limit` relation tools for the question (the first-listed relations are the most specific)."""
    return tuple(_SPECS[relation.tool_name] for relation in question_relations(question)[:limit])
