"""Smoke runs of the Stage-2 benchmarks on the tiny model, and the Hugging Face side's turn generator.

Each benchmark runs as its own process (`python -m bench.<name> --quick --model <tiny>`), as a user runs it,
in its own session so that everything it started (Ray, vLLM, the simulator farm) is reaped even on a timeout.
They check the results files' fields and that the numbers are positive; timings are not asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _run_bench(module: str, model_dir: Path, out_dir: Path, timeout_s: float = 840.0) -> dict:
    """Run `python -m bench.<module> --quick` on `model_dir`; return its JSON results (named after `module`)."""
    command = [sys.executable, "-m", f"bench.{module}", "--quick", "--model", str(model_dir)]
    command += ["--out-dir", str(out_dir), "--name", module]
    log = out_dir / f"{module}.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(process)
    tail = log.read_text(errors="replace")[-3000:]
    assert code == 0, f"bench.{module} exited with {code}:\n{tail}"
    assert (out_dir / f"{module}.md").read_text().startswith("|"), "the markdown results start with the table"
    return json.loads((out_dir / f"{module}.json").read_text())


def _kill_group(process: subprocess.Popen) -> None:
    """End the benchmark's session (its Ray daemons and engine processes too), then reap the benchmark."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def test_rollout_bench_quick(tiny_model_dir, tmp_path):
    result = _run_bench("rollout_bench", tiny_model_dir, tmp_path)
    assert result["settings"]["questions"] == 2 and result["settings"]["group_size"] == 2
    sides = {side["side"]: side for side in result["sides"]}
    assert set(sides) == {"vllm-service", "hf-generate"}
    for side in sides.values():
        assert side["traces"] == 4, side  # 2 questions x 2 samples, every one run to its end
        assert side["generated_tokens"] > 0 and side["turns"] >= side["traces"]
        assert side["tokens_per_s"] > 0 and side["traces_per_s"] > 0 and side["seconds"] > 0
        assert side["start_s"] > 0 and sum(side["finish_reasons"].values()) == 4
    assert result["ratio_tokens_per_s"] > 0 and result["ratio_traces_per_s"] > 0
    assert result["machine"]["cpus"] >= 1
    assert result["machine"]["cpu_capability"] and result["machine"]["cpu_model"] and result["machine"]["precision"]


def test_rollout_curve_quick(tiny_model_dir, tmp_path):
    result = _run_bench("rollout_curve", tiny_model_dir, tmp_path)
    assert [r["sequences"] for r in result["by_batch"]] == [1, 4]
    assert all(r["generated"] == r["sequences"] * 8 and r["tokens_per_s"] > 0 for r in result["by_batch"])
    assert [r["prompt"] for r in result["by_prompt"]] == ["question", "rollout", "two-turns"]
    lengths = [r["prompt_tokens"] for r in result["by_prompt"]]
    assert lengths == sorted(lengths) and lengths[0] > 0
    assert result["limit_tokens_per_s"] > 0 and result["parameters"] > 0
    assert (tmp_path / "rollout_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_weightsync_bench_quick(tiny_model_dir, tmp_path):
    result = _run_bench("weightsync_bench", tiny_model_dir, tmp_path)
    assert sorted(result["methods"]) == ["collective", "lora_adapter_r16", "object_store"]
    for method in result["methods"].values():
        assert len(method["syncs"]) == 2
        for sync in method["syncs"]:
            assert sync["bytes"] > 0 and sync["publish_s"] > 0 and sync["load_rpc_s"] > 0
            assert sync["sync_s"] == pytest.approx(sync["publish_s"] + sync["load_rpc_s"], abs=1e-3)
        assert [s["version"] for s in method["syncs"]] == [1, 2]  # one learner step, one published version each
        assert method["sync_median_s"] > 0 and method["sync_bytes"] == method["syncs"][0]["bytes"]
        assert method["ratio_restart_over_sync"] > 0
        assert method["checksums_match"] is True
    assert len(result["restarts"]) == 1 and result["restarts"][0]["start_s"] > 0 and result["restart_median_s"] > 0
    assert result["group_join_s"] > 0
    assert result["restart_logprob_max_diff"] < 0.05  # the restarted engine runs the collectively synced weights
    adapter, full = result["methods"]["lora_adapter_r16"], result["methods"]["object_store"]
    assert adapter["sync_bytes"] < full["sync_bytes"] / 10  # the adapter alone travels
    assert adapter["ratio_full_over_adapter"] > 0


@pytest.fixture(scope="module")
def hf_generator(tiny_model_dir):
    from bench.rollout_bench import HFTurnGenerator

    return HFTurnGenerator.load(str(tiny_model_dir), "float32", temperature=1.0, top_p=1.0)


def test_hf_turn_logprobs_are_those_of_the_sampled_tokens(hf_generator):
    """Left-padded batch: each row's recorded log-probs equal an unpadded forward pass over its own tokens."""
    import torch

    from rollout.agent_loop import TurnRequest

    tokenizer = hf_generator.tokenizer
    prompts = [
        tokenizer.encode("<|im_start|>user\nWho directed Pale Bromnim?<|im_end|>\n<|im_start|>assistant\n"),
        [1, 400, 500],  # much shorter: padded on the left by the batch
    ]
    outputs = hf_generator.generate_turns([TurnRequest(prompt, 6, seed=3) for prompt in prompts])
    for prompt, output in zip(prompts, outputs, strict=True):
        assert 0 < len(output.token_ids) <= 6 and len(output.logprobs) == len(output.token_ids)
        with torch.no_grad():
            logits = hf_generator.model(torch.tensor([prompt + output.token_ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        expected = [logprobs[len(prompt) - 1 + i, token].item() for i, token in enumerate(output.token_ids)]
        assert output.logprobs == pytest.approx(expected, abs=1e-3)


def test_hf_turn_ends_at_the_end_of_turn_token_or_its_cap(hf_generator):
    eos = min(hf_generator.eos_ids)
    stopped = hf_generator._turn([5, 6, eos, 7, 8], [-1.0, -2.0, -3.0, -4.0, -5.0], cap=8)
    assert (stopped.token_ids, stopped.logprobs, stopped.finish_reason) == ([5, 6, eos], [-1.0, -2.0, -3.0], "stop")
    assert eos not in hf_generator.tokenizer.encode(stopped.text, add_special_tokens=False)
    capped = hf_generator._turn([5, 6, 7, eos], [-1.0, -2.0, -3.0, -4.0], cap=3)
    assert (capped.token_ids, capped.finish_reason) == ([5, 6, 7], "length")


def test_precision_bench_quick(tiny_model_dir, tmp_path):
    result = _run_bench("precision_bench", tiny_model_dir, tmp_path)
    assert set(result["cases"]) == {"native", "avx2"}
    assert result["cases"]["avx2"]["torch_capability"] == "AVX2"  # the case really held torch to AVX2
    for case in result["cases"].values():
        for scope in ("one_thread", "all_threads"):
            assert all(value > 0 for value in case[scope].values()), case[scope]
    generation = result["cases"]["native"]["generation"]  # --quick generates in the native case only
    assert set(generation) == {"float32", "bfloat16"}
    assert all(g["tokens_per_s"] > 0 and g["generated_tokens"] > 0 for g in generation.values())
    assert result["machine"]["cpu_capability"] and result["machine"]["cpu_model"]
