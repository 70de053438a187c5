"""Keep a finished run's figures in bench/results/, so the README's run tables come from a committed file.

Run: `python -m bench.record_run RUN_DIR --name NAME` after `make run` (or any `mtr run`/`mtr eval`/`mtr grpo`).
Writes `bench/results/NAME.json` (eval.json's rows, gains and pass@k, the stage wall times and cores busy from
metrics.jsonl, the machine and precision from config.yaml's header, the command's total wall time if given)
and `NAME.md` (the run's report.md, or eval.md). A `mtr grpo` directory has no eval.json: its rows and gains are
recomputed from the one-row-per-question `traces/eval.jsonl` (each evaluated step against the next, and the
first against the last, paired by question), and its GRPO steps (reward, groups kept, served weights changed)
come from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, write_results
from controller.reports.evalreport import stage_pairs
from controller.scoring.intervals import bootstrap_mean, paired_difference

STEP_FIELDS = ("reward", "exact_match", "groups_drawn", "groups_kept", "draws", "weights_changed_fraction")


def provenance(run_dir: Path) -> dict[str, str]:
    """The `# key: value` comment lines at the top of the run's config.yaml (machine, precision)."""
    found = {}
    config = run_dir / "config.yaml"
    for line in config.read_text().splitlines() if config.exists() else []:
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        found[key] = value
    return found


def stages(run_dir: Path) -> dict[str, dict[str, float]]:
    """Each stage's wall seconds and cores busy, from the run's metrics.jsonl."""
    found = {}
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        record = json.loads(line)
        if record.get("event") == "stage":
            found[record["name"]] = {"seconds": record["seconds"], "cores_busy": record.get("cores_busy")}
    return found


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def from_traces(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(rows, gains) recomputed from traces/eval.jsonl: EM with its 95 % interval per evaluated stage and
    dataset, and the paired EM gain of each stage over the previous one and of the last over the first."""
    questions: dict[tuple[str, str], dict[str, float]] = {}
    for record in _jsonl(run_dir / "traces" / "eval.jsonl"):
        questions.setdefault((record["dataset"], record["stage"]), {})[record["task_id"]] = float(record["exact_match"])
    rows, gains = [], []
    for dataset in dict.fromkeys(d for d, _ in questions):
        stages = [s for d, s in questions if d == dataset]
        for stage in stages:
            interval = bootstrap_mean(list(questions[(dataset, stage)].values()))
            rows.append(
                {"dataset": dataset, "stage": stage, "n": interval.n, "em": interval.estimate, "em_ci": interval.bounds}
            )
        for before, after in stage_pairs(stages):
            d = paired_difference(questions[(dataset, before)], questions[(dataset, after)])
            gains.append(
                {"dataset": dataset, "from": before, "to": after, "n_paired": d.n, "gain": d.estimate, "ci": d.bounds}
            )
    return rows, gains


def grpo_steps(run_dir: Path) -> list[dict]:
    return [
        {"step": r["step"], **{key: r.get(key) for key in STEP_FIELDS}}
        for r in _jsonl(run_dir / "metrics.jsonl")
        if r.get("event") == "grpo"
    ]


def markdown(document: dict) -> str:
    lines = ["| stage | dataset | n | EM [95 % interval] |", "|---|---|---:|---|"]
    lines += [
        f"| {r['stage']} | {r['dataset']} | {r['n']} | {r['em']:.3f} [{r['em_ci'][0]:.3f}, {r['em_ci'][1]:.3f}] |"
        for r in document["rows"]
    ]
    lines += ["", "| dataset | from | to | n paired | EM gain [paired 95 % interval] |", "|---|---|---|---:|---|"]
    lines += [
        f"| {g['dataset']} | {g['from']} | {g['to']} | {g['n_paired']} | {g['gain']:+.3f} "
        f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] |"
        for g in document["gains"]
    ]
    return "\n".join(lines) + "\n"


def record(run_dir: Path, wall_seconds: float | None = None) -> tuple[dict, str]:
    document = {
        "run": run_dir.name,
        "provenance": provenance(run_dir),
        "command_wall_seconds": wall_seconds,
        "stages": stages(run_dir),
    }
    if (run_dir / "eval.json").exists():
        evaluation = json.loads((run_dir / "eval.json").read_text())
        document |= {k: evaluation.get(k, []) for k in ("rows", "gains", "pass_at_k")}
        report = run_dir / "report.md"
        return document, (report if report.exists() else run_dir / "eval.md").read_text()
    rows, gains = from_traces(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir} has no eval.json and no traces/eval.jsonl: not a finished run directory")
    document |= {"rows": rows, "gains": gains, "grpo_steps": grpo_steps(run_dir)}
    return document, markdown(document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.record_run", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help="Results file stem (<name>.json, <name>.md).")
    parser.add_argument("--wall-seconds", type=float, help="The whole command's wall time (e.g. from `time`).")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    try:
        document, text = record(args.run_dir, args.wall_seconds)
    except (FileNotFoundError, json.JSONDecodeError) as error:
        print(f"record_run: {error}", file=sys.stderr)
        return 2
    write_results(args.name, document, text, args.out_dir)
    print(f"wrote {args.out_dir / args.name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
