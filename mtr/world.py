"""The embedded fictional world: a seeded generator of entities, their documents and multi-hop questions.

MTR must run with no downloads, so `generate_world(seed)` invents countries, cities, people (four
generations of families), companies and films, with one short document per entity, and `generate_tasks`
asks 2–4-hop questions of the benchmarks' types (bridge, compositional, comparison, inference) with gold
decompositions. Every hop's fact is stated on the page of its subject, in wording that contains the hop's
relation phrase, so a search for f"{subject} {relation}" finds it: an offline agent can write correct traces
and a grounded simulator can answer from the corpus. Same seed, same world and questions.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from mtr.task import Document, Hop, Task

QUESTION_TYPES = ("bridge", "compositional", "comparison", "inference")

_N_COUNTRIES = 10
_N_CITIES = 40
_GENERATION_SIZES = (40, 56, 68, 76)  # people per generation; later ones have parents and grandparents
_N_COMPANIES = 40
_N_FILMS = 60
_MARRIAGE_RATE = 0.85

_OCCUPATIONS = (
    "painter",
    "engineer",
    "physician",
    "architect",
    "composer",
    "teacher",
    "sculptor",
    "chemist",
    "poet",
    "lawyer",
    "farmer",
    "carpenter",
    "pilot",
    "botanist",
    "actor",
    "astronomer",
)
_DIRECTOR = "film director"
_COMPANY_KINDS = ("Works", "Mills", "Foundry", "Trading", "Press", "Shipping", "Textiles", "Industries")
_TITLE_NOUNS = ("Lantern", "Orchard", "Harbor", "Mirror", "Garden", "Letters", "Tide", "Winter", "Bells", "Ferry")
_TITLE_ADJECTIVES = ("Silent", "Distant", "Hollow", "Amber", "Last", "Hidden", "Pale", "Crimson")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "th")
_INNER_ONSETS = ("b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k")


# ---------------------------------------------------------------------------------------------- entities


@dataclass(frozen=True)
class Country:
    name: str
    capital: str


@dataclass(frozen=True)
class City:
    name: str
    country: str
    founded: int


@dataclass(frozen=True)
class Person:
    name: str
    gender: str  # "female" | "male": only chooses the pronouns of the page
    occupation: str
    birth_year: int
    birth_city: str
    employer: str
    father: str | None = None
    mother: str | None = None
    spouse: str | None = None


@dataclass(frozen=True)
class Company:
    name: str
    founder: str
    headquarters: str
    founded: int


@dataclass(frozen=True)
class Film:
    name: str
    director: str
    released: int


Entity = Country | City | Person | Company | Film


@dataclass(frozen=True)
class World:
    """A whole fictional world: entity tables plus the corpus (one document per entity, titled by its name)."""

    seed: int
    countries: tuple[Country, ...]
    cities: tuple[City, ...]
    people: tuple[Person, ...]
    companies: tuple[Company, ...]
    films: tuple[Film, ...]
    documents: tuple[Document, ...]

    @cached_property
    def _entities(self) -> dict[str, Entity]:
        tables: tuple[tuple[Entity, ...], ...] = (self.countries, self.cities, self.people, self.companies, self.films)
        return {e.name: e for table in tables for e in table}

    @cached_property
    def _documents(self) -> dict[str, Document]:
        return {d.title: d for d in self.documents}

    def entity(self, name: str) -> Entity:
        try:
            return self._entities[name]
        except KeyError:
            raise KeyError(f"no entity named {name!r} in the world of seed {self.seed}") from None

    def document(self, title: str) -> Document:
        try:
            return self._documents[title]
        except KeyError:
            raise KeyError(f"no document titled {title!r} in the world of seed {self.seed}") from None


# ------------------------------------------------------------------------------------------------- names


class _Names:
    """Invents pronounceable words; a word belongs to one kind of entity so no name hides inside another."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._owner: dict[str, str] = {}
        self._full: set[str] = set()

    def _syllable(self) -> str:
        rng = self._rng
        return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)

    def _word(self, kind: str, *pieces: Sequence[str], reusable: bool = False) -> str:
        """A syllable followed by one choice from each of `pieces`, not yet owned by another kind of entity."""
        for _ in range(10_000):
            word = (self._syllable() + "".join(self._rng.choice(p) for p in pieces)).capitalize()
            owner = self._owner.get(word)
            if owner is None or (reusable and owner == kind):
                self._owner[word] = kind
                return word
        raise RuntimeError(f"could not invent a new {kind} name; the syllable inventory is too small")

    def unique(self, make: Callable[[], str]) -> str:
        """Retry `make` until it gives a full name not used before (given names repeat, full names never)."""
        for _ in range(10_000):
            name = make()
            if name not in self._full:
                self._full.add(name)
                return name
        raise RuntimeError("could not invent a new unique name")

    def given(self, gender: str) -> str:
        if gender == "female":
            return self._word("given", _INNER_ONSETS, ("a", "ia", "ina", "ela", "ira"), reusable=True)
        return self._word("given", _INNER_ONSETS, _VOWELS, ("n", "r", "s", "k", "l", "d"), reusable=True)

    def surname(self) -> str:
        return self._word("surname", _INNER_ONSETS, ("ek", "ov", "enn", "ard", "ask", "ell", "ur", "ane"))

    def city(self) -> str:
        return self._word("city", ("grad", "vik", "mar", "dor", "holm", "ven", "stad", "mere"))

    def country(self) -> str:
        return self._word("country", "dnrstv", ("ania", "aria", "ovia", "esia", "ora"))

    def company(self) -> str:
        root = self._word("company", _INNER_ONSETS, _VOWELS, "nrlsmk")
        return self.unique(lambda: f"{root} {self._rng.choice(_COMPANY_KINDS)}")

    def film(self) -> str:
        word = self._word("film", _ONSETS, _VOWELS, _CODAS)
        if self._rng.random() < 0.5:
            return self.unique(lambda: f"The {self._rng.choice(_TITLE_NOUNS)} of {word}")
        return self.unique(lambda: f"{self._rng.choice(_TITLE_ADJECTIVES)} {word}")


