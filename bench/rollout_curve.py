"""Rollout tokens/s against batch size and prompt length, beside what the machine's matmul peak allows.

Run: `python -m bench.rollout_curve` (about 6 minutes on 2 cores). Writes bench/results/rollout_curve.json/md/png.

The engine is the rollout worker's own (`rollout.vllm_engine.VLLMTurnGenerator`: same dtype, prefix caching,
whole prefill, every core computing) on the default model. Prompts are the rollout's: the trace grammar's
system prompt with the 'minimal' tools' schemas and a different embedded-world question each, so prefix caching
shares exactly what it shares in a GRPO step. For each live-sequence count (1 … 256) one batch decodes 64
tokens per sequence (`ignore_eos`: every sequence generates all of them), and the same batch is timed with 1
token to separate prefill from decode. Three prompt lengths at 64 sequences: the question alone, the rollout
prompt, and the rollout prompt after two searches answered
with three pages each.

The limit: this process's measured bf16 (or fp32) matmul rate on all cores, divided by 2 FLOPs per parameter per
token (attention over the context is left out, so the true limit is a little lower at long contexts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.common import (
    RESULTS_DIR,
    add_measurement_arguments,
    bench_dtype,
    machine,
    print_result,
    run_measurement,
    write_results,
)

BATCHES = (1, 4, 16, 64, 128, 256)
DECODE_TOKENS = 64


def matmul_flops(dtype: str, seconds: float = 3.0) -> float:
    """FLOP/s of a large square matmul in `dtype` on every core (the compute roof of this process)."""
    import torch

    from mtr.hardware import usable_cores

    torch.set_num_threads(usable_cores())
    a = torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    b = torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * 2048**3 * runs / (time.perf_counter() - start)


def parameter_count(model_path: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    return sum(p.numel() for p in model.parameters())


def rollout_prompts(tokenizer, count: int, kind: str) -> list[list[int]]:
    """`count` token prompts of one kind: 'question', 'rollout' (system + tools + question) or 'two-turns'."""
    from controller.stages.taskdata import load_side
    from mtr.config import load_config
    from mtr.grammar import AssistantTurn, ToolCall, render_assistant_turn, render_observation, render_prompt
    from simulator.library import MINIMAL_LIBRARY

    config = load_config(overrides=[f"world.n_train={max(count, 400)}"])
    tasks = load_side(config, "train", ["synthetic"])[0].tasks[:count]
    tools = [spec.tool for spec in MINIMAL_LIBRARY]
    prompts = []
    for task in tasks:
        if kind == "question":
            prompts.append(tokenizer.encode(task.question))
            continue
        text = render_prompt(task.question, tools)
        if kind == "two-turns":  # two searches, each answered with three pages, as the farm answers them
            pages = [{"title": d.title, "text": d.text} for d in task.documents[:3]]
            for step in range(2):
                call = ToolCall("search", {"query": f"{task.question[:40]} {step}"})
                text += render_assistant_turn(AssistantTurn(think=f"Step {step}.", tool_call=call))
                text += render_observation({"results": pages})
        prompts.append(tokenizer.encode(text))
    return prompts


def timed_batch(llm, prompts: list[list[int]], max_tokens: int) -> tuple[float, int]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=1.0, max_tokens=max_tokens, ignore_eos=True, seed=0)
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    llm.reset_prefix_cache()  # each batch pays its own prefill, as a new step's questions do
    start = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outputs)


def measure(model_path: str, dtype: str, batches: tuple[int, ...], tokens: int, prompt_batch: int) -> dict:
    """Inside one process: the engine, the roof, and the two curves."""
    from mtr.config import RolloutConfig
    from rollout.vllm_engine import VLLMTurnGenerator

    config = RolloutConfig(max_model_len=2048, kv_cache_gib=4 if prompt_batch >= 64 else 1)  # 256 x 400 tokens fit in 4
    start = time.perf_counter()
    engine = VLLMTurnGenerator(model_path, config, dtype, seed=0)
    engine_start = time.perf_counter() - start
    llm, tokenizer = engine.llm, engine.tokenizer
    timed_batch(llm, rollout_prompts(tokenizer, 2, "rollout"), 8)  # warm-up
    by_batch = []
    for batch in batches:
        prompts = rollout_prompts(tokenizer, batch, "rollout")
        prefill_s, _ = timed_batch(llm, prompts, 1)
        total_s, generated = timed_batch(llm, prompts, tokens)
        decode_s = max(total_s - prefill_s, 1e-9)
        by_batch.append(
            {
                "sequences": batch,
                "prompt_tokens": sum(map(len, prompts)) / batch,
                "prefill_s": prefill_s,
                "total_s": total_s,
                "generated": generated,
                "tokens_per_s": generated / total_s,
                "decode_tokens_per_s": (generated - batch) / decode_s,
            }
        )
        print(f"{batch:>4} sequences: {generated / total_s:7.1f} tokens/s (prefill {prefill_s:.2f} s)", flush=True)
    by_prompt = []
    for kind in ("question", "rollout", "two-turns"):
        prompts = rollout_prompts(tokenizer, prompt_batch, kind)
        prefill_s, _ = timed_batch(llm, prompts, 1)
        total_s, generated = timed_batch(llm, prompts, tokens)
        by_prompt.append(
            {
                "prompt": kind,
                "prompt_tokens": sum(map(len, prompts)) / len(prompts),
                "prefill_s": prefill_s,
                "total_s": total_s,
                "tokens_per_s": generated / total_s,
            }
        )
    return {
        "engine_start_s": engine_start,
        "matmul_flops": matmul_flops(dtype),
        "parameters": parameter_count(model_path),
        "by_batch": by_batch,
        "by_prompt": by_prompt,
        "prompt_batch": prompt_batch,
    }


def markdown(document: dict) -> str:
    limit = document["limit_tokens_per_s"]
    lines = [
        "| live sequences | prompt tokens | prefill s | tokens/s (all) | decode tokens/s | share of limit |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in document["by_batch"]:
        lines.append(
            f"| {r['sequences']} | {r['prompt_tokens']:.0f} | {r['prefill_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{r['decode_tokens_per_s']:.1f} | {r['tokens_per_s'] / limit:.0%} |"
        )
    lines += [
        "",
        f"| prompt ({document['prompt_batch']} sequences) | prompt tokens | prefill s | tokens/s | share of limit |",
    ]
    lines += ["|---|---:|---:|---:|---:|"]
    for r in document["by_prompt"]:
        lines.append(
            f"| {r['prompt']} | {r['prompt_tokens']:.0f} | {r['prefill_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{r['tokens_per_s'] / limit:.0%} |"
        )
    m = document["machine"]
    lines.append(
        f"\nCPU: {m['cpu_model']} ({m['cpu_capability']}), {m['cores']} cores; vLLM {m['vllm']}, {m['precision']}. "
        f"Limit {limit:.0f} tokens/s = measured matmul {document['matmul_flops'] / 1e9:.0f} GFLOP/s / "
        f"(2 x {document['parameters'] / 1e6:.0f}M parameters). {DECODE_TOKENS} tokens per sequence, engine start "
        f"({document['engine_start_s']:.0f} s) excluded. `python -m bench.rollout_curve`"
    )
    return "\n".join(lines) + "\n"


def plot(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["by_batch"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["sequences"] for r in rows], [r["tokens_per_s"] for r in rows], "o-", label="prefill + decode")
    ax.plot([r["sequences"] for r in rows], [r["decode_tokens_per_s"] for r in rows], "s--", label="decode")
    ax.axhline(document["limit_tokens_per_s"], color="grey", linestyle=":", label="matmul limit")
    ax.axhline(0.3 * document["limit_tokens_per_s"], color="grey", linestyle="-.", label="30 % of limit")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("live sequences")
    ax.set_ylabel("generated tokens/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_curve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="HF checkpoint dir, or 'default' (SmolLM2-135M-Instruct).")
    parser.add_argument("--dtype", type=bench_dtype, default="auto")
    parser.add_argument("--quick", action="store_true", help="Smoke run: batches 1 and 4, 8 tokens.")
    add_measurement_arguments(parser)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="rollout_curve", help="Results file stem (<name>.json, <name>.md).")
    args = parser.parse_args(argv)
    batches, tokens = ((1, 4), 8) if args.quick else (BATCHES, DECODE_TOKENS)
    if args.one:
        print_result(measure(args.model_path, args.dtype, batches, tokens, 4 if args.quick else 64))
        return 0
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(args.model))
    arguments = ["--one", "--model-path", model_path, "--dtype", args.dtype] + (["--quick"] if args.quick else [])
    result = run_measurement("bench.rollout_curve", arguments, {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}, "curve")
    document = {
        **result,
        "machine": machine(args.dtype),
        "decode_tokens": tokens,
        "limit_tokens_per_s": result["matmul_flops"] / (2 * result["parameters"]),
    }
    write_results(args.name, document, markdown(document), args.out_dir)
    plot(document, args.out_dir / f"{args.name}.png")
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
