"""`mtr synth`: Stage 0. The AutoAgent writes traces for the train datasets through the simulator farm.

Starts the simulator farm (local processes; on a Ray cluster, when one is given by --ray-address or
RAY_ADDRESS, placed by `simulator.placement` 'auto' onto it, and an unreachable one fails within
`cluster.connect_timeout_s`; synthesis needs no model of ours), asks the ToolMaker for each
question's tools, lets the teacher (oracle or LLM) write a trace, keeps it only if it passes rejection
sampling, and records every decision in a ledger so a re-run picks up where the last one stopped.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from controller.cluster.services import Services
from controller.stages.autoagent import Rejected
from controller.stages.llmteacher import TeacherError, make_teacher
from controller.stages.taskdata import load_side, with_tools
from controller.stages.tracestore import TraceStore, TraceStoreError, task_key
from mtr.config import RunConfig
from mtr.datasets import DatasetError

log = logging.getLogger("mtr.synth")


def main(config: RunConfig, args: argparse.Namespace) -> int:
    try:
        check_output_is_not_input(Path(args.out), config.data.train)
        store = TraceStore(args.out)
        datasets = load_side(config, "train")
    except (TraceStoreError, DatasetError, OSError) as error:
        print(f"mtr synth: {error}", file=sys.stderr)
        return 2
    if not any(d.tasks for d in datasets):
        print(f"mtr synth: {no_questions(datasets)}", file=sys.stderr)
        return 2
    teacher = make_teacher(config.synth, config.seed)
    skipped = {d.name: len(d.skipped) for d in datasets}
    start = time.perf_counter()
    status = 0
    # SIGTERM (timeout, Kubernetes, Slurm) stops the run between two questions: the farm is stopped and the
    # report written. Only a flag is set in the handler; raising there could leave a lock of a client held.
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with Services(config, Path(args.out).parent / "logs").start(ray=False) as services:
            for dataset in datasets:
                synthesize_dataset(dataset, store, teacher, services.simulator, stop)
    except Stopped as stopped:
        print(f"mtr synth: {stopped}; what was decided so far is kept, run the same command to resume", file=sys.stderr)
        status = 128 + signal.SIGTERM
    except TeacherError as error:
        print(
            f"mtr synth: {error}\nwhat was decided so far is kept; run the same command again to resume",
            file=sys.stderr,
        )
        status = 1
    finally:
        report = store.write_report(skipped, time.perf_counter() - start, teacher.name)
    print_report(report)
    if status == 0 and not any(stats["accepted"] for stats in report["datasets"].values()):
        print(
            "mtr synth: no trace was accepted (see the rejection reasons above); nothing to train on", file=sys.stderr
        )
        return 1
    return status


class Stopped(RuntimeError):
    """SIGTERM arrived; raised between two questions."""


def no_questions(datasets) -> str:
    """Why a synth has nothing to do: each dataset's spec, its skipped rows and the first reason."""
    parts = []
    for d in datasets:
        first = f"; first: {d.skipped[0]}" if d.skipped else ""
        parts.append(f"{d.spec}: 0 questions, {len(d.skipped)} rows skipped{first}")
    return "no usable question in the train datasets (" + "; ".join(parts) + ")"


def check_output_is_not_input(out: Path, specs) -> None:
    """`--out` (and the ledger and report beside it) must not be a dataset file this command reads."""
    from mtr.datasets import parse_spec

    stem = out.name.removesuffix(".jsonl")
    written = {out, out.with_name(f"{stem}.ledger.jsonl"), out.with_name(f"{stem}.report.json")}
    written = {path.resolve() for path in written}
    for spec in specs:
        path = parse_spec(spec).path
        if path and parse_spec(spec).kind != "hf" and Path(path).resolve() in written:
            raise TraceStoreError(f"--out {out} would overwrite the dataset {spec!r} it reads; choose another --out")


def synthesize_dataset(dataset, store: TraceStore, teacher, simulator, stop: threading.Event | None = None) -> None:
    pending = [t for t in dataset.tasks if task_key(t) not in store.done]
    log.info(
        "%s: %d questions, %d already decided, %d to do",
        dataset.name,
        len(dataset.tasks),
        len(dataset.tasks) - len(pending),
        len(pending),
    )
    for task in tqdm(pending, desc=f"synth {dataset.name}", unit="q", disable=not pending):
        if stop is not None and stop.is_set():
            raise Stopped(f"stopped by SIGTERM during {dataset.name}")
        task = with_tools([task], simulator)[0]
        try:
            trace = teacher.trace(task, simulator)
        except Rejected as rejection:
            store.reject(dataset.name, task, rejection.reason, teacher.name)
        else:
            store.accept(dataset.name, task, trace, teacher.name)


def print_report(report: dict) -> None:
    print(f"\n{'dataset':<12} {'tried':>6} {'kept':>6} {'rate':>6}  rejected (reason: count)")
    for name, stats in report["datasets"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["rejected"].items()) or "-"
        print(f"{name:<12} {stats['attempted']:>6} {stats['accepted']:>6} {stats['acceptance_rate']:>6.2f}  {reasons}")
    skipped = {k: v for k, v in report["skipped_rows"].items() if v}
    if skipped:
        print(f"malformed rows skipped: {skipped}")
    print(f"\ntraces: {report['traces']} ({report['seconds']:.1f}s, teacher {report['teacher']})")
