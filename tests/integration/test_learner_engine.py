"""The DeepSpeed learner on the tiny model: SFT learns, GRPO steps, accumulation is exact, weights and
checkpoints match, and the gRPC LearnerService works on loopback."""

from __future__ import annotations

import math

import grpc
import pytest
import torch

from learner.engine import (
    LearnerError,
    PolicyLearner,
    TrainSequence,
    plan_micro_batches,
    validate_sequences,
    warmup_cosine_lr,
)
from mtr.config import LearnerConfig
from mtr.grpcutil import BackgroundServer
from mtr.v1 import learner_service_pb2 as pb
from mtr.v1 import learner_service_pb2_grpc as pb_grpc


def _batch(lengths=(48, 40, 32, 24), seed: int = 0, vocab: int = 500) -> list[TrainSequence]:
    """Fixed random sequences: the first half of each is "prompt" (mask 0), the rest carries loss."""
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(
            token_ids=torch.randint(0, vocab, (n,), generator=g).tolist(),
            loss_mask=[0] * (n // 2) + [1] * (n - n // 2),
        )
        for n in lengths
    ]


def _learner(model_dir, total_steps: int = 10, **overrides) -> PolicyLearner:
    return PolicyLearner(model_dir, LearnerConfig(**{"warmup_steps": 0, **overrides}), total_steps=total_steps)


# Pure helpers of the engine (no engine needed).


def test_micro_batches_respect_the_token_budget():
    lengths = [100, 30, 60, 90, 40]
    batches = plan_micro_batches(lengths, budget_tokens=256)
    assert sorted(i for batch in batches for i in batch) == list(range(5))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 256
    assert plan_micro_batches([300, 10], budget_tokens=256) == [[0], [1]]


def test_warmup_then_cosine_schedule():
    rates = [warmup_cosine_lr(step, peak=1.0, warmup_steps=2, total_steps=10) for step in range(12)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:], strict=False))
    assert rates[-1] == pytest.approx(0.1)  # floor past the end of the schedule


@pytest.mark.parametrize(
    "sequence, grpo, message",
    [
        (TrainSequence([1, 2, 3], [0, 1]), False, "loss_mask has 2 entries for 3 tokens"),
        (TrainSequence([1, 2, 3], [0, 0, 0]), False, "no 1"),
        (TrainSequence([1, 2, 3], [1, 1, 0]), False, "first token"),
        (TrainSequence([1, 2, 99999], [0, 1, 1]), False, "token id 99999 outside"),
        (TrainSequence([1, 2, 3], [0, 1, 1]), True, "needs old_logprobs"),
        (TrainSequence([1, 2, 3], [0, 1, 1], [0.0, -1.0]), True, "old_logprobs has 2 entries"),
        (TrainSequence([1, 2, 3], [0, 1, 1], [0.0, float("nan"), -1.0]), True, r"old_logprobs\[1\]"),
    ],
)
def test_malformed_sequences_are_rejected_with_a_reason(sequence, grpo, message):
    with pytest.raises(ValueError, match=message):
        validate_sequences([sequence], vocab_size=1000, grpo=grpo)


# The engine itself.


@pytest.mark.integration
def test_sft_loss_goes_down_and_weights_change(tiny_model_dir):
    learner = _learner(tiny_model_dir, lr=1e-2)
    batch = _batch()
    before = learner.checksum()
    results = [learner.sft_step(batch) for _ in range(8)]
    assert learner.version == 8
    assert learner.checksum() != before
    assert results[-1].loss < results[0].loss - 1.0
    assert all(math.isfinite(r.grad_norm) and r.grad_norm > 0 for r in results)
    assert results[0].tokens == sum(len(s.token_ids) for s in batch)
    assert results[0].learning_rate == pytest.approx(1e-2)
    assert results[-1].learning_rate < results[0].learning_rate  # cosine decay
    learner.set_learning_rate(3e-3)
    assert learner.sft_step(batch).learning_rate == pytest.approx(3e-3)


@pytest.mark.integration
def test_gradient_accumulation_over_micro_batches_equals_one_batch(tiny_model_dir):
    batch = _batch(lengths=(100, 90, 60, 40, 33))
    assert len(plan_micro_batches([len(s.token_ids) for s in batch], 256)) > 1
    # fp32, so the comparison is exact up to summation order (bf16 weights would round the two runs apart).
    split = _learner(tiny_model_dir, micro_batch_tokens=256, lr=1e-3, precision="float32")
    whole = _learner(tiny_model_dir, micro_batch_tokens=100_000, lr=1e-3, precision="float32")
    a, b = split.sft_step(batch), whole.sft_step(batch)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)
    weights_a, weights_b = dict(split.named_weights()), dict(whole.named_weights())
    assert all(torch.allclose(weights_a[name], weights_b[name], atol=1e-6) for name in weights_a)


