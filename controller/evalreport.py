"""Evaluation reports: eval.json, eval.md and (for several checkpoints) eval.png from a list of EvalResults.

Shared by `mtr eval` (rows are model labels) and `mtr run` (rows are pipeline stages), so both commands'
tables look alike. Checkpoints and datasets keep the order in which they were evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.evaluation import Bucket, EvalResult

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


# -- markdown ----------------------------------------------------------------------------------------------------
def summary_table(results: Sequence[EvalResult], label: str = "model") -> list[str]:
    """One row per checkpoint × dataset: n, EM, F1, valid-trace rate, tool calls per trace."""
    lines = [f"| {label} | dataset | n | EM | F1 | valid traces | tool calls/trace |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.stage} | {r.dataset} | {r.count} | {r.exact_match:.3f} | {r.f1:.3f} | {r.valid_rate:.2f} | "
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
    lines += [f"| {stage} | {k} | {b.n} | {b.em:.3f} | {b.f1:.3f} | {b.valid:.2f} |" for stage, k, b in rows]
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
) -> str:
    lines = [f"# {title}", "", "## Summary", ""] + summary_table(results, label)
    lines += skipped_note(skipped_rows)
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
) -> dict:
    """The eval.json tree: rows, breakdowns[checkpoint][dataset] = {by_type, by_hops}, skipped rows, wall times."""
    breakdowns: dict[str, dict[str, dict]] = {}
    for r in results:
        breakdowns.setdefault(r.stage, {})[r.dataset] = {"by_type": r.by_type, "by_hops": r.by_hops}
    rows = []
    for r in results:
        row = r.row()
        row[label] = row.pop("stage")
        rows.append(row)
    return {
        label + "s": checkpoints(results),
        "datasets": datasets(results),
        "rows": rows,
        "breakdowns": breakdowns,
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
) -> EvalReportFiles:
    """Write eval.json and eval.md, and eval.png when more than one checkpoint was evaluated (else remove it)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_NAME
    json_path.write_text(
        json.dumps(document(results, skipped_rows, wall_seconds, label), indent=2, ensure_ascii=False),
        encoding="utf-8",
    )
    md_path = out_dir / MARKDOWN_NAME
    md_path.write_text(markdown(results, skipped_rows, wall_seconds, label, title), encoding="utf-8")
    png_path: Path | None = out_dir / PLOT_NAME
    if len(checkpoints(results)) > 1:
        plot(results, png_path)
    else:
        png_path.unlink(missing_ok=True)  # a stale plot from an earlier run into the same directory would mislead
        png_path = None
    return EvalReportFiles(json_path, md_path, png_path)
