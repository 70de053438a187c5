"""report.md and eval.json/eval.md/eval.png of a run: what was measured, written even when the run stops early.

The evaluation tables come from `controller.evalreport`, the same code `mtr eval` uses, so a run's report
and a standalone evaluation read alike (one row per stage × held-out dataset).
"""

from __future__ import annotations

from controller.evalreport import breakdown_tables, skipped_note, summary_table, write_eval_reports
from mtr.config import RunConfig


def write_report(run_dir, config: RunConfig, outcome) -> None:
    title = f"MTR run `{run_dir.path.name}`"
    write_eval_reports(run_dir.path, outcome.evals, outcome.skipped_rows, outcome.stage_seconds, "stage", title)
    lines = [f"# {title}", "", f"Model: `{config.model.path}`; world seed {config.world.seed}.", ""]
    lines += ["## Held-out evaluation", ""] + summary_table(outcome.evals, "stage")
    lines += skipped_note(outcome.skipped_rows)
    lines += acceptance_table(getattr(outcome, "acceptance", {}))
    if outcome.sft_losses:
        lines += [
            "",
            f"SFT: {len(outcome.sft_losses)} steps, loss {outcome.sft_losses[0]:.4f} → {outcome.sft_losses[-1]:.4f}.",
        ]
    if outcome.grpo_rewards:
        rewards = ", ".join(f"{r:.3f}" for r in outcome.grpo_rewards)
        lines += ["", f"GRPO: {len(outcome.grpo_rewards)} steps, mean reward per step: {rewards}."]
    if outcome.checksums_match is not None:
        lines += ["", f"Weights on the rollout worker match the learner's (checksum): {outcome.checksums_match}."]
    if outcome.evals:
        lines += ["", "## Breakdown by question type and hop count", ""] + breakdown_tables(outcome.evals, "stage")
    lines += ["", "## Wall time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in outcome.stage_seconds.items()]
    lines += [f"| total | {sum(outcome.stage_seconds.values()):.1f} |", ""]
    run_dir.write_text("report.md", "\n".join(lines))


def acceptance_table(acceptance: dict[str, dict]) -> list[str]:
    """AutoAgent rejection sampling per training dataset: how many traces were kept and why others were not."""
    if not acceptance:
        return []
    lines = ["", "## AutoAgent traces (rejection sampling)", "", "| dataset | tried | kept | rate | rejected |"]
    lines.append("|---|---|---|---|---|")
    for name, row in acceptance.items():
        reasons = ", ".join(f"{k} {v}" for k, v in row["rejected"].items()) or "-"
        lines.append(f"| {name} | {row['attempted']} | {row['accepted']} | {row['acceptance_rate']:.2f} | {reasons} |")
    return lines
