"""The simulator client's view of its replicas: one channel and stub each, whether it is up and how loaded,
the health watcher that marks replicas down and up, and the least-loaded choice that balances calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mtr.v1 import simulator_service_pb2_grpc as pb_grpc

SERVICE_NAME = "mtr.v1.SimulatorService"


@dataclass(eq=False)
class Replica:
    index: int
    address: str
    channel: grpc.Channel
    stub: pb_grpc.SimulatorServiceStub
    health: health_pb2_grpc.HealthStub
    inflight: int = 0
    up: bool = True
    reason: str = ""
    down_at: float = float("-inf")


class HealthWatcher:
    """Asks every replica's health service every `interval_s`; a SERVING answer brings a down replica back.

    An answer only counts if its check started after the replica was last marked down, so an old SERVING
    cannot undo a failure seen a moment ago.

    It also keeps one health Watch open per channel, only so that the channel stays busy: gRPC's synchronous
    channel polls on a thread that lives while some call is in flight, so without a standing call every
    `call_many` after a pause starts a new thread, about a quarter of the client's CPU per round trip.
    """

    def __init__(self, replicas: list[Replica], lock: threading.Lock, interval_s: float, metadata) -> None:
        self._replicas = replicas
        self._lock = lock
        self._interval_s = interval_s
        self._metadata = metadata
        self._stopped = threading.Event()
        self._woken = threading.Event()
        self._streams: list[grpc.Future | None] = [None] * len(replicas)
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
        try:
            while not self._stopped.is_set():
                started = time.monotonic()
                try:
                    self._keep_streams_open(request)
                    checks = [
                        r.health.Check.future(request, timeout=timeout, metadata=self._metadata) for r in replicas
                    ]
                except ValueError:  # a channel closed under us: the client is closing
                    if self._stopped.is_set():
                        return
                    raise
                for replica, check in zip(replicas, checks, strict=True):
                    self._apply(replica, check, started)
                self._woken.wait(max(self._interval_s - (time.monotonic() - started), 0.0))
                self._woken.clear()
        finally:
            for stream in self._streams:  # an abandoned client's channels must be free to close
                if stream is not None:
                    stream.cancel()

    def _keep_streams_open(self, request: health_pb2.HealthCheckRequest) -> None:
        for index, replica in enumerate(self._replicas):
            stream = self._streams[index]
            if stream is None or stream.done():
                self._streams[index] = replica.health.Watch(request, metadata=self._metadata)

    def _apply(self, replica: Replica, check: grpc.Future, started: float) -> None:
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


def least_loaded(replicas: Sequence[Replica], tried: set[int], turn: int, limit: int | None = None) -> Replica | None:
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


def new_replica(index: int, address: str, credentials: grpc.ChannelCredentials | None, options: list) -> Replica:
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    return Replica(index, address, channel, pb_grpc.SimulatorServiceStub(channel), health_pb2_grpc.HealthStub(channel))


def channel_credentials(root_cert: bytes | str | Path | None) -> grpc.ChannelCredentials | None:
    if root_cert is None:
        return None
    if isinstance(root_cert, bytes):
        return grpc.ssl_channel_credentials(root_certificates=root_cert)
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(root_cert).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read the simulator's TLS root certificate {root_cert}: {exc}") from exc
