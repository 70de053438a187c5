"""How faithful a trained ToolActor model is to the grounded tool, and how fast it answers, on calls it never saw.

Run: `python -m bench.toolmodel_fidelity --model RUN/checkpoints/final` (RUN: an `mtr simulator train` output;
its pairs.jsonl holds the held-out split of harvested calls with their grounded observations). One replica
serves the model (`simulator.actor: model`, its own vLLM engine) and answers every held-out call (useful
quality) over gRPC, twice: the first pass is uncached, the second comes from the replica's call cache.
Writes `bench/results/toolmodel_fidelity.json` / `.md`:

- schema-valid rate: calls answered with status ok (the observation passed the tool's output schema);
- answer-bearing: of the calls whose grounded observation carries the hop's answer, the share whose model
  observation carries it too (SQuAD-normalized containment);
- token F1 between the model's and the grounded observation's text (SQuAD normalization);
- calls/s and p50/p99 latency per pass, client-side, calls sent as the rollout sends them (CallTools).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, write_results
from mtr.answers import f1_score, normalize_answer
from mtr.hardware import describe_machine

PAIRS_FILE = "pairs.jsonl"


def heldout_calls(pairs_path: Path) -> list[dict]:
    """Held-out-split, useful-quality pairs: the calls the model never trained on, with the grounded answer."""
    rows = []
    for line in pairs_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("split") == "heldout" and record.get("quality") == "useful":
                rows.append(record)
    return rows


def _text(observation: object) -> str:
    """The words of an observation (values only, keys and JSON punctuation left out)."""
    if isinstance(observation, dict):
        return " ".join(_text(v) for v in observation.values())
    if isinstance(observation, list):
        return " ".join(_text(v) for v in observation)
    return str(observation)


def carries(observation: object, answers: list[str]) -> bool:
    words = f" {normalize_answer(_text(observation))} "
    return any(f" {normalize_answer(a)} " in words for a in answers if normalize_answer(a))


def score(pairs: list[dict], results: list) -> dict:
    """Fidelity of `results` (ToolResult per pair, in order) to the pairs' grounded observations."""
    valid = [r.ok for r in results]
    f1s, bearing = [], []
    for pair, result in zip(pairs, results, strict=True):
        grounded = json.loads(pair["messages"][2]["content"])
        simulated = result.observation if result.ok else {}
        f1s.append(f1_score(_text(simulated), [_text(grounded)]) if result.ok else 0.0)
        if carries(grounded, pair.get("answers", [])):
            bearing.append(result.ok and carries(simulated, pair["answers"]))
    return {
        "calls": len(pairs),
        "schema_valid_rate": sum(valid) / max(1, len(valid)),
        "answer_bearing_calls": len(bearing),
        "answer_bearing_rate": sum(bearing) / max(1, len(bearing)),
        "token_f1": statistics.fmean(f1s) if f1s else 0.0,
        "errors": sorted({r.error[:120] for r in results if not r.ok})[:5],
    }


def timed_pass(client, requests) -> tuple[list, dict]:
    start = time.perf_counter()
    results = client.call_many(requests)
    seconds = time.perf_counter() - start
    latencies = sorted(r.latency_s for r in results)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return results, {
        "seconds": seconds,
        "calls_per_second": len(results) / seconds,
        "p50_s": pick(0.5),
        "p99_s": pick(0.99),
        "cached": sum(r.cached for r in results),
    }


def markdown(document: dict) -> str:
    f, u, c = document["fidelity"], document["uncached"], document["cached"]
    return (
        "| held-out calls | schema-valid | answer-bearing (of calls where grounded carries it) | token F1 to grounded "
        "| uncached calls/s (p99 s) | cached calls/s (p99 s) |\n|---:|---:|---|---:|---|---|\n"
        f"| {f['calls']} | {f['schema_valid_rate']:.3f} | {f['answer_bearing_rate']:.3f} "
        f"(n {f['answer_bearing_calls']}) | {f['token_f1']:.3f} | {u['calls_per_second']:.2f} ({u['p99_s']:.2f}) "
        f"| {c['calls_per_second']:.0f} ({c['p99_s']:.4f}) |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.toolmodel_fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="ToolActor checkpoint (RUN/checkpoints/final).")
    parser.add_argument("--pairs", type=Path, help="Harvested pairs (default: RUN/pairs.jsonl beside the model).")
    parser.add_argument("--limit", type=int, default=400, help="At most this many held-out calls.")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    pairs_path = args.pairs or args.model.parent.parent / PAIRS_FILE
    pairs = heldout_calls(pairs_path)[: args.limit]
    if not pairs:
        parser.error(f"{pairs_path} holds no held-out useful pairs (harvest with `mtr simulator train` first)")
    from controller.cluster.simfarm import LocalSimulatorFarm
    from mtr.config import SimulatorConfig
    from mtr.simclient import SimulatorClient, ToolCallRequest

    requests = [
        ToolCallRequest(p["task_id"], p["tool"], p["messages"][1]["content"]) for p in pairs
    ]  # the prompt's user message is the call's canonical arguments
    config = SimulatorConfig(actor="model", actor_model=str(args.model))
    farm = LocalSimulatorFarm(config, world_seed=0, log_dir=Path(tempfile.mkdtemp(prefix="mtr-fidelity-")))
    started = time.perf_counter()
    farm.start()
    startup = time.perf_counter() - started
    try:
        with SimulatorClient(farm.addresses, timeout_s=3600.0, max_attempts=1) as client:
            client.wait_ready(60)
            results, uncached = timed_pass(client, requests)
            _, cached = timed_pass(client, requests)
    finally:
        farm.stop()
    document = {
        "machine": describe_machine(),
        "model": str(args.model),
        "pairs": str(pairs_path),
        "startup_seconds": startup,
        "fidelity": score(pairs, results),
        "uncached": uncached,
        "cached": cached,
    }
    write_results("toolmodel_fidelity", document, markdown(document), args.out_dir)
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
