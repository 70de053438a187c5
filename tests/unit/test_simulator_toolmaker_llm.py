"""LLM backends against a scripted OpenAI-compatible endpoint on loopback: protocol, validation, retry, fallback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mtr.task import Document, Task
from simulator.grounded import CORPUS, GroundedActor
from simulator.llm_actor import LLMActor
from simulator.llm_client import Bounds, LLMClient, LLMError, bounded_schema
from simulator.llm_toolmaker import LLMToolDesigner, design_schema
from simulator.toolmaker import ToolMaker

_DOCS = (
    Document("Bert Crane", "Bert Crane was born in Dorvik, and his birth year is 1901."),
    Document("Dorvik", "Dorvik is a city in the country of Movaria."),
)


class _Endpoint:
    """A chat-completions endpoint that answers with scripted contents and records every request."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str]] = []  # (content, finish_reason)
        self.requests: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                content, finish = endpoint.answers.pop(0) if endpoint.answers else ("", "stop")
                reply = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": finish,
                            }
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def say(self, *answers: object, finish: str = "stop") -> None:
        self.answers += [(a if isinstance(a, str) else json.dumps(a), finish) for a in answers]


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    endpoint = _Endpoint()
    thread = threading.Thread(target=endpoint.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()
    thread.join()


@pytest.fixture
def client(endpoint) -> LLMClient:
    return LLMClient(endpoint.url, "sim", timeout_s=5.0, max_tokens=64)


def _actor(client: LLMClient, attempts: int = 2) -> LLMActor:
    toolmaker = ToolMaker()
    return LLMActor(client, GroundedActor(_DOCS, tools=toolmaker), tools=toolmaker, attempts=attempts)


# ------------------------------------------------------------------------------------------------ client


def test_client_asks_for_structured_output_with_a_bounded_schema(endpoint, client):
    schema = {
        "type": "object",
        "properties": {"v": {"type": "string"}},
        "required": ["v"],
        "additionalProperties": False,
    }
    endpoint.say({"v": "ok"})
    assert client.chat_json([{"role": "user", "content": "hi"}], schema, name="probe") == {"v": "ok"}
    (request,) = endpoint.requests
    assert request["model"] == "sim" and request["max_tokens"] == 64
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"]["properties"]["v"]["maxLength"] == Bounds().max_string


@pytest.mark.parametrize(
    ("content", "finish", "message"),
    [
        ('{"v": "cut', "length", "hit max_tokens"),
        ("not json", "stop", "not JSON"),
        ("[1]", "stop", "not an object"),
        ('{"w": 1}', "stop", "breaks its schema"),
    ],
)
def test_client_rejects_unusable_answers(endpoint, client, content, finish, message):
    schema = {"type": "object", "properties": {"v": {"type": "string"}}, "required": ["v"]}
    endpoint.say(content, finish=finish)
    with pytest.raises(LLMError, match=message):
        client.chat_json([{"role": "user", "content": "hi"}], schema, name="probe")


def test_client_reports_an_unreachable_endpoint(free_port):
    client = LLMClient(f"http://127.0.0.1:{free_port}/v1", "sim", timeout_s=2.0)
    with pytest.raises(LLMError, match=f"127.0.0.1:{free_port}/v1.*request failed"):
        client.chat_json([{"role": "user", "content": "hi"}], {"type": "object"}, name="probe")


def test_bounded_schema_only_narrows_and_leaves_the_original_alone():
    schema = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "maxLength": 7},
                    "b": {"type": "array", "items": {"type": ["string", "null"]}},
                    "n": {"type": "integer"},
                },
            },
            {"type": "object", "properties": {"error": {"type": "string"}}},
        ]
    }
    before = json.dumps(schema, sort_keys=True)
    bounded = bounded_schema(schema, Bounds(max_string=10, max_items=2, max_number=100))
    assert json.dumps(schema, sort_keys=True) == before
    first, second = bounded["anyOf"]
    assert first["properties"]["a"]["maxLength"] == 7  # an existing bound is kept
    assert first["properties"]["b"]["maxItems"] == 2 and first["properties"]["b"]["items"]["maxLength"] == 10
    assert (first["properties"]["n"]["minimum"], first["properties"]["n"]["maximum"]) == (-100, 100)
    assert second["properties"]["error"]["maxLength"] == 10


