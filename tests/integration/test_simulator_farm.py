"""The simulator as a farm on loopback: replicas, failover, health, restarts, auth, TLS and the persisted cache."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mtr.grpcutil import BackgroundServer
from mtr.simclient import SimulatorClient, SimulatorError, ToolCallRequest
from mtr.task import Document
from simulator.cache import load_call_cache
from simulator.grounded import GroundedActor
from simulator.security import server_credentials
from simulator.server import create_server
from simulator.toolmaker import ToolMaker

pytestmark = pytest.mark.integration

_DOCS = (
    Document("Alba Town", "Alba Town is a city. Its mayor is Bert Crane."),
    Document("Bert Crane", "Bert Crane was born in Dorvik in 1901."),
)
_SERVE = [sys.executable, "-m", "simulator", "serve", "--world-seed", "0", "--grace-s", "1"]


def _search(i: int) -> ToolCallRequest:
    return ToolCallRequest(f"t{i}", "search", json.dumps({"query": f"mayor Alba {i}"}))


def _replica(name: str, port: int = 0, **options) -> BackgroundServer:
    """An in-process replica; `port` pins it (to restart it where clients look for it)."""
    actor = GroundedActor(_DOCS)
    return BackgroundServer(lambda _: create_server(f"127.0.0.1:{port}", actor, ToolMaker(), replica=name, **options))


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        time.sleep(0.05)


@contextlib.contextmanager
def _serve(tmp_path: Path, *args: str, ready_name: str = "ready.json", env: dict | None = None):
    """`python -m simulator serve ...` in a subprocess; yields (process, ready-file JSON); always reaped."""
    ready = tmp_path / ready_name
    ready.unlink(missing_ok=True)
    process = subprocess.Popen(
        [*_SERVE, *args, "--ready-file", str(ready)], stderr=subprocess.PIPE, text=True, env=env or dict(os.environ)
    )
    try:
        _wait_until(lambda: ready.exists() or process.poll() is not None, 60, "simulator start")
        if process.poll() is not None:
            raise AssertionError(f"simulator exited with {process.returncode}: {process.stderr.read()}")
        yield process, json.loads(ready.read_text())
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie still answers kill(0); its /proc status says so
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    return False


def _free_consecutive_ports(count: int) -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no run of free ports found")


def test_replicas_2_serves_two_and_sigterm_stops_both(tmp_path):
    metrics_base = _free_consecutive_ports(2)
    with _serve(tmp_path, "--replicas", "2", "--metrics-port", str(metrics_base)) as (process, info):
        assert len(info["addresses"]) == 2 and len(set(info["addresses"])) == 2
        names = []
        for address in info["addresses"]:
            with SimulatorClient([address]) as client:
                client.wait_ready(20)
                result = client.call_tool("t", "search", '{"query": "capital"}')
            assert result.ok and result.observation["results"]
            names.append(result.replica)
        assert names == ["replica-0", "replica-1"]
        for index in range(2):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_base + index}/metrics", timeout=5) as response:
                text = response.read().decode()
            assert f'mtr_simulator_replica_info{{replica="replica-{index}"}} 1.0' in text
            assert 'mtr_simulator_calls_total{status="ok",tool="search"} 1.0' in text
        child_pids = [replica["pid"] for replica in info["replicas"]]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        _wait_until(lambda: not any(_alive(pid) for pid in child_pids), 10, "replica exit")
        assert not (tmp_path / "ready.json").exists()


def test_the_farm_restarts_a_dead_replica_on_the_same_port(tmp_path):
    with _serve(tmp_path, "--replicas", "2") as (_, info):
        victim = info["replicas"][1]
        os.kill(victim["pid"], signal.SIGKILL)

        def restarted() -> bool:
            now = json.loads((tmp_path / "ready.json").read_text())
            return now["replicas"][1]["pid"] != victim["pid"]

        _wait_until(restarted, 30, "replica restart")
        assert json.loads((tmp_path / "ready.json").read_text())["addresses"] == info["addresses"]
        with SimulatorClient([victim["address"]]) as client:
            client.wait_ready(20)
            assert client.call_tool("t", "search", '{"query": "capital"}').replica == "replica-1"


def test_killing_a_replica_mid_burst_loses_no_call(tmp_path):
    with (
        _serve(tmp_path, "--name", "a", ready_name="a.json") as (victim, a),
        _serve(tmp_path, "--name", "b", ready_name="b.json") as (_, b),
    ):
        # Batched (the default), in requests of at most 64 calls: the victim dies holding whole requests.
        with SimulatorClient([a["address"], b["address"]], timeout_s=30, max_batch_calls=64) as client:
            client.wait_ready(20)
            calls = [_search(i) for i in range(3000)]
            outcome: dict = {}
            burst = threading.Thread(target=lambda: outcome.update(results=client.call_many(calls)))
            burst.start()
            try:
                # Kill only once calls are in flight on the victim, so some of them die with it.
                _wait_until(lambda: client.replica_states()[0].inflight > 0, 20, "calls in flight on the victim")
                victim.kill()
            finally:
                burst.join(timeout=60)
            results = outcome["results"]
            assert len(results) == len(calls) and all(r.ok for r in results)
            assert all(isinstance(r.observation["results"], list) for r in results)
            assert {r.replica for r in results} <= {"a", "b"}  # "a" only for calls it answered before dying
            assert not client.replica_states()[0].up
            after = client.call_many([_search(i) for i in range(20)])
        assert {r.replica for r in after} == {"b"}


def test_a_replica_that_stops_answering_is_routed_around_and_rejoins(tmp_path):
    """SIGSTOP: the replica's port still accepts connections but nothing answers before any deadline (a hung or
    overloaded process). Its calls time out after one attempt's share of the deadline and are answered by the
    other replica; it is marked down until its health check passes again."""
    with (
        _serve(tmp_path, "--name", "a", ready_name="a.json") as (slow, a),
        _serve(tmp_path, "--name", "b", ready_name="b.json") as (_, b),
    ):
        with SimulatorClient(
            [a["address"], b["address"]], timeout_s=20, attempt_timeout_s=1.0, health_interval_s=0.2
        ) as client:
            client.wait_ready(20)
            os.kill(slow.pid, signal.SIGSTOP)
            try:
                results = client.call_many([_search(i) for i in range(200)])
                assert len(results) == 200 and all(r.ok for r in results)  # lost: none
                assert {r.replica for r in results} == {"b"}
                state = client.replica_states()[0]
                assert not state.up and "DEADLINE_EXCEEDED" in state.reason
                after = client.call_many([_search(i) for i in range(200, 220)])
                assert {r.replica for r in after} == {"b"} and all(r.ok for r in after)
            finally:
                os.kill(slow.pid, signal.SIGCONT)
            _wait_until(lambda: client.replica_states()[0].up, 15, "replica a healthy again")
            back = client.call_many([_search(i) for i in range(300, 340)])
            assert "a" in {r.replica for r in back} and all(r.ok for r in back)


def test_a_replica_that_comes_back_gets_calls_again():
    first, other = _replica("a"), _replica("b")
    port = int(first.address.rsplit(":", 1)[1])
    try:
        with SimulatorClient([first.address, other.address], timeout_s=10, health_interval_s=0.1) as client:
            client.wait_ready(10)
            first.stop(grace=0.1)
            _wait_until(lambda: not client.replica_states()[0].up, 10, "replica a marked down")
            assert {r.replica for r in client.call_many([_search(i) for i in range(10)])} == {"b"}
            first = _replica("a", port=port)
            _wait_until(lambda: client.replica_states()[0].up, 15, "replica a marked up again")
            assert "a" in {r.replica for r in client.call_many([_search(i) for i in range(20)])}
    finally:
        first.stop(grace=0.1)
        other.stop(grace=0.1)


def test_stopping_ends_open_health_watches_instead_of_waiting_out_the_grace():
    server = _replica("w")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            server.stop(grace=10)
            rest = [response.status for response in stream]
            # Ended by the server (OK), not cancelled when the grace ran out (what the stock Watch gets).
            assert stream.code() == grpc.StatusCode.OK
            assert set(rest) <= {health_pb2.HealthCheckResponse.NOT_SERVING}
    finally:
        server.stop(grace=0.1)


def test_batches_spread_over_replicas_and_repeats_are_sent_once():
    servers = [_replica("a"), _replica("b")]
    try:
        with SimulatorClient([s.address for s in servers]) as client:
            client.wait_ready(10)
            results = client.call_many([_search(i) for i in range(40)])
            assert {r.replica for r in results} <= {"a", "b"}  # "a" only for calls it answered before dying
            repeated = client.call_many([_search(100)] * 5)
            assert [r.cached for r in repeated] == [False, True, True, True, True]
            assert all(r.observation == repeated[0].observation for r in repeated)
            assert repeated[1].observation is not repeated[0].observation
            assert all(s.address for s in servers)
    finally:
        for server in servers:
            server.stop(grace=0.1)


class _SlowActor:
    """Answers "slow" only once released, everything else at once (a stand-in for an LLM endpoint)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, tool, arguments, documents):
        if arguments["query"] == "slow":
            self.release.wait(30)
        return {"results": [{"title": arguments["query"], "text": "."}]}


