"""Client of the simulator farm: least-outstanding-requests balancing, failover, health watching, batches.

Replicas are registered by address ("host:port" each; started by `python -m simulator serve --replicas N` or
one by one on other machines). Every call goes to the live replica with the fewest calls in flight; a call
that meets UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED (a dying replica) marks that replica down and is sent
again to another one, so a replica dying in the middle of a batch loses no call. A background thread asks every
replica's standard health service at a fixed interval and brings a down replica back once it says SERVING.
When no replica is up, calls wait (with backoff) until their deadline and then fail naming every replica.

The rollout worker batches the tool calls of all live sequences into one `call_many`; the calls go out at
once (gRPC futures) and a single thread collects them. Light on purpose: grpc and the generated stubs only.
"""

from __future__ import annotations

import enum
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mtr.task import Document, Task, to_proto
from mtr.v1 import simulator_service_pb2 as pb
from mtr.v1 import simulator_service_pb2_grpc as pb_grpc
from mtr.v1 import task_pb2

SERVICE_NAME = "mtr.v1.SimulatorService"
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
_WAIT_BACKOFF_S = (0.02, 1.0)  # first and longest pause of a call waiting for any replica to come up
_BUSY_POLL_S = 0.005

# ToolResult.status values (mtr.v1.CallStatus without its prefix, lower case).
STATUS_OK = "ok"
STATUS_UNKNOWN_TOOL = "unknown_tool"
STATUS_INVALID_ARGUMENTS = "invalid_arguments"
STATUS_INPUT_TOO_LARGE = "input_too_large"
STATUS_BACKEND_ERROR = "backend_error"
_STATUS_NAMES = {value: name.removeprefix("CALL_STATUS_").lower() for name, value in pb.CallStatus.items()}


class SimulatorError(RuntimeError):
    """A simulator RPC failed for good; the message names the replica(s), the method and the gRPC status."""


@dataclass(frozen=True)
class ToolResult:
    """The answer to one tool call; `observation` is always a JSON object (an error one when status != ok).

    `latency_s` is what the caller waited for this call: from sending it to holding its answer, retries included.
    """

    observation: dict
    status: str
    error: str
    cached: bool
    replica: str
    latency_s: float = 0.0

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


@dataclass(frozen=True)
class ReplicaState:
    """What the client currently believes about one replica (for logs, metrics and tests)."""

    address: str
    up: bool
    inflight: int
    reason: str


@dataclass(eq=False)
class _Replica:
    index: int
    address: str
    channel: grpc.Channel
    stub: pb_grpc.SimulatorServiceStub
    health: health_pb2_grpc.HealthStub
    inflight: int = 0
    up: bool = True
    reason: str = ""
    down_at: float = float("-inf")


@dataclass(eq=False)
class _Call:
    """One request of a batch on its way: where it has been and until when it may keep trying."""

    index: int
    request: object
    deadline: float
    started: float
    attempts: int = 0
    waits: int = 0
    tried: set[int] = field(default_factory=set)
    last_error: str = ""


