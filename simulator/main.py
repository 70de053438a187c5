"""Command line of the simulator: one replica, or a supervised farm of them.

    python -m simulator serve --host 127.0.0.1 --port 0 --world-seed 0 --top-k 3 \\
        [--replicas N] [--ready-file PATH] [--metrics-port N] [--name NAME] \\
        [--cache-file PATH] [--auth-token TOKEN] [--tls-cert PEM --tls-key PEM] [--allow-remote]

One replica writes {"address": "host:port", "pid": N} to --ready-file (atomically) once it serves, plus
"metrics_address" when it serves Prometheus metrics (so `--metrics-port 0` is discoverable). With
--replicas N > 1 this process supervises N replica processes (see simulator/farm.py) and its ready file lists
them all. SIGTERM or SIGINT stops everything gracefully (exit 0). `mtr simulator serve ...` is the same command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from simulator.files import write_json_atomically
from simulator.security import is_loopback as _is_loopback
from simulator.security import resolve_token

log = logging.getLogger("simulator")


def build_parser(prog: str = "python -m simulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="MTR simulator (ToolMaker + ToolActor). To train a ToolActor model for `--actor model`, run "
        "`mtr simulator train --help` (it needs the learner, which this package does not start).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve replicas over gRPC until SIGTERM/SIGINT.")
    serve.add_argument("--replicas", type=int, default=1, help="Replica processes to start and supervise.")
    serve.add_argument("--host", default="127.0.0.1", help="Bind address (loopback unless --allow-remote).")
    serve.add_argument(
        "--port", type=int, default=0, help="gRPC port (replica i of a farm: port+i); 0 picks free ones."
    )
    serve.add_argument("--allow-remote", action="store_true", help="Allow binding a non-loopback address.")
    serve.add_argument("--world-seed", type=int, default=0, help="Seed of the embedded world used as the corpus.")
    serve.add_argument("--top-k", type=int, default=3, help="Pages a search observation returns.")
    serve.add_argument("--max-argument-chars", type=int, default=2000, help="Longer arguments get an error.")
    serve.add_argument("--max-text-chars", type=int, default=2000, help="Page text longer than this is cut.")
    serve.add_argument("--cache-size", type=int, default=100_000, help="Identical calls remembered (LRU); 0 disables.")
    serve.add_argument(
        "--cache-file", type=Path, help="msgpack file the call cache is loaded from and saved to (farm: a shard each)."
    )
    serve.add_argument("--cache-save-interval-s", type=float, default=60.0, help="Seconds between cache saves.")
    serve.add_argument("--cache-preload", type=Path, action="append", default=[], help=argparse.SUPPRESS)
    serve.add_argument("--ready-file", type=Path, help="Write the address(es) and pid as JSON here once serving.")
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port (replica i of a farm: port+i); 0 picks a free one (one replica), omit: off.",
    )
    serve.add_argument("--name", help="Replica name reported in responses (default host:port; a farm adds -i).")
    serve.add_argument(
        "--actor-threads", type=int, default=0, help="Worker threads for calls (a backend waiting on I/O); 0 = inline."
    )
    serve.add_argument("--grace-s", type=float, default=5.0, help="Seconds in-flight calls get at shutdown.")
    serve.add_argument(
        "--auth-token",
        help="Require 'authorization: Bearer TOKEN' on calls (default: $MTR_SIMULATOR_TOKEN, which stays out of ps).",
    )
    serve.add_argument(
        "--tools",
        choices=("task", "minimal"),
        default="task",
        help="'task': utility library by task class + task-specific tools; 'minimal': search + open_page.",
    )
    serve.add_argument("--toolmaker", choices=("rules", "llm"), default="rules", help="Who designs task tools.")
    serve.add_argument(
        "--actor",
        choices=("grounded", "llm", "model"),
        default="grounded",
        help="Who answers tool calls: grounded (BM25 + computation), llm (an endpoint, grounded pages in its prompt), "
        "model (a trained ToolActor checkpoint in a vLLM engine here, from its weights alone).",
    )
    serve.add_argument("--actor-model", help="--actor model: the ToolActor checkpoint (`mtr simulator train`).")
    serve.add_argument("--actor-max-tokens", type=int, default=384, help="--actor model: token cap per observation.")
    serve.add_argument("--actor-dtype", default="auto", help="--actor model: engine dtype (auto: bf16 where native).")
    serve.add_argument("--actor-kv-cache-gib", type=int, default=1, help="--actor model: CPU KV cache (whole GiB).")
    serve.add_argument("--llm-url", help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) for llm backends.")
    serve.add_argument("--llm-model", help="Model name served at --llm-url.")
    serve.add_argument("--llm-api-key", help="API key of --llm-url (default: $OPENAI_API_KEY, else none).")
    serve.add_argument("--llm-timeout-s", type=float, default=30.0, help="Deadline of one LLM request.")
    serve.add_argument("--llm-max-tokens", type=int, default=512, help="Token cap of one LLM answer.")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS (needs --tls-key).")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert.")
    serve.add_argument("--exit-with-parent", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m simulator") -> int:
    """`prog`: how the help names the command (`mtr simulator` when the mtr CLI runs it)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check(parser, args)
    label = args.name or ("simulator-farm" if args.replicas > 1 else "simulator")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s {label} %(levelname)s %(name)s: %(message)s"
    )
    if args.allow_remote and not resolve_token(args.auth_token):
        log.warning("serving a non-loopback address without an auth token: anyone who can reach it may call it")
    elif args.allow_remote and not args.tls_cert:
        log.warning("serving a non-loopback address without TLS: the auth token crosses the network in clear text")
    if args.replicas > 1:
        from simulator.farm import run_farm

        return run_farm(args)
    import asyncio

    from simulator.cache import CacheFileError

    try:
        return asyncio.run(_serve(args))
    except (OSError, ValueError, CacheFileError) as exc:  # bad port, unreadable TLS file or cache file
        log.error("cannot serve: %s", exc)
        return 1


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors, before anything starts: they exit 2 with a message naming the flag."""
    if not args.allow_remote and not _is_loopback(args.host):
        parser.error(f"--host {args.host} is not a loopback address; pass --allow-remote to expose the simulator")
    for flag, value in (
        ("--top-k", args.top_k),
        ("--max-argument-chars", args.max_argument_chars),
        ("--replicas", args.replicas),
    ):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    for flag, value in (("--cache-size", args.cache_size), ("--actor-threads", args.actor_threads)):
        if value < 0:
            parser.error(f"{flag} must be >= 0, got {value}")
    if "llm" in (args.toolmaker, args.actor) and not (args.llm_url and args.llm_model):
        parser.error("--toolmaker llm / --actor llm need --llm-url and --llm-model")
    if args.actor == "llm" and args.actor_threads == 0:
        args.actor_threads = 4  # LLM calls block; keep health checks and other calls flowing
    if args.actor == "model":
        if not args.actor_model:
            parser.error("--actor model needs --actor-model (a checkpoint written by `mtr simulator train`)")
        if not Path(args.actor_model, "config.json").is_file():
            parser.error(f"--actor-model {args.actor_model}: no config.json there; not a Hugging Face checkpoint")
        if args.actor_max_tokens < 1:
            parser.error(f"--actor-max-tokens must be >= 1, got {args.actor_max_tokens}")
        if args.actor_threads == 0:
            args.actor_threads = 64  # calls wait on the engine; concurrent ones become one generation batch
    if args.cache_save_interval_s <= 0:
        parser.error(f"--cache-save-interval-s must be > 0, got {args.cache_save_interval_s}")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port or 0)):
        if port < 0 or (port and port + args.replicas - 1 > 65535):
            parser.error(f"{flag} {port} leaves no room for {args.replicas} replica(s) below 65536")


async def build_server(args: argparse.Namespace, address: str):
    """The replica's world, backends, metrics and gRPC server on `address`, as `serve` and a Ray-placed replica
    both start it; returns (metrics, (server, port))."""
    import asyncio

    import bm25s  # noqa: F401  (it sets its own logger to DEBUG when imported; quieted before indexing)

    from mtr.world import generate_world
    from simulator.metrics import SimulatorMetrics
    from simulator.security import server_credentials
    from simulator.server import create_server

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    credentials = server_credentials(args.tls_cert, args.tls_key) if args.tls_cert else None
    # Built off the event loop: a model actor starts a vLLM engine, which must not find a running loop.
    toolmaker, actor = await asyncio.to_thread(_backends, args, generate_world(args.world_seed).documents)
    metrics = SimulatorMetrics()
    started = await create_server(
        address,
        actor,
        toolmaker,
        replica=args.name,
        max_argument_chars=args.max_argument_chars,
        cache_size=args.cache_size,
        metrics=metrics,
        auth_token=resolve_token(args.auth_token),
        credentials=credentials,
        actor_threads=args.actor_threads,
    )
    return metrics, started


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    metrics, (server, port) = await build_server(args, f"{host}:{args.port}")
    address = f"{host}:{port}"
    # Loading is synchronous on the loop that serves calls, so no call can see a half-loaded cache.
    try:
        cache_file = _load_cache(args, server.handler.cache)
    except ValueError:
        await server.stop(0)
        raise
    metrics_address = None
    if args.metrics_port is not None:
        try:
            metrics_address = f"{host}:{metrics.serve(args.metrics_port, args.host)}"
        except OSError:
            await server.stop(0)  # stopped on its own loop: no "Event loop is closed" traceback after the message
            raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    background = [asyncio.create_task(_save_periodically(cache_file, args.cache_save_interval_s))] if cache_file else []
    if args.exit_with_parent:
        background.append(asyncio.create_task(_watch_parent(args.exit_with_parent, stop)))
    if args.ready_file:
        _write_ready_file(args.ready_file, address, metrics_address)
    log.info(
        "serving on %s%s%s (world seed %d, %d pages, metrics on %s)",
        address,
        " with TLS" if args.tls_cert else "",
        " with token auth" if resolve_token(args.auth_token) else "",
        args.world_seed,
        server.handler.actor.corpus_size,
        metrics_address or "off",
    )
    await stop.wait()
    log.info("stopping (grace %.1fs)", args.grace_s)
    for task in background:
        task.cancel()
    await server.stop(args.grace_s)
    if cache_file:
        written = cache_file.save()
        log.info("call cache: %s entries saved to %s", "no new" if written is None else written, cache_file.path)
    if args.ready_file:
        args.ready_file.unlink(missing_ok=True)
    return 0


def _backends(args: argparse.Namespace, documents):
    """ToolMaker and actor chosen by the flags; LLM backends always fall back to the rule-based/grounded ones."""
    from simulator.grounded import GroundedActor
    from simulator.library import MINIMAL_LIBRARY
    from simulator.toolmaker import ToolMaker

    client = None
    if "llm" in (args.toolmaker, args.actor):
        from simulator.llm_client import LLMClient

        api_key = args.llm_api_key or os.environ.get("OPENAI_API_KEY")
        client = LLMClient(
            args.llm_url, args.llm_model, api_key=api_key, timeout_s=args.llm_timeout_s, max_tokens=args.llm_max_tokens
        )
    designer = None
    if args.toolmaker == "llm":
        from simulator.llm_toolmaker import LLMToolDesigner

        designer = LLMToolDesigner(client)
    toolmaker = ToolMaker(MINIMAL_LIBRARY if args.tools == "minimal" else None, designer=designer)
    if args.actor == "model":
        return toolmaker, _model_actor(args, toolmaker)
    grounded = GroundedActor(documents, top_k=args.top_k, max_text_chars=args.max_text_chars, tools=toolmaker)
    if args.actor == "llm":
        from simulator.llm_actor import LLMActor

        return toolmaker, LLMActor(client, grounded, tools=toolmaker)
    return toolmaker, grounded


def _model_actor(args: argparse.Namespace, toolmaker):
    """A ToolActor checkpoint in this replica's own vLLM engine; no corpus, no endpoint."""
    from mtr.hardware import concrete_dtype
    from simulator.model_actor import ModelActor, VLLMObservationGenerator

    generator = VLLMObservationGenerator(
        args.actor_model,
        max_tokens=args.actor_max_tokens,
        dtype=concrete_dtype(args.actor_dtype),
        kv_cache_gib=args.actor_kv_cache_gib,
        seed=args.world_seed,
    )
    return ModelActor(generator, toolmaker)


