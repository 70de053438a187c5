"""Benchmark (c): GRPO traces/s, synchronous vs asynchronous (rollout of step t+1 overlapping update t).

Both modes run the real Stage-2 path (simulator farm, K vLLM rollout workers on Ray, the DeepSpeed learner
over gRPC, weights through the Ray object store) from the same starting weights and the same questions;
each mode gets fresh roles, and engine start is excluded. Traces/s = traces trained on / loop wall time.

    python -m bench.grpo_mode_bench [--quick] [--model PATH] [--steps N]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, cpu_window, describe_load, machine, ratio, write_results
from controller.cluster.services import Services
from controller.reports.metrics import ControllerMetrics
from controller.reports.rundir import RunDirectory
from controller.stages.grpo import GRPOLoop
from controller.stages.taskdata import load_side, with_tools
from controller.stages.training import GRPOStepper
from mtr.config import load_config
from mtr.modelprep import resolve_model_path

log = logging.getLogger("bench.grpo_mode")


def run_mode(mode: str, model_path: str, overrides: list[str], work: Path) -> dict:
    config = load_config(overrides=[*overrides, f"grpo.mode={mode}", f"runs_dir={work}"])
    run_dir = RunDirectory(work / mode)
    with Services(config, work / mode / "logs").start() as services:
        train = with_tools(load_side(config, "train")[0].tasks, services.simulator)
        _, learner = services.learner(model_path, config.grpo.steps)
        _, pool = services.rollout_pool(model_path)
        stepper = GRPOStepper(config, learner, pool, run_dir, ControllerMetrics())
        traces = []
        loop = GRPOLoop(stepper, train, on_step=lambda step, record, _: traces.append(record["traces"]))
        with cpu_window() as window:
            start = time.perf_counter()
            rewards = loop.run()
            seconds = time.perf_counter() - start
    run_dir.close()
    return {
        "mode": mode,
        "steps": config.grpo.steps,
        "traces": sum(traces),
        "seconds": round(seconds, 2),
        "traces_per_second": round(sum(traces) / seconds, 4),
        "mean_rewards": rewards,
        "own_cores": window.own_cores,
        "other_cores": window.other_cores,
        "load": describe_load(window.own_cores, window.other_cores, window.load_average[0], window.busiest_others),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="Checkpoint (default: the bundled SmolLM2-135M).")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per mode.")
    parser.add_argument("--questions", type=int, default=4, help="Questions (groups of 8) per GRPO step.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 2 steps, small groups and turns.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Results directory.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    model_path = str(resolve_model_path(args.model))
    steps = 2 if args.quick else args.steps
    overrides = [
        f"grpo.steps={steps}",
        "grpo.questions_per_step=2" if args.quick else f"grpo.questions_per_step={args.questions}",
        "rollout.group_size=2" if args.quick else "rollout.group_size=8",
        "rollout.max_turns=2" if args.quick else "rollout.max_turns=4",
        "rollout.max_tokens_per_turn=16" if args.quick else "rollout.max_tokens_per_turn=96",
        "grpo.max_staleness=1",
        "grpo.curriculum.enabled=false",
        "world.n_train=16",
    ]
    with tempfile.TemporaryDirectory(prefix="grpo-mode-bench-") as work:
        rows = [run_mode(mode, model_path, overrides, Path(work)) for mode in ("sync", "async")]
    speedup = ratio(rows[1]["traces_per_second"], rows[0]["traces_per_second"])
    document = {
        "machine": machine(_precision(overrides)),
        "model": args.model,
        "rows": rows,
        "async_vs_sync": round(speedup, 3),
    }
    lines = [
        "| mode | steps | traces | seconds | traces/s | vs sync |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['mode']} | {r['steps']} | {r['traces']} | {r['seconds']:.1f} | {r['traces_per_second']:.3f} | "
            f"{ratio(r['traces_per_second'], rows[0]['traces_per_second']):.2f}x |"
            for r in rows
        ),
        "",
        f"Model `{args.model}`, {overrides}. " + "; ".join(f"{r['mode']}: {r['load']}" for r in rows) + ".",
        "`python -m bench.grpo_mode_bench`",
        "",
    ]
    path = write_results("grpo_mode", document, "\n".join(lines), args.out)
    print("\n".join(lines))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _precision(overrides: list[str]) -> str:
    """The dtype both modes ran in: an explicit model.dtype override, else what `auto` picks here."""
    from mtr.hardware import concrete_dtype

    given = [o.split("=", 1)[1] for o in overrides if o.startswith("model.dtype=")]
    return concrete_dtype(given[-1] if given else "auto")
