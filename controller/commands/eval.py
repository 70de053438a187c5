"""`mtr eval`: evaluate checkpoints through the real rollout path (vLLM worker + simulator farm, greedy).

    mtr eval --model base=default --model sft=runs/sft/checkpoints/final --data synthetic --data hotpotqa:FILE

For each checkpoint in turn: launch a rollout worker on Ray, evaluate every eval dataset, write the
per-question traces, stop the worker, and rewrite eval.json / eval.md / eval.png, so a failure on a later
checkpoint keeps everything measured before it. Bad checkpoint paths are reported before anything starts.
EM comes with its 95 % bootstrap interval, and checkpoint-to-checkpoint gains with a paired one; with
`eval.pass_samples` > 0 every checkpoint also gets pass@k from that many sampled traces per question.
With `--resume`, a checkpoint × dataset whose trace file in `--out` already holds one row per question is
read back instead of evaluated again (a checkpoint with nothing left to do starts no engine), so an
interrupted evaluation of several checkpoints loses only the one it was on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.cluster.services import Services
from controller.reports.evalreport import Gain, gains, statistics_sections, summary_table, write_eval_reports
from controller.reports.rundir import provenance_header
from controller.stages.evaluation import (
    EvalResult,
    PassAtK,
    evaluate,
    evaluate_pass_at_k,
    restore,
    restore_pass_at_k,
)
from controller.stages.taskdata import Dataset, load_side, with_tools
from mtr.config import RunConfig, dump_config
from mtr.datasets import DatasetError
from mtr.modelprep import ModelPrepError, resolve_model_path
from mtr.serviceclients import RolloutClient

log = logging.getLogger("mtr.eval")

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class CheckpointError(ValueError):
    """A `--model` value cannot be evaluated; the message names the value and what is missing."""


@dataclass(frozen=True)
class Checkpoint:
    label: str  # the row name in every table and the prefix of its trace files
    path: Path


def main(config: RunConfig, args: argparse.Namespace) -> int:
    try:
        models = parse_models(args.models or [config.model.path])
        datasets = load_side(config, "eval")
        if not any(d.tasks for d in datasets):
            skipped = "; ".join(f"{d.spec}: {len(d.skipped)} rows skipped" for d in datasets)
            raise DatasetError(f"no eval dataset has a usable question ({skipped}); nothing to evaluate")
        out = output_dir(config, args.out)
        (out / "config.yaml").write_text(provenance_header(config) + dump_config(config), encoding="utf-8")
    except (CheckpointError, ModelPrepError, DatasetError, OSError) as error:
        print(f"mtr eval: {error}", file=sys.stderr)
        return 2
    log.info("evaluating %s on %s; output in %s", [m.label for m in models], [d.name for d in datasets], out)
    evaluation = Evaluation(config, out, datasets, resume=args.resume)
    try:
        evaluation.run(models)
    except Exception as error:
        print(f"mtr eval failed: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"what was evaluated is in {out}", file=sys.stderr)
        return 1
    finally:
        evaluation.write_reports()
    tables = [*summary_table(evaluation.results), *statistics_sections(evaluation.gains(), evaluation.pass_at_k)]
    print("\n".join(["", *tables, "", f"output directory: {out}"]))
    return 0


class Evaluation:
    """The checkpoints' results so far, the datasets they are evaluated on, and where it all is written."""

    def __init__(self, config: RunConfig, out: Path, datasets: Sequence[Dataset], resume: bool = False) -> None:
        self.config = config
        self.out = out
        self.resume = resume
        self.datasets = [d for d in datasets if d.tasks]
        for d in datasets:
            if not d.tasks:
                log.warning("eval dataset %s (%s) has no questions; left out", d.name, d.spec)
        self.skipped_rows = {d.name: len(d.skipped) for d in datasets}
        self.results: list[EvalResult] = []
        self.pass_at_k: list[PassAtK] = []
        self.wall_seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def run(self, models: Sequence[Checkpoint]) -> None:
        with Services(self.config, self.out / "logs") as services:
            self._timed("services start", lambda: services.start())
            for d in self.datasets:
                d.tasks = with_tools(d.tasks, services.simulator)
            for index, model in enumerate(models, 1):
                log.info("checkpoint %d/%d: %s (%s)", index, len(models), model.label, model.path)
                try:
                    self.evaluate_model(services, model)
                finally:
                    self.write_reports()

    def evaluate_model(self, services: Services, model: Checkpoint) -> None:
        samples = self.config.eval.pass_samples
        greedy = {d.name: self._restored(model.label, d) for d in self.datasets}
        sampled = {
            d.name: self._restored_pass_at_k(model.label, d, samples) if samples else None for d in self.datasets
        }
        try:
            if all(greedy.values()) and (not samples or all(sampled.values())):
                log.info(
                    "%s: every dataset already evaluated in %s; read back, no engine started", model.label, self.out
                )
            else:
                self._evaluate_missing(services, model, greedy, sampled)
        finally:  # what finished counts in the reports even when the rest was stopped (SIGTERM while the engine stops)
            self._keep(model.label, greedy, sampled)

    def _keep(self, label: str, greedy: dict[str, EvalResult | None], sampled: dict[str, PassAtK | None]) -> None:
        for d in self.datasets:
            result = greedy[d.name]
            if result is not None:
                self.results.append(result)
                self.wall_seconds[f"{label}: {d.name}"] = result.seconds
            if sampled.get(d.name) is not None:
                self.pass_at_k.append(sampled[d.name])
                self.wall_seconds[f"{label}: {d.name} pass@k"] = sampled[d.name].seconds

    def _evaluate_missing(
        self,
        services: Services,
        model: Checkpoint,
        greedy: dict[str, EvalResult | None],
        sampled: dict[str, PassAtK | None],
    ) -> None:
        """Start the checkpoint's engine and fill in, in place, every result not read back."""
        actor, rollout = self._timed(f"{model.label}: engine start", lambda: services.rollout(str(model.path)))
        try:
            for d in self.datasets:
                if greedy[d.name] is None:
                    greedy[d.name], records = evaluate(model.label, d.name, d.tasks, rollout, self.config)
                    write_jsonl(self._trace_path(model.label, d), records)
            for d in self.datasets:
                if self.config.eval.pass_samples and sampled[d.name] is None:
                    sampled[d.name] = self.evaluate_pass_at_k(model.label, d, rollout)
        finally:
            rollout.close()
            services.stop_role(actor)

    def evaluate_pass_at_k(self, label: str, dataset: Dataset, rollout: RolloutClient) -> PassAtK:
        """pass@k from eval.pass_samples sampled traces per question; one trace file per dataset."""
        samples = self.config.eval.pass_samples
        passk, records = evaluate_pass_at_k(label, dataset.name, dataset.tasks, rollout, self.config, samples)
        write_jsonl(self._trace_path(label, dataset, "passk-"), records)
        return passk

    def _trace_path(self, label: str, dataset: Dataset, prefix: str = "") -> Path:
        return self.out / "traces" / f"{prefix}{_file_safe(label)}-{_file_safe(dataset.name)}.jsonl"

    def _restored(self, label: str, dataset: Dataset) -> EvalResult | None:
        records = self._resumable_records(self._trace_path(label, dataset))
        return records and restore(label, dataset.name, dataset.tasks, records, self.config)

    def _restored_pass_at_k(self, label: str, dataset: Dataset, samples: int) -> PassAtK | None:
        records = self._resumable_records(self._trace_path(label, dataset, "passk-"))
        return records and restore_pass_at_k(label, dataset.name, dataset.tasks, records, samples, self.config)

    def _resumable_records(self, path: Path) -> list[dict] | None:
        """The rows of an earlier evaluation's trace file under --resume; None when there is none to trust."""
        if not self.resume or not path.is_file():
            return None
        try:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError) as error:
            log.warning("--resume: %s cannot be read back (%s); evaluating again", path, error)
            return None

    def write_reports(self) -> None:
        wall = {**self.wall_seconds, "total": time.perf_counter() - self._start}
        title = f"MTR evaluation `{self.out.name}`"
        write_eval_reports(
            self.out, self.results, self.skipped_rows, wall, "model", title, self.pass_at_k, self.gains()
        )

    def gains(self) -> list[Gain]:
        """EM gains between the checkpoints so far (paired bootstrap, eval.bootstrap_* settings)."""
        return gains(self.results, self.config.eval.bootstrap_resamples, self.config.eval.bootstrap_seed)

    def _timed(self, part: str, work):
        start = time.perf_counter()
        value = work()
        self.wall_seconds[part] = time.perf_counter() - start
        return value


