"""`mtr run`: the whole pipeline on one Ray instance (local, or an existing cluster given its address).

  simulator farm (processes) ─┐
  learner  (Ray actor, DeepSpeed, gRPC) ──weights via Ray object store──▶ rollout (Ray actor, vLLM, gRPC)
  controller: synth (oracle AutoAgent) → eval → SFT → eval → GRPO (reward, advantages) → eval → report

The controller wires the parts and drives them over gRPC (it never imports a service package). Every
stage writes to the run directory as it goes, so a failure keeps everything done before it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path

from controller.cluster.services import Services
from controller.reports.cpumeter import CpuMeter
from controller.reports.metrics import ControllerMetrics
from controller.reports.metricstargets import MetricsTargets
from controller.reports.report import write_report
from controller.reports.rundir import RunDirectory
from controller.stages.autoagent import synthesize
from controller.stages.evaluation import EvalResult, PassAtK, evaluate, evaluate_pass_at_k
from controller.stages.grpo import GRPOLoop
from controller.stages.llmteacher import make_teacher
from controller.stages.taskdata import Dataset, load_side, with_tools
from controller.stages.training import GRPOStepper, SFTStepper, noise_setter
from mtr.config import RunConfig
from mtr.grammar import to_openai
from mtr.task import Task

log = logging.getLogger("mtr.run")


@dataclasses.dataclass
class RunOutcome:
    run_dir: Path
    evals: list[EvalResult]
    sft_losses: list[float]
    grpo_rewards: list[float]
    stage_seconds: dict[str, float]
    checksums_match: bool | None = None
    skipped_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    acceptance: dict[str, dict] = dataclasses.field(default_factory=dict)  # AutoAgent, per dataset
    pass_at_k: list[PassAtK] = dataclasses.field(default_factory=list)  # at the SFT checkpoint (eval.pass_samples)
    stage_cores_busy: dict[str, float] = dataclasses.field(default_factory=dict)  # CPU s per wall s, machine-wide


class Pipeline:
    def __init__(
        self, config: RunConfig, model_path: str, datasets: tuple[list[Dataset], list[Dataset]] | None = None
    ) -> None:
        """`datasets`: the (train, eval) datasets when the caller loaded them already (to check them first)."""
        self._datasets = datasets
        self.config = config
        self.model_path = model_path
        self.run_dir = RunDirectory.create(config)
        self.metrics = ControllerMetrics()
        self.outcome = RunOutcome(self.run_dir.path, [], [], [], {})
        self.targets = MetricsTargets.for_run(self.run_dir.path)
        self.services = Services(config, self.run_dir.path / "logs", self.targets)

    # -- wiring -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        if (choice := self.config.precision_choice) is not None:
            self.metrics.precision.labels(choice.dtype, choice.requested, choice.capability).set(1)
        port = self.metrics.serve(self.config.cluster.metrics_port, targets=self.targets)
        log.info("run directory %s; Prometheus metrics on 127.0.0.1:%d (/metrics, /sd)", self.run_dir.path, port)
        self.services.start()
        self.simulator = self.services.simulator
        _, self.learner = self.services.learner(self.model_path, self.config.sft.steps + self.config.grpo.steps)
        self.rollout_actors, self.rollout = self.services.rollout_pool(self.model_path)
        self.rollout_actor = self.rollout_actors[0]

    def teardown(self) -> None:
        self.services.close()
        self.run_dir.close()

    # -- stages -----------------------------------------------------------------------------------------------
    def tasks(self) -> tuple[list[Task], list[Dataset]]:
        """All training questions (every train dataset) and the held-out datasets, each with its tools."""
        train_sets, eval_sets = self._datasets or (load_side(self.config, "train"), load_side(self.config, "eval"))
        for side, datasets in (("train", train_sets), ("eval", eval_sets)):
            for d in datasets:
                self.outcome.skipped_rows[f"{side}:{d.name}"] = len(d.skipped)
                self.run_dir.log(
                    "dataset",
                    0,
                    side=side,
                    name=d.name,
                    spec=d.spec,
                    questions=len(d.tasks),
                    skipped_rows=len(d.skipped),
                    skipped=[str(e) for e in d.skipped[:20]],
                )
        train = with_tools([t for d in train_sets for t in d.tasks], self.simulator)
        if not train:
            raise RuntimeError(f"no training questions in {self.config.data.train}")
        for d in eval_sets:
            d.tasks = with_tools(d.tasks, self.simulator)
        return train, eval_sets

    def run(self) -> RunOutcome:
        try:
            self.setup()
            train, held_out = self.tasks()
            examples = self._timed("synth", lambda: self.synthesize(sft_questions(train, self.config.synth.questions)))
            self._timed("eval_base", lambda: self.evaluate_all("base", held_out, self.config.eval.base_questions))
            if self.config.sft.steps:
                self._timed("sft", lambda: self.sft(examples))
                if self.config.grpo.steps:  # GRPO's starting point, for `mtr grpo --model` and for comparisons
                    self._timed("checkpoint_sft", lambda: self.learner.save_checkpoint(self._checkpoint("sft")))
                self._timed("eval_sft", lambda: self.evaluate_all("sft", held_out))
                if self.config.eval.pass_samples:
                    self._timed("eval_sft_passk", lambda: self.pass_at_k_all("sft", held_out))
            if self.config.grpo.steps:
                self._timed("grpo", lambda: self.grpo(train))
                self._timed("eval_grpo", lambda: self.evaluate_all("grpo", held_out))
            self._timed("checkpoint", lambda: self.learner.save_checkpoint(self._checkpoint("final")))
            self.metrics.set_stage("done")
            return self.outcome
        except BaseException as error:
            self.run_dir.log("error", 0, error=f"{type(error).__name__}: {error}")
            raise
        finally:
            write_report(self.run_dir, self.config, self.outcome)
            self.teardown()

    def _checkpoint(self, name: str) -> str:
        return str(self.run_dir.checkpoint_dir(name))

    def sft(self, examples) -> list[float]:
        stepper = SFTStepper(self.config, self.learner, self.rollout, self.model_path, self.run_dir, self.metrics)
        self.outcome.sft_losses = stepper.run(examples)
        self.outcome.checksums_match = stepper.checksums_match
        return self.outcome.sft_losses

    def grpo(self, train: list[Task]) -> list[float]:
        set_noise = noise_setter(self.config, self.simulator)
        stepper = GRPOStepper(self.config, self.learner, self.rollout, self.run_dir, self.metrics, set_noise=set_noise)
        self.outcome.grpo_rewards = GRPOLoop(stepper, train).run()
        return self.outcome.grpo_rewards

    def _timed(self, stage: str, work):
        self.metrics.set_stage(stage.split("_")[0])
        start = time.perf_counter()
        with CpuMeter() as cpu:
            result = work()
        seconds = self.outcome.stage_seconds[stage] = time.perf_counter() - start
        self.outcome.stage_cores_busy[stage] = cpu.cores_busy
        self.run_dir.log("stage", 0, name=stage, seconds=seconds, cores_busy=cpu.cores_busy)
        log.info("stage %s done in %.1fs (%.2f cores busy)", stage, seconds, cpu.cores_busy)
        return result

    def synthesize(self, train: list[Task]):
        teacher = make_teacher(self.config.synth, self.config.seed)
        report = synthesize(train, self.simulator, teacher)
        self.outcome.acceptance = report.by_source()
        self.run_dir.append_jsonl("traces/sft.jsonl", (to_openai(trace) for _, trace in report.accepted))
        self.run_dir.log(
            "synth",
            0,
            attempted=report.attempted,
            accepted=len(report.accepted),
            acceptance_rate=report.acceptance_rate,
            rejected=dict(report.rejected),
            teacher=teacher.name,
            by_dataset=self.outcome.acceptance,
        )
        log.info("AutoAgent accepted %d/%d traces (%s)", len(report.accepted), report.attempted, dict(report.rejected))
        if not report.accepted:
            raise RuntimeError(f"the AutoAgent accepted no trace out of {report.attempted}: {dict(report.rejected)}")
        return report.accepted

    def evaluate_all(self, stage: str, datasets: list[Dataset], limit: int | None = None) -> list[EvalResult]:
        """Every held-out dataset at `stage`; `limit`: only its first questions (the base row's subset)."""
        return [self.evaluate(stage, d.name, d.tasks[:limit]) for d in datasets if d.tasks]

    def evaluate(self, stage: str, dataset: str, held_out: list[Task]) -> EvalResult:
        result, records = evaluate(stage, dataset, held_out, self.rollout, self.config)
        self.outcome.evals.append(result)
        self.run_dir.append_jsonl(f"traces/eval-{stage}.jsonl", records)
        self.run_dir.log("eval", 0, **result.row(), by_type=result.by_type, by_hops=result.by_hops)
        self.metrics.eval_em.labels(dataset=dataset, stage=stage).set(result.exact_match)
        self.metrics.eval_f1.labels(dataset=dataset, stage=stage).set(result.f1)
        return result  # `evaluate` logged its start and its result

    def pass_at_k_all(self, stage: str, datasets: list[Dataset]) -> list[PassAtK]:
        """pass@k from eval.pass_samples sampled traces per held-out question: the headroom GRPO can use."""
        found = []
        for d in (d for d in datasets if d.tasks):
            result, records = evaluate_pass_at_k(
                stage, d.name, d.tasks, self.rollout, self.config, self.config.eval.pass_samples
            )
            self.outcome.pass_at_k.append(result)
            self.run_dir.append_jsonl(f"traces/passk-{stage}.jsonl", records)
            self.run_dir.log("passk", 0, **result.row())
            found.append(result)
        return found


def sft_questions(train: list[Task], limit: int | None) -> list[Task]:
    """The first `limit` training questions of each dataset (in their order): the ones SFT traces are written for."""
    if limit is None:
        return train
    seen: Counter[str] = Counter()
    chosen = []
    for task in train:
        seen[task.source] += 1
        if seen[task.source] <= limit:
            chosen.append(task)
    return chosen