class SimulatorClient:
    """Synchronous, thread-safe client of one or more simulator replicas ("host:port" each).

    `timeout_s` is the deadline of one call, retries and waiting for a live replica included; one attempt gets
    at most `attempt_timeout_s` (default: half of it, so a hung replica leaves time to try another) and a call
    is sent at most `max_attempts` times. `auth_token` (default: the MTR_SIMULATOR_TOKEN environment variable)
    is sent as `authorization: Bearer ...`; `tls_root_cert` (PEM bytes or a file) switches to TLS, with
    `tls_server_name` overriding the name checked against the server's certificate. At most
    `max_inflight_per_replica` calls are in flight per replica; the rest queue here, because a gRPC server sheds
    load by cancelling calls once about a thousand wait unanswered, and retrying those only adds load.
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
        max_inflight_per_replica: int = 128,
    ) -> None:
        if not addresses:
            raise ValueError("SimulatorClient needs at least one replica address")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if max_inflight_per_replica < 1:
            raise ValueError(f"max_inflight_per_replica must be >= 1, got {max_inflight_per_replica}")
        if timeout_s <= 0 or health_interval_s <= 0:
            raise ValueError(f"timeout_s and health_interval_s must be > 0, got {timeout_s} and {health_interval_s}")
        self.addresses = tuple(addresses)
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_inflight_per_replica = max_inflight_per_replica
        self.attempt_timeout_s = attempt_timeout_s or (timeout_s / 2 if max_attempts > 1 else timeout_s)
        token = os.environ.get(TOKEN_ENV) if auth_token is None else auth_token
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        credentials = _channel_credentials(tls_root_cert)
        options = [*_CHANNEL_OPTIONS]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._replicas = [
            _new_replica(index, address, credentials, options) for index, address in enumerate(self.addresses)
        ]
        self._lock = threading.Lock()
        self._turn = 0
        self._watcher = _HealthWatcher(self._replicas, self._lock, health_interval_s, self._metadata)
        # The watcher thread must not keep an abandoned client alive; closing it is the finalizer's job.
        self._finalizer = weakref.finalize(self, _HealthWatcher.stop, self._watcher)

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
        ((response, _),) = self._send_all("MakeTools", [request])
        return ToolSet(tuple(json.loads(t) for t in response.tools_json), response.task_kind)

    def call_tool(self, task_id: str, name: str, arguments_json: str, documents: Sequence[Document] = ()) -> ToolResult:
        """One call; `documents` (a task's own context) replace the replica's corpus for retrieval."""
        return self.call_many([ToolCallRequest(task_id, name, arguments_json, tuple(documents))])[0]

    def call_many(self, calls: Sequence[ToolCallRequest]) -> list[ToolResult]:
        """Answer all calls concurrently, results in the order of `calls`.

        Identical calls in one batch (a GRPO group whose samples ask the same thing in the same turn) are sent
        once; the repeats get the same observation, marked `cached`, as the replica's cache would have done.
        """
        first: dict[tuple, int] = {}
        unique = [first.setdefault(_identity(c), i) == i for i, c in enumerate(calls)]
        answers = iter(self._send_all("CallTool", [_to_request(c) for c, u in zip(calls, unique, strict=True) if u]))
        results: list[ToolResult] = []
        for call, is_first in zip(calls, unique, strict=True):
            if is_first:
                results.append(_to_result(*next(answers)))
            else:
                original = results[first[_identity(call)]]
                # A fresh dict per result: callers may keep or change an observation without touching its twins.
                results.append(replace(original, observation=json.loads(json.dumps(original.observation)), cached=True))
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

    def _send_all(self, method: str, requests: list) -> list[tuple[object, float]]:
        """Send every request at once; resend transient failures elsewhere; (response, latency) in request order."""
        return _Batch(self, method, requests).run()

    def _acquire(self, tried: set[int]) -> tuple[_Replica | None, bool]:
        """A replica for one attempt (its in-flight count taken), or None and whether any replica is up at all."""
        with self._lock:
            replica = least_loaded(self._replicas, tried, self._turn, self.max_inflight_per_replica)
            self._turn += 1
            if replica is not None:
                replica.inflight += 1
                return replica, True
            return None, any(r.up for r in self._replicas)

    def _release(self, replica: _Replica, index: int, future: grpc.Future, finished: queue.SimpleQueue) -> None:
        """Runs on a gRPC thread when an attempt ends. A failing replica is marked down here, before its slot is
        freed: a dead replica fails calls within microseconds, and until the batch's thread reads this failure
        from the queue it would otherwise keep sending calls there."""
        code = future.code()
        with self._lock:
            replica.inflight -= 1
            if code in _RETRYABLE and not future.cancelled():
                replica.up, replica.down_at = False, time.monotonic()
                replica.reason = f"{code.name}: {future.details()}"
        finished.put((index, replica, future))

    def _no_replica_message(self, method: str, call: _Call) -> str:
        states = "; ".join(f"{s.address} ({'up' if s.up else 'down: ' + s.reason})" for s in self.replica_states())
        last = f"; last error: {call.last_error}" if call.last_error else ""
        return (
            f"{method}: no simulator replica answered within the {self.timeout_s:.1f}s deadline "
            f"(after {call.attempts} attempt(s)); replicas: {states}{last}"
        )


class _Batch:
    """One `_send_all`: its calls, their answers and the attempts in flight, driven by the caller's thread alone.

    gRPC's completion threads only hand finished attempts over through a queue; every decision (retry where,
    wait how long, give up) is made here. A call without a live replica waits with backoff (`waiting`); a call
    whose live replicas are all at the in-flight limit waits for a slot (`blocked`). Any non-transient gRPC error
    is final: the rest of the batch is cancelled and the error raised.
    """

    def __init__(self, client: SimulatorClient, method: str, requests: list) -> None:
        now = time.monotonic()
        self.client = client
        self.method = method
        self.calls = [_Call(i, request, now + client.timeout_s, now) for i, request in enumerate(requests)]
        self.answers: list = [None] * len(requests)
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        self.outstanding: dict[int, grpc.Future] = {}
        self.waiting: list[tuple[float, int]] = []  # heap of (when to look again, call index)
        self.blocked: deque[int] = deque()

    def run(self) -> list[tuple[object, float]]:
        try:
            for call in self.calls:
                self._send_or_park(call)
            remaining = len(self.calls)
            while remaining:
                remaining -= self._next_event()
        finally:
            for future in self.outstanding.values():
                future.cancel()
        return self.answers

    def _next_event(self) -> int:
        """Handle one finished attempt, or the parked calls that are due; 1 when a call got its final answer."""
        try:
            index, replica, future = self.finished.get(timeout=self._pause())
        except queue.Empty:
            self._retry_parked()
            return 0
        del self.outstanding[index]
        call = self.calls[index]
        try:
            self.answers[index] = (future.result(), time.monotonic() - call.started)
            done = 1
        except grpc.RpcError as exc:
            self._failed(call, replica, exc)
            self._send_or_park(call)
            done = 0
        self._retry_parked()
        return done

    def _failed(self, call: _Call, replica: _Replica, exc: grpc.RpcError) -> None:
        """Raise if the failure is final, else note it (`_release` has already marked the replica down)."""
        description = _describe(self.method, replica.address, exc)
        if exc.code() not in _RETRYABLE:
            raise SimulatorError(description) from None
        call.last_error = description
        if call.attempts >= self.client.max_attempts:
            raise SimulatorError(
                f"{self.method} call still failing after {call.attempts} attempt(s) over "
                f"{len(self.client.addresses)} replica(s); last: {description}"
            )

    def _pause(self) -> float | None:
        """How long to wait for a finished attempt before looking at parked calls again (None: no need to)."""
        pauses = []
        if self.waiting:
            pauses.append(max(self.waiting[0][0] - time.monotonic(), 0.0))
        if self.blocked and not self.outstanding:
            pauses.append(_BUSY_POLL_S)  # the slots are held by other threads' calls: no completion will wake us
        return min(pauses) if pauses else None

    def _retry_parked(self) -> None:
        while self.blocked:
            call = self.calls[self.blocked.popleft()]
            outcome = self._dispatch(call)
            if outcome is _Outcome.BUSY:
                self.blocked.appendleft(call.index)  # keep its place: first blocked, first sent
                break
            if outcome is _Outcome.DOWN:
                self._wait(call)
        now = time.monotonic()
        while self.waiting and self.waiting[0][0] <= now:
            _, index = heapq.heappop(self.waiting)
            self._send_or_park(self.calls[index])

    def _send_or_park(self, call: _Call) -> None:
        outcome = self._dispatch(call)
        if outcome is _Outcome.BUSY:
            self.blocked.append(call.index)
        elif outcome is _Outcome.DOWN:
            self._wait(call)

    def _wait(self, call: _Call) -> None:
        """No replica is up: look again after a growing pause (the health watcher is asked to check right away)."""
        self.client._watcher.wake()
        now = time.monotonic()
        pause = min(_WAIT_BACKOFF_S[0] * 2**call.waits, _WAIT_BACKOFF_S[1], call.deadline - now)
        call.waits += 1
        heapq.heappush(self.waiting, (now + pause, call.index))

    def _dispatch(self, call: _Call) -> _Outcome:
        """Send `call` to the least-loaded live replica; raise once its deadline has passed."""
        now = time.monotonic()
        if now >= call.deadline:
            raise SimulatorError(self.client._no_replica_message(self.method, call))
        replica, any_up = self.client._acquire(call.tried)
        if replica is None:
            return _Outcome.BUSY if any_up else _Outcome.DOWN
        call.attempts += 1
        call.tried.add(replica.index)
        timeout = min(self.client.attempt_timeout_s, call.deadline - now)
        stub_method = getattr(replica.stub, self.method)
        future = stub_method.future(call.request, timeout=timeout, metadata=self.client._metadata)
        self.outstanding[call.index] = future
        finished, release = self.finished, self.client._release
        future.add_done_callback(lambda done: release(replica, call.index, done, finished))
        return _Outcome.SENT


class _Outcome(enum.Enum):
    SENT = "sent"
    BUSY = "busy"  # replicas are up, but every one is at the in-flight limit
    DOWN = "down"  # no replica is up


class _HealthWatcher:
    """Asks every replica's health service every `interval_s`; a SERVING answer brings a down replica back.

    An answer only counts if its check started after the replica was last marked down, so an old SERVING
    cannot undo a failure seen a moment ago.
    """

    def __init__(self, replicas: list[_Replica], lock: threading.Lock, interval_s: float, metadata) -> None:
        self._replicas = replicas
        self._lock = lock
        self._interval_s = interval_s
        self._metadata = metadata
        self._stopped = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator-health", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Check now instead of at the next tick (a caller has no replica to go to)."""
        self._woken.set()

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()

    def join(self) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        timeout, replicas = max(self._interval_s, 1.0), self._replicas
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                checks = [r.health.Check.future(request, timeout=timeout, metadata=self._metadata) for r in replicas]
            except ValueError:  # a channel closed under us: the client is closing
                if self._stopped.is_set():
                    return
                raise
            for replica, check in zip(replicas, checks, strict=True):
                self._apply(replica, check, started)
            self._woken.wait(max(self._interval_s - (time.monotonic() - started), 0.0))
            self._woken.clear()

    def _apply(self, replica: _Replica, check: grpc.Future, started: float) -> None:
        try:
            status = check.result().status
        except grpc.RpcError as exc:
            if self._stopped.is_set():
                return
            up, reason = False, f"health check: {exc.code().name}: {exc.details()}"
        else:
            up = status == health_pb2.HealthCheckResponse.SERVING
            reason = "" if up else f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        with self._lock:
            if up and started <= replica.down_at:
                return
            if not up and replica.up:
                replica.down_at = time.monotonic()
            replica.up, replica.reason = up, reason


def least_loaded(replicas: Sequence[_Replica], tried: set[int], turn: int, limit: int | None = None) -> _Replica | None:
    """The live replica with the fewest calls in flight (below `limit`), preferring ones this call has not tried.

    None when no live replica has room. Ties rotate with `turn`, so an idle farm still spreads a batch instead of
    loading the first replica first.
    """
    live = [r for r in replicas if r.up and (limit is None or r.inflight < limit)]
    if not live:
        return None
    candidates = [r for r in live if r.index not in tried] or live
    size = len(replicas)
    return min(candidates, key=lambda r: (r.inflight, (r.index - turn) % size))


def _new_replica(index: int, address: str, credentials: grpc.ChannelCredentials | None, options: list) -> _Replica:
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    return _Replica(index, address, channel, pb_grpc.SimulatorServiceStub(channel), health_pb2_grpc.HealthStub(channel))


def _channel_credentials(root_cert: bytes | str | Path | None) -> grpc.ChannelCredentials | None:
    if root_cert is None:
        return None
    if isinstance(root_cert, bytes):
        return grpc.ssl_channel_credentials(root_certificates=root_cert)
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(root_cert).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read the simulator's TLS root certificate {root_cert}: {exc}") from exc


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
