"""report.md and eval.json of a run: what was measured, written even when the run stops early."""

from __future__ import annotations

from mtr.config import RunConfig


def write_report(run_dir, config: RunConfig, outcome) -> None:
    rows = [e.row() for e in outcome.evals]
    run_dir.write_json("eval.json", {"evals": rows, "by_type": {e.stage: e.by_type for e in outcome.evals}})
    lines = [
        f"# MTR run `{run_dir.path.name}`",
        "",
        f"Model: `{config.model.path}`; world seed {config.world.seed}.",
        "",
    ]
    lines += [
        "## Held-out exact match (embedded world)",
        "",
        "| stage | n | EM | F1 | valid traces | tool calls/trace |",
        "|---|---|---|---|---|---|",
    ]
    for e in outcome.evals:
        lines.append(
            f"| {e.stage} | {e.count} | {e.exact_match:.3f} | {e.f1:.3f} | {e.valid_rate:.2f} | "
            f"{e.mean_tool_calls:.2f} |"
        )
    if not outcome.evals:
        lines.append("| (no evaluation finished) | | | | | |")
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
    lines += ["", "## Wall time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in outcome.stage_seconds.items()]
    lines += [f"| total | {sum(outcome.stage_seconds.values()):.1f} |", ""]
    run_dir.write_text("report.md", "\n".join(lines))
