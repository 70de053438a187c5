"""The embedded fictional world: a seeded generator of entities and their documents.

MTR must run with no downloads, so `generate_world(seed)` invents countries, cities, people (four
generations of families), companies and films, with one short document per entity; `mtr.worldquestions`
asks 2–4-hop questions of the benchmarks' types (bridge, compositional, comparison, inference) with gold
decompositions. Every hop's fact is stated on the page of its subject, in wording that contains the hop's
relation phrase, so a search for f"{subject} {relation}" finds it: an offline agent can write correct traces
and a grounded simulator can answer from the corpus. Same seed, same world and questions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from mtr.task import Document

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
