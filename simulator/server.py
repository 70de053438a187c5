"""The gRPC face of a simulator replica: SimulatorService (MakeTools, CallTool, CallTools) plus standard health.

Calls are answered inline on the event loop: a grounded call is a sub-millisecond BM25 lookup, cheaper
than handing it to a thread. A backend that waits on I/O (an LLM endpoint) gets worker threads instead
(`actor_threads`), so one slow call does not hold up the others or the health service. Policy mistakes
come back as OK responses carrying an error observation; only a malformed request (no task, no tool name)
is a gRPC error. CallTools answers a whole batch in one round trip, each call as CallTool would; a bad call
there (even one without a tool name) gets its own error observation, so one mistake never fails its batch.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mtr.task import Document, from_proto
from mtr.v1 import simulator_service_pb2 as pb
from mtr.v1 import simulator_service_pb2_grpc as pb_grpc
from simulator.calls import Actor, CallStatus, ToolCallHandler
from simulator.grounded import CORPUS, DocumentSet
from simulator.metrics import SimulatorMetrics
from simulator.security import BearerTokenInterceptor
from simulator.toolmaker import ToolMaker

SERVICE_NAME = "mtr.v1.SimulatorService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Calls per CallTools request: a batch answered inline holds the event loop (health included) for its duration.
MAX_BATCH_CALLS = 4096
_WIRE_STATUS = {status: pb.CallStatus.Value("CALL_STATUS_" + status.name) for status in CallStatus}


class SimulatorServicer(pb_grpc.SimulatorServiceServicer):
    """Answers inline on the event loop, or on `executor`'s threads when the backend waits on I/O."""

    def __init__(
        self,
        handler: ToolCallHandler,
        replica: str,
        executor: ThreadPoolExecutor | None = None,
        max_batch_calls: int = MAX_BATCH_CALLS,
    ) -> None:
        self.handler = handler
        self.replica = replica
        self.executor = executor
        self.max_batch_calls = max_batch_calls

    async def _run(self, function, *args):
        if self.executor is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def MakeTools(self, request: pb.MakeToolsRequest, context: grpc.aio.ServicerContext) -> pb.MakeToolsResponse:
        if not request.HasField("task"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MakeTools: the request has no task")
        try:
            task = from_proto(request.task)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"MakeTools: unusable task: {exc}")
        toolset = await self._run(self.handler.toolmaker.make_tools, task)
        return pb.MakeToolsResponse(
            tools_json=[json.dumps(spec.tool, ensure_ascii=False) for spec in toolset.tools],
            task_kind=toolset.task_kind,
        )

    async def CallTool(self, request: pb.CallToolRequest, context: grpc.aio.ServicerContext) -> pb.CallToolResponse:
        if not request.tool_name:
            self.handler.metrics.observe_refused("CallTool", "invalid_request")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"CallTool: the request for task {request.task_id!r} has no tool_name"
            )
        try:
            outcome = await self._run(self.handler.call, *_arguments(request))
        except asyncio.CancelledError:  # the client gave up (deadline, cancel): counted, so the error rate sees it
            self.handler.metrics.observe_refused("CallTool", "cancelled")
            raise
        return pb.CallToolResponse(
            observation_json=outcome.observation_json,
            status=_WIRE_STATUS[outcome.status],
            error=outcome.error,
            cached=outcome.cached,
            replica=self.replica,
        )

    async def CallTools(self, request: pb.CallToolsRequest, context: grpc.aio.ServicerContext) -> pb.CallToolsResponse:
        calls = request.calls
        if len(calls) > self.max_batch_calls:
            self.handler.metrics.observe_refused("CallTools", "invalid_request", len(calls))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"CallTools: {len(calls)} calls in one request, the limit is {self.max_batch_calls}; split the batch",
            )
        if self.executor is None:
            outcomes = self.handler.call_batch([_arguments(c) for c in calls])
        else:  # each call on a worker thread of its own: a slow one holds up its thread, not the batch's others
            loop = asyncio.get_running_loop()
            try:
                outcomes = await asyncio.gather(
                    *(loop.run_in_executor(self.executor, self.handler.call, *_arguments(c)) for c in calls)
                )
            except asyncio.CancelledError:
                self.handler.metrics.observe_refused("CallTools", "cancelled", len(calls))
                raise
        response = pb.CallToolsResponse()
        add, replica = response.results.add, self.replica
        for outcome in outcomes:
            add(
                observation_json=outcome.observation_json,
                status=_WIRE_STATUS[outcome.status],
                error=outcome.error,
                cached=outcome.cached,
                replica=replica,
            )
        return response

    async def SetNoise(self, request: pb.SetNoiseRequest, context: grpc.aio.ServicerContext) -> pb.SetNoiseResponse:
        share = request.share
        if not 0.0 <= share <= 1.0:  # NaN fails this too
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"SetNoise: share must be in [0, 1], got {share}")
        setter = getattr(self.handler.actor, "set_noise_share", None)
        if setter is None:
            if share > 0.0:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"SetNoise: replica {self.replica}'s actor has no noisy mode (only a model ToolActor has one)",
                )
        else:
            setter(share)
        self.handler.metrics.noise_share.set(share)
        return pb.SetNoiseResponse(share=share, replica=self.replica)


