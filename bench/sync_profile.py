"""Where a full-weight sync's time goes, part by part, and whether the tied `lm_head` has to travel.

Run: `python -m bench.sync_profile` (about 3 minutes on 2 cores). Writes bench/results/sync_profile.json/md.

One process plays both ends of the object-store sync with the production pieces, each timed alone: the
learner's served copy and changed-value count (`mtr.weights.ServedWeightsDiff`), packing (`pack_tensors`, viewing
the served copies as the learner does), the
object store (`ray.put` of 64 MB buckets, then `ray.get` as a rollout host fetches them), the weight file in
/dev/shm (`write_weight_file`), and the engine's in-place reload through the rollout worker's own engine
(`rollout.vllm_engine.VLLMTurnGenerator`, vLLM's layerwise `reload_weights`), split inside the engine into
materializing each layer, loading the tensors into it, vLLM's `process_weights_after_loading` (on CPU: the
oneDNN repack of every linear weight) and copying the processed values back into the kernel's storage.

Then the last version is loaded twice more, without and with `lm_head.weight` (SmolLM2 ties it to the
embedding), and the engine's log-probs on a prompt compared between the two: equal means vLLM's tied head
follows the embedding, so the head need not travel; different means the engine keeps a stale copy of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
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

PARTS = ("served_copy_and_count", "pack", "object_store_put", "object_store_get", "weight_file", "engine_load")
ENGINE_PARTS = ("materialize", "weight_loaders_and_rest", "process_weights_after_loading", "copy_back")


def _engine_profile(worker, path: str, index: list) -> dict:
    """Runs inside vLLM's worker (collective_rpc): one in-place reload, with vLLM's layerwise steps timed."""
    import time as clock

    from vllm.model_executor.model_loader.reload import layerwise

    from mtr.weights import read_weight_file

    spent = {"materialize": 0.0, "process_weights_after_loading": 0.0, "copy_back": 0.0}

    def timed(part, function):
        def wrapper(*args, **kwargs):
            start = clock.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[part] += clock.perf_counter() - start

        return wrapper

    model = worker.model_runner.get_model() if hasattr(worker.model_runner, "get_model") else worker.model_runner.model
    originals = {"materialize_layer": layerwise.materialize_layer}
    originals["_copy_and_restore_kernel_tensors"] = layerwise._copy_and_restore_kernel_tensors
    layerwise.materialize_layer = timed("materialize", layerwise.materialize_layer)
    layerwise._copy_and_restore_kernel_tensors = timed("copy_back", layerwise._copy_and_restore_kernel_tensors)
    wrapped = []
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None and "process_weights_after_loading" not in vars(method):
            method.process_weights_after_loading = timed(
                "process_weights_after_loading", method.process_weights_after_loading
            )
            wrapped.append(method)
    try:
        start = clock.perf_counter()
        worker.reload_weights(weights_iterator=read_weight_file(path, index), is_checkpoint_format=True)
        total = clock.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(layerwise, name, function)
        for method in wrapped:
            del method.process_weights_after_loading
    rest = total - sum(spent.values())
    return {"engine_load": total, **spent, "weight_loaders_and_rest": rest}


def _learner_weights(model):
    """(name, tensor) as the learner publishes them: the state dict plus the tied lm_head (see Publishing)."""
    state = model.state_dict()
    if model.config.tie_word_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = model.get_input_embeddings().weight
    return list(state.items())


def _learner_logprobs(model, token_ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(token_ids[1:])[:, None])[:, 0].tolist()


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def measure(model_path: str, dtype: str, syncs: int) -> dict:
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from mtr.config import RolloutConfig
    from mtr.weights import ServedWeightsDiff, bucketed, pack_tensors, write_weight_file
    from rollout.vllm_engine import VLLMTurnGenerator

    torch.manual_seed(0)
    learner = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    served = ServedWeightsDiff(dtype)
    served.remember(_learner_weights(learner))
    engine = VLLMTurnGenerator(model_path, RolloutConfig(kv_cache_gib=1, max_model_len=1024), dtype, seed=0)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    shm = Path("/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp") / f"mtr-sync-profile-{os.getpid()}.bin"
    prompt = engine.tokenizer.encode("Which company was founded earlier, Tratem Mills or Bedin Press?")
    runs, checks = [], {}
    try:
        for sync in range(syncs + 1):  # the first is a warm-up, not reported
            with torch.no_grad():  # a learner step: every weight moves a little
                for parameter in learner.parameters():
                    parameter.add_(torch.randn_like(parameter) * parameter.abs().mean() * 0.01)
            times = {}
            start = time.perf_counter()
            tracked = list(served.track(_learner_weights(learner)))
            times["served_copy_and_count"] = time.perf_counter() - start
            start = time.perf_counter()
            packed = list(pack_tensors(tracked, dtype, copy=False))  # as the learner does: the tracked copies
            times["pack"] = time.perf_counter() - start
            start = time.perf_counter()
            refs = [ray.put(b) for b in bucketed(packed, lambda p: len(p.data), 64 << 20)]
            times["object_store_put"] = time.perf_counter() - start
            start = time.perf_counter()
            fetched = [item for ref in refs for item in ray.get(ref)]
            times["object_store_get"] = time.perf_counter() - start
            start = time.perf_counter()
            index = write_weight_file(fetched, shm)
            times["weight_file"] = time.perf_counter() - start
            times.update(engine.llm.collective_rpc(_engine_profile, args=(str(shm), index))[0])
            engine.llm.reset_prefix_cache()
            times["bytes"] = sum(nbytes for *_, nbytes in index)
            if sync:
                runs.append(times)
            del refs
        checks["engine_vs_learner_max_logprob_diff"] = _max_diff(
            _learner_logprobs(learner, prompt), engine.prompt_logprobs(prompt)
        )
        # One more version, loaded without the tied head, then with it: does the engine's head follow?
        with torch.no_grad():
            for parameter in learner.parameters():
                parameter.add_(torch.randn_like(parameter) * parameter.abs().mean() * 0.01)
        fetched = list(pack_tensors(_learner_weights(learner), dtype))
        headless = [p for p in fetched if p.name != "lm_head.weight"]
        index = write_weight_file(headless, shm)
        profile = engine.llm.collective_rpc(_engine_profile, args=(str(shm), index))[0]
        engine.llm.reset_prefix_cache()
        without = engine.prompt_logprobs(prompt)
        engine.llm.collective_rpc(_engine_profile, args=(str(shm), write_weight_file(fetched, shm)))
        engine.llm.reset_prefix_cache()
        checks["without_lm_head"] = {
            "bytes": sum(nbytes for *_, nbytes in index),
            "engine_load": profile["engine_load"],
            "max_logprob_diff_vs_with_head": _max_diff(without, engine.prompt_logprobs(prompt)),
        }
    finally:
        shm.unlink(missing_ok=True)
        ray.shutdown()
    return {"runs": runs, "lm_head_check": checks}


def markdown(document: dict) -> str:
    runs = document["runs"]

    def med(part: str) -> float:
        return statistics.median(r[part] for r in runs)

    total = sum(med(p) for p in PARTS)
    lines = ["| part | median s | share |", "|---|---:|---:|"]
    for part in PARTS:
        lines.append(f"| {part} | {med(part):.3f} | {med(part) / total:.0%} |")
        if part == "engine_load":
            for inner in ENGINE_PARTS:
                lines.append(f"| - of which {inner} | {med(inner):.3f} | {med(inner) / total:.0%} |")
    lines.append(f"| **sync (sum)** | **{total:.3f}** | |")
    check = document["lm_head_check"]
    head = check["without_lm_head"]
    m = document["machine"]
    lines.append(
        f"\n{len(runs)} syncs of {runs[0]['bytes'] / 1e6:.0f} MB ({m['precision']}); CPU {m['cpu_model']} "
        f"({m['cpu_capability']}), {m['cores']} cores; engine log-probs within "
        f"{check['engine_vs_learner_max_logprob_diff']:.4f} of the learner's. Without `lm_head.weight` "
        f"({head['bytes'] / 1e6:.0f} MB): engine load {head['engine_load']:.3f} s, log-probs differ from the same "
        f"version loaded with it by {head['max_logprob_diff_vs_with_head']:.4f}. `python -m bench.sync_profile`"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="HF checkpoint dir, or 'default' (SmolLM2-135M-Instruct).")
    parser.add_argument("--dtype", type=bench_dtype, default="auto")
    parser.add_argument("--syncs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="Smoke run: 2 syncs.")
    add_measurement_arguments(parser)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="sync_profile", help="Results file stem (<name>.json, <name>.md).")
    args = parser.parse_args(argv)
    syncs = 2 if args.quick else args.syncs
    if args.one:
        print_result(measure(args.model_path, args.dtype, syncs))
        return 0
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(args.model))
    arguments = ["--one", "--model-path", model_path, "--dtype", args.dtype, "--syncs", str(syncs)]
    # The timed reload is a function sent into vLLM's worker process, which vLLM pickles only when allowed.
    env = {"OMP_NUM_THREADS": str(os.cpu_count() or 1), "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
    document = {**run_measurement("bench.sync_profile", arguments, env, "sync profile"), "machine": machine(args.dtype)}
    write_results(args.name, document, markdown(document), args.out_dir)
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
