"""What a replica refuses is counted and said clearly: bad tokens, malformed and oversized requests in
`mtr_simulator_calls_total`; a bad TLS pair and a taken metrics port named, with no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import pytest

from mtr.grpcutil import BackgroundServer
from mtr.task import Document
from mtr.v1 import simulator_service_pb2 as pb
from mtr.v1 import simulator_service_pb2_grpc as pb_grpc
from simulator.grounded import GroundedActor
from simulator.metrics import SimulatorMetrics
from simulator.security import server_credentials
from simulator.server import create_server
from simulator.toolmaker import ToolMaker

pytestmark = pytest.mark.integration


def _refused(metrics: SimulatorMetrics, status: str) -> float:
    return metrics.registry.get_sample_value("mtr_simulator_calls_total", {"tool": "(refused)", "status": status}) or 0


def test_refused_calls_reach_the_calls_counter():
    metrics = SimulatorMetrics()
    actor = GroundedActor((Document("Alba", "Alba is a town."),))
    server = BackgroundServer(
        lambda address: create_server(
            address, actor, ToolMaker(), replica="r", metrics=metrics, auth_token="s3cret", max_batch_calls=2
        )
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.SimulatorServiceStub(channel)
            good = (("authorization", "Bearer s3cret"),)
            call = pb.CallToolRequest(task_id="t", tool_name="search", arguments_json='{"query": "Alba"}')
            with pytest.raises(grpc.RpcError) as caught:
                stub.CallTool(call, metadata=(("authorization", "Bearer nope"),), timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError):
                stub.CallTool(pb.CallToolRequest(task_id="t"), metadata=good, timeout=5)
            with pytest.raises(grpc.RpcError):
                stub.CallTools(pb.CallToolsRequest(calls=[call] * 3), metadata=good, timeout=5)
            assert stub.CallTool(call, metadata=good, timeout=5).status == pb.CALL_STATUS_OK
    finally:
        server.stop()
    assert _refused(metrics, "unauthenticated") == 1
    assert _refused(metrics, "invalid_request") == 1 + 3


def test_a_bad_tls_pair_is_named_as_such(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    key.write_text("junk")
    with pytest.raises(ValueError, match="are not a usable PEM pair"):
        server_credentials(cert, key)


def test_a_taken_metrics_port_is_named_and_nothing_else_is_printed(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "simulator", "serve", "--port", "0", "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr
