"""Client of the simulator service: round-robin over replicas, retry elsewhere, concurrent batches.

The rollout worker batches the tool calls of all live sequences into one `call_many`; each call goes to
the next replica, and a call that meets UNAVAILABLE or DEADLINE_EXCEEDED is sent again to another one.
Light on purpose: grpc and the generated stubs only.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mtr.task import Document, Task, to_proto
from mtr.v1 import simulator_service_pb2 as pb
from mtr.v1 import simulator_service_pb2_grpc as pb_grpc
from mtr.v1 import task_pb2

SERVICE_NAME = "mtr.v1.SimulatorService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

# ToolResult.status values (mtr.v1.CallStatus without its prefix, lower case).
STATUS_OK = "ok"
STATUS_UNKNOWN_TOOL = "unknown_tool"
STATUS_INVALID_ARGUMENTS = "invalid_arguments"
STATUS_INPUT_TOO_LARGE = "input_too_large"
STATUS_BACKEND_ERROR = "backend_error"


class SimulatorError(RuntimeError):
    """A simulator RPC failed for good; the message names the replica, the method and the gRPC status."""


@dataclass(frozen=True)
class ToolResult:
    """The answer to one tool call; `observation` is always a JSON object (an error one when status != ok)."""

    observation: dict
    status: str
    error: str
    cached: bool
    replica: str

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass(frozen=True)
class ToolCallRequest:
    """One tool call as the policy wrote it; `documents` restricts retrieval to the task's own documents."""

    task_id: str
    name: str
    arguments_json: str
    documents: tuple[Document, ...] = ()


@dataclass(frozen=True)
class ToolSet:
    tools: tuple[dict, ...]
    task_kind: str


class SimulatorClient:
    """Synchronous, thread-safe client of one or more simulator replicas ("host:port" each)."""

    def __init__(self, addresses: Sequence[str], timeout_s: float = 10.0, max_attempts: int = 3) -> None:
        if not addresses:
            raise ValueError("SimulatorClient needs at least one replica address")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.addresses = tuple(addresses)
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        self._channels = [grpc.insecure_channel(address, options=options) for address in self.addresses]
        self._stubs = [pb_grpc.SimulatorServiceStub(channel) for channel in self._channels]
        self._turn = itertools.count()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until every replica's health service says SERVING; raise naming the first that does not."""
        deadline = time.monotonic() + timeout_s
        for address, channel in zip(self.addresses, self._channels, strict=True):
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            try:
                response = stub.Check(request, timeout=max(deadline - time.monotonic(), 0.01), wait_for_ready=True)
            except grpc.RpcError as exc:
                raise SimulatorError(
                    f"simulator replica at {address} is unreachable after {timeout_s:.1f}s: "
                    f"{exc.code().name} {exc.details()}"
                ) from None
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                raise SimulatorError(f"simulator replica at {address} reports {status}, not SERVING")

    def make_tools(self, task: Task) -> list[dict]:
        """The OpenAI function tools the ToolMaker gives this task."""
        return list(self.make_toolset(task).tools)

    def make_toolset(self, task: Task) -> ToolSet:
        """Tools plus the ToolMaker's classification of the task (comparison, bridge, ...)."""
        request = pb.MakeToolsRequest(task=to_proto(task))
        (response,) = self._send_all("MakeTools", [request])
        return ToolSet(tuple(json.loads(t) for t in response.tools_json), response.task_kind)

    def call_tool(self, task_id: str, name: str, arguments_json: str, documents: Sequence[Document] = ()) -> ToolResult:
        """One call; `documents` (a task's own context) replace the replica's corpus for retrieval."""
        return self.call_many([ToolCallRequest(task_id, name, arguments_json, tuple(documents))])[0]

    def call_many(self, calls: Sequence[ToolCallRequest]) -> list[ToolResult]:
        """Answer all calls concurrently, results in the order of `calls`."""
        responses = self._send_all("CallTool", [_to_request(call) for call in calls])
        return [_to_result(response) for response in responses]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> SimulatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send_all(self, method: str, requests: list) -> list:
        """Send every request at once (gRPC futures), round-robin; resend transient failures to the next replica.

        Any other gRPC error is final and raised, once all requests of the wave have finished.
        """
        responses: list = [None] * len(requests)
        replicas = {i: next(self._turn) % len(self._stubs) for i in range(len(requests))}
        failed: list[tuple[int, int, grpc.RpcError]] = []
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(min(0.1 * 2**attempt, 2.0))
            futures = {
                i: getattr(self._stubs[replica], method).future(requests[i], timeout=self.timeout_s)
                for i, replica in replicas.items()
            }
            failed = []
            for i, future in futures.items():
                try:
                    responses[i] = future.result()
                except grpc.RpcError as exc:
                    failed.append((i, replicas[i], exc))
            self._raise_permanent(method, failed)
            if not failed:
                return responses
            replicas = {i: (replica + 1) % len(self._stubs) for i, replica, _ in failed}
        raise self._exhausted(method, failed)

    def _raise_permanent(self, method: str, failed: list[tuple[int, int, grpc.RpcError]]) -> None:
        for _, replica, exc in failed:
            if exc.code() not in _RETRYABLE:
                raise SimulatorError(self._describe(method, replica, exc)) from None

    def _exhausted(self, method: str, failed: list[tuple[int, int, grpc.RpcError]]) -> SimulatorError:
        _, replica, exc = failed[0]
        return SimulatorError(
            f"{len(failed)} {method} call(s) still failing after {self.max_attempts} attempts over "
            f"{len(self.addresses)} replica(s); last: {self._describe(method, replica, exc)}"
        )

    def _describe(self, method: str, replica: int, exc: grpc.RpcError) -> str:
        return f"{method} on simulator replica {self.addresses[replica]}: {exc.code().name}: {exc.details()}"


def _to_request(call: ToolCallRequest) -> pb.CallToolRequest:
    return pb.CallToolRequest(
        task_id=call.task_id,
        tool_name=call.name,
        arguments_json=call.arguments_json,
        documents=[task_pb2.Document(title=d.title, text=d.text) for d in call.documents],
    )


def _to_result(response: pb.CallToolResponse) -> ToolResult:
    status = pb.CallStatus.Name(response.status).removeprefix("CALL_STATUS_").lower()
    return ToolResult(
        observation=json.loads(response.observation_json),
        status=status,
        error=response.error,
        cached=response.cached,
        replica=response.replica,
    )
