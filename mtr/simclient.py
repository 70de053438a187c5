"""Client of the simulator farm: least-outstanding-calls balancing, batched RPCs, failover, health watching.

Replicas are registered by address ("host:port" each; started by `python -m simulator serve --replicas N` or
one by one on other machines). Calls go, a block of up to `balance_block_calls` at a time, to the live replica
with the fewest calls in flight; the calls a replica gets from one `call_many` travel together in CallTools
requests of at most `max_batch_calls` calls, because an RPC costs a few hundred microseconds of Python on each
side and a cached tool call a few. (Blocks, not single calls: spreading an 8-call batch over 4 replicas would
buy four RPCs of two calls each.) A request
that meets UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED (a dying replica) marks that replica down and its calls
are sent again to another one, so a replica dying in the middle of a batch loses no call. A background thread asks
every replica's standard health service at a fixed interval and brings a down replica back once it says SERVING.
When no replica is up, calls wait (with backoff) until their deadline and then fail naming every replica.

The rollout worker batches the tool calls of all live sequences into one `call_many`; its requests go out at
once (gRPC futures) and a single thread collects them. Light on purpose: grpc and the generated stubs only.
"""

from __future__ import annotations

import heapq
import json
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from mtr.simreplicas import (
    SERVICE_NAME,
    HealthWatcher,
    Replica,
    channel_credentials,
    least_loaded,
    new_replica,
)
from mtr.simtypes import (
    STATUS_BACKEND_ERROR,
    STATUS_INPUT_TOO_LARGE,
    STATUS_INVALID_ARGUMENTS,
    STATUS_OK,
    STATUS_UNKNOWN_TOOL,
    ReplicaState,
    SimulatorError,
    ToolCallRequest,
    ToolResult,
    ToolSet,
)
from mtr.task import Document, Task, to_proto

__all__ = [
    "STATUS_BACKEND_ERROR",
    "STATUS_INPUT_TOO_LARGE",
    "STATUS_INVALID_ARGUMENTS",
    "STATUS_OK",
    "STATUS_UNKNOWN_TOOL",
    "ReplicaState",
    "SimulatorClient",
    "SimulatorError",
    "ToolCallRequest",
    "ToolResult",
    "ToolSet",
]
from mtr.v1 import simulator_service_pb2 as pb
from mtr.v1 import task_pb2

# ToolResult.status of each wire status (mtr.v1.CallStatus without its prefix, lower case).
_STATUS_NAMES = {value: name.removeprefix("CALL_STATUS_").lower() for name, value in pb.CallStatus.items()}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
TOKEN_ENV = "MTR_SIMULATOR_TOKEN"
# A replica that dies or shuts down fails the calls it holds with CANCELLED as well as UNAVAILABLE (gRPC core does
# so for calls not yet taken by a handler, grpc/grpc#41785); this client never inspects calls it cancelled itself.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
# gRPC's own reconnect backoff grows to two minutes; a restarted replica must be found within seconds.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
RPC_MODES = ("batched", "unary")
_WAIT_BACKOFF_S = (0.02, 1.0)  # first and longest pause of a call waiting for any replica to come up
_BUSY_POLL_S = 0.005


@dataclass(eq=False)
class _Call:
    """One request of a `call_many` (or a MakeTools) on its way: where it has been, until when it may keep trying."""

    index: int
    request: object
    deadline: float
    started: float
    attempts: int = 0
    waits: int = 0
    tried: set[int] = field(default_factory=set)
    last_error: str = ""


@dataclass(eq=False)
class _Attempt:
    """One RPC in flight: the calls it carries (one for a unary RPC) and the replica counting them as in flight."""

    replica: Replica
    calls: list[_Call]


