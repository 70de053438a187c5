"""A local Ray start that times out is retried, and what the failed attempt spawned is killed.

`ray.init` is replaced here: the real failure (a forked child stuck before exec) cannot be provoked on demand.
The fake spawns a real child process per attempt, as Ray's half-started instance does, so the cleanup is
checked on real processes. The real start runs in every integration test that starts Ray.
"""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
import ray

from controller.cluster import raystart

TIMEOUT_MESSAGE = "The current node timed out during startup. This could happen because some of the raylet failed"


class FakeInit:
    """Fails the first `failures` calls with `error` after spawning a child; then succeeds."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[dict] = []
        self.spawned: list[subprocess.Popen] = []

    def __call__(self, **kwargs) -> None:
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            self.spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))
            raise self.error


@pytest.fixture
def bystander():
    """A child of this process that exists before the start: it must survive the cleanup."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def _install(monkeypatch, fake: FakeInit) -> list[int]:
    shutdowns: list[int] = []
    monkeypatch.setattr(ray, "init", fake)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    return shutdowns


def test_a_startup_timeout_is_retried_and_the_failed_attempt_cleaned_up(monkeypatch, bystander):
    fake = FakeInit(failures=1, error=Exception(TIMEOUT_MESSAGE))
    shutdowns = _install(monkeypatch, fake)

    raystart.start_local_ray(num_cpus=2, namespace="mtr")

    assert fake.calls == [{"num_cpus": 2, "namespace": "mtr", "include_dashboard": False}] * 2
    assert shutdowns == [1]
    (stuck,) = fake.spawned
    assert stuck.poll() is not None, "the failed attempt's process was left running"
    assert psutil.Process(bystander.pid).is_running() and bystander.poll() is None


def test_other_errors_are_not_retried(monkeypatch):
    fake = FakeInit(failures=1, error=ValueError("num_cpus must be positive"))
    _install(monkeypatch, fake)
    with pytest.raises(ValueError, match="num_cpus"):
        raystart.start_local_ray(num_cpus=-1, namespace="mtr")
    assert len(fake.calls) == 1
    fake.spawned[0].kill()
    fake.spawned[0].wait()


def test_the_last_timeout_is_raised_after_every_attempt(monkeypatch):
    fake = FakeInit(failures=raystart.ATTEMPTS, error=Exception(TIMEOUT_MESSAGE))
    _install(monkeypatch, fake)
    with pytest.raises(Exception, match="timed out during startup"):
        raystart.start_local_ray(num_cpus=2, namespace="mtr")
    assert len(fake.calls) == raystart.ATTEMPTS
    assert all(process.poll() is not None for process in fake.spawned)
