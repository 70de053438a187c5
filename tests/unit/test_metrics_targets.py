"""Discovery of a run's metrics endpoints: the /sd document, its file twin, and the services' own /metrics."""

from __future__ import annotations

import json
import urllib.request

import pytest

from controller.reports.metrics import ControllerMetrics
from controller.reports.metricstargets import TARGETS_FILE, MetricsTargets
from learner.metrics import LearnerMetrics
from rollout.metrics import RolloutMetrics
from simulator.metrics import SimulatorMetrics


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_the_controller_serves_metrics_and_a_discovery_document_listing_itself_and_the_services(tmp_path):
    targets = MetricsTargets.for_run(tmp_path / "run-1")
    metrics = ControllerMetrics()
    port = metrics.serve(0, targets=targets)
    try:
        targets.add("rollout", "rollout-0", "127.0.0.1:1001")
        targets.add("simulator", "replica-0", "127.0.0.1:1002")
        targets.add("simulator", "replica-1", "127.0.0.1:1003")
        content_type, body = _get(f"http://127.0.0.1:{port}/sd")
        assert content_type == "application/json"
        document = json.loads(body)
        assert {group["targets"][0]: group["labels"]["service"] for group in document} == {
            f"127.0.0.1:{port}": "controller",
            "127.0.0.1:1001": "rollout-0",
            "127.0.0.1:1002": "replica-0",
            "127.0.0.1:1003": "replica-1",
        }
        assert all(group["labels"]["run"] == "run-1" for group in document)
        assert json.loads((tmp_path / "run-1" / TARGETS_FILE).read_text()) == document
        _, exposition = _get(f"http://127.0.0.1:{port}/metrics")
        assert "mtr_simulator_replicas 2.0" in exposition  # what the replicas-missing alert compares with

        targets.remove("replica-1")  # a stopped service leaves both lists
        served = {group["targets"][0] for group in json.loads(_get(f"http://127.0.0.1:{port}/sd")[1])}
        written = {group["targets"][0] for group in json.loads((tmp_path / "run-1" / TARGETS_FILE).read_text())}
        assert served == written and len(served) == 3 and "127.0.0.1:1003" not in served
    finally:
        metrics.close()


@pytest.mark.parametrize(("role", "address"), [("trainer", "127.0.0.1:1"), ("rollout", "localhost")])
def test_a_target_needs_a_known_role_and_a_host_port(role, address):
    targets = MetricsTargets("run")
    with pytest.raises(ValueError, match="metrics target 'x'"):
        targets.add(role, "x", address)
    assert targets.document() == []


def test_series_exist_at_zero_before_the_first_call_or_step_and_move_after():
    simulator = SimulatorMetrics()
    simulator.declare_tools(["search", "open_page"])
    assert simulator.registry.get_sample_value("mtr_simulator_call_seconds_count", {"tool": "search"}) == 0
    simulator.observe_call("search", "ok", 0.001)
    assert simulator.registry.get_sample_value("mtr_simulator_calls_total", {"tool": "search", "status": "ok"}) == 1

    rollout = RolloutMetrics("rollout-1")
    port = rollout.serve(0)
    try:
        _, before = _get(f"http://127.0.0.1:{port}/metrics")
        assert 'mtr_rollout_tokens_total{worker="rollout-1"} 0.0' in before
        rollout.observe_generation(tokens=120, traces=8, seconds=2.0)
        rollout.observe_weight_load(version=3, seconds=0.4, size_bytes=1000)
        _, after = _get(f"http://127.0.0.1:{port}/metrics")
        assert 'mtr_rollout_tokens_total{worker="rollout-1"} 120.0' in after
        assert 'mtr_rollout_policy_version{worker="rollout-1"} 3.0' in after
    finally:
        rollout.close()

    learner = LearnerMetrics()
    assert learner.registry.get_sample_value("mtr_learner_step_seconds_count", {"objective": "grpo"}) == 0
    learner.observe_step("grpo", seconds=1.5, tokens=300, loss=0.2, grad_norm=1.0, kl=0.01, version=4)
    assert learner.registry.get_sample_value("mtr_learner_step_seconds_count", {"objective": "grpo"}) == 1
    assert learner.registry.get_sample_value("mtr_learner_tokens_total", {"objective": "grpo"}) == 300
    assert learner.registry.get_sample_value("mtr_learner_kl") == 0.01
