"""GRPO levers, one run each from the same SFT checkpoint, on the same 200 held-out questions.

Run: `python -m bench.grpo_sweep --model RUN/checkpoints/sft [--variants a,b] [--steps 12 --eval-every 6]`
(`make run` keeps its SFT checkpoint in runs/<run>/checkpoints/sft). Each variant is one `mtr grpo` process,
alone on the machine, with the overrides below on top of the defaults; its held-out EM (greedy, 95 % interval)
at every evaluated step, the paired gain of the last evaluation over the first, and EM by hop count go to
`bench/results/grpo_sweep.json` / `.md`. Variants already in that file are kept, so the sweep can be run a
few variants at a time (each takes about 35 minutes on 2 cores); `--record-only` re-reads finished run
directories under `--out-root` instead of training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.common import RESULTS_DIR, write_results
from bench.grpo_curve import evaluated
from bench.record_run import record

# name -> (what it changes, overrides). Everything else is the default config.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "defaults-long": (
        "the defaults (T 0.7, lr 2e-5, uniform), run long: does the gain keep rising past 12 steps?",
        [],
    ),
    "t1.0-lr2e-5-uniform": (
        "sampling temperature 1.0, lr 2e-5, questions drawn uniformly",
        ["rollout.temperature=1.0", "grpo.lr=2e-5", "grpo.curriculum.enabled=false"],
    ),
    "t0.7-lr2e-5-uniform": (
        "temperature 0.7 (samples nearer the greedy policy the evaluation measures)",
        ["rollout.temperature=0.7", "grpo.lr=2e-5", "grpo.curriculum.enabled=false"],
    ),
    "t0.7-lr5e-5-uniform": (
        "the defaults at 2.5x the learning rate (5e-5): the 50-step curve rose about linearly in steps, so does a "
        "larger step buy the same gain in fewer of them (what a 30-minute `make run` needs)?",
        ["rollout.temperature=0.7", "grpo.lr=5e-5", "grpo.curriculum.enabled=false"],
    ),
    "t0.7-lr4e-5-balanced": (
        "temperature 0.7, lr 4e-5, every hop level an equal share of the questions (curriculum from level 4), up to "
        "6 draws per step to fill it with groups that have signal",
        [
            "rollout.temperature=0.7",
            "grpo.lr=4e-5",
            "grpo.max_draws_per_step=6",
            "grpo.curriculum.start_level=4",
            "grpo.curriculum.balance_levels=true",
        ],
    ),
}
RESULTS_NAME = "grpo_sweep"


def run_variant(name: str, model: str, out: Path, steps: int, eval_every: int, save_every: int | None = None) -> float:
    """One `mtr grpo` process; returns its wall seconds. Checkpoints every `save_every` steps (default: at each
    evaluation), so a stopped run resumes losing at most that many."""
    _, overrides = VARIANTS[name]
    save = save_every or eval_every
    settings = [f"grpo.steps={steps}", f"grpo.eval_every={eval_every}", f"grpo.save_every={save}", *overrides]
    argv = [sys.executable, "-m", "mtr.cli", "grpo", "--model", model, "--out", str(out)]
    argv += [arg for setting in settings for arg in ("--set", setting)]
    if (out / "checkpoints").exists():
        argv.append("--resume")  # an interrupted variant continues
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def by_hops(run_dir: Path) -> dict[str, dict[str, float]]:
    """EM per evaluated stage and hop count, from the run's one-row-per-question traces/eval.jsonl."""
    totals: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    path = run_dir / "traces" / "eval.jsonl"
    for line in path.read_text().splitlines():
        row = json.loads(line)
        totals[row["stage"]][int(row.get("hops") or 0)].append(float(row["exact_match"]))
    return {
        stage: {str(h): round(sum(v) / len(v), 4) for h, v in sorted(levels.items())}
        for stage, levels in totals.items()
    }


def summarize(name: str, run_dir: Path, wall_seconds: float | None, steps: int, eval_every: int) -> dict:
    document, _ = record(run_dir, wall_seconds)
    rows = document["rows"]
    first, last = rows[0]["stage"], rows[-1]["stage"]
    overall = next((g for g in document["gains"] if g["from"] == first and g["to"] == last), None)
    return {
        "variant": name,
        "changes": VARIANTS[name][0],
        "steps": steps,  # planned (the LR schedule's length); a stopped run records how far it got below
        "steps_done": len(document.get("grpo_steps", [])),
        "eval_every": eval_every,
        "overrides": VARIANTS[name][1],
        "provenance": document["provenance"],
        "wall_seconds": wall_seconds,
        "rows": rows,
        "gain_last_over_first": overall,
        "by_hops": by_hops(run_dir),
        # per evaluated step: answers turned right/wrong since the first, EM by question type and hops
        "evaluations": evaluated(run_dir),
        "grpo_steps": document.get("grpo_steps", []),
    }


def markdown(variants: dict[str, dict]) -> str:
    lines = [
        "| variant | changes | EM per evaluated step [95 % interval] | gain last - first [paired 95 %] "
        "| answers turned right / wrong | EM by hops |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        ems = "; ".join(f"{r['stage']} {r['em']:.3f} [{r['em_ci'][0]:.3f}, {r['em_ci'][1]:.3f}]" for r in v["rows"])
        g = v["gain_last_over_first"]
        gain = f"{g['gain']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] (n {g['n_paired']})" if g else "-"
        hops = "; ".join(
            f"{stage}: " + ", ".join(f"{h}h {em:.2f}" for h, em in levels.items())
            for stage, levels in v["by_hops"].items()
        )
        last = (v.get("evaluations") or [{}])[-1]
        turned = f"{last['turned_right']} / {last['turned_wrong']}" if "turned_right" in last else "-"
        lines.append(f"| {name} | {v['changes']} | {ems} | {gain} | {turned} | {hops} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpo_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SFT checkpoint every variant starts from.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated, of: {', '.join(VARIANTS)}.")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-every", type=int, default=6)
    parser.add_argument("--save-every", type=int, help="Checkpoint every N steps (default: --eval-every).")
    parser.add_argument("--out-root", type=Path, default=Path("runs/grpo-sweep"))
    parser.add_argument("--record-only", action="store_true", help="Only re-read finished runs under --out-root.")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if unknown := [n for n in names if n not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if not args.record_only and not args.model:
        parser.error("--model (the SFT checkpoint) is needed unless --record-only")
    existing = args.out_dir / f"{RESULTS_NAME}.json"
    variants = json.loads(existing.read_text()).get("variants", {}) if existing.exists() else {}
    for name in names:
        run_dir = args.out_root / name
        previous = variants.get(name, {})
        if args.record_only:  # re-reading keeps what only the run itself measured, and its planned length
            wall = previous.get("wall_seconds")
            steps, eval_every = previous.get("steps", args.steps), previous.get("eval_every", args.eval_every)
        else:
            wall = run_variant(name, args.model, run_dir, args.steps, args.eval_every, args.save_every)
            steps, eval_every = args.steps, args.eval_every
        variants[name] = summarize(name, run_dir, wall, steps, eval_every)
        # Machine and precision are in each variant's provenance (its run's config.yaml header); step counts
        # differ between variants, so each carries its own.
        document = {"variants": variants}
        write_results(RESULTS_NAME, document, markdown(variants), args.out_dir)  # after each variant: nothing lost
    print(f"wrote {args.out_dir / RESULTS_NAME}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
