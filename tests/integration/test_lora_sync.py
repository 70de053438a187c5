"""LoRA end to end on the real path: the DeepSpeed learner trains adapters, each sync carries the adapter alone
through the Ray object store into the vLLM engine's LoRA slot (no restart, no full weights), the checksums
agree, and the engine's log-probs are those of the learner's merged model."""

import json
import math

import pytest

from controller.stages.pipeline import Pipeline
from mtr.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    config = load_config(
        overrides=[
            f"runs_dir={runs}",
            f"model.path={tiny_model_dir}",
            "name=lora",
            "world.n_train=8",
            "world.n_eval=4",
            "sft.steps=4",
            "sft.batch_size=4",
            "learner.lr=3e-2",
            "learner.warmup_steps=0",
            "learner.lora.enabled=true",
            "learner.lora.rank=8",
            "rollout.max_model_len=1024",
            "rollout.kv_cache_gib=1",
        ]
    )
    pipe = Pipeline(config, str(tiny_model_dir))
    try:
        pipe.setup()
        yield pipe
    finally:
        pipe.teardown()


def test_adapters_alone_reach_the_engine_and_are_the_policy_it_serves(pipeline, tmp_path):
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    train, _ = pipeline.tasks()
    losses = pipeline.sft(pipeline.synthesize(train))
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert pipeline.outcome.checksums_match is True  # the engine holds exactly the learner's adapter
    assert pipeline.rollout.status()[0].policy_version == pipeline.learner.status().version == 4
    syncs = [json.loads(line) for line in (pipeline.run_dir.path / "metrics.jsonl").read_text().splitlines()]
    syncs = [r for r in syncs if r["event"] == "weight_sync"]
    assert syncs and all(r["bytes"] < 2_000_000 for r in syncs)  # adapters, not the model's weights

    checkpoint = pipeline.learner.save_checkpoint(str(tmp_path / "merged"))
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16).float()
    ids = [1, 1234, 567, 89, 4321, 2, 77]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = [logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))]
    engine = ray.get(pipeline.rollout_actor.call.remote("prompt_logprobs", ids))
    assert engine == pytest.approx(expected, abs=0.05)