def parse_models(values: Sequence[str]) -> list[Checkpoint]:
    """`[LABEL=]PATH` values → checkpoints, each verified to be a loadable Hugging Face checkpoint directory."""
    models = [parse_model(value) for value in values]
    labels = [m.label for m in models]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise CheckpointError(f"--model: several checkpoints are labelled {repeated}; name them with LABEL=PATH")
    return models


def parse_model(value: str) -> Checkpoint:
    label, _, path = value.partition("=")
    # A path that itself contains "=" stays whole; so does anything before "=" that cannot be a label.
    if not path or not _LABEL.match(label) or Path(value).exists():
        label, path = "", value
    try:
        directory = resolve_model_path(path)
    except ModelPrepError as error:
        raise CheckpointError(f"--model {value!r}: {error}") from None
    check_checkpoint(directory, value)
    return Checkpoint(label or directory.name, directory)


def check_checkpoint(directory: Path, value: str) -> None:
    """Fail now, not after a minute of engine start: config with a model type, weights and a tokenizer."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"--model {value!r}: cannot read {directory / 'config.json'}: {error}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"--model {value!r}: {directory / 'config.json'} has no model_type; not a HF checkpoint")
    if not any(next(directory.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
        raise CheckpointError(f"--model {value!r}: no weights (*.safetensors or pytorch_model*.bin) in {directory}")
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(f"--model {value!r}: no tokenizer ({', '.join(_TOKENIZER_FILES)}) in {directory}")


def output_dir(config: RunConfig, out: str | None) -> Path:
    """`--out` as given, else a fresh `<runs_dir>/eval-<timestamp>` (suffixed if that exists already)."""
    if out is not None:
        path = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = candidate = Path(config.runs_dir) / f"eval-{stamp}"
        suffix = 1
        while path.exists():
            path = Path(f"{candidate}-{suffix}")
            suffix += 1
    (path / "traces").mkdir(parents=True, exist_ok=True)
    return path


def write_jsonl(path: Path, records: Sequence[dict]) -> Path:
    """One file per checkpoint × dataset, rewritten whole so that re-running into the same --out never doubles it;
    written beside and renamed into place, so a stop mid-write never leaves half a file for --resume to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
