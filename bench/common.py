"""Shared parts of the Stage-2 benchmarks: where the CPU went during a measured window, and writing results.

Every benchmark shares this machine's cores with whatever else runs, so each measured window records the
cores used by the benchmark's own process tree (the driver, Ray and its actors, the simulator farm, vLLM's
engine processes), the cores used by every other process, the heaviest of those by name, and the load
average. A reader can then tell a slow stack from a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True)
class OtherProcess:
    name: str
    cores: float


@dataclass
class CpuWindow:
    """What the cores did during one measured window (filled in when the window closes)."""

    seconds: float = 0.0
    own_cores: float = 0.0
    other_cores: float = 0.0
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    busiest_others: list[OtherProcess] = field(default_factory=list)


def _cpu_snapshot() -> tuple[dict[int, tuple[str, float]], set[int]]:
    """CPU seconds (user + system) of every live process by pid, and the pids of this process tree."""
    import psutil

    times: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        cpu = process.info["cpu_times"]
        if cpu is not None:
            times[process.pid] = (_short_command(process.info), cpu.user + cpu.system)
    me = psutil.Process()
    own = {me.pid, *(child.pid for child in me.children(recursive=True))}
    return times, own


def _machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (the first line of /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _short_command(info: dict) -> str:
    """`python -m pytest`, `ray::ServiceHost`: enough to tell what ran, without directories."""
    words = [Path(word).name for word in (info.get("cmdline") or [])[:3]]
    if not words or words[0].startswith("ray::"):
        return info.get("name") or "?"
    return " ".join(words)


@contextmanager
def cpu_window() -> Iterator[CpuWindow]:
    """Measure the cores used by this process tree and by everything else while the block runs.

    A process counts as ours if it belongs to this process tree at the start or at the end of the window.
    Everything else is the machine's busy time (/proc/stat) minus ours, so processes that ended inside the
    window count there, ours included (e.g. a stopped engine's last moments). Reaped-children CPU times are
    left out on purpose: when init reaps an orphan it inherits the orphan's whole lifetime of CPU.
    """
    window = CpuWindow()
    before, own_before = _cpu_snapshot()
    busy_before, start = _machine_busy_s(), time.perf_counter()
    try:
        yield window
    finally:
        window.seconds = time.perf_counter() - start
        busy = _machine_busy_s() - busy_before
        after, own_after = _cpu_snapshot()
        own = own_before | own_after
        deltas = {pid: (name, cpu - before.get(pid, (name, 0.0))[1]) for pid, (name, cpu) in after.items()}
        seconds = max(window.seconds, 1e-9)
        window.own_cores = round(sum(d for pid, (_, d) in deltas.items() if pid in own) / seconds, 2)
        others = [(name, d) for pid, (name, d) in deltas.items() if pid not in own]
        window.other_cores = round(max(busy / seconds - window.own_cores, 0.0), 2)
        window.busiest_others = [
            OtherProcess(name, round(d / seconds, 2)) for name, d in sorted(others, key=lambda o: -o[1])[:3] if d > 0
        ]
        window.load_average = tuple(round(x, 2) for x in os.getloadavg())


def machine(precision: str) -> dict:
    """The machine as a results file records it: CPU model and capability (AVX2 / AVX512 / AMX), cores, the
    stack's versions and the precision the figures were computed in, so no two machines are compared blindly."""
    from mtr.hardware import describe_machine

    return {
        **describe_machine(),
        "cpus": os.cpu_count(),
        "precision": precision,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def bench_dtype(value: str) -> str:
    """A benchmark's --dtype with `auto` resolved as a run resolves it (argparse `type=`)."""
    from mtr.hardware import concrete_dtype

    if value not in ("auto", "bfloat16", "float32"):
        raise ValueError(value)
    return concrete_dtype(value)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(value: float, base: float) -> float:
    """value / base, or NaN when the base is not positive (kept as a number so the JSON stays typed)."""
    return value / base if base > 0 else float("nan")


def describe_load(own_cores: float, other_cores: float, load_average: float, busiest: list[OtherProcess]) -> str:
    """One sentence on how busy the machine was, for the caption under a results table."""
    others = ", ".join(f"{p.name} {p.cores:.2f}" for p in busiest) or "none"
    return (
        f"this benchmark's processes used {own_cores:.2f} cores and other processes {other_cores:.2f} "
        f"(busiest: {others}), load average {load_average:.2f}"
    )


def write_results(name: str, document: dict, markdown: str, out_dir: Path) -> Path:
    """Write `<name>.json` and `<name>.md` into `out_dir`; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    return path


RESULT_PREFIX = "RESULT "


def print_result(result: dict) -> None:
    """How a measurement run in its own process hands its figures back (see `run_measurement`)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def add_measurement_arguments(parser) -> None:
    """The hidden flags `run_measurement` passes to the fresh process: measure once, on this resolved model."""
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)


def run_measurement(module: str, arguments: list[str], env: dict[str, str], what: str) -> dict:
    """Run `python -m <module> <arguments>` in a fresh process with `env` added, and return the dict its
    `print_result` printed last. A fresh process because what is measured (instruction set, thread binding,
    a vLLM engine's cores) is fixed when torch or the engine starts."""
    command = [sys.executable, "-m", module, *arguments]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def run_mtr(*argv: str) -> float:
    """One `mtr` command in its own process (alone on the machine, as benchmarks want); returns its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mtr.cli", *argv], check=True)
    return time.perf_counter() - start


def question_em(eval_traces: Path) -> dict[str, dict[str, float]]:
    """stage -> task id -> EM, from one-row-per-question eval trace files (GRPO's eval.jsonl, mtr eval's)."""
    by_stage: dict[str, dict[str, float]] = {}
    for line in eval_traces.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_stage.setdefault(row["stage"], {})[row["task_id"]] = float(row["exact_match"])
    return by_stage
