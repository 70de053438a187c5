"""Prometheus metrics of one rollout worker, served on its own HTTP port next to its gRPC server.

Every series carries one label, `worker` (the name the controller gave the worker, e.g. "rollout-0"), so
dashboards can tell workers apart and sum them; nothing per task or per request ends up in a label. The
children are created up front, so a worker that has not generated yet reports 0 rather than nothing (a
counter that appears only at its first increment hides the first increment from `rate`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mtr.metricsendpoint import MetricsEndpoint

# One GenerateGroups request: a few seconds for a small group on a tiny model, minutes for a large batch.
_GENERATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Fetching and loading one weights version in place: from tens of milliseconds (tiny model) to a minute.
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class RolloutMetrics(MetricsEndpoint):
    def __init__(self, worker: str, registry: CollectorRegistry | None = None) -> None:
        self.worker = worker
        super().__init__(registry)
        r = self.registry
        labels = ["worker"]
        tokens_help = "Policy tokens generated (loss-mask 1; prompts and observations excluded)."
        self.tokens = Counter("mtr_rollout_tokens", tokens_help, labels, registry=r).labels(worker=worker)
        self.traces = Counter("mtr_rollout_traces", "Traces generated.", labels, registry=r).labels(worker=worker)
        self.generation_seconds = Histogram(
            "mtr_rollout_generation_seconds",
            "Wall time of one GenerateGroups request on the engine (every sequence of its groups).",
            labels,
            buckets=_GENERATION_BUCKETS,
            registry=r,
        ).labels(worker=worker)
        self.weight_load_seconds = Histogram(
            "mtr_rollout_weight_load_seconds",
            "Time to fetch one published weights version and load it into the engine in place.",
            labels,
            buckets=_LOAD_BUCKETS,
            registry=r,
        ).labels(worker=worker)
        self.weight_load_bytes = Counter(
            "mtr_rollout_weight_load_bytes", "Bytes of weights loaded into the engine.", labels, registry=r
        ).labels(worker=worker)
        self.policy_version = Gauge(
            "mtr_rollout_policy_version", "Weights version the engine generates with.", labels, registry=r
        ).labels(worker=worker)
        self.inflight = Gauge(
            "mtr_rollout_inflight_sequences", "Sequences being generated on the engine now.", labels, registry=r
        ).labels(worker=worker)

    def observe_generation(self, tokens: int, traces: int, seconds: float) -> None:
        """Count one finished GenerateGroups request."""
        self.tokens.inc(tokens)
        self.traces.inc(traces)
        self.generation_seconds.observe(seconds)

    def observe_weight_load(self, version: int, seconds: float, size_bytes: int) -> None:
        """Count one weights version loaded in place; the engine now generates with `version`."""
        self.weight_load_seconds.observe(seconds)
        self.weight_load_bytes.inc(size_bytes)
        self.policy_version.set(version)
