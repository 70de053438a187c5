"""Evaluation reports: eval.json, eval.md and (for several checkpoints) eval.png from a list of EvalResults.

Shared by `mtr eval` (rows are model labels) and `mtr run` (rows are pipeline stages), so both commands'
tables look alike. Checkpoints and datasets keep the order in which they were evaluated. Every EM is shown
with its 95 % bootstrap interval; gains between checkpoints (consecutive ones, and first to last) with a
paired interval over the questions both answered; pass@k, when it was measured, in a table of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

from controller.scoring.intervals import RESAMPLES, SEED, paired_difference
from controller.stages.evaluation import Bucket, EvalResult, PassAtK

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "eval.json", "eval.md", "eval.png"


@dataclass(frozen=True)
class EvalReportFiles:
    json: Path
    markdown: Path
    plot: Path | None  # None when only one checkpoint was evaluated: a plot of one point says nothing


def checkpoints(results: Sequence[EvalResult]) -> list[str]:
    """Checkpoint labels (or stages) in evaluation order, each once."""
    return list(dict.fromkeys(r.stage for r in results))


def datasets(results: Sequence[EvalResult]) -> list[str]:
    return list(dict.fromkeys(r.dataset for r in results))


@dataclass(frozen=True)
class Gain:
    """EM of `after` minus EM of `before` on one dataset, over the questions both answered (paired)."""

    dataset: str
    before: str
    after: str
    gain: float
    low: float  # paired bootstrap 95 % interval of `gain`
    high: float
    n_paired: int

    def as_dict(self) -> dict:
        values = asdict(self)
        values["gain_ci"] = [values.pop("low"), values.pop("high")]
        return values


def stage_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """Each checkpoint against the next, and the first against the last (base→sft, sft→grpo, base→grpo)."""
    pairs = list(pairwise(labels))
    if len(labels) > 2:
        pairs.append((labels[0], labels[-1]))
    return pairs


def gains(results: Sequence[EvalResult], resamples: int = RESAMPLES, seed: int = SEED) -> list[Gain]:
    """Per dataset and checkpoint pair, the EM gain with its paired bootstrap interval (questions by task id)."""
    found = []
    for name in datasets(results):
        by_stage = {r.stage: r for r in results if r.dataset == name}
        for before, after in stage_pairs([s for s in checkpoints(results) if s in by_stage]):
            d = paired_difference(by_stage[before].question_em, by_stage[after].question_em, resamples, seed)
            found.append(Gain(name, before, after, d.estimate, d.low, d.high, d.n))
    return found


def em_cell(em: float, low: float, high: float) -> str:
    """EM with its interval, as every table shows it: `0.625 [0.55, 0.70]`."""
    return f"{em:.3f} [{low:.2f}, {high:.2f}]"


# -- markdown ----------------------------------------------------------------------------------------------------
def summary_table(results: Sequence[EvalResult], label: str = "model") -> list[str]:
    """One row per checkpoint × dataset: n, EM, F1, valid-trace rate, tool calls per trace."""
    lines = [f"| {label} | dataset | n | EM | F1 | valid traces | tool calls/trace |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.stage} | {r.dataset} | {r.count} | {em_cell(r.exact_match, r.em_low, r.em_high)} | {r.f1:.3f} | "
            f"{r.valid_rate:.2f} | "
            f"{r.mean_tool_calls:.2f} |"
        )
    if not results:
        lines.append("| (no evaluation finished) | | | | | | |")
    return lines


def breakdown_tables(results: Sequence[EvalResult], label: str = "model") -> list[str]:
    """Per dataset: a table by question type and a table by hop count, every checkpoint's rows together."""
    lines: list[str] = []
    for name in datasets(results):
        of_dataset = [r for r in results if r.dataset == name]
        lines += [f"### {name}", "", "By question type:", ""]
        lines += _bucket_table(label, "type", [(r.stage, k, b) for r in of_dataset for k, b in r.types.items()])
        lines += ["", "By hop count:", ""]
        lines += _bucket_table(label, "hops", [(r.stage, str(k), b) for r in of_dataset for k, b in r.hops.items()])
        lines.append("")
    return lines


def _bucket_table(label: str, key: str, rows: Sequence[tuple[str, str, Bucket]]) -> list[str]:
    lines = [f"| {label} | {key} | n | EM | F1 | valid traces |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {stage} | {k} | {b.n} | {em_cell(b.em, b.em_low, b.em_high)} | {b.f1:.3f} | {b.valid:.2f} |"
        for stage, k, b in rows
    ]
    return lines


def gains_table(found: Sequence[Gain]) -> list[str]:
    """One row per dataset × checkpoint pair: EM gain and its paired 95 % interval (nothing when no pair)."""
    if not found:
        return []
    lines = ["| dataset | from | to | n paired | EM gain | 95 % interval (paired) |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {g.dataset} | {g.before} | {g.after} | {g.n_paired} | {g.gain:+.3f} | [{g.low:+.3f}, {g.high:+.3f}] |"
        for g in found
    ]
    return lines


def pass_at_k_table(results: Sequence[PassAtK], label: str = "model") -> list[str]:
    """One row per checkpoint × dataset: samples per question, temperature, pass@k with its 95 % interval."""
    if not results:
        return []
    ks = sorted({k for r in results for k in r.values})
    header = f"| {label} | dataset | n | samples | temperature | " + " | ".join(f"pass@{k}" for k in ks) + " |"
    lines = [header, "|---" * (5 + len(ks)) + "|"]
    for r in results:
        cells = [em_cell(r.values[k].estimate, r.values[k].low, r.values[k].high) if k in r.values else "-" for k in ks]
        lines.append(
            f"| {r.stage} | {r.dataset} | {r.count} | {r.samples} | {r.temperature:g} | " + " | ".join(cells) + " |"
        )
    return lines


