"""Stage 1 driven over gRPC: batches of tokenized traces → LearnerService.TrainStep, with checkpoints and resume.

The batch order is a seeded reshuffle per epoch, so step k's batch is a function of (seed, k): a resumed
run redraws the first k batches and continues with exactly the batches it would have seen. Traces are
tokenized segment by segment (see `sft_data`), so the loss covers only what the assistant wrote.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from controller.reports.metrics import ControllerMetrics
from controller.reports.rundir import RunDirectory
from controller.stages.sft_data import tokenize_trace
from mtr.grammar import Trace, TraceFormatError, from_openai
from mtr.serviceclients import LearnerClient
from mtr.v1 import learner_service_pb2 as lpb

log = logging.getLogger("mtr.sft")

STATE_FILE = "trainer_state.json"


class TraceFileError(ValueError):
    """A traces file or one of its lines cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class TraceLoad:
    traces: list[Trace]
    skipped: list[str]  # "FILE: line N: reason"


def load_traces(paths: Sequence[str | Path], on_error: str = "skip") -> TraceLoad:
    """Read OpenAI chat JSONL records back into traces; a bad line is skipped (and listed) or fatal."""
    traces: list[Trace] = []
    skipped: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise TraceFileError(f"traces file {path} does not exist (write one with `mtr synth --out {path}`)")
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    traces.append(from_openai(json.loads(line)))
                except (json.JSONDecodeError, TraceFormatError, ValueError, TypeError) as error:
                    where = f"{path}: line {number}: {error}"
                    if on_error == "fail":
                        raise TraceFileError(where) from None
                    log.warning("skipped a trace: %s", where)
                    skipped.append(where)
    if not traces:
        raise TraceFileError(f"no usable trace in {', '.join(map(str, paths))} ({len(skipped)} lines skipped)")
    return TraceLoad(traces, skipped)


def tokenize(traces: Sequence[Trace], tokenizer) -> list[lpb.TrainSequence]:
    sequences = []
    for trace in traces:
        tokens = tokenize_trace(trace, tokenizer)
        sequences.append(lpb.TrainSequence(token_ids=tokens.token_ids, loss_mask=tokens.loss_mask))
    return sequences


def batch_plan(n_sequences: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of indices: every sequence once per epoch, reshuffled each epoch from the seed."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        batch = []
        for _ in range(batch_size):
            if not order:
                order = rng.sample(range(n_sequences), n_sequences)
            batch.append(order.pop())
        yield batch


@dataclass
class SFTTrainer:
    learner: LearnerClient
    sequences: list[lpb.TrainSequence]
    steps: int
    batch_size: int
    seed: int
    run_dir: RunDirectory
    metrics: ControllerMetrics
    show_progress: bool = False

    def run(
        self,
        start_step: int = 0,
        publish_last: bool = False,
        checkpoint: Callable[[int], None] | None = None,
        save_every: int = 0,
    ) -> tuple[list[float], lpb.TrainStepResponse | None]:
        """Steps `start_step`..`steps`-1, `checkpoint(steps_done)` every `save_every`; returns losses and last reply."""
        plan = batch_plan(len(self.sequences), self.batch_size, self.seed)
        for _ in range(start_step):
            next(plan)
        losses: list[float] = []
        last = None
        bar = tqdm(total=self.steps, initial=start_step, desc="sft", unit="step", disable=not self.show_progress)
        try:
            for step in range(start_step, self.steps):
                batch = [self.sequences[i] for i in next(plan)]
                publish = publish_last and step == self.steps - 1
                last = self.learner.train_step(lpb.OBJECTIVE_SFT, batch, publish_weights=publish)
                losses.append(last.loss)
                self._record(step, last)
                tokens_per_second = last.tokens / max(last.seconds, 1e-9)
                bar.set_postfix(loss=f"{last.loss:.4f}", tok_s=f"{tokens_per_second:.0f}")
                bar.update(1)
                if not self.show_progress:  # `mtr run`: a log line per step, not a bar among the services' logs
                    log.info(
                        "sft step %d/%d: loss %.4f, %.0f tokens/s, lr %.2e (%.1fs)",
                        step + 1,
                        self.steps,
                        last.loss,
                        tokens_per_second,
                        last.learning_rate,
                        last.seconds,
                    )
                if checkpoint and save_every and (step + 1) % save_every == 0 and step + 1 < self.steps:
                    checkpoint(step + 1)
        finally:
            bar.close()
        return losses, last

    def _record(self, step: int, response: lpb.TrainStepResponse) -> None:
        self.metrics.learner_step.labels(objective="sft").observe(response.seconds)
        self.metrics.learner_loss.labels(objective="sft").set(response.loss)
        self.metrics.grad_norm.set(response.grad_norm)
        self.metrics.sft_tokens.inc(response.tokens)
        self.run_dir.log(
            "sft",
            step,
            loss=response.loss,
            grad_norm=response.grad_norm,
            tokens=response.tokens,
            seconds=response.seconds,
            tokens_per_second=response.tokens / max(response.seconds, 1e-9),
            lr=response.learning_rate,
            version=response.version,
        )
