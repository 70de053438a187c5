"""What bf16 costs on this CPU, and on the same CPU held to AVX2: the evidence behind `auto` precision.

Run: `python -m bench.precision_bench` (about 5 minutes on 2 cores). Writes bench/results/precision.json/md.

Each case runs in a subprocess of its own, because the instruction set is fixed when torch and oneDNN load:
- `native`: the CPU as it is;
- `avx2`: the same CPU held to AVX2 (`ATEN_CPU_CAPABILITY=avx2` for torch's kernels, `ONEDNN_MAX_CPU_ISA=AVX2`
  for oneDNN's), which is how torch and oneDNN behave on a CPU without AVX512-BF16 or AMX.
In each: a 1024×576 by 576×1536 matmul (GFLOP/s, one thread and all threads), a Linear forward+backward of
the same shape, and vLLM generating 32 sequences × 64 tokens from the default model (tokens/s, engine start
excluded), each in fp32 and in bf16. The ratios bf16/fp32 say which dtype `auto` should pick where.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.common import RESULTS_DIR, machine, print_result, run_measurement, write_results
from controller.reports.cpumeter import CpuMeter

CASES = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
DTYPES = ("float32", "bfloat16")
M, K, N = 1024, 576, 1536  # a SmolLM2-135M MLP projection over 1,024 tokens


def _gflops(work, flops: float, seconds_budget: float = 2.0) -> float:
    work()  # warm-up (kernel selection, oneDNN primitive creation)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds_budget:
        work()
        runs += 1
    return flops * runs / (time.perf_counter() - start) / 1e9


def kernels(threads: int, seconds_budget: float = 2.0) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name in DTYPES:
        dtype = getattr(torch, name)
        a, b = torch.randn(M, K, dtype=dtype), torch.randn(K, N, dtype=dtype)
        out[f"matmul_{name}"] = _gflops(lambda a=a, b=b: a @ b, 2 * M * K * N, seconds_budget)
        layer = torch.nn.Linear(K, N, dtype=dtype)
        x = torch.randn(M, K, dtype=dtype, requires_grad=True)

        def step(layer=layer, x=x):
            layer(x).sum().backward()

        out[f"linear_fwd_bwd_{name}"] = _gflops(step, 3 * 2 * M * K * N, seconds_budget)
    return out


def generation(model_path: str, dtype: str, sequences: int, tokens: int) -> dict:
    from vllm import LLM, SamplingParams

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    start = time.perf_counter()
    llm = LLM(model=model_path, dtype=dtype, max_model_len=1024, seed=0, enable_chunked_prefill=False)
    started = time.perf_counter() - start
    params = SamplingParams(temperature=1.0, max_tokens=tokens, ignore_eos=True, seed=0)
    prompts = [f"Question {i}: who founded the company that made the film?" for i in range(sequences)]
    llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    begin = time.perf_counter()
    with CpuMeter() as cpu:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - begin
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {
        "tokens_per_s": generated / seconds,
        "generated_tokens": generated,
        "start_s": started,
        "cores_busy": cpu.cores_busy,  # the whole machine's, while generating
    }


def _case_main(args: argparse.Namespace) -> int:
    """Inside one subprocess: generation in `--generate` dtype, or else the kernels at 1 and all threads."""
    import torch

    from mtr.hardware import cpu_capability, usable_cores

    if args.generate:
        result = generation(args.model_path, args.generate, args.sequences, args.tokens)
    else:
        result = {
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "capability_probe": cpu_capability(),
            "one_thread": kernels(1, args.seconds),
            "all_threads": kernels(usable_cores(), args.seconds),
        }
    print_result(result)
    return 0


def _subprocess(name: str, extra: list[str]) -> dict:
    return run_measurement("bench.precision_bench", ["--case", name, *extra], CASES[name], f"case {name} {extra}")


def _run_case(name: str, args: argparse.Namespace, model_path: str) -> dict:
    """Kernels, then one engine per dtype, each in a process of its own: an engine left running (vLLM's CPU
    worker keeps polling) would take cores from the next measurement."""
    result = _subprocess(name, ["--seconds", str(args.seconds)])
    if not args.skip_generation and not (args.quick and name != "native"):  # a smoke run starts two engines, not four
        sizes = ["--model-path", model_path, "--sequences", str(args.sequences), "--tokens", str(args.tokens)]
        result["generation"] = {d: _subprocess(name, [*sizes, "--generate", d]) for d in DTYPES}
    return result


def markdown(document: dict) -> str:
    rows = ["| case | measure | fp32 | bf16 | bf16 / fp32 |", "|---|---|---:|---:|---:|"]
    for name, case in document["cases"].items():
        for scope in ("one_thread", "all_threads"):
            for kind in ("matmul", "linear_fwd_bwd"):
                fp32, bf16 = case[scope][f"{kind}_float32"], case[scope][f"{kind}_bfloat16"]
                label = f"{kind.replace('_', ' ')} GFLOP/s, {scope.replace('_', ' ')}"
                rows.append(f"| {name} | {label} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")
        if "generation" in case:
            gen = case["generation"]
            fp32, bf16 = gen["float32"]["tokens_per_s"], gen["bfloat16"]["tokens_per_s"]
            rows.append(f"| {name} | vLLM generation tokens/s | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")
    m = document["machine"]
    settings = document["settings"]
    caption = (
        f"\nCPU: {m['cpu_model']} ({m['cpu_capability']}), {m['cores']} cores; torch {m['torch']}, vLLM {m['vllm']}. "
        f"`avx2` holds the same CPU to AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2). Matmul {M}x{K} by "
        f"{K}x{N}; generation: default model, {settings['sequences']} sequences x {settings['tokens']} tokens, "
        "engine start excluded. `python -m bench.precision_bench`\n"
    )
    return "\n".join(rows) + "\n" + caption


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.precision_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="HF checkpoint dir, or 'default' (SmolLM2-135M-Instruct).")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0, help="Time each kernel runs for (after a warm-up).")
    parser.add_argument("--skip-generation", action="store_true", help="Kernels only (no vLLM engine).")
    parser.add_argument(
        "--quick", action="store_true", help="Smoke run: 0.1 s per kernel, 4 x 8 tokens, generated in `native` only."
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="precision", help="Results file stem (<name>.json, <name>.md).")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--generate", choices=DTYPES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.sequences, args.tokens = 0.1, 4, 8
    if args.case:
        return _case_main(args)
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(args.model))
    cases = {}
    for name in CASES:
        cases[name] = _run_case(name, args, model_path)
        print(f"{name}: {json.dumps(cases[name])}", flush=True)
    document = {
        "machine": machine("float32 and bfloat16 (both measured)"),
        "settings": {"model": args.model, "sequences": args.sequences, "tokens": args.tokens, "shape": [M, K, N]},
        "cases": cases,
    }
    text = markdown(document)
    write_results(args.name, document, text, args.out_dir)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
