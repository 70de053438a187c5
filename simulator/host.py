"""Entry point of a simulator replica inside a host process (a Ray actor placed by `mtr.placement`).

`start(serve_args, name, host)` serves the same replica as `mtr simulator serve` would with those arguments
(same parser, same checks, same backends), but on a background event loop so that the Ray actor stays
responsive; the run's farm (placement 'ray') launches one per replica. Arguments a host process owns are
set here: the port (a free one), the bind address (`host`) and the replica's name.
"""

from __future__ import annotations

import logging

from mtr.grpcutil import BackgroundServer
from simulator.security import is_loopback, resolve_token

log = logging.getLogger("simulator.host")


class SimulatorHost:
    def __init__(self, server: BackgroundServer, name: str, metrics_address: str | None) -> None:
        self.server = server
        self.name = name
        self.address = server.address
        self.metrics_address = metrics_address

    def stop(self) -> None:
        self.server.stop()


def start(serve_args: list[str], name: str, host: str = "127.0.0.1") -> SimulatorHost:
    """Serve one replica configured by `mtr simulator serve` flags (`serve_args`) on `host` (port chosen freely)."""
    # The command's own parser and checks, so a hosted replica accepts exactly what `serve` accepts.
    from simulator.main import _check as check_args
    from simulator.main import build_parser

    def refuse(message: str):
        raise ValueError(f"simulator replica {name}: {message}")

    parser = build_parser()
    parser.error = refuse  # a usage error must reach the caller, not exit the host process
    owned = ["--host", host.strip("[]"), "--port", "0", "--name", name]
    if not is_loopback(host.strip("[]")):
        owned.append("--allow-remote")
    try:
        args = parser.parse_args(["serve", *serve_args, *owned])
    except SystemExit:  # argparse has printed what it could not parse
        refuse(f"cannot parse the serve arguments {serve_args}")
    check_args(parser, args)
    if args.replicas != 1 or args.ready_file or args.cache_file:
        raise ValueError("a hosted replica is one process: no --replicas, --ready-file or --cache-file")
    if args.allow_remote and not resolve_token(args.auth_token):
        log.warning("%s serves %s without an auth token: anyone who can reach it may call it", name, host)
    components: dict = {}
    server = BackgroundServer(lambda address: _create(args, address, components), host=host)
    metrics_address = None
    if args.metrics_port is not None:
        metrics_address = f"{host}:{components['metrics'].serve(args.metrics_port, host.strip('[]'))}"
    log.info("%s serving on %s (metrics on %s)", name, server.address, metrics_address or "off")
    return SimulatorHost(server, name, metrics_address)


async def _create(args, address: str, components: dict):
    from simulator.main import build_server

    components["metrics"], started = await build_server(args, address)
    return started
