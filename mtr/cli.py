"""The `mtr` command. Parses arguments first and imports the heavy parts only for the subcommand that runs.

mtr run [--quick] [--config FILE] [--set section.key=value ...] [--ray-address ADDR]
mtr synth [--data SPEC ...] [--out FILE] [--teacher oracle|llm] [...]   Stage 0: AutoAgent traces (resumable)
mtr sft --traces FILE [--out DIR] [--resume] [...]                       Stage 1: SFT on traces
mtr eval [--model [LABEL=]PATH ...] [--data SPEC ...] [--out DIR] [...]   EM/F1 through the rollout path
mtr model prepare [--force]
mtr simulator serve [--replicas N] [...]     (see `mtr simulator serve --help`)
mtr config show [--quick] [--config FILE] [--set ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from importlib import resources

import yaml

from mtr.config import ConfigError, RunConfig, dump_config, load_config


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with any subset of the run configuration.")
    parser.add_argument("--quick", action="store_true", help="Small profile: ~10 min on 2 CPU cores.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Dotted override, e.g. --set learner.lr=1e-5 (repeatable; applied last).",
    )
    parser.add_argument("--ray-address", help="Connect to this Ray cluster instead of starting a local one.")


def _add_data_args(parser: argparse.ArgumentParser, side: str) -> None:
    parser.add_argument(
        "--data",
        action="append",
        metavar="SPEC",
        help=f"Dataset spec (repeatable), replacing data.{side}: synthetic, hotpotqa:PATH, musique:PATH, 2wiki:PATH, "
        "bamboogle:PATH (JSONL or CSV), hf:ID.",
    )
    parser.add_argument("--limit", type=int, help="At most N questions per dataset (data.limit).")
    parser.add_argument(
        "--on-error", choices=("skip", "fail"), help="A malformed dataset row is skipped (default) or fatal."
    )


def _add_stage_commands(commands) -> None:
    synth = commands.add_parser(
        "synth",
        help="Stage 0: the AutoAgent writes think -> act -> observe traces through the simulator farm.",
        description="Writes accepted traces as OpenAI chat JSONL (messages with tools, tool_calls, tool messages). "
        "Re-running with the same --out skips questions already decided (resumable). Acceptance per dataset and "
        "rejection reason goes to OUT.report.json.",
    )
    _add_config_args(synth)
    _add_data_args(synth, "train")
    synth.add_argument("--out", default="runs/traces/sft.jsonl", help="Traces file (default: %(default)s).")
    synth.add_argument("--teacher", choices=("oracle", "llm"), help="synth.teacher (default: oracle).")
    synth.add_argument("--llm-url", help="Teacher endpoint, an OpenAI-compatible base URL (synth.llm_url).")
    synth.add_argument("--llm-model", help="Model name the teacher endpoint serves (synth.llm_model).")

    sft = commands.add_parser(
        "sft",
        help="Stage 1: fine-tune the policy on trace JSONL with DeepSpeed learner ranks on Ray.",
        description="Loss on assistant tokens only; length-bucketed micro-batches with gradient accumulation; "
        "warm-up + cosine; Hugging Face checkpoints under OUT/checkpoints (step-N, final); --resume continues "
        "from the last checkpoint with its optimizer state.",
    )
    _add_config_args(sft)
    sft.add_argument("--traces", required=True, action="append", help="OpenAI chat JSONL from `mtr synth`.")
    sft.add_argument("--out", default="runs/sft", help="Output directory (default: %(default)s).")
    sft.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in OUT.")

    evaluation = commands.add_parser(
        "eval",
        help="Evaluate checkpoints through the real rollout path (vLLM + simulator farm, greedy).",
        description="EM/F1 per dataset and per question type / hop count, trace validity and tool calls; writes "
        "eval.json, eval.md and, for several checkpoints, eval.png.",
    )
    _add_config_args(evaluation)
    _add_data_args(evaluation, "eval")
    evaluation.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="[LABEL=]PATH",
        help="Checkpoint to evaluate (repeatable; 'default' is the bundled model). Default: model.path.",
    )
    evaluation.add_argument("--out", help="Output directory (default: runs/eval-<timestamp>).")


def _stage_overrides(args: argparse.Namespace) -> list[str]:
    """Command flags that are shorthands for config keys, as overrides (applied after --set)."""
    overrides = []
    side = {"synth": "train", "eval": "eval"}.get(args.command)
    if side and getattr(args, "data", None):
        overrides.append(f"data.{side}={json.dumps(args.data)}")
    for flag, key in (
        ("limit", "data.limit"),
        ("on_error", "data.on_error"),
        ("teacher", "synth.teacher"),
        ("llm_url", "synth.llm_url"),
        ("llm_model", "synth.llm_model"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtr", description="Train tool-using language models on simulated tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="Run the whole pipeline: simulator farm, oracle AutoAgent traces, SFT, GRPO, evaluation.",
        description="Runs synthesis -> eval -> SFT -> eval -> GRPO -> eval on the embedded world and writes a run "
        "directory (config.yaml, metrics.jsonl, traces/, checkpoints/, eval.json, report.md).",
    )
    _add_config_args(run)
    _add_stage_commands(commands)
    model = commands.add_parser("model", help="Manage the embedded default model.")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    prepare = model_commands.add_parser(
        "prepare", help="Convert the bundled SmolLM2-135M-Instruct GGUF into a cached Hugging Face checkpoint."
    )
    prepare.add_argument("--force", action="store_true", help="Convert again even if the cache is complete.")
    commands.add_parser(
        "simulator",
        add_help=False,
        help="The ToolMaker/ToolActor gRPC service: `mtr simulator serve --help`.",
    )
    config = commands.add_parser("config", help="Show the resolved configuration.")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="Print the configuration a run would use, as YAML.")
    _add_config_args(show)
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    base = {}
    if args.quick:
        base = yaml.safe_load(resources.files("mtr.profiles").joinpath("quick.yaml").read_text())
    overrides = list(args.overrides)
    if args.ray_address:
        overrides.append(f"cluster.ray_address={args.ray_address}")
    overrides += _stage_overrides(args)
    return load_config(args.config, overrides, base=base)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:
        return importlib.import_module("simulator.main").main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "model":
            from mtr.modelprep import prepare_default_model

            print(prepare_default_model(force=args.force))
            return 0
        config = resolve_config(args)
        if args.command == "config":
            print(dump_config(config), end="")
            return 0
        if args.command in ("synth", "sft", "eval"):
            return importlib.import_module(f"controller.{args.command}cmd").main(config, args)
        return importlib.import_module("controller.main").run(config)
    except ConfigError as error:
        print(f"mtr: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
