"""`mtr run`: resolve the model, run the pipeline, print the evaluation table and the run directory."""

from __future__ import annotations

import logging
import sys

from mtr.config import RunConfig

log = logging.getLogger("mtr.run")


def run(config: RunConfig) -> int:
    from controller.evalreport import summary_table
    from controller.pipeline import Pipeline
    from mtr.modelprep import ModelPrepError, resolve_model_path

    try:
        model_path = str(resolve_model_path(config.model.path))
    except ModelPrepError as error:
        print(f"mtr run: model.path: {error}", file=sys.stderr)
        return 2
    pipeline = Pipeline(config, model_path)
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