def statistics_sections(found: Sequence[Gain], pass_at_k: Sequence[PassAtK], label: str = "model") -> list[str]:
    """The gains and pass@k sections of eval.md and report.md (empty when there is neither)."""
    lines: list[str] = []
    if found:
        lines += ["", "## Gains in EM (paired bootstrap over the same questions)", ""] + gains_table(found)
    if pass_at_k:
        lines += ["", "## pass@k (sampled at the rollout temperature; unbiased estimator)", ""]
        lines += pass_at_k_table(pass_at_k, label)
    return lines


def skipped_note(skipped_rows: Mapping[str, int]) -> list[str]:
    """A line naming the datasets that lost malformed rows (nothing when none did)."""
    skipped = {k: v for k, v in skipped_rows.items() if v}
    if not skipped:
        return []
    return ["", "Malformed dataset rows skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()) + "."]


def markdown(
    results: Sequence[EvalResult],
    skipped_rows: Mapping[str, int],
    wall_seconds: Mapping[str, float],
    label: str = "model",
    title: str = "Evaluation",
    found: Sequence[Gain] = (),
    pass_at_k: Sequence[PassAtK] = (),
) -> str:
    lines = [f"# {title}", "", "## Summary", "", "EM with its 95 % bootstrap interval over the questions.", ""]
    lines += summary_table(results, label)
    lines += skipped_note(skipped_rows)
    lines += statistics_sections(found, pass_at_k, label)
    if results:
        lines += ["", "## Breakdown by question type and hop count", ""] + breakdown_tables(results, label)
    lines += ["", "## Wall time", "", "| part | seconds |", "|---|---|"]
    lines += [f"| {part} | {seconds:.1f} |" for part, seconds in wall_seconds.items()]
    return "\n".join(lines) + "\n"


# -- json ----------------------------------------------------------------------------------------------------------
def document(
    results: Sequence[EvalResult],
    skipped_rows: Mapping[str, int],
    wall_seconds: Mapping[str, float],
    label: str = "model",
    found: Sequence[Gain] = (),
    pass_at_k: Sequence[PassAtK] = (),
) -> dict:
    """The eval.json tree: rows (EM with `em_ci`), breakdowns[checkpoint][dataset] = {by_type, by_hops}, gains
    (paired `gain_ci`), pass@k rows, skipped rows, wall times."""
    breakdowns: dict[str, dict[str, dict]] = {}
    for r in results:
        breakdowns.setdefault(r.stage, {})[r.dataset] = {"by_type": r.by_type, "by_hops": r.by_hops}
    rows = []
    for r in results:
        row = r.row()
        row[label] = row.pop("stage")
        rows.append(row)
    pass_rows = []
    for p in pass_at_k:
        row = p.row()
        row[label] = row.pop("stage")
        pass_rows.append(row)
    return {
        label + "s": checkpoints(results),
        "datasets": datasets(results),
        "rows": rows,
        "breakdowns": breakdowns,
        "gains": [g.as_dict() for g in found],
        "pass_at_k": pass_rows,
        "skipped_rows": dict(skipped_rows),
        "wall_seconds": dict(wall_seconds),
    }


# -- plot ----------------------------------------------------------------------------------------------------------
def plot(results: Sequence[EvalResult], path: Path) -> Path:
    """EM and F1 per dataset across the checkpoints, in evaluation order (one panel per dataset)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    labels, names = checkpoints(results), datasets(results)
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        by_stage = {r.stage: r for r in results if r.dataset == name}
        shown = [s for s in labels if s in by_stage]
        positions = [labels.index(s) for s in shown]
        axis.plot(positions, [by_stage[s].exact_match for s in shown], marker="o", label="EM")
        axis.plot(positions, [by_stage[s].f1 for s in shown], marker="s", label="F1")
        axis.set_xticks(range(len(labels)), labels, rotation=20)
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# -- all three -------------------------------------------------------------------------------------------------
def write_eval_reports(
    out_dir: Path,
    results: Sequence[EvalResult],
    skipped_rows: Mapping[str, int],
    wall_seconds: Mapping[str, float],
    label: str = "model",
    title: str = "Evaluation",
    pass_at_k: Sequence[PassAtK] = (),
    found: Sequence[Gain] | None = None,
) -> EvalReportFiles:
    """Write eval.json and eval.md, and eval.png when more than one checkpoint was evaluated (else remove it).

    `found` are the gains, computed here with the default bootstrap when not given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = gains(results) if found is None else found
    json_path = out_dir / JSON_NAME
    tree = document(results, skipped_rows, wall_seconds, label, found, pass_at_k)
    json_path.write_text(json.dumps(tree, indent=2, ensure_ascii=False), encoding="utf-8")
    md_path = out_dir / MARKDOWN_NAME
    md_path.write_text(markdown(results, skipped_rows, wall_seconds, label, title, found, pass_at_k), encoding="utf-8")
    png_path: Path | None = out_dir / PLOT_NAME
    if len(checkpoints(results)) > 1:
        plot(results, png_path)
    else:
        png_path.unlink(missing_ok=True)  # a stale plot from an earlier run into the same directory would mislead
        png_path = None
    return EvalReportFiles(json_path, md_path, png_path)
