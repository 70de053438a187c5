"""Throughput and latency of the simulator farm on loopback: `python -m bench.simulator_bench`.

For 1, 2 and 4 replicas (`python -m simulator serve --replicas N`), cached and uncached, and for both wire
paths of the client (`--rpc`: "batched" sends each replica's share of a `call_many` as one CallTools request,
"unary" one CallTool per call), load-generator processes (multiprocessing; the client of the rollout workers,
`SimulatorClient.call_many` in batches) send `search` calls for a bounded time and count. Cached = a small
fixed set of calls that every replica already answered; uncached = every call's arguments are unique (across
runs too), so each one is validated, retrieved with BM25, checked against the output schema and inserted into
the cache. Latency is per call, as the caller sees it: the round trip of the request that carried it.
Results go to bench/results/simulator.json and, as a markdown table, bench/results/simulator.md.

The load generators share the machine's cores with the replicas, and so does anything else that runs. So
every run also records where the CPU went during its measured window: cores used by the replicas, by the
load generators, and by everything else on the machine (from /proc/stat), next to the load average.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import machine

RESULTS_DIR = Path(__file__).parent / "results"
MODES = ("cached", "uncached")
RPCS = ("batched", "unary")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class LoadSpec:
    """What one load-generator process does: warm up until `start_at` (epoch seconds), then measure."""

    addresses: tuple[str, ...]
    mode: str
    rpc: str
    generator: int
    batch: int
    start_at: float
    duration_s: float
    max_calls: int


@dataclass(frozen=True)
class LoadReport:
    calls: int
    errors: int
    elapsed_s: float
    cpu_s: float
    latencies_s: list[float]


@dataclass(frozen=True)
class RunResult:
    rpc: str
    replicas: int
    mode: str
    calls: int
    errors: int
    seconds: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    replica_cores: float
    generator_cores: float
    other_cores: float
    load_average: float
    generators: int
    batch: int


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    results = []
    for replicas in args.replicas:
        with _Farm(replicas, args.cache_size) as farm:
            for mode in args.modes:
                for rpc in args.rpc:
                    result = _run(farm, replicas, mode, rpc, args)
                    print(_row(result), flush=True)
                    results.append(result)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine("n/a (no model: the grounded ToolActor)"),
        "settings": _settings(args),
        "runs": [asdict(r) for r in results],
    }
    (args.out_dir / "simulator.json").write_text(json.dumps(document, indent=2) + "\n")
    table = markdown_table(results) + "\n" + _caption(args, results)
    (args.out_dir / "simulator.md").write_text(table)
    print(table)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=_int_list, default=[1, 2, 4], help="Comma-separated farm sizes.")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="cached,uncached")
    parser.add_argument(
        "--rpc",
        choices=[*RPCS, "both"],
        default="both",
        help="Client wire path: one CallTools per replica and batch, one CallTool per call, or both side by side.",
    )
    parser.add_argument("--generators", type=int, default=2, help="Load-generator processes.")
    parser.add_argument("--batch", type=int, default=8, help="Calls per call_many (in flight per generator).")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="Unmeasured load before each measurement.")
    parser.add_argument("--duration-s", type=float, default=5.0, help="Measured seconds per run (upper bound).")
    parser.add_argument("--max-calls", type=int, default=100_000, help="Measured calls per generator (upper bound).")
    parser.add_argument("--cache-size", type=int, default=100_000, help="Each replica's call cache.")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    args.rpc = list(RPCS) if args.rpc == "both" else [args.rpc]
    return args


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


class _Farm:
    """`python -m simulator serve --replicas N` as a subprocess, reaped on exit; knows its processes' pids."""

    def __init__(self, replicas: int, cache_size: int) -> None:
        self.replicas = replicas
        self.cache_size = cache_size
        self.addresses: tuple[str, ...] = ()
        self.pids: list[int] = []

    def __enter__(self) -> _Farm:
        self._dir = tempfile.TemporaryDirectory(prefix="simulator-bench-")
        ready = Path(self._dir.name) / "ready.json"
        command = [sys.executable, "-m", "simulator", "serve", "--replicas", str(self.replicas)]
        command += ["--cache-size", str(self.cache_size), "--ready-file", str(ready)]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"simulator farm of {self.replicas} did not start (exit {self._process.returncode})")
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        self.addresses = tuple(info.get("addresses") or [info["address"]])
        self.pids = [self._process.pid, *(replica["pid"] for replica in info.get("replicas", []))]
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._dir.cleanup()


def _run(farm: _Farm, replicas: int, mode: str, rpc: str, args: argparse.Namespace) -> RunResult:
    """Start the generators, let them warm up, and account for every core during their measured window."""
    context = multiprocessing.get_context("spawn")
    # Generators start (imports, world) and warm up until start_at; the CPU window opens then.
    start_at = time.time() + 3.0 + args.warmup_s
    specs = [
        LoadSpec(farm.addresses, mode, rpc, g, args.batch, start_at, args.duration_s, args.max_calls)
        for g in range(args.generators)
    ]
    with context.Pool(len(specs)) as pool:
        pending = pool.map_async(_generate_load, specs)
        time.sleep(max(start_at - time.time(), 0.0))
        farm_cpu, machine_busy, window_start = _process_cpu(farm.pids), _machine_busy_s(), time.monotonic()
        time.sleep(args.duration_s)
        farm_cpu = _process_cpu(farm.pids) - farm_cpu
        machine_busy = _machine_busy_s() - machine_busy
        window = time.monotonic() - window_start
        load_average = os.getloadavg()[0]
        reports = pending.get(timeout=args.duration_s + 120)
    latencies = sorted(latency for report in reports for latency in report.latencies_s)
    calls = sum(report.calls for report in reports)
    seconds = max(report.elapsed_s for report in reports)
    generator_cpu = sum(report.cpu_s for report in reports)
    return RunResult(
        rpc=rpc,
        replicas=replicas,
        mode=mode,
        calls=calls,
        errors=sum(report.errors for report in reports),
        seconds=round(seconds, 3),
        calls_per_s=round(calls / seconds, 1),
        p50_ms=round(_percentile(latencies, 0.50) * 1000, 3),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 3),
        replica_cores=round(farm_cpu / window, 2),
        generator_cores=round(generator_cpu / seconds, 2),
        other_cores=round(max(machine_busy - farm_cpu - generator_cpu, 0.0) / window, 2),
        load_average=round(load_average, 2),
        generators=args.generators,
        batch=args.batch,
    )


