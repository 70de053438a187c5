"""Run a `grpc.aio` server on its own event-loop thread, for processes whose main thread does other work.

Rollout and learner hosts live inside Ray actors whose methods are synchronous; the gRPC server must keep
answering (health checks, status) while an engine call blocks, so it gets a loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


class BackgroundServer:
    """Starts `create(address)` -> (server, port) on a private loop; `address` is where it listens."""

    def __init__(self, create: Callable[[str], Awaitable[tuple[object, int]]], host: str = "127.0.0.1") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-server", daemon=True)
        self._thread.start()
        self._server, port = asyncio.run_coroutine_threadsafe(create(f"{host}:0"), self._loop).result(timeout=60)
        self.address = f"{host}:{port}"

    def stop(self, grace: float = 1.0) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(timeout=grace + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def add_health(server, service_names: list[str]):
    """Register the standard grpc.health.v1 service reporting SERVING for "" and each named service."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *service_names]:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer
