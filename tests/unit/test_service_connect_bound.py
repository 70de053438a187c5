"""A rollout or learner service whose process is gone is reported within the client's connect bound, naming the
address and method, instead of the call waiting out its hour-long deadline for a connection."""

from __future__ import annotations

import socket

import grpc
import pytest

from mtr.serviceclients import LearnerClient, RolloutClient, ServiceError


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("client_class", [RolloutClient, LearnerClient])
def test_a_dead_service_fails_within_the_connect_bound_naming_it(client_class):
    address = f"127.0.0.1:{_closed_port()}"
    with client_class(address, timeout_s=3600, connect_timeout_s=0.5) as client:
        with pytest.raises(ServiceError, match=rf"GetStatus on {address} failed: UNAVAILABLE: no connection") as err:
            client.status()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