# ------------------------------------------------------------------------------------------------- world


@dataclass
class _PersonDraft:
    """Mutable while families, companies and films are being wired; frozen into a `Person` at the end."""

    name: str
    gender: str
    occupation: str
    birth_year: int
    birth_city: str
    employer: str = ""
    father: str | None = None
    mother: str | None = None
    spouse: str | None = None


def generate_world(seed: int) -> World:
    """Invent the world of `seed`: about 400 entities and their documents, in a few milliseconds."""
    rng = random.Random(f"mtr-world-{seed}")
    names = _Names(rng)
    countries, cities = _places(rng, names)
    drafts = _families(rng, names, cities)
    companies = _companies(rng, names, drafts, cities)
    films = _films(rng, names, drafts)
    _employ(rng, drafts, companies)
    people = tuple(
        Person(d.name, d.gender, d.occupation, d.birth_year, d.birth_city, d.employer, d.father, d.mother, d.spouse)
        for d in drafts
    )
    documents = tuple(
        [Document(c.name, _country_text(c)) for c in countries]
        + [Document(c.name, _city_text(c)) for c in cities]
        + [Document(p.name, _person_text(p)) for p in people]
        + [Document(c.name, _company_text(c)) for c in companies]
        + [Document(f.name, _film_text(f)) for f in films]
    )
    return World(seed, countries, cities, people, companies, films, documents)


def _places(rng: random.Random, names: _Names) -> tuple[tuple[Country, ...], tuple[City, ...]]:
    country_names = [names.country() for _ in range(_N_COUNTRIES)]
    # The first cities go one to each country so that every country has a city (and a capital).
    homes = country_names + [rng.choice(country_names) for _ in range(_N_CITIES - _N_COUNTRIES)]
    cities = tuple(City(names.city(), home, rng.randint(900, 1750)) for home in homes)
    capitals = {c.country: c.name for c in reversed(cities)}  # the first city of a country is its capital
    return tuple(Country(n, capitals[n]) for n in country_names), cities


def _families(rng: random.Random, names: _Names, cities: tuple[City, ...]) -> list[_PersonDraft]:
    """Generations of people; everyone after the first is the child of a married couple of the one before."""
    people: list[_PersonDraft] = []
    couples: list[tuple[_PersonDraft, _PersonDraft]] = []
    for size in _GENERATION_SIZES:
        born = [_person(rng, names, cities, rng.choice(couples) if couples else None) for _ in range(size)]
        couples = _marry(rng, born)
        people.extend(born)
    return people


