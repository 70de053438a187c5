"""The simulator over real gRPC on loopback: health, tools, search, bad input, batches, retries, a real subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mtr.grpcutil import BackgroundServer
from mtr.simclient import SimulatorClient, SimulatorError, ToolCallRequest
from mtr.task import Document
from mtr.toolschema import validate_tool
from mtr.v1 import simulator_service_pb2 as pb
from mtr.v1 import simulator_service_pb2_grpc as pb_grpc
from mtr.v1 import task_pb2
from mtr.world import generate_world
from mtr.worldquestions import generate_tasks
from simulator.grounded import GroundedActor
from simulator.server import create_server
from simulator.toolmaker import ToolMaker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


@pytest.fixture(scope="module")
def server(world):
    actor, toolmaker = GroundedActor(world.documents, top_k=3), ToolMaker()
    background = BackgroundServer(lambda address: create_server(address, actor, toolmaker, replica="r0"))
    yield background
    background.stop(grace=0.5)


@pytest.fixture
def client(server):
    with SimulatorClient([server.address], timeout_s=5.0) as client:
        client.wait_ready(10.0)
        yield client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("service", ["", "mtr.v1.SimulatorService"])
def test_health_reports_serving(server, service):
    with grpc.insecure_channel(server.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_make_tools_returns_the_library_and_task_kind(client, world):
    task = generate_tasks(world, 4, 0)[0]
    toolset = client.make_toolset(task)
    names = [tool["function"]["name"] for tool in client.make_tools(task)]
    assert names[:2] == ["search", "open_page"] and len(names) == len(set(names))
    assert all(validate_tool(tool) is None for tool in toolset.tools)
    assert toolset.task_kind == task.question_type


def test_search_over_grpc_finds_the_hop_page(client, world):
    hop = generate_tasks(world, 4, 0)[0].decomposition[0]
    result = client.call_tool("t0", "search", json.dumps({"query": f"{hop.subject} {hop.relation}"}))
    assert result.ok and result.replica == "r0" and result.error == ""
    assert hop.subject in [page["title"] for page in result.observation["results"]]


def test_search_over_request_documents(client):
    documents = [Document("Alba Town", "Alba Town's mayor is Bert Crane.")]
    result = client.call_tool("t1", "search", '{"query": "mayor Alba"}', documents)
    assert result.observation == {"results": [{"title": "Alba Town", "text": documents[0].text}]}


@pytest.mark.parametrize(
    ("name", "arguments", "status"),
    [
        ("browse", "{}", "unknown_tool"),
        ("search", "{not json", "invalid_arguments"),
        ("search", '{"query": 1}', "invalid_arguments"),
        ("search", json.dumps({"query": "x" * 3000}), "input_too_large"),
    ],
)
def test_bad_inputs_come_back_as_error_observations(client, name, arguments, status):
    result = client.call_tool("t2", name, arguments)
    assert result.status == status and not result.ok
    assert result.observation == {"error": result.error} and name in result.error


def test_unary_request_without_tool_name_is_invalid_argument(server):
    with SimulatorClient([server.address], timeout_s=5.0, rpc="unary") as unary:
        with pytest.raises(SimulatorError, match="INVALID_ARGUMENT.*tool_name"):
            unary.call_tool("t3", "", "{}")


def test_in_a_batch_a_call_without_tool_name_is_an_unknown_tool_observation(client):
    result = client.call_tool("t3", "", "{}")
    assert result.status == "unknown_tool" and "available tools" in result.observation["error"]


def _stub_call_tools(address: str, calls: list[pb.CallToolRequest]) -> pb.CallToolsResponse:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.SimulatorServiceStub(channel).CallTools(pb.CallToolsRequest(calls=calls), timeout=10)


def test_call_tools_answers_good_and_bad_calls_in_order(server, world):
    title = world.documents[0].title
    requests = [
        pb.CallToolRequest(task_id="b", tool_name="open_page", arguments_json=json.dumps({"title": title})),
        pb.CallToolRequest(task_id="b", tool_name="browse", arguments_json="{}"),
        pb.CallToolRequest(task_id="b", tool_name="search", arguments_json="{not json"),
        pb.CallToolRequest(task_id="b", tool_name="", arguments_json="{}"),
        pb.CallToolRequest(task_id="b", tool_name="search", arguments_json=json.dumps({"query": "x" * 3000})),
        pb.CallToolRequest(
            task_id="b",
            tool_name="search",
            arguments_json='{"query": "mayor Alba"}',
            documents=[task_pb2.Document(title="Alba Town", text="Alba Town's mayor is Bert Crane.")],
        ),
        pb.CallToolRequest(task_id="b", tool_name="open_page", arguments_json=json.dumps({"title": title})),
    ]
    results = _stub_call_tools(server.address, requests).results
    assert [pb.CallStatus.Name(r.status) for r in results] == [
        "CALL_STATUS_OK",
        "CALL_STATUS_UNKNOWN_TOOL",
        "CALL_STATUS_INVALID_ARGUMENTS",
        "CALL_STATUS_UNKNOWN_TOOL",
        "CALL_STATUS_INPUT_TOO_LARGE",
        "CALL_STATUS_OK",
        "CALL_STATUS_OK",
    ]
    observations = [json.loads(r.observation_json) for r in results]
    assert observations[0]["title"] == title and observations[6] == observations[0] and results[6].cached
    assert observations[5]["results"][0]["title"] == "Alba Town"
    assert all(list(observations[i]) == ["error"] and results[i].error for i in (1, 2, 3, 4))
    assert {r.replica for r in results} == {"r0"}


def test_call_tools_of_nothing_answers_nothing(server):
    assert len(_stub_call_tools(server.address, []).results) == 0


@pytest.fixture(scope="module")
def small_batch_server(world):
    """A replica that takes at most 4 calls per CallTools request."""
    actor, toolmaker = GroundedActor(world.documents, top_k=3), ToolMaker()
    background = BackgroundServer(
        lambda address: create_server(address, actor, toolmaker, replica="small", max_batch_calls=4)
    )
    yield background
    background.stop(grace=0.5)


def test_a_batch_over_the_replicas_limit_is_invalid_argument(small_batch_server):
    calls = [pb.CallToolRequest(task_id="t", tool_name="search", arguments_json='{"query": "a"}')] * 5
    with pytest.raises(grpc.RpcError) as error:
        _stub_call_tools(small_batch_server.address, calls)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "5 calls" in error.value.details() and "limit is 4" in error.value.details()
    with SimulatorClient([small_batch_server.address], timeout_s=5.0) as client:
        with pytest.raises(SimulatorError, match="INVALID_ARGUMENT.*limit is 4"):
            client.call_many([ToolCallRequest("t", "search", json.dumps({"query": f"q{i}"})) for i in range(5)])


def test_the_client_splits_batches_to_fit_and_keeps_their_order(small_batch_server, world):
    titles = [doc.title for doc in world.documents[:10]]
    calls = [ToolCallRequest("t", "open_page", json.dumps({"title": title})) for title in titles]
    with SimulatorClient([small_batch_server.address], timeout_s=5.0, max_batch_calls=4) as client:
        results = client.call_many(calls)
    assert [r.observation["title"] for r in results] == titles and all(r.ok for r in results)


def test_unary_and_batched_paths_give_the_same_answers(server, world):
    calls = [ToolCallRequest("t", "search", json.dumps({"query": f"{d.title} born"})) for d in world.documents[:6]]
    calls += [ToolCallRequest("t", "browse", "{}"), calls[0]]
    with SimulatorClient([server.address], timeout_s=5.0, rpc="unary") as unary:
        expected = unary.call_many(calls)
    with SimulatorClient([server.address], timeout_s=5.0) as batched:
        results = batched.call_many(calls)
    assert [(r.observation, r.status) for r in results] == [(r.observation, r.status) for r in expected]
    assert results[-1].cached and all(r.latency_s > 0 for r in results)


def test_call_many_answers_50_calls_in_order_with_cache_hits(client, world):
    titles = [doc.title for doc in world.documents[:25]]
    calls = [ToolCallRequest(f"t{i}", "open_page", json.dumps({"title": titles[i % 25]})) for i in range(50)]
    results = client.call_many(calls)
    assert [r.observation["title"] for r in results] == [titles[i % 25] for i in range(50)]
    assert all(r.ok for r in results)
    assert all(r.cached for r in results[25:])


def test_make_tools_without_task_is_invalid_argument(server):
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.SimulatorServiceStub(channel).MakeTools(pb.MakeToolsRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no task" in error.value.details()


def test_binding_a_port_in_use_is_a_clear_error(server):
    with pytest.raises(OSError, match=server.address):
        asyncio.run(create_server(server.address, GroundedActor([Document("a", "b")]), ToolMaker()))


def test_calls_to_a_dead_replica_are_retried_on_a_live_one(server):
    dead = f"127.0.0.1:{_free_port()}"
    with SimulatorClient([dead, server.address], timeout_s=5.0, max_attempts=2) as client:
        calls = [ToolCallRequest("t", "search", json.dumps({"query": f"q{i}"})) for i in range(6)]
        assert all(result.replica == "r0" for result in client.call_many(calls))


def test_wait_ready_names_an_unreachable_replica():
    dead = f"127.0.0.1:{_free_port()}"
    with SimulatorClient([dead]) as client, pytest.raises(SimulatorError, match=dead):
        client.wait_ready(0.5)


def _wait_for_file(path: Path, process: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if process.poll() is not None:
            raise AssertionError(f"simulator exited early with {process.returncode}: {process.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"simulator wrote no ready file in {timeout_s}s")


def test_subprocess_serves_and_stops_cleanly_on_sigterm(tmp_path):
    ready = tmp_path / "ready.json"
    command = [sys.executable, "-m", "simulator", "serve", "--port", "0", "--world-seed", "0", "--name", "sub-0"]
    process = subprocess.Popen([*command, "--ready-file", str(ready)], stderr=subprocess.PIPE, text=True)
    try:
        info = _wait_for_file(ready, process, timeout_s=30)
        assert info["pid"] == process.pid
        with SimulatorClient([info["address"]]) as client:
            client.wait_ready(10)
            result = client.call_tool("t", "search", '{"query": "capital"}')
        assert result.ok and result.replica == "sub-0" and result.observation["results"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert "serving on" in process.stderr.read()
        assert not ready.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
