"""The grounded ToolActor finds the page that states each hop's fact, from the world corpus or a task's documents."""

from __future__ import annotations

import pytest

from mtr.task import Document
from mtr.world import generate_world
from mtr.worldquestions import generate_tasks
from simulator.grounded import CORPUS, BackendError, BM25Index, DocumentSet, GroundedActor

_DOCS = (
    Document("Alba Town", "Alba Town is a city. Its mayor is Bert Crane."),
    Document("Bert Crane", "Bert Crane was born in Dorvik in 1901."),
    Document("Dorvik", "Dorvik is a harbour city of Movaria."),
)


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


def test_search_finds_the_subject_page_of_nearly_every_hop(world):
    actor = GroundedActor(world.documents, top_k=3)
    hops = [hop for task in generate_tasks(world, 200, 0) for hop in task.decomposition]
    found = 0
    for hop in hops:
        results = actor.run("search", {"query": f"{hop.subject} {hop.relation}"}, CORPUS)["results"]
        assert len(results) <= 3
        found += hop.subject in [page["title"] for page in results]
    rate = found / len(hops)
    print(f"subject page in top-3 for {found}/{len(hops)} hops ({rate:.3f})")
    assert rate >= 0.95


def test_open_page_is_exact_title_case_insensitive(world):
    actor = GroundedActor(world.documents)
    page = world.documents[5]
    assert actor.run("open_page", {"title": page.title.upper()}, CORPUS) == {"title": page.title, "text": page.text}
    missing = actor.run("open_page", {"title": "No Such Page"}, CORPUS)
    assert "No Such Page" in missing["error"]


def test_call_documents_replace_the_corpus(world):
    actor = GroundedActor(world.documents)
    documents = DocumentSet.of(_DOCS)
    titles = [page["title"] for page in actor.run("search", {"query": "mayor of Alba Town"}, documents)["results"]]
    assert titles[0] == "Alba Town"
    assert set(titles) <= {d.title for d in _DOCS}
    assert actor.run("open_page", {"title": world.documents[0].title}, documents).get("error")


def test_document_set_index_is_built_once_per_distinct_set():
    actor = GroundedActor()
    actor.run("search", {"query": "Dorvik"}, DocumentSet.of(_DOCS))
    actor.run("open_page", {"title": "Dorvik"}, DocumentSet.of(list(_DOCS)))
    actor.run("search", {"query": "Dorvik"}, DocumentSet.of(_DOCS[:2]))
    assert (actor._indexes.hits, actor._indexes.misses) == (1, 2)


def test_document_set_key_depends_on_content_not_identity():
    assert DocumentSet.of(_DOCS).key == DocumentSet.of([Document(d.title, d.text) for d in _DOCS]).key
    assert DocumentSet.of(_DOCS).key != DocumentSet.of(_DOCS[::-1]).key
    assert DocumentSet.of([Document("ab", "c")]).key != DocumentSet.of([Document("a", "bc")]).key
    assert DocumentSet.of(()) is CORPUS


def test_query_sharing_no_word_returns_no_results():
    assert BM25Index(_DOCS).search("zebra the of", 3) == []


def test_long_pages_are_cut():
    actor = GroundedActor([Document("Long", "word " * 1000)], max_text_chars=100)
    text = actor.run("open_page", {"title": "Long"}, CORPUS)["text"]
    assert len(text) <= 110 and text.endswith("...")


def test_no_corpus_and_no_documents_is_a_backend_error():
    with pytest.raises(BackendError, match="no corpus"):
        GroundedActor().run("search", {"query": "x"}, CORPUS)
