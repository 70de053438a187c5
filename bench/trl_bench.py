"""GRPO traces/s of MTR against TRL's `GRPOTrainer` on the same work: `python -m bench.trl_bench [--quick]`.

Both sides run GRPO steps of N questions x G samples on the same model, the same questions in the same order
(the embedded world's training split), the same sampling (temperature, top-p), the same cap on tokens per
assistant turn and the same turn budget, with tool calls answered by the simulator farm over gRPC:

- MTR: the simulator farm, a vLLM rollout worker and a DeepSpeed learner (Ray actors behind gRPC), driven by
  `controller.stages.training.GRPOStepper`: a step is the rollout of every group (multi-turn, tool calls batched into
  `SimulatorClient.call_many`), the composite reward, advantages, one learner update and the weight sync.
- TRL: `GRPOTrainer` on CPU (`use_cpu=True`, Hugging Face `generate`, no vLLM) with its own tool-calling loop:
  an `environment_factory` whose `search` / `open_page` methods forward each call to the same farm, a reward
  of exact match (`mtr.answers.exact_match`) on the final `<answer>`. The tokenizer gets a chat template that
  renders MTR's trace grammar byte for byte (`mtr.grammar`: same system prompt, tool list, `<tool_call>` and
  `<tool_response>` blocks), so both sides prompt the model with identical tokens, and TRL parses tool calls
  with its own Qwen-style response template (`<think>`, `<tool_call>{json}</tool_call>`).

A warm-up step on each side is not measured. Each side's traces/s is traces / wall seconds of its measured
steps. The sides run one after the other on the same cores, `--repeats` times each (3 by default), alternating;
the table gives min and median seconds per step, and MTR's ratio over TRL of the median traces/s, steady state
and with each run's start-up counted. TRL computes in MTR's precision where it can (`--trl-dtype same`: bf16 is
the Trainer's CPU autocast over fp32 weights; MTR's learner keeps fp32 masters of bf16 weights). Each side
records the load average and the cores used by processes that are not the benchmark's own during its measured
steps. Results go to bench/results/trl.json and, as a markdown table, bench/results/trl.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.common import bench_dtype, machine
from bench.trl_common import (
    RESULTS_DIR,
    SIDES,
    BenchSettings,
    ModelRun,
    SideResult,
    TraceStats,
    Window,
    mean,
    median_traces_per_s,
    run_config,
    side_result,
    speedups,
    step_questions,
    tooled_questions,
)
from bench.trl_side import run_trl

# ---------------------------------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    runs: list[ModelRun] = []
    for label, path in args.model or [("default", "default")]:
        model_settings = dataclasses.replace(settings, model=path)
        results = []
        for repeat in range(settings.repeats):  # sides alternate, each alone on the machine while it runs
            for side in args.sides:
                result = (run_mtr if side == "mtr" else run_trl)(model_settings)
                print(f"{label} #{repeat + 1}: {_row(result)}", flush=True)
                results.append(result)
        runs.append(ModelRun(label, results, *speedups(results)))
        table = write_results(args.out_dir, settings, runs)  # after every model, so a later failure keeps it
    print(table)
    return 0


def write_results(out_dir: Path, settings: BenchSettings, runs: Sequence[ModelRun]) -> str:
    """trl.json (machine, shared settings, every run) and trl.md (the table and its caption); returns the latter."""
    shared = {k: v for k, v in asdict(settings).items() if k != "model"}  # a model is named by its label only
    precision = f"MTR {settings.dtype}; TRL {settings.trl_dtype}"
    document = {"machine": _machine(precision), "settings": shared, "runs": [asdict(run) for run in runs]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trl.json").write_text(json.dumps(document, indent=2) + "\n")
    table = markdown_table(runs) + "\n" + caption(settings, runs)
    (out_dir / "trl.md").write_text(table)
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.trl_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smoke run: 1 question x 8 per step, short turns.")
    parser.add_argument(
        "--model",
        action="append",
        type=_model,
        help="[LABEL=]PATH of a Hugging Face checkpoint ('default': the bundled SmolLM2-135M-Instruct); repeat to "
        "benchmark several models in one run.",
    )
    parser.add_argument("--dtype", type=bench_dtype, default="auto", help="MTR's model dtype (auto: as a run picks).")
    parser.add_argument("--questions", type=int, help="Questions (groups) per step (default 2; quick 1).")
    parser.add_argument("--group-size", type=int, default=8, help="Samples per question.")
    parser.add_argument("--max-tokens-per-turn", type=int, help="Token cap of one assistant turn (default 128).")
    parser.add_argument("--max-turns", type=int, help="Assistant turns per trace (default 4; quick 2).")
    parser.add_argument("--steps", type=int, help="Measured steps per side (default 3; quick 1).")
    parser.add_argument("--warmup-steps", type=int, default=1, help="Unmeasured steps before them.")
    parser.add_argument(
        "--trl-micro-batch",
        type=int,
        default=2,
        help="Traces per TRL forward/backward pass (its per_device_train_batch_size; gradients accumulate over a "
        "step's traces, so a step is still one update). Its fp32 logits over the full vocabulary are what limits "
        "memory: 8 traces of ~2k tokens at once did not fit in 24 GB.",
    )
    parser.add_argument(
        "--trl-dtype",
        choices=["same", "float32", "bfloat16"],
        default="same",
        help="TRL's precision (default: MTR's, where TRL can: bfloat16 is the Trainer's CPU autocast).",
    )
    parser.add_argument("--repeats", type=int, help="Runs of each side, alternating (default 3; quick 1).")
    parser.add_argument("--sides", type=lambda s: s.split(","), default=list(SIDES), help="mtr,trl")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return parser


def _model(text: str) -> tuple[str, str]:
    """'sft=path/to/ckpt' -> ('sft', 'path/to/ckpt'); a bare path is labelled by its directory name."""
    label, _, path = text.rpartition("=")
    return (label or Path(path).name or path, path)


def _settings(args: argparse.Namespace) -> BenchSettings:
    for side in args.sides:
        if side not in SIDES:
            raise SystemExit(f"--sides: unknown side {side!r}; expected some of {SIDES}")
    quick = args.quick
    return BenchSettings(
        model="default",
        dtype=args.dtype,
        questions_per_step=args.questions or (1 if quick else 2),
        group_size=args.group_size,
        max_tokens_per_turn=args.max_tokens_per_turn or (32 if quick else 128),
        max_turns=args.max_turns or (2 if quick else 4),
        max_model_len=2048,
        warmup_steps=args.warmup_steps,
        steps=args.steps or (1 if quick else 3),
        lr=1e-5,
        seed=0,
        quick=quick,
        trl_micro_batch=args.trl_micro_batch,
        trl_dtype=args.dtype if args.trl_dtype == "same" else args.trl_dtype,
        repeats=args.repeats or (1 if quick else 3),
    )


# ---------------------------------------------------------------------------------------------------- MTR side


def run_mtr(settings: BenchSettings) -> SideResult:
    """Services + learner + rollout worker + GRPOStepper, as `mtr run` wires them; steps timed end to end."""
    from controller.cluster.services import Services
    from controller.reports.metrics import ControllerMetrics
    from controller.reports.rundir import RunDirectory
    from controller.stages.training import GRPOStepper
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(settings.model))
    with tempfile.TemporaryDirectory(prefix="trl-bench-mtr-") as runs:
        config = run_config(settings, Path(runs))
        run_dir = RunDirectory.create(config)
        started = time.perf_counter()
        with Services(config, run_dir.path / "logs") as services:
            services.start()
            steps = step_questions(settings, tooled_questions(config, services.simulator))
            _, learner = services.learner(model_path, len(steps))
            _, rollout = services.rollout(model_path)
            stepper = GRPOStepper(config, learner, rollout, run_dir, ControllerMetrics())
            startup = time.perf_counter() - started
            for index in range(settings.warmup_steps):
                stepper.step(index, steps[index])
            measured = []
            with Window() as window:
                for index in range(settings.warmup_steps, len(steps)):
                    begin = time.perf_counter()
                    stepper.step(index, steps[index])
                    measured.append(time.perf_counter() - begin)
        run_dir.close()
        records, traces = _mtr_records(run_dir.path, settings.warmup_steps)
    stats = _mtr_trace_stats(traces)
    for record in records:
        traces = record.get("traces") or settings.traces_per_step
        stats.policy_tokens.append(record.get("generated_tokens", 0) / traces)
    return side_result(
        "mtr",
        f"vLLM rollout worker + DeepSpeed learner (Ray actors, gRPC), {settings.dtype}",
        settings,
        measured,
        startup,
        sum("learner_seconds" in r for r in records),
        stats,
        window,
        {
            "rollout_s": mean([r.get("rollout_seconds", 0.0) for r in records]),
            "learner_s": mean([r.get("learner_seconds", 0.0) for r in records]),
        },
    )


def _mtr_records(run_dir: Path, warmup_steps: int) -> tuple[list[dict], list[dict]]:
    """The measured steps' `grpo` records (metrics.jsonl) and trace records (traces/grpo.jsonl)."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    records = [r for r in metrics if r.get("event") == "grpo" and r["step"] >= warmup_steps]
    trace_file = run_dir / "traces" / "grpo.jsonl"
    lines = trace_file.read_text().splitlines() if trace_file.exists() else []
    traces = [t for t in map(json.loads, lines) if t["step"] >= warmup_steps]
    return records, traces


