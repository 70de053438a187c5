"""Where SFT plateaus: held-out EM after 1/4, 1/2, 3/4 and all of the default SFT steps, from one SFT run.

Run: `python -m bench.sft_plateau --traces RUN/traces/sft.jsonl` (the traces `make run` wrote). One `mtr sft` with
`sft.save_every` = a quarter of `sft.steps` (same schedule as the default run: the quarter checkpoints are points
on its warm-up + cosine curve, not shorter runs), then one `mtr eval` of the four checkpoints, greedy, on the
default held-out questions. Writes `bench/results/sft_plateau.json` / `.md`: EM with its 95 % interval per
checkpoint, the paired gain of each over the previous one, and the SFT loss at each quarter. GRPO's gain is
measured from the last row; if EM stops rising before it, SFT can be given fewer steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, run_mtr, write_results
from bench.record_run import provenance
from mtr.config import load_config


def losses(sft_dir: Path) -> dict[int, float]:
    """SFT loss per step from the run's metrics.jsonl."""
    found = {}
    for line in (sft_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "sft" and "loss" in record:
            found[int(record["step"])] = float(record["loss"])
    return found


def markdown(document: dict) -> str:
    lines = ["| SFT steps | loss at that step | held-out EM [95 % interval] | gain over previous [paired 95 %] |"]
    lines.append("|---:|---:|---|---|")
    for row in document["checkpoints"]:
        gain = row.get("gain_over_previous")
        shown = f"{gain['gain']:+.3f} [{gain['gain_ci'][0]:+.3f}, {gain['gain_ci'][1]:+.3f}]" if gain else "-"
        loss = f"{row['loss']:.4f}" if row.get("loss") is not None else "-"
        lines.append(
            f"| {row['steps']} | {loss} | {row['em']:.3f} [{row['em_ci'][0]:.3f}, {row['em_ci'][1]:.3f}] | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sft_plateau", description=__doc__.splitlines()[0])
    parser.add_argument("--traces", required=True, type=Path, help="SFT traces (OpenAI chat JSONL).")
    parser.add_argument("--out-root", type=Path, default=Path("runs/sft-plateau"))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    steps = load_config().sft.steps
    quarter = max(1, steps // 4)
    sft_dir, eval_dir = args.out_root / "sft", args.out_root / "eval"
    argv_sft = ["sft", "--traces", str(args.traces), "--out", str(sft_dir), "--set", f"sft.save_every={quarter}"]
    if (sft_dir / "checkpoints").exists():
        argv_sft.append("--resume")
    sft_seconds = run_mtr(*argv_sft)
    points = [quarter * k for k in range(1, 4) if quarter * k < steps] + [steps]
    models = []
    for step in points:
        name = "final" if step == steps else f"step-{step:06d}"
        models += ["--model", f"sft-{step}={sft_dir / 'checkpoints' / name}"]
    # --resume: checkpoints an interrupted run already evaluated are read back, not evaluated again.
    eval_seconds = run_mtr("eval", *models, "--out", str(eval_dir), "--resume")
    evaluation = json.loads((eval_dir / "eval.json").read_text())
    by_stage = {row.get("model", row.get("stage")): row for row in evaluation["rows"]}  # mtr eval names it "model"
    gains = {(g["before"], g["after"]): g for g in evaluation.get("gains", [])}
    loss_by_step = losses(sft_dir)
    checkpoints = []
    previous = None
    for step in points:
        stage = f"sft-{step}"
        row = by_stage[stage]
        gain = gains.get((previous, stage))
        checkpoints.append(
            {
                "steps": step,
                "loss": loss_by_step.get(step - 1),
                "em": row["em"],
                "em_ci": row["em_ci"],
                "n": row["n"],
                "gain_over_previous": gain
                and {"gain": gain["gain"], "gain_ci": gain["gain_ci"], "n_paired": gain["n_paired"]},
            }
        )
        previous = stage
    document = {
        "provenance": provenance(sft_dir),
        "sft_steps": steps,
        "sft_seconds": sft_seconds,
        "eval_seconds": eval_seconds,
        "checkpoints": checkpoints,
    }
    write_results("sft_plateau", document, markdown(document), args.out_dir)
    print(f"wrote {args.out_dir / 'sft_plateau'}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
