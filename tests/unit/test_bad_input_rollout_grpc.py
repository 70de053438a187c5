"""Bad requests to the rollout worker's gRPC service, table-driven, over real gRPC on loopback (the vLLM engine
scripted: what is tested is the service's checks). Each is refused with its code and a message that names what
was wrong, and the worker still generates afterwards."""

from __future__ import annotations

import math

import grpc
import pytest

from mtr.broadcast import InProcessBroadcast
from mtr.grpcutil import BackgroundServer
from mtr.simclient import ToolResult
from mtr.task import Task, to_proto
from mtr.v1 import rollout_service_pb2 as pb
from mtr.v1 import rollout_service_pb2_grpc as pb_grpc
from mtr.v1 import task_pb2
from rollout.agent_loop import TurnOutput
from rollout.service import RolloutServicer, create_server

ANSWER = "<think>ok</think>\n<answer>Velgrad</answer>"


class AnsweringEngine:
    model_path = "scripted"

    class tokenizer:  # noqa: N801 - the attribute the servicer reads
        @staticmethod
        def encode(text, add_special_tokens=False):
            return [ord(c) % 500 for c in text]

    def set_sampling(self, temperature, top_p):
        pass

    def generate_turns(self, requests):
        ids = [ord(c) % 500 for c in ANSWER]
        return [TurnOutput(ids[: r.max_tokens], [-0.1] * len(ids[: r.max_tokens]), ANSWER, "stop") for r in requests]

    def loaded_checksum(self):
        return ""


class NoTools:
    def call_many(self, calls):
        return [ToolResult({"results": []}, "ok", "", False, "r0") for _ in calls]


def _task(task_id="t0", question="Where was Ana born?") -> task_pb2.Task:
    return to_proto(Task(task_id, question, ("Velgrad",)))


def _sampling(**fields) -> pb.SamplingConfig:
    base = {"temperature": 1.0, "top_p": 1.0, "max_tokens_per_turn": 32, "max_turns": 2, "seed": 0}
    return pb.SamplingConfig(**{**base, **fields})


def _generate(**fields) -> pb.GenerateGroupsRequest:
    base = {"tasks": [_task()], "group_size": 2, "sampling": _sampling()}
    return pb.GenerateGroupsRequest(**{**base, **fields})


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES = [
    ("GenerateGroups", _generate(group_size=0), INVALID, "group_size must be in [1, 1024]"),
    ("GenerateGroups", _generate(group_size=100_000), INVALID, "group_size must be in [1, 1024]"),
    ("GenerateGroups", _generate(sampling=_sampling(max_turns=0)), INVALID, "max_turns"),
    ("GenerateGroups", _generate(sampling=_sampling(max_tokens_per_turn=0)), INVALID, "max_tokens_per_turn"),
    ("GenerateGroups", _generate(sampling=_sampling(max_tokens_per_turn=10**6)), INVALID, "exceeds max_model_len"),
    ("GenerateGroups", _generate(sampling=_sampling(temperature=math.nan)), INVALID, "temperature"),
    ("GenerateGroups", _generate(sampling=_sampling(temperature=-1.0)), INVALID, "temperature"),
    ("GenerateGroups", _generate(sampling=_sampling(top_p=1.5)), INVALID, "top_p"),
    (
        "GenerateGroups",
        _generate(tasks=[task_pb2.Task(id="t0", question=" ", answers=["a"])]),
        INVALID,
        "empty question",
    ),
    ("GenerateGroups", _generate(tasks=[task_pb2.Task(id="x", question="q?")]), INVALID, "has no gold answer"),
    ("GenerateGroups", _generate(tasks=[_task(), _task()]), INVALID, "appears twice"),
    ("LoadWeights", pb.LoadWeightsRequest(version=42), grpc.StatusCode.NOT_FOUND, "version 42 was never published"),
    ("JoinWeightGroup", pb.JoinWeightGroupRequest(address="", rank=1, world_size=2, timeout_s=1), INVALID, "address"),
    (
        "JoinWeightGroup",
        pb.JoinWeightGroupRequest(address="127.0.0.1:1", rank=0, world_size=2, timeout_s=1),
        INVALID,
        "0 < rank < world_size",
    ),
    (
        "JoinWeightGroup",
        pb.JoinWeightGroupRequest(address="127.0.0.1:1", rank=1, world_size=2, timeout_s=0),
        INVALID,
        "timeout",
    ),
]


@pytest.fixture(scope="module")
def stub():
    servicer = RolloutServicer(AnsweringEngine(), NoTools(), InProcessBroadcast(), max_model_len=2048)
    server = BackgroundServer(lambda address: create_server(address, servicer))
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.RolloutServiceStub(channel)
    server.stop()


@pytest.mark.parametrize(("method", "request_", "code", "words"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_a_bad_request_is_refused_by_name_and_the_worker_still_generates(stub, method, request_, code, words):
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub, method)(request_, timeout=30)
    assert error.value.code() == code, error.value.details()
    assert words in error.value.details()
    response = stub.GenerateGroups(_generate(), timeout=30)
    assert [len(g.traces) for g in response.groups] == [2]
    assert stub.GetStatus(pb.GetRolloutStatusRequest(), timeout=30).policy_version == 0
