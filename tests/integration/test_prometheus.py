"""A real Prometheus scrapes a short real run through the deploy config's discovery, and its series move.

Prometheus (Debian's `prometheus` package; `make test` installs it) runs on loopback with the scrape job of
deploy/prometheus/prometheus.yml pointed at this run's controller and every interval at 1 s. The run is
`mtr run` on the tiny model taught to answer (see test_grpo_command): synthesis calls the simulator farm,
GRPO steps have reward variance. Everything is then checked through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from test_grpo_command import COMMON, answering_model  # noqa: F401 - the fixture is used by name

from controller.reports.metricstargets import MetricsTargets
from mtr.cli import main

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mtr.json"


def _require_prometheus() -> None:
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (Debian package `prometheus`; `make test` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_promtool_accepts_the_deploy_config_and_alert_rules():
    _require_prometheus()
    for command in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS_YML)]):
        result = subprocess.run(["promtool", *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(command)}:\n{result.stdout}{result.stderr}"


def scrape_config(controller_port: int) -> dict:
    """deploy/prometheus/prometheus.yml with its discovery aimed at `controller_port`, every interval 1 s."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS_YML)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mtr"]
    (sd,) = job["http_sd_configs"]
    url = urllib.parse.urlsplit(sd["url"])
    sd.update(url=url._replace(netloc=f"127.0.0.1:{controller_port}").geturl(), refresh_interval="1s")
    return config


