"""`mtr grpo` on the tiny model with two rollout workers: versions, async staleness, checkpoints and exact resume.

A random tiny model never writes a parsable trace, so every group would score the same and GRPO would
(correctly) drop them all. The fixture first teaches it, with a few hundred plain PyTorch steps, to
answer at once (`<think></think><answer>…</answer>`); sampled at temperature 1 it then writes a mix of
valid and broken traces, which is the reward variance GRPO needs.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from mtr.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORLD = ["world.n_train=8", "world.n_eval=2", "eval.questions=2"]
COMMON = [
    *WORLD,
    "model.dtype=float32",
    "learner.precision=float32",
    "cluster.num_cpus=4",
    "rollout.workers=2",
    "rollout.kv_cache_gib=1",  # two engines: the default 4 GiB each is for 200-question evaluations
    "rollout.group_size=4",
    "rollout.max_turns=2",
    "rollout.temperature=1.0",  # the mix of valid and broken traces the docstring relies on
    "rollout.max_tokens_per_turn=24",
    "rollout.max_model_len=1024",
    "grpo.steps=3",
    "grpo.questions_per_step=2",
    "grpo.lr=1e-3",
    "grpo.save_every=1",
    "grpo.mode=async",
    "grpo.max_staleness=1",
    "grpo.curriculum.enabled=false",
]


@pytest.fixture(scope="module")
def answering_model(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from controller.cluster.services import Services
    from controller.stages.sft_data import tokenize_trace
    from controller.stages.taskdata import load_side, with_tools
    from mtr.config import load_config
    from mtr.grammar import AssistantTurn, Trace

    out = tmp_path_factory.mktemp("answering")
    config = load_config(overrides=WORLD)
    with Services(config, out / "logs").start(ray=False) as services:
        tasks = with_tools(load_side(config, "train")[0].tasks, services.simulator)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    traces = [
        Trace(question=t.question, tools=t.tools, turns=(AssistantTurn(think="", answer=t.answers[0]),)) for t in tasks
    ]
    sequences = [tokenize_trace(trace, tokenizer) for trace in traces]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    rng = random.Random(0)
    for _ in range(150):
        batch = rng.sample(sequences, 4)
        length = max(len(s.token_ids) for s in batch)
        ids = torch.tensor([s.token_ids + [0] * (length - len(s.token_ids)) for s in batch])
        mask = torch.tensor([s.loss_mask + [0] * (length - len(s.loss_mask)) for s in batch], dtype=torch.float32)
        attention = torch.tensor([[1] * len(s.token_ids) + [0] * (length - len(s.token_ids)) for s in batch])
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        loss = -(logprobs * mask[:, 1:]).sum() / mask[:, 1:].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out / "model"


def _grpo(model: Path, out: Path, *extra: str) -> int:
    argv = ["grpo", "--model", str(model), "--out", str(out)]
    for override in COMMON:
        argv += ["--set", override]
    return main([*argv, *extra])


def _records(out: Path, event: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_grpo_async_with_two_workers_then_resume(answering_model, tmp_path):
    first = tmp_path / "first"
    assert _grpo(answering_model, first) == 0
    steps = _records(first, "grpo")
    assert [r["step"] for r in steps] == [0, 1, 2]
    trained = [r for r in steps if "version" in r]
    assert trained, f"no step had reward variance: {steps}"
    # Versions advance by one per update, and no trace ever lags the learner by more than max_staleness.
    assert [r["version"] for r in trained] == list(range(1, len(trained) + 1))
    assert all(r["staleness_max"] <= 1 and r["stale_dropped"] == 0 for r in steps)
    syncs = _records(first, "weight_sync")
    assert syncs and all(s["workers"] == 2 for s in syncs)
    assert max(s["step"] for s in syncs) == trained[-1]["version"]  # both workers end on the learner's version
    traces = [json.loads(line) for line in (first / "traces" / "grpo.jsonl").read_text().splitlines()]
    assert {t["policy_version"] for t in traces} <= set(range(len(trained) + 1))
    checkpoints = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert checkpoints == ["final", "step-000001", "step-000002"]
    curve = json.loads((first / "grpo_curve.json").read_text())
    assert [r[0] for r in curve["rewards"]] == [0, 1, 2] and {e[0] for e in curve["exact_match"]} == {0, 3}
    assert (first / "grpo_curve.png").stat().st_size > 0

    # A run killed after step 1: only that checkpoint survived. Resuming draws the same questions.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(first / "checkpoints" / "step-000001", resumed / "checkpoints" / "step-000001")
    assert _grpo(answering_model, resumed, "--resume") == 0
    again = _records(resumed, "grpo")
    assert [r["step"] for r in again] == [1, 2]
    assert [r["task_ids"] for r in again] == [r["task_ids"] for r in steps[1:]]


def _kill_one_rollout_worker_after(metrics: Path, killed: list[str], deadline_s: float = 600) -> None:
    """Once step 0's checkpoint is logged (the next rollout starts right after), SIGKILL one rollout worker's
    process (ray.kill: no clean shutdown, no restart)."""
    import time

    import ray

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if metrics.exists() and any(
            json.loads(line)["event"] == "checkpoint" for line in metrics.read_text().splitlines()
        ):
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["name"].startswith("rollout-"):
                    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
                    killed.append(actor["name"])
                    return
        time.sleep(0.05)


def test_a_rollout_worker_killed_mid_run_loses_no_trace_and_counts_none_twice(answering_model, tmp_path):
    import threading

    out = tmp_path / "run"
    killed: list[str] = []
    watcher = threading.Thread(target=_kill_one_rollout_worker_after, args=(out / "metrics.jsonl", killed))
    watcher.start()
    try:
        assert _grpo(answering_model, out, "--set", "grpo.mode=sync", "--set", "grpo.steps=4") == 0
    finally:
        watcher.join()
    assert killed, "no rollout worker was found to kill"
    steps = _records(out, "grpo")
    assert [r["step"] for r in steps] == [0, 1, 2, 3]
    lost = _records(out, "rollout_worker_lost")
    assert len(lost) == 1 and "UNAVAILABLE" in lost[0]["reason"]
    assert steps[0]["rollout_workers"] == 2 and steps[-1]["rollout_workers"] == 1
    traces = [json.loads(line) for line in (out / "traces" / "grpo.jsonl").read_text().splitlines()]
    for record in steps:  # every group drawn has all its samples, each exactly once
        keys = [(t["task_id"], t["sample"]) for t in traces if t["step"] == record["step"]]
        assert len(keys) == len(set(keys)) == record["groups_drawn"] * 4 == record["traces"]
    syncs = _records(out, "weight_sync")
    assert syncs[-1]["workers"] == 1
    print(f"killed {killed[0]}; regenerated groups {steps[-1]['regenerated_groups']}; traces lost 0, duplicated 0")
