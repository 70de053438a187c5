"""The controller's Prometheus metrics (design §6 names: `mtr_` prefix, base units), served over HTTP.

The controller exports what only it sees: reward by component, evaluation EM/F1 by dataset, the stage,
curriculum level, staleness, the end-to-end weight sync, and what the GRPO loop consumed. Each service
exports its own work under its own name (`mtr_rollout_*`, `mtr_learner_*`, `mtr_simulator_*`); the
controller's copies of the learner's step numbers are `mtr_train_*`, so that no name is exported twice
and a dashboard `sum` never counts a step twice.

Next to `/metrics` the same port serves `/sd`, the Prometheus service-discovery document listing every
service of the run (see controller.reports.metricstargets).
"""

from __future__ import annotations

import json
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from controller.reports.metricstargets import MetricsTargets

STAGES = ("synth", "eval", "sft", "grpo", "done")


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # What the GRPO loop consumed (rollout workers count everything they generate, evaluation included).
        self.rollout_tokens = Counter(
            "mtr_grpo_policy_tokens", "Policy tokens in the traces GRPO steps scored.", registry=r
        )
        self.rollout_sequences = Counter("mtr_grpo_traces", "Traces GRPO steps scored.", registry=r)
        self.precision = Gauge(
            "mtr_precision_info",
            "1 for the dtype the run computes in; labels say what was asked for and the capability seen.",
            ["dtype", "requested", "capability"],
            registry=r,
        )
        self.reward = Gauge("mtr_reward", "Mean reward component of the last GRPO step.", ["component"], registry=r)
        self.eval_em = Gauge("mtr_eval_exact_match", "Evaluation exact match.", ["dataset", "stage"], registry=r)
        self.eval_f1 = Gauge("mtr_eval_f1", "Evaluation token F1.", ["dataset", "stage"], registry=r)
        # The learner's step as TrainStep reported it to the controller (the learner exports mtr_learner_*).
        self.learner_step = Histogram(
            "mtr_train_step_seconds", "Learner step time as reported to the controller.", ["objective"], registry=r
        )
        self.learner_loss = Gauge("mtr_train_loss", "Loss of the controller's last step.", ["objective"], registry=r)
        self.sft_tokens = Counter("mtr_train_sft_tokens", "Tokens the controller's SFT steps trained on.", registry=r)
        self.grad_norm = Gauge("mtr_train_grad_norm", "Gradient norm of the last SFT step.", registry=r)
        self.kl = Gauge("mtr_train_kl", "Mean k3 KL to the reference policy in the last GRPO step.", registry=r)
        self.weight_sync = Histogram(
            "mtr_weight_sync_seconds",
            "Publish + load of a weights version, end to end (the slowest worker's load).",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.weight_sync_bytes = Counter(
            "mtr_weight_sync_bytes", "Bytes of weights moved to rollout workers (all workers).", registry=r
        )
        self.policy_version = Gauge("mtr_policy_version", "Weights version rollout workers generate with.", registry=r)
        self.groups_dropped = Counter(
            "mtr_grpo_groups_dropped", "GRPO groups without signal (reward std below grpo.min_reward_std).", registry=r
        )
        self.groups_drawn = Counter(
            "mtr_grpo_groups_drawn", "GRPO groups generated (dynamic-sampling refills included).", registry=r
        )
        self.groups_kept = Counter("mtr_grpo_groups_kept", "GRPO groups with signal, trained on.", registry=r)
        self.weights_changed = Gauge(
            "mtr_weights_changed_fraction",
            "Share of the served-dtype weight values the last published version changed (0: the update did not "
            "reach the policy the rollout serves).",
            registry=r,
        )
        self.staleness = Histogram(
            "mtr_policy_staleness_versions",
            "Policy versions a trace lags the learner when it is trained on.",
            registry=r,
            buckets=(0, 1, 2, 3, 4, 8),
        )
        self.stale_dropped = Counter(
            "mtr_grpo_stale_traces_dropped", "Traces older than grpo.max_staleness, not trained on.", registry=r
        )
        self.rollout_workers_lost = Counter(
            "mtr_rollout_workers_lost",
            "Rollout workers that died during the run (their groups were generated again on the others).",
            registry=r,
        )
        self.curriculum_level = Gauge("mtr_curriculum_level", "Hardest hop count GRPO samples now.", registry=r)
        self.stage = Gauge("mtr_stage_info", "1 for the stage the run is in.", ["stage"], registry=r)
        self.simulator_replicas = Gauge(
            "mtr_simulator_replicas", "Simulator replicas the run started and lists for discovery.", registry=r
        )
        self._server: WSGIServer | None = None

    def serve(self, port: int, address: str = "127.0.0.1", targets: MetricsTargets | None = None) -> int:
        """Serve /metrics (and /sd when `targets` is given) on a background thread; port 0 picks a free port,
        which is returned. The controller lists itself in `targets`."""
        metrics_app = make_wsgi_app(self.registry)
        discovery = targets if targets is not None else MetricsTargets(run="")

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/sd":
                body = json.dumps(discovery.document()).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            return metrics_app(environ, start_response)

        server_class = _ThreadingWSGIServerV6 if ":" in address else _ThreadingWSGIServer
        self._server = make_server(address, port, app, server_class, handler_class=_QuietHandler)
        threading.Thread(target=self._server.serve_forever, name="controller-metrics", daemon=True).start()
        bound = self._server.server_port
        if targets is not None:
            host = f"[{address}]" if ":" in address else address
            targets.add("controller", "controller", f"{host}:{bound}")
            self.simulator_replicas.set_function(lambda: targets.count("simulator"))
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set_stage(self, stage: str) -> None:
        for name in STAGES:
            self.stage.labels(stage=name).set(1.0 if name == stage else 0.0)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scrape never holds up /sd or another scraper."""

    daemon_threads = True


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class names it so
        """Scrapes every few seconds would flood the controller's log."""