def _person(
    rng: random.Random,
    names: _Names,
    cities: tuple[City, ...],
    parents: tuple[_PersonDraft, _PersonDraft] | None,
) -> _PersonDraft:
    gender = rng.choice(("female", "male"))
    if parents:
        father, mother = parents
        year = max(father.birth_year, mother.birth_year) + rng.randint(22, 38)
        surname = father.name.split(" ", 1)[1]
    else:
        year, surname = rng.randint(1800, 1830), names.surname()
    name = names.unique(lambda: f"{names.given(gender)} {surname}")
    person = _PersonDraft(name, gender, rng.choice(_OCCUPATIONS), year, rng.choice(cities).name)
    if parents:
        person.father, person.mother = parents[0].name, parents[1].name
    return person


def _marry(rng: random.Random, generation: list[_PersonDraft]) -> list[tuple[_PersonDraft, _PersonDraft]]:
    """Pair men and women of one generation (never siblings); returns (husband, wife) couples."""
    men = [p for p in generation if p.gender == "male"]
    women = [p for p in generation if p.gender == "female"]
    rng.shuffle(women)
    couples = []
    for man in men:
        if rng.random() > _MARRIAGE_RATE:
            continue
        wife = next((w for w in women if w.spouse is None and (w.father is None or w.father != man.father)), None)
        if wife is not None:
            man.spouse, wife.spouse = wife.name, man.name
            couples.append((man, wife))
    return couples


def _companies(
    rng: random.Random, names: _Names, people: list[_PersonDraft], cities: tuple[City, ...]
) -> tuple[Company, ...]:
    founders = rng.sample(people, _N_COMPANIES)
    companies = []
    for founder in founders:
        founded = founder.birth_year + rng.randint(20, 45)
        company = Company(names.company(), founder.name, rng.choice(cities).name, founded)
        founder.employer = company.name  # founders work for their own company
        companies.append(company)
    return tuple(companies)


def _films(rng: random.Random, names: _Names, people: list[_PersonDraft]) -> tuple[Film, ...]:
    films = []
    for _ in range(_N_FILMS):
        director = rng.choice(people)
        director.occupation = _DIRECTOR
        films.append(Film(names.film(), director.name, director.birth_year + rng.randint(25, 60)))
    return tuple(films)


def _employ(rng: random.Random, people: list[_PersonDraft], companies: tuple[Company, ...]) -> None:
    """Give everyone not yet employed a company that existed during their working life."""
    earliest = min(companies, key=lambda c: c.founded)
    for person in people:
        if not person.employer:
            open_then = [c for c in companies if c.founded <= person.birth_year + 50]
            person.employer = rng.choice(open_then or [earliest]).name


# --------------------------------------------------------------------------------------------- documents
# Each page states its subject's facts in stable wording that contains the relation phrases of `_FACTS`.


def _country_text(country: Country) -> str:
    return f"{country.name} is a country. Its capital is {country.capital}."


def _city_text(city: City) -> str:
    return f"{city.name} is a city in the country of {city.country}. {city.name} was founded in {city.founded}."


def _person_text(p: Person) -> str:
    he, his = ("she", "her") if p.gender == "female" else ("he", "his")
    article = "an" if p.occupation[0] in "aeiou" else "a"
    sentences = [
        f"{p.name} is {article} {p.occupation} by occupation and works for {p.employer}.",
        f"{p.name} was born in {p.birth_city}, and {his} birth year is {p.birth_year}.",
    ]
    family = [f"{his} father is {p.father}"] if p.father else []
    family += [f"{his} mother is {p.mother}"] if p.mother else []
    family += [f"{he} is married to {p.spouse}"] if p.spouse else []
    if family:
        joined = family[0] if len(family) == 1 else ", ".join(family[:-1]) + ("," if len(family) > 2 else "")
        joined += f" and {family[-1]}" if len(family) > 1 else ""
        sentences.append(joined[0].upper() + joined[1:] + ".")
    return " ".join(sentences)


def _company_text(company: Company) -> str:
    return (
        f"{company.name} is a company founded in {company.founded}. Its founder is {company.founder}. "
        f"Its headquarters are in {company.headquarters}."
    )


def _film_text(film: Film) -> str:
    return f"{film.name} is a film directed by {film.director}, released in {film.released}."


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
