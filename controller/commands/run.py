"""`mtr run`: resolve the model, run the pipeline, print the evaluation table and the run directory."""

from __future__ import annotations

import argparse
import logging
import sys

from mtr.config import RunConfig

log = logging.getLogger("mtr.run")


def main(config: RunConfig, args: argparse.Namespace | None = None) -> int:
    """`mtr run` (the `mtr.commands` entry point)."""
    return run(config)


def run(config: RunConfig) -> int:
    from controller.reports.evalreport import summary_table
    from controller.stages.pipeline import Pipeline
    from controller.stages.taskdata import load_side
    from mtr.datasets import DatasetError
    from mtr.modelprep import ModelPrepError, resolve_model_path

    # The datasets are read before anything starts: a mistyped path is reported now, not minutes later.
    try:
        datasets = load_side(config, "train"), load_side(config, "eval")
    except DatasetError as error:
        print(f"mtr run: {error}", file=sys.stderr)
        return 2
    for side, loaded in zip(("train", "eval"), datasets, strict=True):
        if not any(d.tasks for d in loaded):
            skipped = "; ".join(f"{d.spec}: {len(d.skipped)} rows skipped" for d in loaded)
            print(f"mtr run: data.{side} has no usable question ({skipped})", file=sys.stderr)
            return 2
    try:
        model_path = str(resolve_model_path(config.model.path))
    except ModelPrepError as error:
        print(f"mtr run: model.path: {error}", file=sys.stderr)
        return 2
    pipeline = Pipeline(config, model_path, datasets)
    try:
        outcome = pipeline.run()
    except Exception as error:
        print(f"mtr run failed: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"what was done is in {pipeline.run_dir.path}", file=sys.stderr)
        return 1
    print()
    print("\n".join(summary_table(outcome.evals, "stage")))
    print(f"\nrun directory: {outcome.run_dir}")
    return 0
