"""Prometheus metrics of one simulator replica (served when `--metrics-port` is given; 0 picks a free port).

Each instance owns its registry, so several servers in one test process do not collide. Replicas are told
apart by their endpoint: every replica process serves its own `/metrics` (`serve --replicas N --metrics-port P`
gives replica i the port P+i), so Prometheus' `instance` label names the replica; `mtr_simulator_replica_info`
carries the replica's name for dashboards that want it. Keeping the name off the per-call series keeps their
cardinality low. `mtr_simulator_calls_total{status}` is also the error count: every status but "ok" is an
error observation, and "backend_error" is the one the simulator itself is to blame for (the others are the
policy's mistakes), which is what the error-rate alert watches.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class SimulatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.calls = Counter(
            "mtr_simulator_calls", "Tool calls answered, by tool and status.", ["tool", "status"], registry=registry
        )
        self.call_seconds = Histogram(
            "mtr_simulator_call_seconds",
            "Time to answer one tool call inside the replica.",
            ["tool"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.cache_hits = Counter("mtr_simulator_cache_hits", "Tool calls answered from the cache.", registry=registry)
        self.cache_misses = Counter(
            "mtr_simulator_cache_misses", "Well-formed tool calls the cache did not hold.", registry=registry
        )
        self.inflight = Gauge("mtr_simulator_inflight_calls", "Tool calls being answered now.", registry=registry)
        self.replica_info = Gauge(
            "mtr_simulator_replica_info",
            "Always 1; names the replica this endpoint belongs to.",
            ["replica"],
            registry=registry,
        )
        self.noise_share = Gauge(
            "mtr_simulator_noise_share",
            "Share of calls a model ToolActor answers with a noisy observation (simulator.noise schedule).",
            registry=registry,
        )
        # Resolving label values costs more than the increment itself; a replica sees a handful of combinations.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def set_replica(self, name: str) -> None:
        self.replica_info.labels(replica=name).set(1)

    def declare_tools(self, tools: Iterable[str]) -> None:
        """Create the series of tools known up front at 0: a series that first appears already counting hides
        its first calls from `rate` (a replica can answer a whole batch between two scrapes)."""
        for tool in tools:
            self.calls.labels(tool=tool, status="ok")
            self.call_seconds.labels(tool=tool)

    def observe_call(self, tool: str, status: str, seconds: float) -> None:
        """Count one answered call and its latency."""
        children = self._children.get((tool, status))
        if children is None:
            children = self.calls.labels(tool=tool, status=status), self.call_seconds.labels(tool=tool)
            self._children[(tool, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_refused(self, method: str, status: str = "unauthenticated", calls: int = 1) -> None:
        """Calls the replica refused or dropped before answering them (a bad token, a malformed or oversized
        request, a client that cancelled): counted under tool "(refused)" so the error-rate alert sees them."""
        self.calls.labels(tool="(refused)", status=status).inc(calls)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP on a background thread; port 0 picks a free port. Returns the bound port."""
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            raise OSError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from None
        return server.server_port