def test_with_actor_threads_a_slow_call_does_not_hold_up_the_others():
    actor = _SlowActor()
    server = BackgroundServer(lambda address: create_server(address, actor, ToolMaker(), actor_threads=2))
    try:
        with SimulatorClient([server.address], timeout_s=20) as client:
            slow: dict = {}
            call_slow = lambda: slow.update(result=client.call_tool("t", "search", '{"query": "slow"}'))  # noqa: E731
            waiting = threading.Thread(target=call_slow)
            waiting.start()
            _wait_until(lambda: client.replica_states()[0].inflight == 1, 10, "the slow call in flight")
            fast = client.call_tool("t", "search", '{"query": "fast"}')
            assert fast.observation["results"][0]["title"] == "fast" and "result" not in slow
            actor.release.set()
            waiting.join(timeout=20)
            batch = client.call_many([ToolCallRequest("t", "search", json.dumps({"query": q})) for q in "abc"])
        assert slow["result"].observation["results"][0]["title"] == "slow"
        assert [r.observation["results"][0]["title"] for r in batch] == ["a", "b", "c"]
    finally:
        actor.release.set()
        server.stop(grace=0.1)


def test_with_every_replica_down_the_error_names_them_all():
    dead = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead.append(f"127.0.0.1:{probe.getsockname()[1]}")
    with SimulatorClient(dead, timeout_s=1.0) as client:
        with pytest.raises(SimulatorError, match="no simulator replica answered") as error:
            client.call_many([_search(0)])
    assert all(address in str(error.value) for address in dead)