def _load_cache(args: argparse.Namespace, cache):
    if not args.cache_file:
        return None
    from simulator.cache import CallCacheFile

    cache_file = CallCacheFile(cache, args.cache_file, args.cache_preload)
    loaded = cache_file.load()
    log.info("call cache: %d entries loaded (%d kept) from %s", loaded, len(cache), args.cache_file)
    return cache_file


async def _save_periodically(cache_file, interval_s: float) -> None:
    """Save now and then, so a replica that is killed (not stopped) loses at most one interval of answers."""
    import asyncio

    while True:
        await asyncio.sleep(interval_s)
        entries = cache_file.snapshot()
        if entries is not None:
            try:
                await asyncio.to_thread(cache_file.write, entries)
            except OSError as exc:
                log.error("call cache: saving to %s failed (will retry): %s", cache_file.path, exc)


async def _watch_parent(parent_pid: int, stop) -> None:
    """A farm replica stops when its supervisor is gone (even if it was killed and could not tell us)."""
    import asyncio

    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("supervisor %d is gone; stopping", parent_pid)
    stop.set()


def _write_ready_file(path: Path, address: str, metrics_address: str | None = None) -> None:
    document = {"address": address, "pid": os.getpid()}
    if metrics_address:
        document["metrics_address"] = metrics_address
    write_json_atomically(path, document)
