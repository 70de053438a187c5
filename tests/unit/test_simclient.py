"""The simulator client's choices without a network: which replica gets a call, what it sends, what it refuses."""

from __future__ import annotations

import pytest

from mtr.simclient import SimulatorClient, ToolResult, _Replica, least_loaded


def _replicas(*states: tuple[bool, int]) -> list[_Replica]:
    return [_Replica(i, f"r{i}", None, None, None, inflight=n, up=up) for i, (up, n) in enumerate(states)]


def test_least_outstanding_replica_wins():
    replicas = _replicas((True, 5), (True, 2), (True, 7))
    assert least_loaded(replicas, set(), turn=0).index == 1


def test_down_replicas_are_never_chosen_and_none_live_gives_none():
    assert least_loaded(_replicas((False, 0), (True, 9)), set(), turn=0).index == 1
    assert least_loaded(_replicas((False, 0), (False, 0)), set(), turn=0) is None


def test_a_retry_prefers_a_replica_it_has_not_tried_but_falls_back_to_one_it_has():
    replicas = _replicas((True, 0), (True, 3))
    assert least_loaded(replicas, {0}, turn=0).index == 1
    assert least_loaded(replicas, {0, 1}, turn=0).index == 0


def test_ties_rotate_so_an_idle_farm_spreads_a_batch():
    replicas = _replicas((True, 0), (True, 0), (True, 0))
    assert [least_loaded(replicas, set(), turn).index for turn in range(4)] == [0, 1, 2, 0]


def test_balancing_a_batch_by_outstanding_requests_spreads_it_evenly():
    replicas = _replicas((True, 0), (True, 4), (True, 0))
    for turn in range(10):
        least_loaded(replicas, set(), turn).inflight += 1
    assert sorted(r.inflight for r in replicas) == [4, 5, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"addresses": []}, "at least one"),
        ({"addresses": ["a:1"], "max_attempts": 0}, "max_attempts"),
        ({"addresses": ["a:1"], "timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatorClient(**kwargs)


def test_unreadable_tls_root_certificate_is_named(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match="nope.pem"):
        SimulatorClient(["127.0.0.1:1"], tls_root_cert=missing)


def test_token_comes_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("MTR_SIMULATOR_TOKEN", "from-env")
    with SimulatorClient(["127.0.0.1:1"]) as client:
        assert client._metadata == (("authorization", "Bearer from-env"),)
    with SimulatorClient(["127.0.0.1:1"], auth_token="") as client:
        assert client._metadata is None


def test_empty_batch_needs_no_replica():
    with SimulatorClient(["127.0.0.1:1"], timeout_s=0.5) as client:
        assert client.call_many([]) == []


def test_tool_result_keeps_its_positional_shape():
    result = ToolResult({"results": []}, "ok", "", False, "r0")
    assert result.ok and result.latency_s == 0.0
