"""The `mtr` command. Parses arguments first and imports the heavy parts only for the subcommand that runs.

mtr run [--quick] [--config FILE] [--set section.key=value ...] [--ray-address ADDR]
mtr model prepare [--force]
mtr simulator serve [--replicas N] [...]     (see `mtr simulator serve --help`)
mtr config show [--quick] [--config FILE] [--set ...]
"""

from __future__ import annotations

import argparse
import importlib
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
        return importlib.import_module("controller.main").run(config)
    except ConfigError as error:
        print(f"mtr: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