def test_a_token_is_required_and_accepted_and_health_stays_open(monkeypatch):
    monkeypatch.delenv("MTR_SIMULATOR_TOKEN", raising=False)
    server = _replica("secure", auth_token="s3cret")
    try:
        with SimulatorClient([server.address]) as anonymous:
            anonymous.wait_ready(10)  # health needs no token
            with pytest.raises(SimulatorError, match="UNAUTHENTICATED") as error:
                anonymous.call_many([_search(0)])
            assert "s3cret" not in str(error.value)
        with SimulatorClient([server.address], auth_token="wrong") as wrong, pytest.raises(SimulatorError):
            wrong.call_many([_search(0)])
        with SimulatorClient([server.address], auth_token="s3cret") as client:
            assert client.call_many([_search(0)])[0].ok
            assert client.call_tool("t", "browse", "{}").status == "unknown_tool"
        monkeypatch.setenv("MTR_SIMULATOR_TOKEN", "s3cret")
        with SimulatorClient([server.address]) as from_env:
            assert from_env.call_many([_search(1)])[0].ok
    finally:
        server.stop(grace=0.1)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls_with_a_token_works_and_plaintext_clients_are_turned_away(tmp_path):
    cert_file, key_file = _self_signed(tmp_path)
    credentials = server_credentials(cert_file, key_file)
    server = _replica("tls", auth_token="t0k", credentials=credentials)
    try:
        with SimulatorClient([server.address], auth_token="t0k", tls_root_cert=cert_file) as client:
            client.wait_ready(10)
            result = client.call_many([_search(0)])[0]
        assert result.ok and result.replica == "tls"
        with SimulatorClient([server.address], auth_token="t0k", timeout_s=1.0) as plaintext:
            with pytest.raises(SimulatorError, match=server.address):
                plaintext.call_many([_search(0)])
    finally:
        server.stop(grace=0.1)


