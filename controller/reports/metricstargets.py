"""The run's Prometheus scrape targets, as a service-discovery document.

Every service of a run serves its own `/metrics` on a port it picked itself (port 0), so no static scrape
config can know them. The controller does: it starts them. It lists each one here (itself, every rollout
worker, the learner, every simulator replica) and publishes the list in Prometheus' service-discovery
format, a JSON list of `{"targets": ["host:port"], "labels": {...}}`, in two ways:

- over HTTP at `/sd` on the controller's metrics port (Prometheus `http_sd_configs`), and
- as `<run dir>/prometheus_targets.json`, rewritten atomically on every change (`file_sd_configs`).

Each target gets the labels `role` (controller | rollout | learner | simulator), `service` (its name in the
run, e.g. "rollout-1" or "replica-0") and `run` (the run directory's name). A service leaves the list when
it is stopped, so a finished run does not leave dead targets behind for the alerts to find.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

ROLES = ("controller", "rollout", "learner", "simulator")
TARGETS_FILE = "prometheus_targets.json"


@dataclass(frozen=True)
class MetricsTarget:
    role: str
    service: str  # unique within the run
    address: str  # host:port of the service's /metrics


class MetricsTargets:
    """Thread-safe: roles start concurrently (rollout workers in a thread pool) and `/sd` reads meanwhile."""

    def __init__(self, run: str, path: Path | None = None) -> None:
        self.run = run
        self.path = path
        self._targets: dict[str, MetricsTarget] = {}
        self._lock = threading.Lock()
        self._write()

    @classmethod
    def for_run(cls, run_dir: Path) -> MetricsTargets:
        """The targets of the run in `run_dir`, mirrored to `run_dir`/prometheus_targets.json."""
        return cls(run_dir.name, run_dir / TARGETS_FILE)

    def add(self, role: str, service: str, address: str) -> MetricsTarget:
        """List `service` (replacing an entry of the same name, e.g. a restarted replica)."""
        if role not in ROLES:
            raise ValueError(f"metrics target {service!r}: role must be one of {ROLES}, got {role!r}")
        if not address or ":" not in address:
            raise ValueError(f"metrics target {service!r}: address must be host:port, got {address!r}")
        target = MetricsTarget(role, service, address)
        with self._lock:
            self._targets[service] = target
            self._write()
        return target

    def remove(self, service: str) -> None:
        with self._lock:
            if self._targets.pop(service, None) is not None:
                self._write()

    def count(self, role: str) -> int:
        with self._lock:
            return sum(1 for t in self._targets.values() if t.role == role)

    def targets(self) -> list[MetricsTarget]:
        with self._lock:
            return list(self._targets.values())

    def document(self) -> list[dict]:
        """The service-discovery document: one target group per service, so each keeps its own labels."""
        with self._lock:
            return self._document()

    def _document(self) -> list[dict]:
        return [
            {"targets": [t.address], "labels": {"role": t.role, "service": t.service, "run": self.run}}
            for t in self._targets.values()
        ]

    def _write(self) -> None:
        """Write then rename (the caller holds the lock), so Prometheus never reads a half-written file."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._document(), indent=1))
        os.replace(tmp, self.path)
