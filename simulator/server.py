"""The gRPC face of a simulator replica: SimulatorService (MakeTools, CallTool) plus standard health.

Calls are answered inline on the event loop: a grounded call is a sub-millisecond BM25 lookup, cheaper
than handing it to a thread. A backend that waits on I/O (an LLM endpoint) gets worker threads instead
(`actor_threads`), so one slow call does not hold up the others or the health service. Policy mistakes
come back as OK responses carrying an error observation; only a malformed request (no task, no tool name)
is a gRPC error.
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
from simulator.grounded import DocumentSet
from simulator.metrics import SimulatorMetrics
from simulator.security import BearerTokenInterceptor
from simulator.toolmaker import ToolMaker

SERVICE_NAME = "mtr.v1.SimulatorService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_WIRE_STATUS = {status: pb.CallStatus.Value("CALL_STATUS_" + status.name) for status in CallStatus}


class SimulatorServicer(pb_grpc.SimulatorServiceServicer):
    """Answers inline on the event loop, or on `executor`'s threads when the backend waits on I/O."""

    def __init__(self, handler: ToolCallHandler, replica: str, executor: ThreadPoolExecutor | None = None) -> None:
        self.handler = handler
        self.replica = replica
        self.executor = executor

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
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"CallTool: the request for task {request.task_id!r} has no tool_name"
            )
        documents = DocumentSet.of([Document(d.title, d.text) for d in request.documents])
        outcome = await self._run(self.handler.call, request.tool_name, request.arguments_json, documents)
        return pb.CallToolResponse(
            observation_json=outcome.observation_json,
            status=_WIRE_STATUS[outcome.status],
            error=outcome.error,
            cached=outcome.cached,
            replica=self.replica,
        )


class SimulatorServer:
    """A started replica: the gRPC server, its call handler (cache, metrics) and its health status."""

    def __init__(
        self,
        server: grpc.aio.Server,
        handler: ToolCallHandler,
        health_servicer: health.aio.HealthServicer,
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
) -> tuple[SimulatorServer, int]:
    """Bind `address` ("host:port", port 0 picks a free one), start serving, return the server and bound port.

    The replica name defaults to "host:port" with the bound port; stop with `await server.stop(grace)`.
    With `auth_token` the service requires `authorization: Bearer <token>` (health stays open); with
    `credentials` (see simulator.security.server_credentials) it serves TLS only. `actor_threads` > 0 answers
    calls on that many worker threads, for a backend that waits on I/O (an LLM endpoint); 0 answers inline,
    which is cheaper for the grounded backend's sub-millisecond lookups.
    """
    if actor_threads < 0:
        raise ValueError(f"actor_threads must be >= 0, got {actor_threads}")
    interceptors = [BearerTokenInterceptor(auth_token)] if auth_token else []
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
    executor = ThreadPoolExecutor(actor_threads, thread_name_prefix="simulator-actor") if actor_threads else None
    pb_grpc.add_SimulatorServiceServicer_to_server(SimulatorServicer(handler, name, executor), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return SimulatorServer(server, handler, health_servicer, executor), port