# ------------------------------------------------------------------------------------------------- actor


def test_llm_actor_returns_the_models_observation_when_it_is_valid(endpoint, client):
    observation = {"title": "Dorvik", "text": "A city of Movaria."}
    endpoint.say(observation)
    actor = _actor(client)
    assert actor.run("open_page", {"title": "Dorvik"}, CORPUS) == observation
    assert actor.stats == {"llm_ok": 1}
    (request,) = endpoint.requests
    assert "open_page" in request["messages"][0]["content"] and "Movaria" in request["messages"][0]["content"]
    assert json.loads(request["messages"][1]["content"]) == {"title": "Dorvik"}


def test_llm_actor_retries_then_falls_back_to_the_documents(endpoint, client):
    endpoint.say({"title": "Dorvik"}, '{"title": "Dor', finish="stop")  # both invalid
    actor = _actor(client, attempts=2)
    observation = actor.run("get_birth_year", {"person": "Bert Crane"}, CORPUS)
    assert observation["value"] == "1901" and observation["source"] == "Bert Crane"
    assert len(endpoint.requests) == 2
    assert actor.stats == {"llm_failed_attempts": 2, "fallbacks": 1}


def test_llm_actor_recovers_on_retry(endpoint, client):
    good = {"entity": "Bert Crane", "relation": "birth_year", "value": "1901", "evidence": ["1901"], "source": "x"}
    endpoint.say("oops", good)
    actor = _actor(client, attempts=3)
    assert actor.run("get_birth_year", {"person": "Bert Crane"}, CORPUS) == good
    assert actor.stats == {"llm_failed_attempts": 1, "llm_ok": 1}


def test_llm_actor_never_simulates_exact_computations(endpoint, client):
    actor = _actor(client)
    assert actor.run("calculator", {"expression": "2 + 2"}, CORPUS)["result"] == 4
    assert endpoint.requests == [] and actor.stats == {"computed": 1}


# ---------------------------------------------------------------------------------------------- designer


def _task() -> Task:
    return Task(id="t1", question="Who directed the film Silent Korfun?", answers=("x",))


def test_llm_designer_tools_are_repaired_grounded_and_served(endpoint, client):
    endpoint.say(
        {
            "tools": [
                {
                    "name": "find film director",
                    "description": "Who directed a film.",
                    "returns": "directed by",
                    "parameters": {
                        "type": "object",
                        "properties": {"film": {"type": "string", "description": "Title."}},
                        "required": ["film", "year"],
                    },
                }
            ]
        }
    )
    toolmaker = ToolMaker(designer=LLMToolDesigner(client, max_tools=2))
    toolset = toolmaker.make_tools(_task())
    assert toolset.source == "llm"
    assert [spec.name for spec in toolset.tools][-1] == "find_film_director"
    assert toolmaker.stats.repaired == {"name": 1, "required": 1}
    (request,) = endpoint.requests
    assert "Silent Korfun" in request["messages"][1]["content"]
    assert request["response_format"]["json_schema"]["schema"]["properties"]["tools"]["maxItems"] == 2
    actor = GroundedActor(
        [Document("Silent Korfun", "Silent Korfun is a film directed by Mira Tovek.")], tools=toolmaker
    )
    assert actor.run("find_film_director", {"film": "Silent Korfun"}, CORPUS)["value"] == "Mira Tovek"


def test_llm_designer_failures_fall_back_to_rules(endpoint, client):
    endpoint.say({"tools": []}, "garbage")
    toolmaker = ToolMaker(designer=LLMToolDesigner(client))
    first, second = toolmaker.make_tools(_task()), toolmaker.make_tools(_task())
    assert first.source == second.source == "rules_fallback"
    assert "get_director" in [spec.name for spec in first.tools]
    assert toolmaker.stats.fallbacks == {"no usable designed tool": 1, "designer failed: LLMError": 1}


def test_design_schema_is_a_valid_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(design_schema(3))
