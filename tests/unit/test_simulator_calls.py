"""Tool-call handling: each policy mistake gets its status and a readable error observation; repeats hit the cache."""

from __future__ import annotations

import json

import pytest

from mtr.task import Document
from simulator.cache import LRUCache
from simulator.calls import CallStatus, ToolCallHandler
from simulator.grounded import GroundedActor
from simulator.toolmaker import ToolMaker

_DOCS = (
    Document("Alba Town", "Alba Town is a city. Its mayor is Bert Crane."),
    Document("Bert Crane", "Bert Crane was born in Dorvik in 1901."),
)


@pytest.fixture
def handler() -> ToolCallHandler:
    return ToolCallHandler(GroundedActor(_DOCS), ToolMaker(), max_argument_chars=200)


def _sample(handler: ToolCallHandler, name: str, **labels: str) -> float:
    return handler.metrics.registry.get_sample_value(name, labels) or 0.0


def test_search_returns_schema_valid_results(handler):
    outcome = handler.call("search", '{"query": "mayor of Alba Town"}')
    assert outcome.status is CallStatus.OK and outcome.error == ""
    assert json.loads(outcome.observation_json)["results"][0] == {"title": "Alba Town", "text": _DOCS[0].text}


def test_identical_normalized_arguments_hit_the_cache(handler):
    first = handler.call("search", '{"query": "Bert Crane born"}')
    second = handler.call("search", '{ "query":"Bert Crane born" }')
    other = handler.call("search", '{"query": "Bert Crane"}')
    assert (first.cached, second.cached, other.cached) == (False, True, False)
    assert second.observation_json == first.observation_json
    assert _sample(handler, "mtr_simulator_cache_hits_total") == 1
    assert _sample(handler, "mtr_simulator_cache_misses_total") == 2


def test_same_arguments_on_other_documents_miss_the_cache(handler):
    from simulator.grounded import DocumentSet

    handler.call("search", '{"query": "Dorvik"}')
    outcome = handler.call("search", '{"query": "Dorvik"}', DocumentSet.of([Document("Dorvik", "A city.")]))
    assert not outcome.cached
    assert json.loads(outcome.observation_json)["results"] == [{"title": "Dorvik", "text": "A city."}]


@pytest.mark.parametrize(
    ("tool", "arguments", "status", "words"),
    [
        ("browse", '{"url": "x"}', CallStatus.UNKNOWN_TOOL, ["browse", "search", "open_page"]),
        ("search", "not json", CallStatus.INVALID_ARGUMENTS, ["search", "not valid JSON"]),
        ("search", '["Alba"]', CallStatus.INVALID_ARGUMENTS, ["search", "JSON object", "array"]),
        ("search", '{"q": "Alba"}', CallStatus.INVALID_ARGUMENTS, ["search", "query", "required"]),
        ("search", '{"query": 3}', CallStatus.INVALID_ARGUMENTS, ["search", "query", "string"]),
        ("open_page", '{"title": ""}', CallStatus.INVALID_ARGUMENTS, ["open_page", "title"]),
        ("search", json.dumps({"query": "x" * 250}), CallStatus.INPUT_TOO_LARGE, ["search", "limit is 200"]),
        ("x" * 5000, "{}", CallStatus.UNKNOWN_TOOL, ["unknown tool"]),
    ],
)
def test_bad_input_gets_its_status_and_a_readable_error_observation(handler, tool, arguments, status, words):
    outcome = handler.call(tool, arguments)
    observation = json.loads(outcome.observation_json)
    assert outcome.status is status
    assert list(observation) == ["error"] and observation["error"] == outcome.error
    for word in words:
        assert word in outcome.error
    assert len(outcome.error) < 600
    label = tool if tool in ("search", "open_page") else "unknown"
    assert _sample(handler, "mtr_simulator_calls_total", tool=label, status=status.value) == 1


def test_missing_page_is_an_ok_observation_saying_so(handler):
    outcome = handler.call("open_page", '{"title": "Nowhere"}')
    assert outcome.status is CallStatus.OK
    assert "Nowhere" in json.loads(outcome.observation_json)["error"]


class _BrokenActor:
    def __init__(self, observation=None, exc: Exception | None = None) -> None:
        self.observation, self.exc = observation, exc

    def run(self, tool, arguments, documents):
        if self.exc:
            raise self.exc
        return self.observation


@pytest.mark.parametrize(
    "actor", [_BrokenActor(observation={"results": "oops"}), _BrokenActor(exc=RuntimeError("index exploded"))]
)
def test_actor_failures_become_backend_errors_and_are_not_cached(actor):
    handler = ToolCallHandler(actor, ToolMaker())
    for _ in range(2):
        outcome = handler.call("search", '{"query": "a"}')
        assert outcome.status is CallStatus.BACKEND_ERROR and not outcome.cached
        assert "search" in json.loads(outcome.observation_json)["error"]
    assert len(handler.cache) == 0


def test_inflight_gauge_returns_to_zero(handler):
    handler.call("search", '{"query": "Alba"}')
    assert _sample(handler, "mtr_simulator_inflight_calls") == 0
    assert _sample(handler, "mtr_simulator_call_seconds_count", tool="search") == 1


def test_lru_evicts_least_recently_used():
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, 1, 3)
    assert (cache.hits, cache.misses) == (3, 1)


def test_a_batch_answers_each_call_in_order_with_its_own_status_and_metrics(handler):
    from simulator.grounded import CORPUS

    calls = [
        ("search", '{"query": "mayor of Alba Town"}', CORPUS),
        ("browse", "{}", CORPUS),
        ("", "{}", CORPUS),
        ("search", "{not json", CORPUS),
        ("search", '{"query": "mayor of Alba Town"}', CORPUS),
        ("open_page", '{"title": "Bert Crane"}', CORPUS),
    ]
    outcomes = handler.call_batch(calls)
    assert [o.status for o in outcomes] == [
        CallStatus.OK,
        CallStatus.UNKNOWN_TOOL,
        CallStatus.UNKNOWN_TOOL,
        CallStatus.INVALID_ARGUMENTS,
        CallStatus.OK,
        CallStatus.OK,
    ]
    assert [o.cached for o in outcomes] == [False, False, False, False, True, False]
    assert json.loads(outcomes[5].observation_json)["title"] == "Bert Crane"
    assert "available tools" in outcomes[2].error
    assert _sample(handler, "mtr_simulator_calls_total", tool="search", status="ok") == 2
    assert _sample(handler, "mtr_simulator_calls_total", tool="unknown", status="unknown_tool") == 2
    assert _sample(handler, "mtr_simulator_call_seconds_count", tool="search") == 3
    assert _sample(handler, "mtr_simulator_cache_hits_total") == 1
    assert _sample(handler, "mtr_simulator_inflight_calls") == 0


def test_the_cache_only_answers_text_that_means_the_same_call(handler):
    first = handler.call("search", '{"query": "Dorvik"}')
    assert handler.call("search", '{"query":"Dorvik"}').cached  # not the canonical text: parsed, then found
    assert not handler.call("search", '{"query": "Dorvik "}').cached
    assert handler.call("open_page", '{"query": "Dorvik"}').status is CallStatus.INVALID_ARGUMENTS
    assert handler.call("search", '{"query": "Dorvik"}').observation_json == first.observation_json
