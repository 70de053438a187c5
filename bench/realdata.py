"""Real data too: `mtr run` with the HotpotQA, MuSiQue and 2Wiki samples' training halves added to the world.

Run: `python -m bench.realdata [--data-dir ../shared/data] [--set KEY=VALUE ...]` (about an hour on 2 cores).
Each benchmark file is listed in both `data.train` and `data.eval`, so the run splits it by a stable hash of
the question id (`data.holdout_fraction`, half by default): the AutoAgent writes SFT traces for training-half
questions, GRPO samples from them, and every stage is evaluated on the held-out halves and the embedded
world's held-out questions. Writes `bench/results/realdata.json` / `.md` (via `bench.record_run`): EM with its
95 % interval per stage and dataset, and the paired gain of GRPO over SFT on each dataset, the question being
whether GRPO is at least not worse on each. A finished run under `--out` is recorded again, not rerun
(`mtr run` itself does not resume: an interrupted one starts over).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, run_mtr, write_results
from bench.record_run import record

SAMPLES = {
    "hotpotqa": "hotpotqa/hotpot_dev_distractor_sample.json",
    "musique": "musique/musique_ans_dev_sample.jsonl",
    "2wiki": "2wikimultihopqa/dev_sample.json",
}
RESULTS_NAME = "realdata"


def data_specs(data_dir: Path) -> list[str]:
    """The embedded world plus each benchmark sample found under `data_dir` (a missing one is an error)."""
    specs = ["synthetic"]
    for kind, relative in SAMPLES.items():
        path = data_dir / relative
        if not path.is_file():
            raise SystemExit(f"bench.realdata: {kind} sample {path} not found (give --data-dir)")
        specs.append(f"{kind}:{path.resolve()}")
    return specs


def run_arguments(specs: list[str], out: Path, extra: list[str]) -> list[str]:
    listed = "[" + ",".join(specs) + "]"
    argv = ["run", "--set", f"runs_dir={out}", "--set", f"name={RESULTS_NAME}"]
    argv += ["--set", f"data.train={listed}", "--set", f"data.eval={listed}"]
    for setting in extra:
        argv += ["--set", setting]
    return argv


def finished_run(out: Path) -> Path | None:
    """The newest run directory under `out` with a report (None before one finished)."""
    runs = sorted(p.parent for p in out.glob(f"{RESULTS_NAME}-*/report.md"))
    return runs[-1] if runs else None


def gains_table(document: dict) -> str:
    lines = ["| dataset | n | EM after SFT | EM after GRPO | GRPO - SFT [paired 95 %] |", "|---|---:|---|---|---|"]
    rows = {(r["dataset"], r["stage"]): r for r in document.get("rows", [])}
    for gain in document.get("gains", []):
        if (gain.get("before"), gain.get("after")) != ("sft", "grpo"):
            continue
        dataset = gain["dataset"]
        cells = []
        for stage in ("sft", "grpo"):
            row = rows.get((dataset, stage))
            cells.append(f"{row['em']:.3f} [{row['em_ci'][0]:.3f}, {row['em_ci'][1]:.3f}]" if row else "-")
        low, high = gain["gain_ci"]
        change = f"{gain['gain']:+.3f} [{low:+.3f}, {high:+.3f}]"
        lines.append(f"| {dataset} | {gain['n_paired']} | {cells[0]} | {cells[1]} | {change} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realdata", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/realdata"))
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    specs = data_specs(args.data_dir)
    wall = None
    if finished_run(args.out) is None:
        wall = run_mtr(*run_arguments(specs, args.out, args.settings))
    run_dir = finished_run(args.out)
    if run_dir is None:
        raise SystemExit(f"bench.realdata: the run under {args.out} wrote no report.md")
    document, _ = record(run_dir, wall)
    document["datasets"] = specs
    markdown = gains_table(document)
    write_results(RESULTS_NAME, document, markdown, args.out_dir)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
