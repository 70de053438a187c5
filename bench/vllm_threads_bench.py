"""How many cores vLLM's CPU engine computes on, and what giving it all of them buys.

Run: `python -m bench.vllm_threads_bench` (about 4 minutes on 2 cores). Writes bench/results/vllm_threads.json/md.

On x86, vLLM's CPU worker binds its OpenMP threads to all cores but one by default and keeps the last for
the engine's scheduler process (`reserved_cpus` in its start-up log). On a 2-core machine that is one
compute core out of two. Each setting runs in its own process (the binding is fixed when the worker
starts): the default, `VLLM_CPU_NUM_OF_RESERVED_CPU=0` (compute on every core, the scheduler shares them),
and `VLLM_CPU_OMP_THREADS_BIND=nobind` (no binding: OMP_NUM_THREADS threads wherever the OS puts them).
The generation is precision_bench's: the default model, `auto` dtype, engine start excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.common import RESULTS_DIR, add_measurement_arguments, machine, print_result, run_measurement, write_results

SETTINGS = {
    "default (1 core reserved)": {},
    "VLLM_CPU_NUM_OF_RESERVED_CPU=0": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
    "VLLM_CPU_OMP_THREADS_BIND=nobind": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"},
}


def _one(args: argparse.Namespace) -> int:
    from bench.precision_bench import generation

    result = generation(args.model_path, args.dtype, args.sequences, args.tokens)
    print_result(result)
    return 0


def _run(name: str, args: argparse.Namespace, model_path: str, dtype: str) -> dict:
    arguments = ["--one", "--model-path", model_path, "--dtype", dtype]
    arguments += ["--sequences", str(args.sequences), "--tokens", str(args.tokens)]
    env = {"OMP_NUM_THREADS": str(os.cpu_count() or 1), **SETTINGS[name]}
    return run_measurement("bench.vllm_threads_bench", arguments, env, name)


def markdown(document: dict) -> str:
    rows = ["| setting | tokens/s | vs default | cores busy |", "|---|---:|---:|---:|"]
    base = next(iter(document["settings_measured"].values()))["tokens_per_s"]
    for name, result in document["settings_measured"].items():
        ratio = result["tokens_per_s"] / base
        rows.append(f"| {name} | {result['tokens_per_s']:.1f} | {ratio:.2f}x | {result['cores_busy']:.2f} |")
    m, s = document["machine"], document["settings"]
    caption = (
        f"\nCPU: {m['cpu_model']} ({m['cpu_capability']}), {m['cores']} cores; vLLM {m['vllm']}, {m['precision']}. "
        f"Default model, {s['sequences']} sequences x {s['tokens']} tokens, engine start excluded, each setting "
        "alone in its own process. `python -m bench.vllm_threads_bench`\n"
    )
    return "\n".join(rows) + "\n" + caption


def main(argv: list[str] | None = None) -> int:
    from bench.common import bench_dtype

    parser = argparse.ArgumentParser(prog="python -m bench.vllm_threads_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="HF checkpoint dir, or 'default' (SmolLM2-135M-Instruct).")
    parser.add_argument("--dtype", type=bench_dtype, default="auto")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="Smoke run: 4 sequences x 8 tokens.")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="vllm_threads", help="Results file stem (<name>.json, <name>.md).")
    add_measurement_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.tokens = 4, 8
    if args.one:
        return _one(args)
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(args.model))
    measured = {}
    for name in SETTINGS:
        measured[name] = _run(name, args, model_path, args.dtype)
        print(f"{name}: {json.dumps(measured[name])}", flush=True)
    document = {
        "machine": machine(args.dtype),
        "settings": {"model": args.model, "sequences": args.sequences, "tokens": args.tokens},
        "settings_measured": measured,
    }
    text = markdown(document)
    write_results(args.name, document, text, args.out_dir)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