def _generate_load(spec: LoadSpec) -> LoadReport:
    """One generator process: warm up until `start_at`, then send batches until the time or call budget is spent."""
    from mtr.simclient import SimulatorClient

    queries = _Queries(spec.mode, f"{spec.rpc}-{spec.generator}")
    with SimulatorClient(list(spec.addresses), timeout_s=30.0, rpc=spec.rpc) as client:
        client.wait_ready(30)
        while time.time() < spec.start_at:
            client.call_many(queries.next_batch(spec.batch))
        latencies: list[float] = []
        errors = 0
        cpu, start = time.process_time(), time.perf_counter()
        while time.perf_counter() - start < spec.duration_s and len(latencies) < spec.max_calls:
            results = client.call_many(queries.next_batch(spec.batch))
            latencies.extend(result.latency_s for result in results)
            errors += sum(not result.ok for result in results)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return LoadReport(len(latencies), errors, elapsed, cpu, latencies)


class _Queries:
    """Search calls over the embedded world's page titles: a fixed set (cached) or never the same twice.

    `generator` names the load generator and its run, so uncached calls of a later run on the same farm are new.
    """

    def __init__(self, mode: str, generator: str) -> None:
        from mtr.world import generate_world

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.generator = generator
        self.titles = [document.title for document in generate_world(0).documents]
        self.count = 0

    def next_batch(self, size: int) -> list:
        from mtr.simclient import ToolCallRequest

        calls = []
        for _ in range(size):
            n = self.count
            self.count += 1
            if self.mode == "cached":
                query = f"{self.titles[n % 32]} capital"
            else:  # the suffix makes the arguments unique; BM25 drops the unknown token, the work stays real
                query = f"{self.titles[n % len(self.titles)]} born {self.generator}x{n}"
            calls.append(ToolCallRequest(f"bench-{self.generator}", "search", json.dumps({"query": query})))
        return calls


def _process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (threads included)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def _machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (the first line of /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _CLOCK_TICKS


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


def markdown_table(results: list[RunResult]) -> str:
    """Calls/s, p50/p99, the speed-up over one replica (same path and mode) and over the unary path (same farm and
    mode), and where the cores went."""
    base = {(r.rpc, r.mode): r.calls_per_s for r in results if r.replicas == 1}
    unary = {(r.replicas, r.mode): r.calls_per_s for r in results if r.rpc == "unary"}
    lines = [
        "| rpc | replicas | mode | calls/s | vs 1 replica | vs unary | p50 ms | p99 ms | cores: replicas "
        "| cores: load gen | cores: other processes | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=_table_order):
        ratio = _ratio(r.calls_per_s, base.get((r.rpc, r.mode)))
        gain = _ratio(r.calls_per_s, unary.get((r.replicas, r.mode))) if r.rpc != "unary" else "-"
        lines.append(
            f"| {r.rpc} | {r.replicas} | {r.mode} | {r.calls_per_s:,.0f} | {ratio} | {gain} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {r.replica_cores:.2f} | {r.generator_cores:.2f} | {r.other_cores:.2f} | {r.errors} |"
        )
    return "\n".join(lines) + "\n"


def _table_order(r: RunResult) -> tuple:
    return (RPCS.index(r.rpc) if r.rpc in RPCS else 9, MODES.index(r.mode) if r.mode in MODES else 9, r.replicas)


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def _caption(args: argparse.Namespace, results: list[RunResult]) -> str:
    """Under the table: what was run and how busy the machine was, so the numbers can be judged."""
    others = sorted(r.other_cores for r in results)
    return (
        f"{os.cpu_count()} CPU cores shared by the replicas, {args.generators} load-generator processes "
        f"(`call_many` batches of {args.batch}, so {args.generators * args.batch} calls in flight) and everything "
        f"else running; {args.duration_s:.0f} s measured per row after {args.warmup_s:.0f} s of warm-up. A call's "
        f"latency is the round trip of the request that carried it (batched: its replica's share of the batch). Other "
        f"processes used {others[0]:.2f}-{others[-1]:.2f} cores during the runs (load average up to "
        f"{max(r.load_average for r in results):.1f}). `python -m bench.simulator_bench`\n"
    )


def _row(result: RunResult) -> str:
    return (
        f"{result.rpc:7s} {result.replicas} replica(s) {result.mode:8s} {result.calls_per_s:8.0f} calls/s  "
        f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  cores: replicas {result.replica_cores:.2f}, "
        f"load gen {result.generator_cores:.2f}, other {result.other_cores:.2f} (load avg {result.load_average:.2f})"
    )


def _settings(args: argparse.Namespace) -> dict:
    keys = ("rpc", "generators", "batch", "warmup_s", "duration_s", "max_calls", "cache_size")
    return {key: getattr(args, key) for key in keys}


if __name__ == "__main__":
    raise SystemExit(main())