def _arguments(call: pb.CallToolRequest) -> tuple[str, str, DocumentSet]:
    return call.tool_name, call.arguments_json, _documents(call)


def _documents(call: pb.CallToolRequest) -> DocumentSet:
    return DocumentSet.of([Document(d.title, d.text) for d in call.documents]) if call.documents else CORPUS


class _HealthServicer(health.aio.HealthServicer):
    """The standard health service, except that Watch streams end once shutdown begins.

    Clients keep a Watch open for as long as they live (see mtr.simclient), and the stock Watch never ends, so
    `stop(grace)` would always wait out the whole grace period instead of just the calls in flight.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stopping = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait((watch, stopping), return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                watch.result()  # whatever ended the stream on its own (an error) is the RPC's outcome
        finally:
            watch.cancel()
            stopping.cancel()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._stopping.set()


class SimulatorServer:
    """A started replica: the gRPC server, its call handler (cache, metrics) and its health status."""

    def __init__(
        self,
        server: grpc.aio.Server,
        handler: ToolCallHandler,
        health_servicer: _HealthServicer,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.server = server
        self.handler = handler
        self._health = health_servicer
        self._executor = executor

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING first (health watchers move traffic away), then let in-flight calls finish."""
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def create_server(
    address: str,
    actor: Actor,
    toolmaker: ToolMaker,
    *,
    replica: str | None = None,
    max_argument_chars: int = 2000,
    cache_size: int = 100_000,
    metrics: SimulatorMetrics | None = None,
    auth_token: str | None = None,
    credentials: grpc.ServerCredentials | None = None,
    actor_threads: int = 0,
    max_batch_calls: int = MAX_BATCH_CALLS,
) -> tuple[SimulatorServer, int]:
    """Bind `address` ("host:port", port 0 picks a free one), start serving, return the server and bound port.

    The replica name defaults to "host:port" with the bound port; stop with `await server.stop(grace)`.
    With `auth_token` the service requires `authorization: Bearer <token>` (health stays open); with
    `credentials` (see simulator.security.server_credentials) it serves TLS only. `actor_threads` > 0 answers
    calls on that many worker threads, for a backend that waits on I/O (an LLM endpoint); 0 answers inline,
    which is cheaper for the grounded backend's sub-millisecond lookups. A CallTools request of more than
    `max_batch_calls` calls is refused with INVALID_ARGUMENT.
    """
    if actor_threads < 0:
        raise ValueError(f"actor_threads must be >= 0, got {actor_threads}")
    if max_batch_calls < 1:
        raise ValueError(f"max_batch_calls must be >= 1, got {max_batch_calls}")
    metrics = metrics if metrics is not None else SimulatorMetrics()
    interceptors = [BearerTokenInterceptor(auth_token, metrics.observe_refused)] if auth_token else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # gRPC shares ports by default; two replicas silently splitting one port would hide a config error.
            ("grpc.so_reuseport", 0),
        ],
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"simulator: cannot listen on {address} (in use, or not an address of this host)") from exc
    host = address.rsplit(":", 1)[0]
    handler = ToolCallHandler(
        actor, toolmaker, max_argument_chars=max_argument_chars, cache_size=cache_size, metrics=metrics
    )
    name = replica or f"{host}:{port}"
    handler.metrics.set_replica(name)
    handler.metrics.declare_tools(toolmaker.tool_names)
    executor = ThreadPoolExecutor(actor_threads, thread_name_prefix="simulator-actor") if actor_threads else None
    pb_grpc.add_SimulatorServiceServicer_to_server(SimulatorServicer(handler, name, executor, max_batch_calls), server)
    health_servicer = _HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return SimulatorServer(server, handler, health_servicer, executor), port
