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
import random
import time
from pathlib import Path

from controller.autoagent import synthesize
from controller.evaluation import EvalResult, evaluate
from controller.metrics import ControllerMetrics
from controller.report import write_report
from controller.rundir import RunDirectory
from controller.simfarm import LocalSimulatorFarm
from controller.training import GRPOStepper, SFTStepper
from mtr.config import RunConfig
from mtr.grammar import to_openai
from mtr.placement import RoleSpec, launch, shutdown
from mtr.serviceclients import LearnerClient, RolloutClient
from mtr.simclient import SimulatorClient
from mtr.task import Task
from mtr.world import embedded_tasks

log = logging.getLogger("mtr.run")


@dataclasses.dataclass
class RunOutcome:
    run_dir: Path
    evals: list[EvalResult]
    sft_losses: list[float]
    grpo_rewards: list[float]
    stage_seconds: dict[str, float]
    checksums_match: bool | None = None


class Pipeline:
    def __init__(self, config: RunConfig, model_path: str) -> None:
        self.config = config
        self.model_path = model_path
        self.run_dir = RunDirectory.create(config)
        self.metrics = ControllerMetrics()
        self.outcome = RunOutcome(self.run_dir.path, [], [], [], {})
        self._actors: list = []
        self._farm: LocalSimulatorFarm | None = None
        self._started_ray = False

    # -- wiring -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        port = self.metrics.serve(self.config.cluster.metrics_port)
        log.info("run directory %s; Prometheus metrics on 127.0.0.1:%d/metrics", self.run_dir.path, port)
        self._farm = LocalSimulatorFarm(self.config.simulator, self.config.world.seed, self.run_dir.path / "logs")
        addresses = self._farm.start()
        # Ray before any gRPC channel of ours: ray.init forks its daemons, and gRPC's threads must not exist yet
        # (seen: "Other threads are currently calling into gRPC, skipping fork() handlers", then a raylet timeout).
        self._start_ray()
        self.simulator = SimulatorClient(addresses, timeout_s=self.config.simulator.call_timeout_s)
        self.simulator.wait_ready(60)
        total_steps = self.config.sft.steps + self.config.grpo.steps
        learner = RoleSpec(
            "learner.host:start",
            {"model_path": self.model_path, "learner": self.config.learner.model_dump(), "total_steps": total_steps},
        )
        rollout = RoleSpec(
            "rollout.host:start",
            {
                "model_path": self.model_path,
                "rollout": self.config.rollout.model_dump(),
                "dtype": self.config.model.dtype,
                "seed": self.config.seed,
                "simulator_addresses": addresses,
                "simulator_timeout_s": self.config.simulator.call_timeout_s,
            },
        )
        self.learner = LearnerClient(self._launch(learner))
        self.rollout = RolloutClient(self._launch(rollout))

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        cluster = self.config.cluster
        if cluster.ray_address:
            ray.init(address=cluster.ray_address, namespace="mtr")
        else:
            ray.init(num_cpus=cluster.num_cpus, namespace="mtr", include_dashboard=False)
        self._started_ray = True

    def _launch(self, spec: RoleSpec) -> str:
        actor, address = launch(spec)
        self._actors.append(actor)
        log.info("%s serving at %s", spec.entry, address)
        return address

    def teardown(self) -> None:
        for actor in reversed(self._actors):
            try:
                shutdown(actor)
            except Exception as error:  # noqa: BLE001 - keep tearing down the rest; say what failed
                log.warning("could not stop an actor cleanly: %s", error)
        self._actors = []
        if getattr(self, "simulator", None) is not None:
            self.simulator.close()
        if self._farm is not None:
            self._farm.stop()
        if self._started_ray:
            import ray

            ray.shutdown()
        self.run_dir.close()

    # -- stages -----------------------------------------------------------------------------------------------
    def tasks(self) -> tuple[list[Task], list[Task]]:
        world = self.config.world
        train, held_out = embedded_tasks(world.seed, world.n_train, world.n_eval)
        # The simulator serves the world as its corpus, so calls need not carry each task's documents.
        train = [dataclasses.replace(t, documents=()) for t in train]
        held_out = [dataclasses.replace(t, documents=()) for t in held_out[: self.config.eval.questions]]
        return self._with_tools(train), self._with_tools(held_out)

    def _with_tools(self, tasks: list[Task]) -> list[Task]:
        return [dataclasses.replace(t, tools=tuple(self.simulator.make_tools(t))) for t in tasks]

    def run(self) -> RunOutcome:
        try:
            self.setup()
            train, held_out = self.tasks()
            examples = self._timed("synth", lambda: self.synthesize(train))
            self._timed("eval_base", lambda: self.evaluate("base", held_out))
            self._timed("sft", lambda: self.sft(examples))
            self._timed("eval_sft", lambda: self.evaluate("sft", held_out))
            self._timed("grpo", lambda: self.grpo(train))
            self._timed("eval_grpo", lambda: self.evaluate("grpo", held_out))
            self._timed("checkpoint", lambda: self.learner.save_checkpoint(str(self.run_dir.checkpoint_dir("final"))))
            self.metrics.set_stage("done")
            return self.outcome
        except BaseException as error:
            self.run_dir.log("error", 0, error=f"{type(error).__name__}: {error}")
            raise
        finally:
            write_report(self.run_dir, self.config, self.outcome)
            self.teardown()

    def sft(self, examples) -> list[float]:
        stepper = SFTStepper(self.config, self.learner, self.rollout, self.model_path, self.run_dir, self.metrics)
        self.outcome.sft_losses = stepper.run(examples)
        self.outcome.checksums_match = stepper.checksums_match
        return self.outcome.sft_losses

    def grpo(self, train: list[Task]) -> list[float]:
        stepper = GRPOStepper(self.config, self.learner, self.rollout, self.run_dir, self.metrics)
        self.outcome.grpo_rewards = stepper.run(train, random.Random(self.config.seed))
        return self.outcome.grpo_rewards

    def _timed(self, stage: str, work):
        self.metrics.set_stage(stage.split("_")[0])
        start = time.perf_counter()
        result = work()
        self.outcome.stage_seconds[stage] = time.perf_counter() - start
        self.run_dir.log("stage", 0, name=stage, seconds=self.outcome.stage_seconds[stage])
        log.info("stage %s done in %.1fs", stage, self.outcome.stage_seconds[stage])
        return result

    def synthesize(self, train: list[Task]):
        report = synthesize(train, self.simulator)
        self.run_dir.append_jsonl("traces/sft.jsonl", (to_openai(trace) for _, trace in report.accepted))
        self.run_dir.log(
            "synth",
            0,
            attempted=report.attempted,
            accepted=len(report.accepted),
            acceptance_rate=report.acceptance_rate,
            rejected=dict(report.rejected),
        )
        log.info("AutoAgent accepted %d/%d traces (%s)", len(report.accepted), report.attempted, dict(report.rejected))
        if not report.accepted:
            raise RuntimeError(f"the AutoAgent accepted no trace out of {report.attempted}: {dict(report.rejected)}")
        return report.accepted

    def evaluate(self, stage: str, held_out: list[Task]) -> EvalResult:
        result, records = evaluate(stage, "synthetic", held_out, self.rollout, self.config)
        self.outcome.evals.append(result)
        self.run_dir.append_jsonl(f"traces/eval-{stage}.jsonl", records)
        self.run_dir.log("eval", 0, **result.row(), by_type=result.by_type)
        self.metrics.eval_em.labels(dataset="synthetic", stage=stage).set(result.exact_match)
        self.metrics.eval_f1.labels(dataset="synthetic", stage=stage).set(result.f1)
        log.info("eval %s: EM %.3f F1 %.3f valid %.2f", stage, result.exact_match, result.f1, result.valid_rate)
        return result
