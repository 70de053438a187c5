"""The embedded world: deterministic, answerable from its own documents, with every question type and hop count."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from mtr.task import Task
from mtr.world import QUESTION_TYPES, Person, generate_world
from mtr.worldquestions import embedded_tasks, generate_tasks


@pytest.fixture(scope="module")
def world():
    return generate_world(7)


@pytest.fixture(scope="module")
def tasks(world) -> list[Task]:
    return generate_tasks(world, 1000, 7)


def test_same_seed_gives_identical_world_and_tasks():
    assert generate_world(3) == generate_world(3)
    assert generate_tasks(generate_world(3), 200, 3) == generate_tasks(generate_world(3), 200, 3)
    assert embedded_tasks(3, 40, 20) == embedded_tasks(3, 40, 20)


def test_different_seeds_differ():
    assert generate_world(1).documents != generate_world(2).documents
    assert [t.question for t in generate_tasks(generate_world(1), 50, 1)] != [
        t.question for t in generate_tasks(generate_world(1), 50, 2)
    ]


def test_one_document_per_entity_and_names_unique(world):
    entities = world.countries + world.cities + world.people + world.companies + world.films
    names = [e.name for e in entities]
    assert len(set(names)) == len(names)
    assert [d.title for d in world.documents] == names
    assert len(world.people) >= 200 and len(world.films) >= 50 and len(world.cities) >= 40


def test_family_and_dates_are_consistent(world):
    people = {p.name: p for p in world.people}
    for person in world.people:
        if person.father:
            father, mother = people[person.father], people[person.mother]
            assert father.birth_year < person.birth_year and mother.birth_year < person.birth_year
            assert father.spouse == mother.name
        if person.spouse:
            assert people[person.spouse].spouse == person.name
            assert person.father is None or people[person.spouse].father != person.father
    for company in world.companies:
        founder = people[company.founder]
        assert founder.birth_year < company.founded and founder.employer == company.name
    for film in world.films:
        assert people[film.director].birth_year < film.released


def test_every_question_type_and_hop_count_occurs(tasks):
    assert set(Counter(t.question_type for t in tasks)) == set(QUESTION_TYPES)
    assert {t.hops for t in tasks} == {2, 3, 4}
    assert all(t.hops == len(t.decomposition) for t in tasks)
    assert all(t.hops == 2 for t in tasks if t.question_type != "compositional")
    assert Counter(t.question_type for t in tasks) == {q: 250 for q in QUESTION_TYPES}


def test_ids_and_questions_are_unique(tasks):
    assert [t.id for t in tasks[:2]] == ["w7-00000", "w7-00001"]
    assert len({t.id for t in tasks}) == len(tasks)
    assert len({t.question for t in tasks}) == len(tasks)
    assert all(t.source == "synthetic" for t in tasks)


def test_every_hop_is_stated_on_its_subjects_page(tasks):
    for task in tasks:
        pages = {d.title: d.text for d in task.documents}
        assert list(pages) == list(dict.fromkeys(h.subject for h in task.decomposition)), task.id
        for hop in task.decomposition:
            assert re.search(rf"\b{re.escape(hop.answer)}\b", pages[hop.subject]), (task.id, hop)
            assert hop.relation in pages[hop.subject], (task.id, hop)


def test_chains_lead_to_the_gold_answer(tasks):
    for task in (t for t in tasks if t.question_type != "comparison"):
        hops = task.decomposition
        assert hops[0].subject in task.question
        assert all(later.subject == earlier.answer for earlier, later in zip(hops, hops[1:], strict=False)), task.id
        assert task.answers[0] == hops[-1].answer
        assert task.answers[0].lower() not in task.question.lower()


def test_comparisons_have_no_ties_and_pick_the_earlier(tasks):
    comparisons = [t for t in tasks if t.question_type == "comparison"]
    assert {t.decomposition[0].relation for t in comparisons} == {"birth year", "released in", "founded in"}
    for task in comparisons:
        first, second = task.decomposition
        assert first.relation == second.relation
        assert first.subject in task.question and second.subject in task.question
        assert int(first.answer) != int(second.answer), task.id
        earlier = first if int(first.answer) < int(second.answer) else second
        assert task.answers[0] == earlier.subject


def test_film_answers_carry_an_alias_without_the_article(tasks):
    with_article = [t for t in tasks if t.answers[0].startswith("The ")]
    assert with_article
    assert all(t.answers == (t.answers[0], t.answers[0][4:]) for t in with_article)


def test_a_search_for_subject_and_relation_finds_the_page(world, tasks):
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([d.text for d in world.documents], show_progress=False), show_progress=False)
    hops = [h for t in tasks[:200] for h in t.decomposition]
    queries = bm25s.tokenize([f"{h.subject} {h.relation}" for h in hops], show_progress=False)
    found, _ = retriever.retrieve(queries, k=3, show_progress=False)
    for hop, row in zip(hops, found, strict=True):
        assert hop.subject in [world.documents[i].title for i in row], hop


def test_embedded_split_is_disjoint_and_eval_is_stable():
    train, held_out = embedded_tasks(5, 2000, 500)
    assert len(train) == 2000 and len(held_out) == 500
    assert not {t.question for t in train} & {t.question for t in held_out}
    assert embedded_tasks(5, 10, 500)[1] == held_out


def test_asking_for_more_than_the_world_holds_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_train=100000.*unique inference questions"):
        embedded_tasks(0, 100_000, 10)
    with pytest.raises(ValueError, match="count must be >= 0"):
        generate_tasks(generate_world(0), -1, 0)


def test_lookup_errors_name_the_missing_title(world):
    assert isinstance(world.entity(world.people[0].name), Person)
    assert world.document(world.films[0].name).text.startswith(world.films[0].name)
    with pytest.raises(KeyError, match="Nowhere"):
        world.document("Nowhere")