@pytest.mark.integration
def test_rank_arguments_padding_and_normalizer_change_nothing_alone(tiny_model_dir):
    """As one rank of a group: zero-weight padding micro-batches and an explicit normalizer equal to the
    step's own masked-token count give the plain step; a rank without sequences still steps, adding no loss."""
    batch = _batch()
    plain = _learner(tiny_model_dir, lr=1e-3, precision="float32")
    padded = _learner(tiny_model_dir, lr=1e-3, precision="float32")
    a = plain.sft_step(batch)
    b = padded.sft_step(batch, normalizer=float(sum(sum(s.loss_mask) for s in batch)), micro_batches=3)
    assert b.loss == pytest.approx(a.loss, rel=1e-6) and b.grad_norm == pytest.approx(a.grad_norm, rel=1e-5)
    weights_a, weights_b = dict(plain.named_weights()), dict(padded.named_weights())
    assert all(torch.allclose(weights_a[name], weights_b[name], atol=1e-7) for name in weights_a)
    with pytest.raises(ValueError, match="need 1 micro-batches, 0 given"):
        padded.sft_step(batch, normalizer=10.0, micro_batches=0)
    empty = padded.sft_step([], normalizer=10.0, micro_batches=2)
    assert (empty.loss, empty.tokens, padded.version) == (0.0, 0, 2)


@pytest.mark.integration
def test_grpo_step_with_random_advantages(tiny_model_dir):
    learner = _learner(tiny_model_dir, lr=1e-3)
    g = torch.Generator().manual_seed(1)
    sequences = [
        TrainSequence(
            token_ids=s.token_ids,
            loss_mask=s.loss_mask,
            old_logprobs=[(-5.0 + 0.5 * float(torch.randn(1, generator=g))) * m for m in s.loss_mask],
            advantage=float(torch.randn(1, generator=g)),
        )
        for s in _batch()
    ]
    result = learner.grpo_step(sequences, clip_eps=0.2)
    assert math.isfinite(result.loss) and math.isfinite(result.grad_norm)
    assert 0.0 <= result.clip_fraction <= 1.0
    assert learner.version == 1


@pytest.mark.integration
def test_named_weights_checksum_and_saved_checkpoint_agree(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    learner = _learner(tiny_model_dir, lr=1e-3)
    learner.sft_step(_batch())
    weights = dict(learner.named_weights())
    assert "lm_head.weight" in weights and torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])
    saved = learner.save_hf(tmp_path / "ckpt")
    loaded = AutoModelForCausalLM.from_pretrained(saved).state_dict()
    assert set(loaded) == set(weights)
    assert all(torch.equal(loaded[name], weights[name]) for name in weights)
    assert AutoTokenizer.from_pretrained(saved).eos_token == "<|im_end|>"
    assert learner.save_hf(tmp_path / "ckpt") == saved  # replacing a checkpoint is allowed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        learner.save_hf(tmp_path / "other")


@pytest.mark.integration
def test_non_finite_loss_stops_the_learner(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    with torch.no_grad():
        next(learner._engine.module.parameters()).fill_(float("nan"))
    with pytest.raises(LearnerError, match="step 1: loss is nan"):
        learner.sft_step(_batch())
    with pytest.raises(LearnerError, match="unusable"):
        learner.sft_step(_batch())
    assert learner.version == 0


def _to_proto(sequence: TrainSequence) -> pb.TrainSequence:
    return pb.TrainSequence(
        token_ids=sequence.token_ids,
        loss_mask=sequence.loss_mask,
        old_logprobs=sequence.old_logprobs or [],
        advantage=sequence.advantage,
    )


@pytest.mark.integration
def test_grpc_train_step_status_and_checkpoint(tiny_model_dir, tmp_path):
    from learner.service import create_server

    learner = _learner(tiny_model_dir, lr=1e-3)
    published: list[int] = []

    def publish(version: int) -> tuple[float, int]:
        published.append(version)
        return 0.25, 1234

    server = BackgroundServer(lambda address: create_server(address, learner, publish))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.LearnerServiceStub(channel)
            request = pb.TrainStepRequest(
                objective=pb.OBJECTIVE_SFT, sequences=[_to_proto(s) for s in _batch()], publish_weights=True
            )
            response = stub.TrainStep(request, timeout=120)
            assert (response.version, response.publish_seconds, response.publish_bytes) == (1, 0.25, 1234)
            assert published == [1] and math.isfinite(response.loss) and response.tokens > 0

            request.learning_rate = 7e-4
            assert stub.TrainStep(request, timeout=120).learning_rate == pytest.approx(7e-4)

            status = stub.GetStatus(pb.GetLearnerStatusRequest(compute_checksum=True), timeout=60)
            assert (status.version, status.steps, status.checksum) == (2, 2, learner.checksum())

            path = stub.SaveCheckpoint(pb.SaveCheckpointRequest(path=str(tmp_path / "ckpt")), timeout=60).path
            assert (tmp_path / "ckpt" / "config.json").is_file() and path == str(tmp_path / "ckpt")

            bad = pb.TrainStepRequest(objective=pb.OBJECTIVE_GRPO, sequences=[_to_proto(s) for s in _batch()])
            with pytest.raises(grpc.RpcError) as error:
                stub.TrainStep(bad, timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "needs old_logprobs" in error.value.details()

            with pytest.raises(grpc.RpcError) as error:
                stub.TrainStep(pb.TrainStepRequest(sequences=request.sequences), timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=0.5)
