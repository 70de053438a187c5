"""The sceptic's control for the GRPO curve: SFT continued from the same checkpoint for the same wall time.

Run: `python -m bench.sft_control --model RUN/checkpoints/sft --grpo-run runs/grpo-sweep/defaults-long
--sft-run RUN` after the long GRPO run (`python -m bench.grpo_sweep --variants defaults-long ...`). Steps:
`mtr synth` writes AutoAgent traces for every training question GRPO samples from (the same questions);
`mtr sft` continues from the GRPO start checkpoint for as many steps as fit in GRPO's training wall time
(rollout + learner + weight sync of its steps up to its last evaluation, divided by the SFT seconds per step
the original SFT run measured); `mtr eval` scores the result on the held-out questions. Every step is
resumable. Writes `bench/results/sft_control.json` / `.md`: held-out EM of the start, of GRPO's last
evaluation and of the control, each with its 95 % interval, and the paired gains GRPO − control and
control − start. GRPO must beat the control for its gain to be about strategy rather than more training.

The control's curve: every GRPO evaluation is matched with the saved control checkpoint (`--save-every`)
whose SFT steps cost the nearest training time, and that checkpoint is evaluated too, so GRPO and the
control are compared at equal time all along the curve, not only at its end. The match is never exact
(checkpoints fall every N steps); each row states both sides' seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, question_em, run_mtr, write_results
from bench.record_run import provenance
from controller.commands.sft import complete_checkpoints
from controller.scoring.intervals import bootstrap_mean, paired_difference

CONTROL_LABEL = "sft-control"


def _events(run_dir: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [row for row in rows if row.get("event") == event]


def grpo_training_seconds(grpo_run: Path, last_step: int) -> float:
    """Rollout + learner + weight-sync seconds of the GRPO steps before `last_step` (evaluations excluded)."""
    steps = [e for e in _events(grpo_run, "grpo") if e["step"] < last_step]
    syncs = [e for e in _events(grpo_run, "weight_sync") if e.get("step", 0) <= last_step]
    sync_seconds = sum(e.get("publish_seconds", 0.0) + e.get("load_seconds", 0.0) for e in syncs)
    return sum(e["rollout_seconds"] + e["learner_seconds"] for e in steps) + sync_seconds


def sft_seconds_per_step(sft_run: Path) -> float:
    """Median wall seconds of one SFT step in the run that made the start checkpoint."""
    return statistics.median(e["seconds"] for e in _events(sft_run, "sft"))


def _last_stage(stages: dict[str, dict[str, float]]) -> tuple[str, int]:
    numbered = sorted((int(name.split("-")[-1]), name) for name in stages if name.split("-")[-1].isdigit())
    return numbered[-1][1], numbered[-1][0]


def match_by_time(grpo_seconds: dict[int, float], per_step: float, control_steps: list[int]) -> dict[int, int]:
    """GRPO step -> the control step whose cost (steps × SFT seconds per step) is nearest its training seconds."""
    return {
        step: min(control_steps, key=lambda done: (abs(done * per_step - seconds), done))
        for step, seconds in grpo_seconds.items()
    }


def _label(step: int, final_step: int) -> str:
    return CONTROL_LABEL if step == final_step else f"{CONTROL_LABEL}-{step}"


def curve(
    grpo_stages: dict[str, dict[str, float]],
    grpo_seconds: dict[int, float],
    controls: dict[int, dict[str, float]],
    matched: dict[int, int],
    per_step: float,
) -> list[dict]:
    """Per GRPO evaluation: its EM, the time-matched control's EM, and GRPO − control paired on the same questions."""
    rows = []
    for step, control_step in sorted(matched.items()):
        grpo = grpo_stages[f"step-{step}"]
        control = controls[control_step]
        rows.append(
            {
                "grpo_step": step,
                "grpo_seconds": grpo_seconds[step],
                "grpo": _interval(grpo),
                "control_step": control_step,
                "control_seconds": control_step * per_step,
                "control": _interval(control),
                "grpo_minus_control": _gain(control, grpo),
            }
        )
    return rows


def _interval(values: dict[str, float]) -> dict:
    em = bootstrap_mean(list(values.values()))
    return {"em": em.estimate, "em_ci": em.bounds, "n": em.n}


def _gain(before: dict[str, float], after: dict[str, float]) -> dict:
    gain = paired_difference(before, after)
    return {"gain": gain.estimate, "ci": gain.bounds, "n_paired": gain.n}


def compare(grpo_stages: dict[str, dict[str, float]], control: dict[str, float]) -> dict:
    """The start, GRPO's last evaluation and the control, with the two paired gains that decide the question."""
    start = grpo_stages["step-0"]
    last_name, _ = _last_stage(grpo_stages)
    last = grpo_stages[last_name]
    return {
        "start": _interval(start),
        "grpo": {"stage": last_name, **_interval(last)},
        "control": _interval(control),
        "grpo_minus_control": _gain(control, last),
        "control_minus_start": _gain(start, control),
        "grpo_minus_start": _gain(start, last),
    }


