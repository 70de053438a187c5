"""The Stage-2 curve researchers ask for, from one long `mtr grpo` run: held-out EM with its interval at every
evaluated step, the paired gain over the start, and the mean reward and each reward component per step.

Run: `python -m bench.grpo_curve --run runs/grpo-sweep/defaults-long` (the long run of `python -m
bench.grpo_sweep --variants defaults-long --steps 50 --eval-every 10`, resumable). Writes
`bench/results/grpo_curve.json` / `.md` and `grpo_curve.png` (reward per step; EM with its 95 % band).
`--passk EVAL_DIR` adds pass@k at the start and the end: an `mtr eval --set eval.pass_samples=K` of the SFT
start and the last checkpoint (labels `start` and `end`) on the same questions, at the rollout temperature.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, question_em, write_results
from bench.record_run import provenance
from controller.reports.grpocurve import GRPOCurve
from controller.scoring.intervals import bootstrap_mean, paired_difference
from controller.scoring.reward import COMPONENTS


def per_step(run: Path) -> list[dict]:
    """Each GRPO step's mean reward, reward components, groups kept/dropped and seconds."""
    rows = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("event") == "grpo":
            keep = ("step", *COMPONENTS, "groups_kept", "groups_dropped", "rollout_seconds", "learner_seconds")
            rows.append({key: record[key] for key in keep if key in record})
    return rows


def _eval_rows(run: Path) -> dict[str, list[dict]]:
    """stage -> its one-row-per-question evaluation records."""
    rows: dict[str, list[dict]] = {}
    for line in (run / "traces" / "eval.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows.setdefault(row["stage"], []).append(row)
    return rows


def _mean_by(rows: list[dict], key: str) -> dict[str, dict]:
    """EM and question count per value of `key` (question_type, hops): where a gain came from."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(str(row.get(key)), []).append(float(row["exact_match"]))
    return {name: {"em": sum(v) / len(v), "n": len(v)} for name, v in sorted(groups.items())}


def evaluated(run: Path) -> list[dict]:
    """EM per evaluated step with its interval, the paired gain over step 0 on the same questions, the answers
    that turned right and wrong since step 0, EM by question type and hop count, and tool calls per trace."""
    by_stage = question_em(run / "traces" / "eval.jsonl")
    records = _eval_rows(run)
    stages = sorted(by_stage, key=lambda name: int(name.split("-")[-1]))
    start = by_stage[stages[0]]
    rows = []
    for stage in stages:
        em = bootstrap_mean(list(by_stage[stage].values()))
        gain = paired_difference(start, by_stage[stage])
        now = by_stage[stage]
        rows.append(
            {
                "step": int(stage.split("-")[-1]),
                "em": em.estimate,
                "em_ci": em.bounds,
                "n": em.n,
                "gain_over_start": gain.estimate,
                "gain_ci": gain.bounds,
                "turned_right": sum(1 for q, v in now.items() if v > start.get(q, v)),
                "turned_wrong": sum(1 for q, v in now.items() if v < start.get(q, v)),
                "by_type": _mean_by(records[stage], "question_type"),
                "by_hops": _mean_by(records[stage], "hops"),
                "tool_calls": sum(float(r.get("tool_calls", 0)) for r in records[stage]) / len(records[stage]),
            }
        )
    return rows


def pass_at_k(eval_dir: Path) -> list[dict]:
    """The pass@k rows of an `mtr eval` with pass samples (one per model label and dataset), each with the
    greedy EM of the same checkpoint on the same questions beside it."""
    document = json.loads((eval_dir / "eval.json").read_text())
    greedy = {(row["model"], row["dataset"]): row for row in document.get("rows", [])}
    rows = []
    for row in document.get("pass_at_k", []):
        same = greedy.get((row["model"], row.get("dataset", "synthetic")))
        rows.append({**row, **({"greedy_em": same["em"], "greedy_em_ci": same["em_ci"]} if same else {})})
    return rows


def markdown(document: dict) -> str:
    lines = ["| GRPO steps | held-out EM [95 %] | gain over step 0 [paired 95 %] |", "|---:|---|---|"]
    for row in document["evaluations"]:
        lines.append(
            f"| {row['step']} | {row['em']:.3f} [{row['em_ci'][0]:.3f}, {row['em_ci'][1]:.3f}] | "
            f"{row['gain_over_start']:+.3f} [{row['gain_ci'][0]:+.3f}, {row['gain_ci'][1]:+.3f}] |"
        )
    if document.get("pass_at_k"):
        ks = sorted(
            {int(key[5:]) for row in document["pass_at_k"] for key in row if key.startswith("pass@") and "_" not in key}
        )
        header = "| checkpoint | n | samples | temperature | greedy EM | " + " | ".join(f"pass@{k}" for k in ks)
        lines += ["", header + " |", "|---|---:|---:|---:|---|" + "---|" * len(ks)]
        for row in document["pass_at_k"]:
            cells = [f"{row[f'pass@{k}']:.3f} [{row[f'pass@{k}_ci'][0]:.3f}, {row[f'pass@{k}_ci'][1]:.3f}]" for k in ks]
            greedy = "-"
            if "greedy_em" in row:
                greedy = f"{row['greedy_em']:.3f} [{row['greedy_em_ci'][0]:.3f}, {row['greedy_em_ci'][1]:.3f}]"
            lines.append(
                f"| {row['model']} | {row['n']} | {row['samples']} | {row['temperature']} | {greedy} | "
                + " | ".join(cells)
                + " |"
            )
    last = document["evaluations"][-1] if document["evaluations"] else None
    if last and "by_type" in last:
        first = document["evaluations"][0]
        lines += ["", f"Step 0 → step {last['step']}: {last['turned_right']} answers turned right, "
                  f"{last['turned_wrong']} wrong; tool calls per trace {first['tool_calls']:.2f} → "
                  f"{last['tool_calls']:.2f}.", "", "| breakdown | questions | EM at step 0 | EM at step "
                  f"{last['step']} |", "|---|---:|---:|---:|"]  # fmt: skip
        for key, label in (("by_hops", "hops"), ("by_type", "type")):
            for name, now in last[key].items():
                before = first[key].get(name, {"em": float("nan")})
                lines.append(f"| {label} {name} | {now['n']} | {before['em']:.2f} | {now['em']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpo_curve", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/grpo-sweep/defaults-long"))
    parser.add_argument("--passk", type=Path, help="An `mtr eval` directory with pass@k of the start and the end.")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    steps = per_step(args.run)
    document = {
        "provenance": provenance(args.run),
        "run": str(args.run),
        "steps_done": len(steps),
        "evaluations": evaluated(args.run),
        "steps": steps,
        "pass_at_k": pass_at_k(args.passk) if args.passk else [],
    }
    write_results("grpo_curve", document, markdown(document), args.out_dir)
    curve = GRPOCurve.from_dict(json.loads((args.run / "grpo_curve.json").read_text()))
    curve.plot(args.out_dir / "grpo_curve.png")
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
