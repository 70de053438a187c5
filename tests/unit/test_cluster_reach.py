"""Joining a Ray cluster that is not there fails fast, naming the address as it was given."""

import socket
import time

import pytest

from controller.cluster.services import ClusterUnreachableError, check_reachable


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_head_is_an_error_naming_the_typed_address(scheme):
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(ClusterUnreachableError, match=f"Ray cluster at {address} .* unreachable within 2s"):
        check_reachable(address, 2.0)
    assert time.monotonic() - start < 10


def test_a_listening_head_and_auto_pass_and_nonsense_is_named():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}", 2.0)
    check_reachable("auto", 0.1)
    with pytest.raises(ClusterUnreachableError, match="'nohost' is not auto, HOST:PORT"):
        check_reachable("nohost", 1.0)