def markdown(document: dict) -> str:
    c = document["comparison"]

    def em(row: dict) -> str:
        return f"{row['em']:.3f} [{row['em_ci'][0]:.3f}, {row['em_ci'][1]:.3f}]"

    def gain(row: dict) -> str:
        return f"{row['gain']:+.3f} [{row['ci'][0]:+.3f}, {row['ci'][1]:+.3f}] (n {row['n_paired']})"

    lines = []
    if document.get("curve"):
        lines += [
            "| GRPO step | GRPO training s | GRPO EM [95 %] | control SFT step | its SFT s | control EM [95 %] "
            "| GRPO − control [paired 95 %] |",
            "|---:|---:|---|---:|---:|---|---|",
        ]
        for row in document["curve"]:
            lines.append(
                f"| {row['grpo_step']} | {row['grpo_seconds']:.0f} | {em(row['grpo'])} | {row['control_step']} "
                f"| {row['control_seconds']:.0f} | {em(row['control'])} | {gain(row['grpo_minus_control'])} |"
            )
        lines.append("")
    return "\n".join(
        lines
        + [
            "| policy | training after the start checkpoint | held-out EM [95 %] | gain over start [paired 95 %] |",
            "|---|---|---|---|",
            f"| start (SFT) | - | {em(c['start'])} | - |",
            f"| GRPO ({c['grpo']['stage']}) | {document['grpo_seconds']:.0f} s | {em(c['grpo'])} "
            f"| {gain(c['grpo_minus_start'])} |",
            f"| SFT continued, {document['control_steps']} steps on {document['control_traces']} traces "
            f"| {document['control_seconds']:.0f} s | {em(c['control'])} | {gain(c['control_minus_start'])} |",
            "",
            f"GRPO − control: {gain(c['grpo_minus_control'])}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sft_control", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="The SFT checkpoint GRPO started from.")
    parser.add_argument("--grpo-run", required=True, type=Path, help="The GRPO run directory (with eval.jsonl).")
    parser.add_argument("--sft-run", required=True, type=Path, help="Run whose metrics.jsonl has the SFT steps.")
    parser.add_argument("--out-root", type=Path, default=Path("runs/sft-control"))
    parser.add_argument("--save-every", type=int, default=50, help="Control SFT checkpoint every N steps (2 GB each).")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--curve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also evaluate the saved control checkpoint nearest in time to each GRPO evaluation (one eval each).",
    )
    args = parser.parse_args(argv)
    grpo_stages = question_em(args.grpo_run / "traces" / "eval.jsonl")
    _, last_step = _last_stage(grpo_stages)
    grpo_seconds = grpo_training_seconds(args.grpo_run, last_step)
    per_step = sft_seconds_per_step(args.sft_run)
    steps = max(1, round(grpo_seconds / per_step))
    traces = args.out_root / "traces.jsonl"
    run_mtr("synth", "--out", str(traces))  # every training question; resumable
    sft_dir = args.out_root / "sft"
    argv_sft = ["sft", "--traces", str(traces), "--out", str(sft_dir)]
    argv_sft += ["--set", f"model.path={args.model}", "--set", f"sft.steps={steps}"]
    argv_sft += ["--set", f"sft.save_every={args.save_every}"]  # a run longer than a session resumes from these
    if (sft_dir / "checkpoints").exists():
        argv_sft.append("--resume")
    control_seconds = run_mtr(*argv_sft)
    eval_dir = args.out_root / "eval"
    evaluated_steps = sorted(int(name.split("-")[-1]) for name in grpo_stages if name != "step-0")
    seconds_to = {step: grpo_training_seconds(args.grpo_run, step) for step in evaluated_steps}
    saved = complete_checkpoints(sft_dir)
    matched = match_by_time(seconds_to, per_step, sorted(saved)) if args.curve else {}
    to_evaluate = sorted({steps, *matched.values()})
    models = [arg for done in to_evaluate for arg in ("--model", f"{_label(done, steps)}={saved[done]}")]
    run_mtr("eval", *models, "--out", str(eval_dir), "--resume")
    controls = {
        done: question_em(eval_dir / "traces" / f"{_label(done, steps)}-synthetic.jsonl")[_label(done, steps)]
        for done in to_evaluate
    }
    control = controls[steps]
    document = {
        "provenance": provenance(sft_dir),
        "grpo_run": str(args.grpo_run),
        "grpo_seconds": grpo_seconds,
        "sft_seconds_per_step": per_step,
        "control_steps": steps,
        "control_traces": sum(1 for line in traces.read_text(encoding="utf-8").splitlines() if line.strip()),
        "control_seconds": sum(e["seconds"] for e in _events(sft_dir, "sft")),
        "control_command_seconds": control_seconds,
        "comparison": compare(grpo_stages, control),
        "curve": curve(grpo_stages, seconds_to, controls, matched, per_step),
    }
    write_results("sft_control", document, markdown(document), args.out_dir)
    print(f"wrote {args.out_dir / 'sft_control'}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
