"""report.md and eval.json/eval.md/eval.png of a run: what was measured, written even when the run stops early.

The evaluation tables come from `controller.reports.evalreport`, the same code `mtr eval` uses, so a run's report
and a standalone evaluation read alike (one row per stage × held-out dataset).
"""

from __future__ import annotations

from controller.reports.evalreport import (
    breakdown_tables,
    gains,
    skipped_note,
    statistics_sections,
    summary_table,
    write_eval_reports,
)
from mtr.config import RunConfig


def write_report(run_dir, config: RunConfig, outcome) -> None:
    title = f"MTR run `{run_dir.path.name}`"
    pass_at_k = getattr(outcome, "pass_at_k", [])
    found = gains(outcome.evals, config.eval.bootstrap_resamples, config.eval.bootstrap_seed)
    write_eval_reports(
        run_dir.path, outcome.evals, outcome.skipped_rows, outcome.stage_seconds, "stage", title, pass_at_k, found
    )
    lines = [f"# {title}", "", f"Model: `{config.model.path}`; world seed {config.world.seed}.", ""]
    lines += ["## Held-out evaluation", "", "EM with its 95 % bootstrap interval over the questions.", ""]
    lines += summary_table(outcome.evals, "stage")
    lines += skipped_note(outcome.skipped_rows)
    lines += statistics_sections(found, pass_at_k, "stage")
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
    busy = getattr(outcome, "stage_cores_busy", {})
    lines += ["", "## Wall time", "", "| stage | seconds | cores busy |", "|---|---|---|"]
    lines += [
        f"| {stage} | {s:.1f} | {busy.get(stage, float('nan')):.2f} |" for stage, s in outcome.stage_seconds.items()
    ]
    lines += [f"| total | {sum(outcome.stage_seconds.values()):.1f} | |", ""]
    lines += ["Cores busy: CPU seconds per wall second over the whole machine during the stage.", ""]
    lines += machine_section(config)
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


def machine_section(config: RunConfig) -> list[str]:
    """Where the figures above came from: CPU, capability, cores, versions, and the precision chosen."""
    from mtr.hardware import describe_machine

    machine = describe_machine()
    cuda = f"; CUDA: {', '.join(machine['cuda_devices'])}" if machine["cuda_devices"] else ""
    choice = config.precision_choice
    precision = f"{choice.dtype} ({choice.reason})" if choice is not None else config.model.dtype
    return [
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, capability {machine['cpu_capability']}, {machine['cores']} cores{cuda}",
        f"- torch {machine['torch']}, vLLM {machine['vllm']}, DeepSpeed {machine['deepspeed']}",
        f"- precision: {precision}",
        "",
    ]