class SimulatorClient:
    """Synchronous, thread-safe client of one or more simulator replicas ("host:port" each).

    `timeout_s` is the deadline of one call, retries and waiting for a live replica included; one attempt gets
    at most `attempt_timeout_s` (default: half of it, so a hung replica leaves time to try another) and a call
    is sent at most `max_attempts` times. `auth_token` (default: the MTR_SIMULATOR_TOKEN environment variable)
    is sent as `authorization: Bearer ...`; `tls_root_cert` (PEM bytes or a file) switches to TLS, with
    `tls_server_name` overriding the name checked against the server's certificate. At most
    `max_inflight_per_replica` calls are in flight per replica; the rest queue here, because a gRPC server sheds
    load by cancelling RPCs once about a thousand wait unanswered, and retrying those only adds load. The default
    leaves room for two full CallTools requests per replica, so a replica has the next one queued while the
    client reads the last.

    `rpc="batched"` (default) sends a replica's share of a `call_many` as CallTools requests of at most
    `max_batch_calls` calls, handing out calls `balance_block_calls` at a time; `rpc="unary"` sends one CallTool
    per call, balanced call by call (for replicas without CallTools, and benchmarks).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        *,
        attempt_timeout_s: float | None = None,
        auth_token: str | None = None,
        tls_root_cert: bytes | str | Path | None = None,
        tls_server_name: str | None = None,
        health_interval_s: float = 0.5,
        max_inflight_per_replica: int = 512,
        rpc: str = "batched",
        max_batch_calls: int = 256,
        balance_block_calls: int = 16,
    ) -> None:
        if not addresses:
            raise ValueError("SimulatorClient needs at least one replica address")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if max_inflight_per_replica < 1:
            raise ValueError(f"max_inflight_per_replica must be >= 1, got {max_inflight_per_replica}")
        if timeout_s <= 0 or health_interval_s <= 0:
            raise ValueError(f"timeout_s and health_interval_s must be > 0, got {timeout_s} and {health_interval_s}")
        if rpc not in RPC_MODES:
            raise ValueError(f"rpc must be one of {RPC_MODES}, got {rpc!r}")
        if max_batch_calls < 1 or balance_block_calls < 1:
            raise ValueError(
                f"max_batch_calls and balance_block_calls must be >= 1, got {max_batch_calls} and {balance_block_calls}"
            )
        self.addresses = tuple(addresses)
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_inflight_per_replica = max_inflight_per_replica
        self.rpc = rpc
        self.max_batch_calls = max_batch_calls
        self.balance_block_calls = balance_block_calls
        self.attempt_timeout_s = attempt_timeout_s or (timeout_s / 2 if max_attempts > 1 else timeout_s)
        token = os.environ.get(TOKEN_ENV) if auth_token is None else auth_token
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        credentials = channel_credentials(tls_root_cert)
        options = [*_CHANNEL_OPTIONS]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._replicas = [
            new_replica(index, address, credentials, options) for index, address in enumerate(self.addresses)
        ]
        self._lock = threading.Lock()
        self._turn = 0
        self._watcher = HealthWatcher(self._replicas, self._lock, health_interval_s, self._metadata)
        # The watcher thread must not keep an abandoned client alive; closing it is the finalizer's job.
        self._finalizer = weakref.finalize(self, HealthWatcher.stop, self._watcher)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until every replica's health service says SERVING; raise naming the first that does not."""
        deadline = time.monotonic() + timeout_s
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        for replica in self._replicas:
            try:
                response = replica.health.Check(
                    request, timeout=max(deadline - time.monotonic(), 0.01), wait_for_ready=True
                )
            except grpc.RpcError as exc:
                raise SimulatorError(
                    f"simulator replica at {replica.address} is unreachable after {timeout_s:.1f}s: "
                    f"{exc.code().name} {exc.details()}"
                ) from None
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                raise SimulatorError(f"simulator replica at {replica.address} reports {status}, not SERVING")
            with self._lock:
                replica.up, replica.reason = True, ""

    def replica_states(self) -> list[ReplicaState]:
        with self._lock:
            return [ReplicaState(r.address, r.up, r.inflight, r.reason) for r in self._replicas]

    def make_tools(self, task: Task) -> list[dict]:
        """The OpenAI function tools the ToolMaker gives this task."""
        return list(self.make_toolset(task).tools)

    def make_toolset(self, task: Task) -> ToolSet:
        """Tools plus the ToolMaker's classification of the task (comparison, bridge, ...)."""
        request = pb.MakeToolsRequest(task=to_proto(task))
        ((response, _),) = _Batch(self, "MakeTools", [request]).run()
        return ToolSet(tuple(json.loads(t) for t in response.tools_json), response.task_kind)

    def set_noise(self, share: float) -> None:
        """Tell every replica the share of calls to answer noisily (simulator.noise); a replica that is down or
        refuses is an error naming it, because a schedule applied to part of the farm is not the schedule."""
        request = pb.SetNoiseRequest(share=share)
        for replica in self._replicas:
            try:
                replica.stub.SetNoise(request, timeout=self.attempt_timeout_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                raise SimulatorError(_describe("SetNoise", replica.address, exc)) from None

    def call_tool(self, task_id: str, name: str, arguments_json: str, documents: Sequence[Document] = ()) -> ToolResult:
        """One call; `documents` (a task's own context) replace the replica's corpus for retrieval."""
        return self.call_many([ToolCallRequest(task_id, name, arguments_json, tuple(documents))])[0]

    def call_many(self, calls: Sequence[ToolCallRequest]) -> list[ToolResult]:
        """Answer all calls concurrently, results in the order of `calls`.

        Identical calls in one batch (a GRPO group whose samples ask the same thing in the same turn) are sent
        once; the repeats get the same observation, marked `cached`, as the replica's cache would have done.
        A call's `latency_s` is the round trip of the request that carried it, retries included.
        """
        first: dict[tuple, int] = {}
        origin = [first.setdefault(_identity(call), i) for i, call in enumerate(calls)]
        requests = [_to_request(call) for i, call in enumerate(calls) if origin[i] == i]
        method = "CallTools" if self.rpc == "batched" else "CallTool"
        answers = iter(_Batch(self, method, requests).run())
        results: list[ToolResult] = []
        observations: dict[int, str] = {}
        for i, source in enumerate(origin):
            if source == i:
                response, latency_s = next(answers)
                observations[i] = response.observation_json
                results.append(_to_result(response, latency_s))
            else:
                # A fresh dict per result: callers may keep or change an observation without touching its twins.
                observation = json.loads(observations[source])
                results.append(replace(results[source], observation=observation, cached=True))
        return results

    def close(self) -> None:
        self._finalizer()
        # Closing the channels ends a health check still waiting on a hung replica, so the join is quick.
        for replica in self._replicas:
            replica.channel.close()
        self._watcher.join()

    def __enter__(self) -> SimulatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _acquire(self, calls: list[_Call], block: int) -> tuple[dict[Replica, list[_Call]], list[_Call], bool]:
        """Give each `block` consecutive calls the least-loaded live replica (as many as fit under its in-flight
        limit), counting them in flight there, all under one lock.

        Returns the calls grouped by replica, the calls left without one (in order), and whether any replica is
        up at all (if so, the left-over calls wait for a free slot; if not, for a replica to come back).
        """
        groups: dict[Replica, list[_Call]] = {}
        limit, position = self.max_inflight_per_replica, 0
        with self._lock:
            while position < len(calls):
                taken = calls[position : position + block]
                tried = set().union(*(call.tried for call in taken))
                replica = least_loaded(self._replicas, tried, self._turn, limit)
                self._turn += 1
                if replica is None:  # whatever was tried: no live replica has room for any call
                    return groups, calls[position:], any(r.up for r in self._replicas)
                taken = taken[: limit - replica.inflight]
                replica.inflight += len(taken)
                groups.setdefault(replica, []).extend(taken)
                position += len(taken)
        return groups, [], True

    def _release(self, attempt: _Attempt, future: grpc.Future, finished: queue.SimpleQueue) -> None:
        """Runs on a gRPC thread when an attempt ends. A failing replica is marked down here, before its slots are
        freed: a dead replica fails requests within microseconds, and until the batch's thread reads this failure
        from the queue it would otherwise keep sending calls there."""
        code = future.code()
        with self._lock:
            attempt.replica.inflight -= len(attempt.calls)
            if code in _RETRYABLE and not future.cancelled():
                replica = attempt.replica
                replica.up, replica.down_at = False, time.monotonic()
                replica.reason = f"{code.name}: {future.details()}"
        finished.put((attempt, future))

    def _no_replica_message(self, method: str, call: _Call) -> str:
        states = "; ".join(f"{s.address} ({'up' if s.up else 'down: ' + s.reason})" for s in self.replica_states())
        last = f"; last error: {call.last_error}" if call.last_error else ""
        return (
            f"{method}: no simulator replica answered within the {self.timeout_s:.1f}s deadline "
            f"(after {call.attempts} attempt(s)); replicas: {states}{last}"
        )


class _Batch:
    """One `call_many` (or MakeTools): its calls, their answers and the RPCs in flight, driven by the caller's thread.

    gRPC's completion threads only hand finished RPCs over through a queue; every decision (which replica, retry
    where, wait how long, give up) is made here. Calls are assigned in blocks to the least-loaded replica, then
    each replica's share goes out as CallTools requests of at most `max_batch_calls` calls (`method` "CallTools")
    or as one unary RPC per call (any other method). A request that fails transiently sends all its calls
    elsewhere. A call without a live replica waits with backoff (`waiting`); a call whose live replicas are all at
    the in-flight limit waits for a slot (`blocked`). Any non-transient gRPC error is final: the rest of the
    batch is cancelled and the error raised.
    """

    def __init__(self, client: SimulatorClient, method: str, requests: list) -> None:
        now = time.monotonic()
        self.client = client
        self.method = method
        self.batched = method == "CallTools"
        self.chunk = client.max_batch_calls if self.batched else 1
        self.block = client.balance_block_calls if self.batched else 1
        self.calls = [_Call(i, request, now + client.timeout_s, now) for i, request in enumerate(requests)]
        self.answers: list = [None] * len(requests)
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        self.outstanding: dict[_Attempt, grpc.Future] = {}
        self.waiting: list[tuple[float, int]] = []  # heap of (when to look again, call index)
        self.blocked: deque[int] = deque()

    def run(self) -> list[tuple[object, float]]:
        """(response, latency in seconds) per request, in request order."""
        try:
            self._send(self.calls)
            remaining = len(self.calls)
            while remaining:
                remaining -= self._next_event()
        finally:
            for future in self.outstanding.values():
                future.cancel()
        return self.answers

    def _next_event(self) -> int:
        """Handle one finished RPC, or the parked calls that are due; returns how many calls got their answer."""
        try:
            attempt, future = self.finished.get(timeout=self._pause())
        except queue.Empty:
            self._send(self._due())
            return 0
        del self.outstanding[attempt]
        try:
            responses = self._responses(attempt, future)
        except grpc.RpcError as exc:
            self._failed(attempt, exc)
            self._send(attempt.calls + self._due())
            return 0
        now = time.monotonic()
        for call, response in zip(attempt.calls, responses, strict=True):
            self.answers[call.index] = (response, now - call.started)
        self._send(self._due())
        return len(attempt.calls)

    def _responses(self, attempt: _Attempt, future: grpc.Future) -> list:
        response = future.result()
        if not self.batched:
            return [response]
        if len(response.results) != len(attempt.calls):
            raise SimulatorError(
                f"CallTools on simulator replica {attempt.replica.address} answered {len(response.results)} "
                f"result(s) to {len(attempt.calls)} call(s)"
            )
        return list(response.results)

    def _failed(self, attempt: _Attempt, exc: grpc.RpcError) -> None:
        """Raise if the failure is final, else note it (`_release` has already marked the replica down)."""
        description = _describe(self.method, attempt.replica.address, exc)
        if exc.code() not in _RETRYABLE:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED and self.batched:
                description += " (a replica older than CallTools needs SimulatorClient(..., rpc='unary'))"
            raise SimulatorError(description) from None
        for call in attempt.calls:
            call.last_error = description
        if any(call.attempts >= self.client.max_attempts for call in attempt.calls):
            raise SimulatorError(
                f"{self.method} request still failing after {self.client.max_attempts} attempt(s) over "
                f"{len(self.client.addresses)} replica(s); last: {description}"
            )

    def _pause(self) -> float | None:
        """How long to wait for a finished RPC before looking at parked calls again (None: no need to)."""
        pauses = []
        if self.waiting:
            pauses.append(max(self.waiting[0][0] - time.monotonic(), 0.0))
        if self.blocked and not self.outstanding:
            pauses.append(_BUSY_POLL_S)  # the slots are held by other threads' calls: no completion will wake us
        return min(pauses) if pauses else None

    def _due(self) -> list[_Call]:
        """The parked calls to try again now: every blocked one (first blocked first), then the waiting ones due."""
        due = [self.calls[index] for index in self.blocked]
        self.blocked.clear()
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            due.append(self.calls[heapq.heappop(self.waiting)[1]])
        return due

    def _send(self, calls: list[_Call]) -> None:
        """Send `calls` to the least-loaded replicas, park those without one; raise once a deadline has passed."""
        if not calls:
            return
        now = time.monotonic()
        for call in calls:
            if now >= call.deadline:
                raise SimulatorError(self.client._no_replica_message(self.method, call))
        groups, left, any_up = self.client._acquire(calls, self.block)
        for replica, group in groups.items():
            for part in _split(group, self.chunk):
                self._start(replica, part, now)
        for call in left:
            if any_up:
                self.blocked.append(call.index)
            else:
                self._wait(call)

    def _wait(self, call: _Call) -> None:
        """No replica is up: look again after a growing pause (the health watcher is asked to check right away)."""
        self.client._watcher.wake()
        now = time.monotonic()
        pause = min(_WAIT_BACKOFF_S[0] * 2**call.waits, _WAIT_BACKOFF_S[1], call.deadline - now)
        call.waits += 1
        heapq.heappush(self.waiting, (now + pause, call.index))

    def _start(self, replica: Replica, calls: list[_Call], now: float) -> None:
        """One RPC to `replica` (whose in-flight count already holds `calls`), bounded by its calls' deadlines."""
        for call in calls:
            call.attempts += 1
            call.tried.add(replica.index)
        timeout = min(self.client.attempt_timeout_s, min(call.deadline for call in calls) - now)
        if self.batched:
            request = pb.CallToolsRequest(calls=[call.request for call in calls])
        else:
            request = calls[0].request
        future = getattr(replica.stub, self.method).future(request, timeout=timeout, metadata=self.client._metadata)
        attempt = _Attempt(replica, calls)
        self.outstanding[attempt] = future
        finished, release = self.finished, self.client._release
        future.add_done_callback(lambda done: release(attempt, done, finished))


def _split(calls: list[_Call], size: int) -> list[list[_Call]]:
    """`calls` in consecutive parts of at most `size`, as even as possible (300 by 256 gives 150 + 150)."""
    parts = -(-len(calls) // size)
    base, extra = divmod(len(calls), parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + base + (part < extra))
    return [calls[bounds[i] : bounds[i + 1]] for i in range(parts)]


def _identity(call: ToolCallRequest) -> tuple:
    return call.name, call.arguments_json, tuple(call.documents)


def _describe(method: str, address: str, exc: grpc.RpcError) -> str:
    return f"{method} on simulator replica {address}: {exc.code().name}: {exc.details()}"


def _to_request(call: ToolCallRequest) -> pb.CallToolRequest:
    return pb.CallToolRequest(
        task_id=call.task_id,
        tool_name=call.name,
        arguments_json=call.arguments_json,
        documents=[task_pb2.Document(title=d.title, text=d.text) for d in call.documents],
    )


def _to_result(response: pb.CallToolResponse, latency_s: float) -> ToolResult:
    return ToolResult(
        observation=json.loads(response.observation_json),
        status=_STATUS_NAMES.get(response.status, "unspecified"),
        error=response.error,
        cached=response.cached,
        replica=response.replica,
        latency_s=latency_s,
    )
