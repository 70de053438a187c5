"""The simulator client's choices without a network: which replica gets a call, what it sends, what it refuses."""

from __future__ import annotations

import pytest

from mtr.simclient import SimulatorClient, ToolResult, _Call, _split
from mtr.simreplicas import Replica, least_loaded


def _replicas(*states: tuple[bool, int]) -> list[Replica]:
    return [Replica(i, f"r{i}", None, None, None, inflight=n, up=up) for i, (up, n) in enumerate(states)]


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
        ({"addresses": ["a:1"], "rpc": "streaming"}, "rpc"),
        ({"addresses": ["a:1"], "max_batch_calls": 0}, "max_batch_calls"),
        ({"addresses": ["a:1"], "balance_block_calls": 0}, "balance_block_calls"),
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


def _calls(count: int) -> list[_Call]:
    return [_Call(i, None, deadline=1e9, started=0.0) for i in range(count)]


def _quiet_client(max_inflight: int) -> SimulatorClient:
    """Two unreachable replicas believed up, with the health watcher stopped so that it cannot mark them down."""
    client = SimulatorClient(["127.0.0.1:1", "127.0.0.1:2"], max_inflight_per_replica=max_inflight)
    client._watcher.stop()
    client._watcher.join()
    for replica in client._replicas:
        replica.up = True
    return client


@pytest.mark.parametrize(("block", "shares"), [(1, {0: 7, 1: 3}), (3, {0: 7, 1: 3}), (16, {0: 10})])
def test_a_batch_is_shared_out_by_calls_in_flight_a_block_at_a_time(block, shares):
    with _quiet_client(max_inflight=100) as client:
        client._replicas[1].inflight = 4
        groups, left, any_up = client._acquire(_calls(10), block)
        assert {replica.index: len(group) for replica, group in groups.items()} == shares
        assert left == [] and any_up
        assert sum(r.inflight for r in client._replicas) == 14


def test_calls_beyond_the_in_flight_limit_are_left_over_in_order():
    with _quiet_client(max_inflight=3) as client:
        client._replicas[1].up = False
        calls = _calls(5)
        groups, left, any_up = client._acquire(calls, 2)
        assert [len(group) for group in groups.values()] == [3] and left == calls[3:] and any_up
        client._replicas[0].up = False
        assert client._acquire(calls, 2) == ({}, calls, False)


def test_a_block_goes_where_none_of_its_calls_has_been():
    with _quiet_client(max_inflight=100) as client:
        calls = _calls(4)
        calls[2].tried.add(0)
        groups, _, _ = client._acquire(calls, 4)
        assert {replica.index for replica in groups} == {1}


@pytest.mark.parametrize(
    ("count", "size", "parts"),
    [(1, 256, [1]), (256, 256, [256]), (300, 256, [150, 150]), (10, 4, [4, 3, 3]), (513, 256, [171, 171, 171])],
)
def test_a_replicas_share_is_split_into_even_requests(count, size, parts):
    calls = _calls(count)
    split = _split(calls, size)
    assert [len(part) for part in split] == parts
    assert [call for part in split for call in part] == calls
