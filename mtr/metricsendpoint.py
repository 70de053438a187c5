"""One service's Prometheus registry served over HTTP, stoppable: shared by the rollout worker and the learner.

`prometheus_client.start_http_server` returns the server but gives no way to stop it from the metrics object;
a role host that is stopped and started again in one process (tests, a restarted worker) must free its port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


class MetricsEndpoint:
    """Base for a service's metrics: subclasses register their series in `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP on a background thread; port 0 picks a free port. Returns the bound port."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
