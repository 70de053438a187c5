"""Command line of a simulator replica.

    python -m simulator serve --host 127.0.0.1 --port 0 --world-seed 0 --top-k 3 \
        [--ready-file PATH] [--metrics-port N] [--name NAME]

With --ready-file the replica writes {"address": "host:port", "pid": N} there (atomically) once it
serves, which is what the run controller waits for; SIGTERM or SIGINT stops it gracefully (exit 0).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("simulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="MTR simulator (ToolMaker + ToolActor).")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve one replica over gRPC until SIGTERM/SIGINT.")
    serve.add_argument("--host", default="127.0.0.1", help="Bind address (loopback unless --allow-remote).")
    serve.add_argument("--port", type=int, default=0, help="gRPC port; 0 picks a free one (see --ready-file).")
    serve.add_argument("--allow-remote", action="store_true", help="Allow binding a non-loopback address.")
    serve.add_argument("--world-seed", type=int, default=0, help="Seed of the embedded world used as the corpus.")
    serve.add_argument("--top-k", type=int, default=3, help="Pages a search observation returns.")
    serve.add_argument("--max-argument-chars", type=int, default=2000, help="Longer arguments get an error.")
    serve.add_argument("--max-text-chars", type=int, default=2000, help="Page text longer than this is cut.")
    serve.add_argument("--cache-size", type=int, default=100_000, help="Identical calls remembered (LRU).")
    serve.add_argument("--ready-file", type=Path, help="Write {address, pid} JSON here once serving.")
    serve.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port; 0 turns it off.")
    serve.add_argument("--name", help="Replica name reported in responses (default host:port).")
    serve.add_argument("--grace-s", type=float, default=5.0, help="Seconds in-flight calls get at shutdown.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not _is_loopback(args.host):
        parser.error(f"--host {args.host} is not a loopback address; pass --allow-remote to expose the simulator")
    for flag, value in (("--top-k", args.top_k), ("--max-argument-chars", args.max_argument_chars)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    import asyncio

    return asyncio.run(_serve(args))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from mtr.world import generate_world
    from simulator.grounded import GroundedActor
    from simulator.metrics import SimulatorMetrics
    from simulator.server import create_server
    from simulator.toolmaker import ToolMaker

    world = generate_world(args.world_seed)
    actor = GroundedActor(world.documents, top_k=args.top_k, max_text_chars=args.max_text_chars)
    metrics = SimulatorMetrics()
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    server, port = await create_server(
        f"{host}:{args.port}",
        actor,
        ToolMaker(),
        replica=args.name,
        max_argument_chars=args.max_argument_chars,
        cache_size=args.cache_size,
        metrics=metrics,
    )
    address = f"{host}:{port}"
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.ready_file:
        _write_ready_file(args.ready_file, address)
    log.info(
        "simulator %s serving on %s (world seed %d, %d pages, metrics port %s)",
        args.name or address,
        address,
        args.world_seed,
        actor.corpus_size,
        args.metrics_port or "off",
    )
    await stop.wait()
    log.info("simulator %s stopping (grace %.1fs)", args.name or address, args.grace_s)
    await server.stop(args.grace_s)
    if args.ready_file:
        args.ready_file.unlink(missing_ok=True)
    return 0


def _write_ready_file(path: Path, address: str) -> None:
    """Write then rename, so a watcher never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}))
    os.replace(tmp, path)
