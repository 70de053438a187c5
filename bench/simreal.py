"""The sim-to-real table: GRPO against grounded tools vs a trained ToolActor model, each evaluated both ways.

Run: `python -m bench.simreal --sft RUN/checkpoints/sft --toolmodel TM/checkpoints/final [--steps 12]`
(`make run` keeps its SFT checkpoint in RUN/checkpoints/sft; `mtr simulator train --out TM` writes TM). From
the same SFT start, three `mtr grpo` runs: against the grounded tools, against the trained tool model, and
against the untrained base model prompted as the ToolActor (what training the tool model is worth). Then two
`mtr eval`s of the SFT start and the three results on the same held-out questions: once with the grounded
tools ("real"), once with the trained tool model ("simulated"). Every run and evaluation is resumable.
Writes `bench/results/simreal.json` / `.md`: EM with 95 % intervals in a (trained against) × (evaluated with)
table, and the paired gaps that matter: simulated-trained − grounded-trained, both evaluated grounded (the
sim-to-real gap; ZeroSearch's 3B simulator: −2.3 points), and each policy's simulated − real evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, question_em, run_mtr, write_results
from controller.scoring.intervals import bootstrap_mean, paired_difference

TRAINED_AGAINST = ("grounded", "simulated", "base-actor")
EVALUATED_WITH = ("real", "simulated")


def actor_settings(actor_model: str | None) -> list[str]:
    if actor_model is None:
        return []
    return ["--set", "simulator.actor=model", "--set", f"simulator.actor_model={actor_model}"]


def table(em: dict[tuple[str, str], dict[str, float]]) -> dict:
    """Cells (EM, interval) and the paired gaps, from per-question EM per (policy, evaluation)."""
    cells = {}
    for (policy, evaluation), values in em.items():
        interval = bootstrap_mean(list(values.values()))
        cells[f"{policy}|{evaluation}"] = {"em": interval.estimate, "em_ci": interval.bounds, "n": interval.n}
    gaps = {}

    def gap(name: str, before: tuple[str, str], after: tuple[str, str]) -> None:
        if before in em and after in em:
            d = paired_difference(em[before], em[after])
            gaps[name] = {"gain": d.estimate, "ci": d.bounds, "n_paired": d.n}

    gap(
        "sim_to_real: simulated-trained - grounded-trained, evaluated real", ("grounded", "real"), ("simulated", "real")
    )
    gap(
        "tool model worth: simulated-trained - base-actor-trained, evaluated real",
        ("base-actor", "real"),
        ("simulated", "real"),
    )
    for policy in ("sft", *TRAINED_AGAINST):
        gap(f"{policy}: evaluated simulated - real", (policy, "real"), (policy, "simulated"))
    return {"cells": cells, "gaps": gaps}


def markdown(document: dict) -> str:
    cells = document["table"]["cells"]

    def cell(policy: str, evaluation: str) -> str:
        c = cells.get(f"{policy}|{evaluation}")
        return f"{c['em']:.3f} [{c['em_ci'][0]:.3f}, {c['em_ci'][1]:.3f}]" if c else "-"

    lines = ["| policy (GRPO trained against) | EM, real tools | EM, simulated tools |", "|---|---|---|"]
    for policy in ("sft", *TRAINED_AGAINST):
        lines.append(f"| {policy} | {cell(policy, 'real')} | {cell(policy, 'simulated')} |")
    lines.append("")
    for name, g in document["table"]["gaps"].items():
        lines.append(f"- {name}: {g['gain']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] (n {g['n_paired']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simreal", description=__doc__.splitlines()[0])
    parser.add_argument("--sft", required=True, help="The SFT checkpoint every GRPO run starts from.")
    parser.add_argument("--toolmodel", required=True, help="The trained ToolActor checkpoint.")
    parser.add_argument("--base-actor", help="Untrained ToolActor checkpoint (default: the embedded model).")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out-root", type=Path, default=Path("runs/simreal"))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    from mtr.modelprep import resolve_model_path

    base_actor = str(resolve_model_path(args.base_actor or "default"))
    actors = {"grounded": None, "simulated": args.toolmodel, "base-actor": base_actor}
    seconds: dict[str, float] = {}
    for policy, actor_model in actors.items():
        out = args.out_root / f"grpo-{policy}"
        if (out / "checkpoints" / "final").exists():
            continue
        argv_grpo = ["grpo", "--model", args.sft, "--out", str(out), "--set", f"grpo.steps={args.steps}"]
        argv_grpo += actor_settings(actor_model) + (["--resume"] if (out / "checkpoints").exists() else [])
        seconds[f"grpo-{policy}"] = run_mtr(*argv_grpo)
    models = ["--model", f"sft={args.sft}"]
    for policy in TRAINED_AGAINST:
        models += ["--model", f"{policy}={args.out_root / f'grpo-{policy}' / 'checkpoints' / 'final'}"]
    em: dict[tuple[str, str], dict[str, float]] = {}
    for evaluation, actor_model in (("real", None), ("simulated", args.toolmodel)):
        out = args.out_root / f"eval-{evaluation}"
        seconds[f"eval-{evaluation}"] = run_mtr(
            "eval", *models, "--out", str(out), "--resume", *actor_settings(actor_model)
        )
        for policy in ("sft", *TRAINED_AGAINST):
            em[(policy, evaluation)] = question_em(out / "traces" / f"{policy}-synthetic.jsonl")[policy]
    document = {
        "steps": args.steps,
        "sft": args.sft,
        "toolmodel": args.toolmodel,
        "seconds": seconds,
        "table": table(em),
    }
    write_results("simreal", document, markdown(document), args.out_dir)
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
