"""Keep a finished run's figures in bench/results/, so the README's run tables come from a committed file.

Run: `python -m bench.record_run RUN_DIR --name NAME` after `make run` (or any `mtr run`/`mtr eval`/`mtr grpo`).
Writes `bench/results/NAME.json` (eval.json's rows, gains and pass@k, the stage wall times and cores busy from
metrics.jsonl, the machine and precision from config.yaml's header, the command's total wall time if given)
and `NAME.md` (the run's report.md, or eval.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, write_results


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


def record(run_dir: Path, wall_seconds: float | None = None) -> tuple[dict, str]:
    if not (run_dir / "eval.json").exists():
        raise FileNotFoundError(f"{run_dir} has no eval.json: not a finished run directory")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    document = {
        "run": run_dir.name,
        "provenance": provenance(run_dir),
        "command_wall_seconds": wall_seconds,
        "stages": stages(run_dir),
        "rows": evaluation.get("rows", []),
        "gains": evaluation.get("gains", []),
        "pass_at_k": evaluation.get("pass_at_k", []),
    }
    report = run_dir / "report.md"
    text = (report if report.exists() else run_dir / "eval.md").read_text()
    return document, text


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