class Prometheus:
    """A Prometheus server process on a free loopback port, with its HTTP API."""

    def __init__(self, workdir: Path, config: dict) -> None:
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout_s:.0f}s:\n{self.log.read_text()}")

    def api(self, path: str, **params) -> dict | list:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            reply = json.loads(response.read())
        assert reply["status"] == "success", f"{path} {params}: {reply}"
        return reply["data"]

    def series(self, query: str, start: float, end: float) -> list[list[float]]:
        """Each series of a range query (1 s steps) as its list of values."""
        data = self.api("query_range", query=query, start=start, end=end, step="1s")
        return [[float(value) for _, value in series["values"]] for series in data["result"]]

    def one_series(self, query: str, start: float, end: float) -> list[float]:
        found = self.series(query, start, end)
        assert len(found) == 1, f"{query}: expected one series over the run, got {len(found)}"
        return found[0]

    def scraped_since(self, service: str, since: float) -> bool:
        """Whether `service` was last scraped, and up, after the wall-clock time `since`."""
        for target in self.api("targets", state="active")["activeTargets"]:
            if target["labels"].get("service") == service and target["health"] == "up":
                return _unix_time(target["lastScrape"]) > since
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _unix_time(rfc3339: str) -> float:
    """Prometheus' lastScrape ("2026-01-02T03:04:05.123456789Z" or "...+01:00", nanoseconds) in epoch seconds;
    `datetime` alone does not parse nine fractional digits."""
    stamp, fraction, zone = re.fullmatch(r"([^.]+?)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339).groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(stamp + zone).timestamp() + float(fraction or 0)


def scrape_before_unlisting(monkeypatch, prometheus: Prometheus, timeout_s: float = 60.0) -> list[str]:
    """Hold each service's removal from the discovery list until Prometheus has scraped it once more.

    The tiny model's run lives seconds, so a rollout worker can stop between two scrapes and its final counts
    (or its whole life) go unseen: the test would then measure the scheduler, not the discovery. A real run's
    services live for hours and need no such wait. Returns the services that were not scraped in time (the
    run goes on regardless; the test asserts the list is empty).
    """
    remove = MetricsTargets.remove
    unscraped: list[str] = []

    def remove_after_a_scrape(targets: MetricsTargets, service: str) -> None:
        asked = time.time()
        deadline = time.monotonic() + timeout_s
        while not prometheus.scraped_since(service, asked):
            if time.monotonic() > deadline:
                unscraped.append(service)
                break
            time.sleep(0.2)
        remove(targets, service)

    monkeypatch.setattr(MetricsTargets, "remove", remove_after_a_scrape)
    return unscraped


class TargetWatcher(threading.Thread):
    """Polls /api/v1/targets while the run goes on: the services Prometheus found, and whether each was up."""

    def __init__(self, prometheus: Prometheus) -> None:
        super().__init__(daemon=True)
        self.prometheus = prometheus
        self.health: dict[str, set[str]] = {}  # service label -> health values seen
        self.roles: dict[str, str] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            try:
                targets = self.prometheus.api("targets", state="active")["activeTargets"]
            except OSError:
                continue
            for target in targets:
                service = target["labels"].get("service", target["scrapeUrl"])
                self.health.setdefault(service, set()).add(target["health"])
                self.roles[service] = target["labels"].get("role", "")

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path):
    _require_prometheus()
    controller_port = _free_port()
    server = Prometheus(tmp_path, scrape_config(controller_port))
    try:
        server.wait_ready()
        yield server, controller_port
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two vLLM engines and a DeepSpeed learner start on a 2-core machine
def test_prometheus_discovers_every_service_of_a_run_and_its_series_move(
    prometheus,
    answering_model,  # noqa: F811 - the fixture
    tmp_path,
    monkeypatch,
):
    server, controller_port = prometheus
    unscraped = scrape_before_unlisting(monkeypatch, server)
    runs = tmp_path / "runs"
    overrides = [*COMMON, "grpo.steps=3", "sft.steps=0", "simulator.replicas=2"]
    overrides += [f"model.path={answering_model}", f"runs_dir={runs}", f"cluster.metrics_port={controller_port}"]
    watcher = TargetWatcher(server)
    watcher.start()
    start = time.time()
    try:
        assert main(["run", *[arg for o in overrides for arg in ("--set", o)]]) == 0
        time.sleep(3)  # the controller still serves: let its last values be scraped
    finally:
        watcher.stop()
    end = time.time()

    # Discovery: every service of the run was found through the controller's /sd and scraped while it ran.
    expected = {"controller", "learner", "rollout-0", "rollout-1", "replica-0", "replica-1"}
    assert set(watcher.health) == expected, watcher.health
    assert unscraped == [], f"not scraped (up) within 60 s of stopping: {unscraped}"
    assert all("up" in seen for seen in watcher.health.values()), watcher.health
    assert {watcher.roles[s] for s in expected} == {"controller", "learner", "rollout", "simulator"}
    window = f"{math.ceil(end - start) + 5}s"
    was_up = server.api("query", query=f'max by (service) (max_over_time(up{{job="mtr"}}[{window}]))', time=end)
    assert {r["metric"]["service"]: float(r["value"][1]) for r in was_up["result"]} == dict.fromkeys(expected, 1.0)
    # A finished run leaves only the controller listed, so no dead-replica alert fires for it.
    (run_dir,) = runs.iterdir()
    remaining = json.loads((run_dir / "prometheus_targets.json").read_text())
    assert [group["labels"]["role"] for group in remaining] == ["controller"]

    # Throughput, reward and simulator latency exist and moved during the run. The counters start at 0 in
    # processes this run started, and every service was scraped once more as it stopped, so a positive
    # value is movement.
    tokens = server.one_series('sum(mtr_rollout_tokens_total{job="mtr"})', start, end)
    assert max(tokens) > 0, tokens
    calls = server.one_series('sum(mtr_simulator_call_seconds_count{job="mtr"})', start, end)
    assert max(calls) > 0, calls
    p99 = 'histogram_quantile(0.99, sum by (le) (rate(mtr_simulator_call_seconds_bucket{job="mtr"}[30s])))'
    latency = server.one_series(p99, start, end)
    assert any(0 < value < math.inf for value in latency), latency
    steps = server.one_series('sum(mtr_learner_step_seconds_count{job="mtr", objective="grpo"})', start, end)
    assert max(steps) > 0, steps
    rewards = server.series('mtr_reward{job="mtr"}', start, end)
    assert len(rewards) >= 2, "reward components are missing"
    assert any(len(set(values)) >= 2 for values in rewards), f"no reward component changed over the run: {rewards}"

    # Every dashboard query is valid PromQL to this Prometheus, and every alert rule evaluates without error.
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for query in queries:
        server.api("query", query=query.replace("$__rate_interval", "1m").replace("$run", ".*"), time=end)
    rules = [rule for group in server.api("rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {"MTRRunStalled", "MTRSimulatorErrorRate", "MTRSimulatorReplicaDown"}
    assert all(rule["health"] != "err" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
