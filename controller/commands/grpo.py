"""`mtr grpo`: Stage 2 on its own, from a checkpoint (usually `mtr sft`'s final one).

OUT/ holds config.yaml, metrics.jsonl, traces/, grpo_curve.{json,png} and checkpoints/: `step-N` every
`grpo.save_every` steps and `final`, each a Hugging Face checkpoint with the learner's training state
(optimizer, RNG, KL reference) and `grpo_state.json` (steps done, curriculum, the questions of the next
step, the curve so far). `--resume` restores all of it: the learner from the training state, the rollout
workers from the checkpoint's weights, and the loop draws exactly the questions the stopped run would have.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from controller.cluster.services import Services, adapter_sync
from controller.reports.grpocurve import GRPOCurve
from controller.reports.metrics import ControllerMetrics
from controller.reports.metricstargets import MetricsTargets
from controller.reports.rundir import RunDirectory
from controller.stages.evaluation import evaluate
from controller.stages.grpo import GRPOLoop
from controller.stages.taskdata import Dataset, load_side, with_tools
from controller.stages.training import GRPOStepper, noise_setter
from mtr.config import RunConfig
from mtr.datasets import DatasetError
from mtr.modelprep import ModelPrepError, resolve_model_path
from mtr.weights import ADAPTER_DIR

log = logging.getLogger("mtr.grpo")


STATE_FILE = "grpo_state.json"


class ResumeError(RuntimeError):
    pass


def main(config: RunConfig, args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        model_path = str(resolve_model_path(args.model or config.model.path))
        checkpoint = latest_checkpoint(out)
        if checkpoint is not None and not args.resume:
            raise ResumeError(f"{out} already holds checkpoints; pass --resume to continue, or choose another --out")
        if args.resume and checkpoint is None:
            log.warning("--resume: no complete checkpoint in %s; starting from step 0", out)
        state = json.loads((checkpoint / STATE_FILE).read_text()) if checkpoint is not None else None
        train_sets, eval_sets = load_side(config, "train"), load_side(config, "eval")
    except (ModelPrepError, ResumeError, DatasetError, OSError, ValueError) as error:
        print(f"mtr grpo: {error}", file=sys.stderr)
        return 2
    run = GRPORun(config, out, model_path)
    # Before anything is logged: records after the checkpoint resumed (all of them, when none was complete) are
    # of steps done again now; they go aside so no step is counted twice.
    if state is None or "files" in state:
        moved = run.run_dir.rewind(state["files"] if state is not None else {})
        if moved:
            log.info("records of steps done again moved to *.superseded: %s", moved)
        if state is not None or moved:
            start = int(state["step"]) if state is not None else 0
            run.run_dir.log("resume", start, checkpoint=str(checkpoint or ""), superseded_bytes=moved)
    try:
        run.execute(train_sets, eval_sets, checkpoint, state)
    except Exception as error:
        print(f"mtr grpo failed: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"checkpoints written so far are in {out / 'checkpoints'} (continue with --resume)", file=sys.stderr)
        return 1
    finally:
        run.run_dir.close()
    rewards = ", ".join(f"{r:.3f}" for _, r in run.curve.rewards)
    print(f"\nmean reward per step: {rewards}")
    for steps_done, dataset, em, low, high in run.curve.exact_match:
        print(f"held-out EM after {steps_done:>3} steps on {dataset}: {em:.3f} [{low:.3f}, {high:.3f}]")
    print(f"curve: {out / 'grpo_curve.png'}; checkpoint: {out / 'checkpoints' / 'final'}")
    return 0


class GRPORun:
    def __init__(self, config: RunConfig, out: Path, model_path: str) -> None:
        self.config, self.out, self.model_path = config, out, model_path
        self.run_dir = RunDirectory(out)
        self.run_dir.write_config(config)
        self.metrics = ControllerMetrics()
        self.curve = GRPOCurve()

    def execute(
        self, train_sets: list[Dataset], eval_sets: list[Dataset], checkpoint: Path | None, state: dict | None
    ) -> None:
        targets = MetricsTargets.for_run(self.out)
        port = self.metrics.serve(self.config.cluster.metrics_port, targets=targets)
        self.metrics.set_stage("grpo")
        log.info("Prometheus metrics on 127.0.0.1:%d/metrics, every service's at /sd", port)
        grpo = self.config.grpo
        with Services(self.config, self.out / "logs", targets).start() as services:
            train = with_tools([t for d in train_sets for t in d.tasks], services.simulator)
            if not train:
                raise ValueError(f"no training questions in {self.config.data.train}")
            for d in eval_sets:
                d.tasks = with_tools(d.tasks, services.simulator)
            _, learner = services.learner(self.model_path, max(1, grpo.steps))
            version, rollout_weights, adapter = 0, self.model_path, None
            if checkpoint is not None:
                version = learner.restore_checkpoint(str(checkpoint))
                rollout_weights = str(checkpoint)
                if adapter_sync(self.config):  # engines hold the base and take the adapter the checkpoint saved
                    rollout_weights, adapter = self.model_path, str(checkpoint / ADAPTER_DIR)
                log.info("resumed from %s: %d steps done, learner at version %d", checkpoint, state["step"], version)
            else:
                version = learner.status().version
            _, pool = services.rollout_pool(rollout_weights, initial_version=version, initial_adapter=adapter)
            self.learner, self.pool, self.eval_sets = learner, pool, [d for d in eval_sets if d.tasks]
            stepper = GRPOStepper(
                self.config,
                learner,
                pool,
                self.run_dir,
                self.metrics,
                learner_version=version,
                set_noise=noise_setter(self.config, services.simulator),
            )
            loop = GRPOLoop(stepper, train, on_step=self._after_step)
            self.loop = loop
            start, pending = 0, None
            if state is not None:
                loop.curriculum.restore(state["curriculum"])
                self.curve = GRPOCurve.from_dict(state["curve"])
                start, pending = int(state["step"]), state.get("pending_task_ids") or None
                # A checkpoint taken after the reset holds GRPO's own moments: resetting again would change them.
                stepper.reset_optimizer_pending = bool(state.get("optimizer_reset_pending", False))
            else:
                self._evaluate(0)
            loop.run(start, pending)
            self._save(grpo.steps, [], "final")
        self.metrics.set_stage("done")

    def _after_step(self, step: int, record: dict, next_task_ids: list[str]) -> None:
        done = step + 1
        self.curve.add_reward(step, record["reward"])
        grpo = self.config.grpo
        if done == grpo.steps or (grpo.eval_every and done % grpo.eval_every == 0):
            self.loop.stepper.sync_rollout()
            self._evaluate(done)
        if grpo.save_every and done % grpo.save_every == 0 and done < grpo.steps:
            self._save(done, next_task_ids)
        self.curve.write(self.out)

    def _evaluate(self, steps_done: int) -> None:
        for d in self.eval_sets:
            result, records = evaluate(f"step-{steps_done}", d.name, d.tasks, self.pool, self.config)
            self.curve.add_eval(steps_done, d.name, result.exact_match, result.em_low, result.em_high)
            self.run_dir.log("eval", steps_done, **result.row())
            self.run_dir.append_jsonl("traces/eval.jsonl", records)
            self.metrics.eval_em.labels(dataset=d.name, stage="grpo").set(result.exact_match)
            self.metrics.eval_f1.labels(dataset=d.name, stage="grpo").set(result.f1)
        self.curve.write(self.out)

    def _save(self, steps_done: int, next_task_ids: list[str], name: str | None = None) -> Path:
        target = self.out / "checkpoints" / (name or f"step-{steps_done:06d}")
        self.learner.save_checkpoint(str(target), training_state=True)
        state = {
            "step": steps_done,
            "learner_version": self.loop.stepper.learner_version,
            "curriculum": self.loop.curriculum.state(),
            "pending_task_ids": next_task_ids,
            "optimizer_reset_pending": self.loop.stepper.reset_optimizer_pending,
            "curve": self.curve.as_dict(),
        }
        self.run_dir.log("checkpoint", steps_done, path=str(target))
        state["files"] = self.run_dir.appended_sizes()  # what a resume of this checkpoint keeps of the records
        (target / STATE_FILE).write_text(json.dumps(state))  # written last: marks the checkpoint complete
        return target


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the most steps done; None when there is none."""
    best: tuple[int, Path] | None = None
    for candidate in (out / "checkpoints").glob("*"):
        try:
            step = int(json.loads((candidate / STATE_FILE).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # cut short by a crash: no state file yet
        if best is None or step > best[0]:
            best = (step, candidate)
    return None if best is None else best[1]
