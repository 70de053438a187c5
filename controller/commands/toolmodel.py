"""`mtr simulator train`: fine-tune a ToolActor model on (tool call -> grounded observation) pairs.

    mtr simulator train [--data SPEC ...] [--out DIR] [--set toolmodel.steps=300 ...]

1. Harvest: the grounded farm answers the calls a good policy makes on every training question (the
   world's, plus the training halves of any `--data` benchmarks); pairs that show a held-out question's page
   are left out (`controller.stages.toolharvest`). Resumable: re-running appends only what is missing.
2. Train: the project's DeepSpeed learner fine-tunes `toolmodel.base_model` on the pairs, loss on the
   observation only (the prompt is `mtr.toolprompt`, the same one the model actor serves with), and writes a
   Hugging Face checkpoint to OUT/checkpoints/final. Serve it with `simulator.actor: model` and
   `simulator.actor_model: OUT/checkpoints/final`. Every `toolmodel.save_every` steps it keeps one
   checkpoint with the optimizer state (OUT/checkpoints/step-N, the newest only: it exists to be resumed),
   and `--resume` continues from it, with the batches it would have seen, when a run is cut short.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from controller.cluster.services import Services
from controller.commands.sft import latest_checkpoint
from controller.reports.metrics import ControllerMetrics
from controller.reports.rundir import RunDirectory
from controller.stages.sft import STATE_FILE, SFTTrainer
from controller.stages.taskdata import load_side, with_tools
from controller.stages.toolharvest import PairsFile, harvest, read_pairs, tool_counts
from mtr.config import RunConfig
from mtr.datasets import DatasetError
from mtr.modelprep import ModelPrepError, resolve_model_path
from mtr.toolprompt import prompt_text
from mtr.v1 import learner_service_pb2 as lpb

log = logging.getLogger("mtr.toolmodel")

PAIRS_FILE = "pairs.jsonl"


class ToolModelError(RuntimeError):
    pass


def main(config: RunConfig, args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        model_path = str(resolve_model_path(config.toolmodel.base_model))
        train = [task for d in load_side(config, "train") for task in d.tasks]
        held_out = [task for d in load_side(config, "eval") for task in d.tasks]
        final = out / "checkpoints" / "final"
        if final.exists() and not args.force:
            raise ToolModelError(f"{final} exists already; pass --force to train again, or choose another --out")
        pairs = PairsFile(out / PAIRS_FILE)
        resume_from = latest_checkpoint(out) if args.resume else None
        if not args.resume and not args.force and latest_checkpoint(out) is not None:
            raise ToolModelError(
                f"{out / 'checkpoints'} holds a checkpoint of an unfinished run; pass --resume to continue it, "
                "or --force to start the training again"
            )
    except (ModelPrepError, DatasetError, ToolModelError, ValueError, OSError) as error:
        print(f"mtr simulator train: {error}", file=sys.stderr)
        return 2
    # Harvesting asks the grounded actor, whatever simulator.actor says the run trains against.
    grounded = config.model_copy(
        update={
            "simulator": config.simulator.model_copy(
                update={"actor": "grounded", "noise": type(config.simulator.noise)()}
            )
        }
    )
    run_dir = RunDirectory(out)
    run_dir.write_config(config)
    if resume_from is not None:  # the steps logged after the checkpoint are done again: set their records aside
        moved = run_dir.rewind(json.loads((resume_from / STATE_FILE).read_text()).get("files", {}))
        run_dir.log("resume", 0, checkpoint=str(resume_from), superseded_bytes=moved)
    started = time.perf_counter()
    try:
        with Services(grounded, out / "logs").start() as services:
            tasks = with_tools(train, services.simulator)
            stats = harvest(
                tasks, held_out, services.simulator, pairs, noisy=config.toolmodel.noisy_pairs, seed=config.seed
            )
            harvested = read_pairs(pairs.path)
            # Calls of the held-out split are never trained on: bench.toolmodel_fidelity asks the model them.
            records = [r for r in harvested if r.get("split", "train") == "train"]
            run_dir.log("harvest", 0, pairs=len(harvested), train_pairs=len(records), **stats.as_dict())
            log.info(
                "harvest: %s; %d pairs in %s (%s)",
                stats.as_dict(),
                len(records),
                pairs.path,
                dict(tool_counts(records)),
            )
            if not records:
                raise ToolModelError("the harvest produced no pairs (every observation showed a held-out page?)")
            sequences = tokenize_pairs(records, model_path)
            learner_config = config.learner.model_copy(update={"lr": config.toolmodel.lr})
            _, learner = services.learner(model_path, config.toolmodel.steps, learner_config)
            fingerprint = pairs_fingerprint(records)
            start_step = restore(learner, resume_from, fingerprint) if resume_from is not None else 0
            trainer = SFTTrainer(
                learner=learner,
                sequences=sequences,
                steps=config.toolmodel.steps,
                batch_size=config.toolmodel.batch_size,
                seed=config.seed,
                run_dir=run_dir,
                metrics=ControllerMetrics(),
                show_progress=True,
            )

            def save(step: int) -> None:
                target = out / "checkpoints" / f"step-{step:06d}"
                learner.save_checkpoint(str(target), training_state=True)
                state = {"step": step, "pairs": fingerprint, "files": run_dir.appended_sizes()}
                (target / STATE_FILE).write_text(json.dumps(state, indent=2))  # written last: marks it complete
                run_dir.log("checkpoint", step, path=str(target))
                for older in (out / "checkpoints").glob("step-*"):
                    if older != target:
                        shutil.rmtree(older, ignore_errors=True)

            losses, _ = trainer.run(start_step, checkpoint=save, save_every=config.toolmodel.save_every)
            learner.save_checkpoint(str(final), training_state=False)
            for resumable in (out / "checkpoints").glob("step-*"):
                shutil.rmtree(resumable, ignore_errors=True)  # the final checkpoint supersedes them
            summary = {
                "pairs": len(records),
                "steps": config.toolmodel.steps,
                "resumed_at": start_step,
                "first_loss": losses[0],
                "last_loss": losses[-1],
            }
            (final / "toolmodel.json").write_text(json.dumps({**summary, "harvest": stats.as_dict()}, indent=2))
    except Exception as error:
        print(f"mtr simulator train failed: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"harvested pairs are kept in {pairs.path} (the next run appends only what is missing)", file=sys.stderr)
        return 1
    finally:
        run_dir.close()
    print(
        f"\nToolActor model: {len(records)} pairs, loss {losses[0]:.4f} -> {losses[-1]:.4f} "
        f"in {time.perf_counter() - started:.0f}s\ncheckpoint: {final}\n"
        f"serve it: --set simulator.actor=model --set simulator.actor_model={final}"
    )
    return 0


def pairs_fingerprint(records: list[dict]) -> str:
    """Which pairs a checkpoint trained on: a resume on other pairs would see other batches than it planned."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record["messages"], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def restore(learner, checkpoint: Path, fingerprint: str) -> int:
    """Load `checkpoint`'s weights and optimizer state into the learner; returns the steps it had done."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    if state.get("pairs") != fingerprint:
        raise ToolModelError(
            f"{checkpoint} was trained on other pairs (fingerprint {state.get('pairs')}, now {fingerprint}); "
            "resume in the same --out with the same data, or start again with --force"
        )
    version = learner.restore_checkpoint(str(checkpoint))
    if version != int(state["step"]):
        raise ToolModelError(f"{checkpoint}: the learner restored version {version}, the state says {state['step']}")
    log.info("resumed from %s at step %d", checkpoint, version)
    return version


def tokenize_pairs(records: list[dict], model_path: str) -> list[lpb.TrainSequence]:
    """Prompt as `mtr.toolprompt.prompt_text` writes it (no loss), observation + end of sequence (loss)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    sequences = []
    for record in records:
        prompt, answer = record["messages"][:2], record["messages"][2]["content"]
        prompt_ids = tokenizer.encode(prompt_text(prompt), add_special_tokens=False)
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        sequences.append(
            lpb.TrainSequence(
                token_ids=prompt_ids + answer_ids, loss_mask=[0] * len(prompt_ids) + [1] * len(answer_ids)
            )
        )
    return sequences