def test_the_call_cache_file_survives_a_kill_and_a_restart(tmp_path):
    cache_file = tmp_path / "calls.msgpack"
    flags = ("--cache-file", str(cache_file), "--cache-save-interval-s", "0.2")
    first_call, second_call = _search(1), _search(2)
    with _serve(tmp_path, *flags) as (process, info):
        with SimulatorClient([info["address"]]) as client:
            original = client.call_many([first_call])[0]
        assert not original.cached
        _wait_until(lambda: cache_file.exists() and len(load_call_cache(cache_file)) == 1, 10, "periodic save")
        process.kill()  # no shutdown save: what the periodic save wrote must be enough
    with _serve(tmp_path, *flags) as (process, info):
        with SimulatorClient([info["address"]]) as client:
            again = client.call_many([first_call])[0]
            client.call_many([second_call])
        assert again.cached and again.observation == original.observation
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    assert len(load_call_cache(cache_file)) == 2  # the shutdown save caught the call made after the last tick


def test_farm_plan_gives_each_replica_its_port_metrics_port_and_cache_shard(tmp_path):
    from simulator.farm import plan_replicas, replica_command
    from simulator.main import build_parser

    cache = tmp_path / "calls.msgpack"
    args = build_parser().parse_args(
        ["serve", "--replicas", "3", "--port", "7000", "--metrics-port", "9100", "--cache-file", str(cache)]
        + ["--auth-token", "s3cret", "--name", "sim"]
    )
    plans = plan_replicas(args)
    assert [(p.name, p.port, p.metrics_port) for p in plans] == [
        ("sim-0", 7000, 9100),
        ("sim-1", 7001, 9101),
        ("sim-2", 7002, 9102),
    ]
    assert plans[1].cache_file == tmp_path / "calls.replica-1.msgpack"
    assert plans[1].cache_preload == (cache, tmp_path / "calls.replica-0.msgpack", tmp_path / "calls.replica-2.msgpack")
    command = replica_command(args, plans[1], tmp_path / "ready.json", 7001)
    assert "s3cret" not in " ".join(command)  # the token travels in the environment, out of `ps`
    assert command[command.index("--port") + 1] == "7001" and command[command.index("--replicas") + 1] == "1"


def test_port_zero_lets_every_replica_pick_and_metrics_stay_off(tmp_path):
    from simulator.farm import plan_replicas
    from simulator.main import build_parser

    plans = plan_replicas(build_parser().parse_args(["serve", "--replicas", "2"]))
    assert [(p.port, p.metrics_port, p.cache_file) for p in plans] == [(0, 0, None), (0, 0, None)]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--replicas", "0"], "--replicas"),
        (["--tls-cert", "c.pem"], "--tls-key"),
        (["--replicas", "4", "--port", "65534"], "--port"),
        (["--actor-threads", "-1"], "--actor-threads"),
    ],
)
def test_bad_farm_flags_are_usage_errors(capsys, argv, flag):
    from simulator.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