def _mtr_trace_stats(traces: Sequence[dict]) -> TraceStats:
    """Turns and tool calls from the rendered trace text: one assistant header per turn, one tool block per call."""
    stats = TraceStats()
    for trace in traces:
        stats.assistant_turns.append(trace["text"].count("<|im_start|>assistant\n"))
        stats.tool_calls.append(trace["text"].count("<|im_start|>tool\n"))
        stats.exact_match.append(float(trace.get("exact_match", 0.0)))
    return stats


# ---------------------------------------------------------------------------------------------------- results


def markdown_table(runs: Sequence[ModelRun]) -> str:
    """Per model and side, over its repetitions: s/step (min / median), traces/s steady and with start-up
    (median), MTR's ratios over TRL, what the traces did (means), machine load (worst repetition)."""
    lines = [
        "| model | side | setup | runs x steps | traces/step | s/step min / median | traces/s (median) | with start-up "
        "| start-up s (median) | vs TRL | vs TRL with start-up | policy tokens/trace | turns/trace | tool calls/trace "
        "| EM | updates | load avg (max) | cores: other processes (max) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for side in dict.fromkeys(r.side for r in run.sides):
            rs = [r for r in run.sides if r.side == side]
            per_step = [r.seconds_per_step for r in rs]
            mtr = side == "mtr"
            ratio = f"{run.mtr_vs_trl:.2f}x" if mtr and run.mtr_vs_trl else "-"
            cold = f"{run.mtr_vs_trl_with_startup:.2f}x" if mtr and run.mtr_vs_trl_with_startup else "-"
            tokens, turns = (
                mean([r.policy_tokens_per_trace for r in rs]),
                mean([r.assistant_turns_per_trace for r in rs]),
            )
            calls, em = mean([r.tool_calls_per_trace for r in rs]), mean([r.exact_match for r in rs])
            lines.append(
                f"| {run.model} | {side.upper()} | {rs[0].setup} | {len(rs)} x {rs[0].steps} "
                f"| {rs[0].traces // max(rs[0].steps, 1)} | {min(per_step):.1f} / {statistics.median(per_step):.1f} "
                f"| {median_traces_per_s(rs):.3f} | {median_traces_per_s(rs, with_startup=True):.3f} "
                f"| {statistics.median(r.startup_seconds for r in rs):.1f} | {ratio} | {cold} "
                f"| {tokens:.1f} | {turns:.2f} | {calls:.2f} | {em:.3f} "
                f"| {sum(r.updates for r in rs)}/{sum(r.steps for r in rs)} | {max(r.load_average for r in rs):.2f} "
                f"| {max(r.other_cores for r in rs):.2f} |"
            )
    return "\n".join(lines) + "\n"


def caption(settings: BenchSettings, runs: Sequence[ModelRun]) -> str:
    """Under the table: the shared settings and how to read the numbers."""
    phases = []
    for run in runs:
        for r in run.sides:
            if r.side == "mtr" and r.breakdown:
                phases.append(
                    f"{run.model}: rollout {r.breakdown.get('rollout_s', 0):.1f} s, learner "
                    f"{r.breakdown.get('learner_s', 0):.1f} s"
                )
    breakdown = f" MTR's step ({'; '.join(phases)}); the rest is reward, weight sync and RPCs." if phases else ""
    return (
        f"Same model per row pair, same {settings.questions_per_step} question(s) x {settings.group_size} samples "
        f"per step, temperature 1, at most {settings.max_tokens_per_turn} tokens per assistant turn and "
        f"{settings.max_turns} turns per trace, tool calls answered by the simulator farm over gRPC; "
        f"{settings.warmup_steps} warm-up step(s) not measured, then {settings.steps}. Identical prompt tokens on "
        "both sides (TRL's tokenizer renders MTR's trace grammar); TRL parses and runs tool calls with its own "
        f"tool loop, {settings.trl_micro_batch} traces per forward/backward pass with gradients accumulated over "
        "the step. MTR's reward is the composite trace reward, TRL's the exact match. `updates`: measured steps "
        "that ended in an optimizer update (MTR skips the update when no group has reward variance). "
        f"MTR's dtype: {settings.dtype}; TRL's: {settings.trl_dtype}.{breakdown} Each side runs {settings.repeats} "
        "time(s), alternating, alone on the machine's "
        f"{os.cpu_count()} CPU cores (nothing else of the benchmark running): `load avg` and `cores: other "
        "processes` are measured over each side's steps. `with start-up`: traces over start-up (farm, Ray, "
        "engines, model load) plus the measured steps. "
        "`python -m bench.trl_bench`\n"
    )


def _row(result: SideResult) -> str:
    return (
        f"{result.side}: {result.traces_per_s:.3f} traces/s, {result.seconds_per_step:.1f} s/step "
        f"({result.step_seconds}), turns/trace {result.assistant_turns_per_trace:.2f}, tool calls/trace "
        f"{result.tool_calls_per_trace:.2f}, load avg {result.load_average:.2f}, other cores {result.other_cores:.2f}"
    )


def _machine(precision: str) -> dict:
    import transformers

    versions = {"transformers": transformers.__version__}
    try:
        import trl

        versions["trl"] = trl.__version__
    except ImportError:
        pass
    return {**machine(precision), **versions}


if __name__ == "__main__":
    # A terminated benchmark unwinds like an interrupted one, so the simulator farm and Ray are shut down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
