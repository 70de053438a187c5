"""`mtr sft`: Stage 1 on its own. Fine-tunes the policy on trace JSONL with the DeepSpeed learner on Ray.

OUT/ holds config.yaml, metrics.jsonl and checkpoints/: `step-N` every `sft.save_every` steps and `final`,
each a Hugging Face checkpoint (what vLLM and transformers load) plus `training_state/` (optimizer of
every rank, schedule position, RNG) and `trainer_state.json` (steps done, the traces it trained on).
`--resume` continues from the newest complete checkpoint with the same batches it would have seen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from controller.cluster.services import Services
from controller.reports.metrics import ControllerMetrics
from controller.reports.metricstargets import MetricsTargets
from controller.reports.rundir import RunDirectory
from controller.stages.sft import STATE_FILE, SFTTrainer, TraceFileError, load_traces, tokenize
from mtr.config import RunConfig
from mtr.modelprep import ModelPrepError, resolve_model_path

log = logging.getLogger("mtr.sft")


class ResumeError(RuntimeError):
    pass


def main(config: RunConfig, args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        model_path = str(resolve_model_path(config.model.path))
        loaded = load_traces(args.traces, on_error=config.data.on_error)
        resume_from = latest_checkpoint(out) if args.resume else None
        fingerprint = traces_fingerprint(args.traces)
        start_step = check_resume(resume_from, fingerprint) if resume_from else 0
        if not args.resume and latest_checkpoint(out) is not None:
            raise ResumeError(f"{out} already holds checkpoints; pass --resume to continue, or choose another --out")
    except (ModelPrepError, TraceFileError, ResumeError, OSError) as error:
        print(f"mtr sft: {error}", file=sys.stderr)
        return 2
    run_dir = RunDirectory(out)
    run_dir.write_config(config)
    # Records logged after the checkpoint resumed (all, when there is none) go aside: those steps are done again.
    files = json.loads((resume_from / STATE_FILE).read_text()).get("files") if resume_from is not None else {}
    if files is not None:
        moved = run_dir.rewind(files)
        if resume_from is not None or moved:
            run_dir.log("resume", start_step, checkpoint=str(resume_from or ""), superseded_bytes=moved)
    metrics = ControllerMetrics()
    targets = MetricsTargets.for_run(out)
    port = metrics.serve(config.cluster.metrics_port, targets=targets)
    metrics.set_stage("sft")
    log.info(
        "%d traces (%d lines skipped); Prometheus metrics on 127.0.0.1:%d/metrics, every service's at /sd",
        len(loaded.traces),
        len(loaded.skipped),
        port,
    )
    run_dir.log("sft_data", 0, traces=len(loaded.traces), skipped=len(loaded.skipped), files=list(args.traces))
    started = time.perf_counter()
    try:
        with Services(config, out / "logs", targets).start(simulator=False) as services:
            _, learner = services.learner(model_path, config.sft.steps)
            if resume_from is not None:
                version = learner.restore_checkpoint(str(resume_from))
                if version != start_step:
                    raise ResumeError(
                        f"{resume_from}: learner restored version {version}, trainer state says {start_step}"
                    )
                log.info("resumed from %s at step %d", resume_from, start_step)
            from transformers import AutoTokenizer

            trainer = SFTTrainer(
                learner=learner,
                sequences=tokenize(loaded.traces, AutoTokenizer.from_pretrained(model_path)),
                steps=config.sft.steps,
                batch_size=config.sft.batch_size,
                seed=config.seed,
                run_dir=run_dir,
                metrics=metrics,
                show_progress=True,
            )

            def save(step: int, name: str | None = None) -> Path:
                target = out / "checkpoints" / (name or f"step-{step:06d}")
                learner.save_checkpoint(str(target), training_state=True)
                state = {"step": step, "traces": fingerprint, "seed": config.seed, "batch_size": config.sft.batch_size}
                run_dir.log("checkpoint", step, path=str(target))
                state["files"] = run_dir.appended_sizes()  # what a resume of this checkpoint keeps of the records
                (target / STATE_FILE).write_text(json.dumps(state, indent=2))  # written last: marks it complete
                return target

            losses, _ = trainer.run(start_step, checkpoint=save, save_every=config.sft.save_every)
            final = save(config.sft.steps, "final")
        metrics.set_stage("done")
    except Exception as error:
        print(f"mtr sft failed: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"checkpoints written so far are in {out / 'checkpoints'} (continue with --resume)", file=sys.stderr)
        return 1
    finally:
        run_dir.close()
    seconds = time.perf_counter() - started
    if losses:
        print(
            f"\nSFT steps {start_step}..{config.sft.steps}: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {seconds:.0f}s"
        )
    print(f"checkpoint: {final}")
    return 0


def complete_checkpoints(out: Path) -> dict[int, Path]:
    """Complete checkpoints under OUT/checkpoints by steps done (final counts with its own); a checkpoint cut
    short by a crash has no trainer state yet and is left out."""
    found: dict[int, Path] = {}
    for candidate in sorted((out / "checkpoints").glob("*")):
        state = candidate / STATE_FILE
        if not state.is_file():
            continue
        try:
            found[int(json.loads(state.read_text())["step"])] = candidate
        except (ValueError, KeyError, TypeError):
            continue
    return found


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the most steps (final counts as the last); None when there is none."""
    found = complete_checkpoints(out)
    return found[max(found)] if found else None


def check_resume(checkpoint: Path, fingerprint: str) -> int:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    if state.get("traces") != fingerprint:
        raise ResumeError(
            f"{checkpoint} was trained on other traces (fingerprint {state.get('traces')}, now {fingerprint}); "
            "resume with the same --traces files, or start a new --out"
        )
    return int(state["step"])


def traces_fingerprint(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]
