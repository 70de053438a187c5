"""Prometheus metrics of the learner, served by its host process on a port of its own.

The learner's host is the one place every step passes through (one in-process rank, or the driver of a
group of rank actors), so it serves the metrics for all ranks; the numbers are the group's (loss and grad
norm as the step reports them). `objective` ("sft" | "grpo") is the only per-step label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mtr.metricsendpoint import MetricsEndpoint

OBJECTIVES = ("sft", "grpo")
# One optimizer step: well under a second for a tiny model, minutes for a large batch on CPU.
_STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
_PUBLISH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class LearnerMetrics(MetricsEndpoint):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        by_objective = ["objective"]
        self.step_seconds = Histogram(
            "mtr_learner_step_seconds", "Time of one optimizer step.", by_objective, buckets=_STEP_BUCKETS, registry=r
        )
        self.tokens = Counter(
            "mtr_learner_tokens", "Tokens trained on (sequence lengths, padding excluded).", by_objective, registry=r
        )
        self.loss = Gauge("mtr_learner_loss", "Loss of the last step.", by_objective, registry=r)
        self.grad_norm = Gauge(
            "mtr_learner_grad_norm", "Gradient norm (before clipping) of the last step.", by_objective, registry=r
        )
        self.kl = Gauge("mtr_learner_kl", "Mean k3 KL to the reference policy in the last GRPO step.", registry=r)
        self.policy_version = Gauge("mtr_learner_policy_version", "Weights version of the learner.", registry=r)
        self.publish_seconds = Histogram(
            "mtr_learner_weight_publish_seconds",
            "Time to publish one weights version for rollout workers (collective weight sync: to stage it; "
            "the broadcast itself is in the controller's mtr_weight_sync_seconds).",
            buckets=_PUBLISH_BUCKETS,
            registry=r,
        )
        self.publish_bytes = Counter("mtr_learner_weight_publish_bytes", "Bytes of weights published.", registry=r)
        # Children up front: every series exists (at 0) from the start, so the first step shows in `increase`.
        for objective in OBJECTIVES:
            self.step_seconds.labels(objective=objective)
            self.tokens.labels(objective=objective)

    def observe_step(
        self, objective: str, seconds: float, tokens: int, loss: float, grad_norm: float, kl: float, version: int
    ) -> None:
        """Record one finished optimizer step of `objective` ("sft" or "grpo")."""
        if objective not in OBJECTIVES:
            raise ValueError(f"learner metrics: objective must be one of {OBJECTIVES}, got {objective!r}")
        self.step_seconds.labels(objective=objective).observe(seconds)
        self.tokens.labels(objective=objective).inc(tokens)
        self.loss.labels(objective=objective).set(loss)
        self.grad_norm.labels(objective=objective).set(grad_norm)
        if objective == "grpo":
            self.kl.set(kl)
        self.policy_version.set(version)

    def observe_publish(self, seconds: float, size_bytes: int) -> None:
        self.publish_seconds.observe(seconds)
        self.publish_bytes.inc(size_bytes)
