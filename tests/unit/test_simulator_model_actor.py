"""The model ToolActor with a scripted generator: exact tools stay exact, bad generations are counted errors
with their reason (never a grounded fall back), noise is stable per call, concurrent calls share a batch."""

from __future__ import annotations

import json
import threading
import time

import pytest

from simulator.calls import CallStatus, ToolCallHandler
from simulator.grounded import CORPUS, BackendError
from simulator.model_actor import ModelActor
from simulator.toolmaker import ToolMaker

PAGE = {"results": [{"title": "Ana Vell", "text": "Ana Vell was born in Velgrad."}]}


class ScriptedGenerator:
    """Answers with `reply(request)`; records every batch it was given."""

    def __init__(self, reply=lambda request: json.dumps(PAGE), delay_s: float = 0.0):
        self.reply = reply
        self.delay_s = delay_s
        self.batches = []

    def generate(self, requests):
        self.batches.append(list(requests))
        time.sleep(self.delay_s)
        return [self.reply(r) for r in requests]


def _actor(generator, share=0.0):
    return ModelActor(generator, ToolMaker(), noise_share=share)


def test_a_generated_observation_is_parsed_and_the_prompt_names_tool_and_quality():
    generator = ScriptedGenerator()
    actor = _actor(generator)
    assert actor.run("search", {"query": "Ana Vell"}, CORPUS) == PAGE
    (request,) = generator.batches[0]
    assert "`search`" in request.messages[0]["content"] and "Quality: useful" in request.messages[0]["content"]
    assert request.messages[1]["content"] == '{"query":"Ana Vell"}'
    assert request.output_schema["type"] == "object"  # decoding is constrained to the tool's output schema
    assert actor.stats["generated"] == 1 and actor.corpus_size == 0


def test_exact_tools_are_computed_not_generated():
    generator = ScriptedGenerator()
    actor = _actor(generator)
    assert actor.run("calculator", {"expression": "2 + 3"}, CORPUS)["result"] == 5
    assert generator.batches == [] and actor.stats["computed"] == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [('{"results": [{"title": "A", "te', "wrote no JSON object"), ('{"results": "none"}', "breaks the output schema")],
)
def test_an_invalid_generation_is_an_error_with_its_reason_and_never_falls_back(text, reason):
    actor = _actor(ScriptedGenerator(lambda request: text))
    with pytest.raises(BackendError, match=reason):
        actor.run("search", {"query": "Ana Vell"}, CORPUS)
    handler = ToolCallHandler(actor, ToolMaker())
    outcome = handler.call("search", '{"query": "Ana Vell"}')
    assert outcome.status is CallStatus.BACKEND_ERROR and reason in json.loads(outcome.observation_json)["error"]
    assert handler.metrics.calls.labels(tool="search", status="backend_error")._value.get() == 1


def test_noise_is_stable_per_call_grows_with_the_share_and_keys_the_cache():
    calls = [{"query": f"q{i}"} for i in range(400)]
    actor = _actor(ScriptedGenerator())
    noisy_at = {}
    for share in (0.0, 0.3, 0.7, 1.0):
        actor.set_noise_share(share)
        noisy_at[share] = {i for i, c in enumerate(calls) if actor.quality("search", c) == "noisy"}
    assert noisy_at[0.0] == set() and len(noisy_at[1.0]) == 400
    assert noisy_at[0.3] <= noisy_at[0.7] and 80 < len(noisy_at[0.3]) < 160
    with pytest.raises(ValueError, match="noise share"):
        actor.set_noise_share(1.5)

    generator = ScriptedGenerator(
        lambda r: json.dumps({"results": [{"title": r.messages[0]["content"][-6:], "text": ""}]})
    )
    actor = _actor(generator, share=0.0)
    handler = ToolCallHandler(actor, ToolMaker())
    useful = handler.call("search", '{"query": "q1"}')
    actor.set_noise_share(1.0)
    noisy = handler.call("search", '{"query": "q1"}')
    assert not noisy.cached and "noisy" in noisy.observation_json and "useful" in useful.observation_json
    assert handler.call("search", '{"query":"q1"}').cached  # same quality, same call: cached


def test_concurrent_calls_are_generated_in_one_batch():
    generator = ScriptedGenerator(delay_s=0.2)
    actor = _actor(generator)
    actor.run("search", {"query": "warm"}, CORPUS)  # the next calls queue while this batch would run
    threads = [threading.Thread(target=actor.run, args=("search", {"query": f"q{i}"}, CORPUS)) for i in range(8)]
    generator.delay_s = 0.3
    blocker = threading.Thread(target=actor.run, args=("search", {"query": "first"}, CORPUS))
    blocker.start()
    time.sleep(0.05)
    for thread in threads:
        thread.start()
    for thread in [blocker, *threads]:
        thread.join(5)
    assert sum(len(b) for b in generator.batches) == 10
    assert max(len(b) for b in generator.batches) == 8  # all eight waited for the same batch


def test_a_generator_failure_reaches_every_waiting_call_and_the_actor_keeps_serving():
    state = {"fail": True}

    def reply(request):
        if state["fail"]:
            raise RuntimeError("engine died")
        return json.dumps(PAGE)

    actor = _actor(ScriptedGenerator(reply))
    with pytest.raises(RuntimeError, match="engine died"):
        actor.run("search", {"query": "x"}, CORPUS)
    state["fail"] = False
    assert actor.run("search", {"query": "x"}, CORPUS) == PAGE
