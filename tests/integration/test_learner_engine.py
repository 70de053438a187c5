"""The DeepSpeed learner on the tiny model: SFT learns, GRPO steps, accumulation is exact, weights and
checkpoints match, and the gRPC LearnerService works on loopback. GRPO in detail: the KL to the frozen
reference (zero at the snapshot, growing with training, pulling back), zero advantages giving a zero update,
the loss mask, and exact resume with a reference."""

from __future__ import annotations

import math

import grpc
import pytest
import torch

from learner.batches import TrainSequence, collate, plan_micro_batches, shared_prefix_length
from learner.engine import LearnerError, PolicyLearner
from learner.forward import final_hidden_feeds_head
from mtr.config import LearnerConfig
from mtr.grpcutil import BackgroundServer
from mtr.v1 import learner_service_pb2 as pb
from mtr.v1 import learner_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


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


def _grpo(sequences: list[TrainSequence], seed: int, advantage_scale: float = 1.0) -> list[TrainSequence]:
    """`sequences` with fixed off-policy sampler log-probs on their policy tokens and random advantages."""
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(
            token_ids=s.token_ids,
            loss_mask=s.loss_mask,
            old_logprobs=[(-6.0 + 0.5 * float(torch.randn(1, generator=g))) * m for m in s.loss_mask],
            advantage=advantage_scale * float(torch.randn(1, generator=g)),
        )
        for s in sequences
    ]


def _learner(model_dir, total_steps: int = 10, **overrides) -> PolicyLearner:
    return PolicyLearner(model_dir, LearnerConfig(**{"warmup_steps": 0, **overrides}), total_steps=total_steps)


# The engine itself.


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


def test_grpc_train_step_status_and_checkpoint(tiny_model_dir, tmp_path):
    from learner.service import create_server
    from mtr.broadcast import PublishInfo

    learner = _learner(tiny_model_dir, lr=1e-3)
    published: list[int] = []

    def publish(version: int) -> PublishInfo:
        published.append(version)
        return PublishInfo(version, 0.25, 1234, changed=7, values=10)

    server = BackgroundServer(lambda address: create_server(address, learner, publish))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.LearnerServiceStub(channel)
            request = pb.TrainStepRequest(
                objective=pb.OBJECTIVE_SFT, sequences=[_to_proto(s) for s in _batch()], publish_weights=True
            )
            response = stub.TrainStep(request, timeout=120)
            assert (response.version, response.publish_seconds, response.publish_bytes) == (1, 0.25, 1234)
            assert (response.weights_changed, response.weights_total) == (7, 10)
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

            grpo = pb.TrainStepRequest(
                objective=pb.OBJECTIVE_GRPO, sequences=[_to_proto(s) for s in _grpo(_batch(), seed=1)], kl_coef=0.3
            )
            assert stub.TrainStep(grpo, timeout=120).kl == 0.0  # takes the reference
            assert stub.TrainStep(grpo, timeout=120).kl > 0.0
            grpo.reset_optimizer = True
            grpo.loss_aggregation = pb.LOSS_AGGREGATION_SEQ_MEAN_TOKEN_SUM
            grpo.clip_ratio_low, grpo.clip_ratio_high = 0.2, 0.28
            assert math.isfinite(stub.TrainStep(grpo, timeout=120).loss)
            with pytest.raises(grpc.RpcError) as error:
                stub.TrainStep(
                    pb.TrainStepRequest(objective=pb.OBJECTIVE_GRPO, sequences=grpo.sequences, clip_ratio_low=1.5),
                    timeout=60,
                )
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "clip" in error.value.details()
            for bad_kl in (
                pb.TrainStepRequest(objective=pb.OBJECTIVE_SFT, sequences=request.sequences, kl_coef=0.3),
                pb.TrainStepRequest(objective=pb.OBJECTIVE_GRPO, sequences=grpo.sequences, kl_coef=-0.3),
            ):
                with pytest.raises(grpc.RpcError) as error:
                    stub.TrainStep(bad_kl, timeout=60)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "kl_coef" in error.value.details()
    finally:
        server.stop(grace=0.5)


# GRPO at full strength: KL to the frozen reference, zero-signal steps, the loss mask, resume.


def test_kl_is_zero_at_the_reference_snapshot_and_grows_with_training(tiny_model_dir):
    learner = _learner(tiny_model_dir, lr=1e-3, precision="float32")
    assert not learner.has_reference
    first = learner.grpo_step(_grpo(_batch(), seed=1), clip_eps=0.2, kl_coef=0.1)
    assert learner.has_reference and first.kl == 0.0  # the reference is the policy that took this step
    later = [learner.grpo_step(_grpo(_batch(seed=s), seed=s), clip_eps=0.2, kl_coef=0.1) for s in (2, 3)]
    assert all(r.kl > 0 for r in later)
    measured = learner.grpo_step(_grpo(_batch(seed=4), seed=4), clip_eps=0.2, kl_coef=0.0)
    assert measured.kl > 0  # kl_coef 0 still measures against the existing reference
    with pytest.raises(ValueError, match="kl_coef must be finite and >= 0"):
        learner.grpo_step(_grpo(_batch(), seed=5), kl_coef=-1.0)


def test_large_kl_coef_with_zero_advantages_pulls_the_policy_back(tiny_model_dir):
    """Distance to the reference is the KL on a fixed batch (what the term minimizes), measured before the step
    (the step's own `kl`) and after it (the next step's `kl`, on the same batch). Weight-space L2 is no such
    measure: Adam's per-coordinate steps need not shrink it while they shrink the KL.

    The policy is moved away by editing its weights, not by training, so Adam carries no momentum away from
    the reference into the measured step; ZeRO stage 0 because ZeRO-2 would overwrite the edit from its
    own master copy of the weights.
    """
    learner = _learner(tiny_model_dir, lr=1e-4, precision="float32", zero_stage=0)
    snapshot = learner.grpo_step(_grpo(_batch(), seed=1, advantage_scale=0.0), clip_eps=0.2, kl_coef=10.0)
    assert (snapshot.kl, snapshot.grad_norm) == (0.0, 0.0)  # the k3 gradient vanishes at the reference
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in learner._engine.module.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=g))
    fixed = _grpo(_batch(seed=9), seed=9, advantage_scale=0.0)
    before = learner.grpo_step(fixed, clip_eps=0.2, kl_coef=10.0)
    after = learner.grpo_step(fixed, clip_eps=0.2, kl_coef=10.0)
    assert before.kl > 0 and before.grad_norm > 0
    assert after.kl < 0.9 * before.kl


def test_all_zero_advantages_without_kl_give_a_zero_update(tiny_model_dir):
    """What an all-equal-reward group sends: no gradient, and (fresh optimizer, no weight decay) no change."""
    learner = _learner(tiny_model_dir, lr=1e-2, precision="float32")
    before = learner.checksum("float32")
    result = learner.grpo_step(_grpo(_batch(), seed=1, advantage_scale=0.0), clip_eps=0.2)
    assert (result.loss, result.grad_norm, result.kl) == (0.0, 0.0, 0.0)
    assert learner.checksum("float32") == before and learner.version == 1


def _turns(seed: int) -> list[TrainSequence]:
    """Traces shaped like agent turns: prompt, policy turn, observation, policy turn, trailing observation."""
    segments = [(0, 10), (1, 10), (0, 8), (1, 6), (0, 6)]
    mask = [m for m, n in segments for _ in range(n)]
    rows = [TrainSequence(s.token_ids, mask) for s in _batch(lengths=(len(mask),) * 3, seed=seed)]
    return [_edit(s, advantage=a) for s, a in zip(_grpo(rows, seed=seed), (1.0, -0.5, 0.5), strict=True)]


def _edit(sequence: TrainSequence, **changes) -> TrainSequence:
    fields = {"token_ids": sequence.token_ids, "old_logprobs": sequence.old_logprobs, "advantage": sequence.advantage}
    fields.update(changes)
    return TrainSequence(fields["token_ids"], sequence.loss_mask, fields["old_logprobs"], fields["advantage"])


def test_loss_mask_is_respected_exactly(tiny_model_dir, tmp_path):
    """Three steps from one restored state (a reference exists, kl_coef > 0): the given traces, the same traces
    with sampler log-probs changed at every mask-0 position and token ids changed after the last policy token,
    and controls that change what must matter. Token ids at mask-0 positions *before* a policy token are
    context for it (an observation conditions the next turn), so only trailing ones can be invariant."""
    learner = _learner(tiny_model_dir, lr=1e-3, precision="float32")
    learner.grpo_step(_grpo(_batch(), seed=1), clip_eps=0.2, kl_coef=0.5)  # takes the reference
    learner.grpo_step(_grpo(_batch(seed=2), seed=2), clip_eps=0.2)  # so the policy differs from it
    learner.save_state(tmp_path / "state")
    traces = _turns(seed=3)

    def step_from_state(sequences: list[TrainSequence]) -> tuple[float, float, float, str]:
        learner.load_state(tmp_path / "state")
        result = learner.grpo_step(sequences, clip_eps=0.2, kl_coef=0.5)
        return result.loss, result.grad_norm, result.kl, learner.checksum("float32")

    base = step_from_state(traces)
    masked_edits = [
        _edit(
            s,
            old_logprobs=[lp if m else -123.0 for lp, m in zip(s.old_logprobs, s.loss_mask, strict=True)],
            token_ids=s.token_ids[:34] + [(t + 7) % 500 for t in s.token_ids[34:]],  # the trailing observation
        )
        for s in traces
    ]
    assert step_from_state(masked_edits) == base

    # A sampler log-prob on a policy token matters where the ratio is not clipped: row 0 has A > 0, ratio < 1.
    old = traces[0].old_logprobs
    edited = [_edit(traces[0], old_logprobs=[*old[:12], old[12] - 3.0, *old[13:]]), *traces[1:]]
    assert step_from_state(edited)[:2] != base[:2]
    context_token = [_edit(traces[0], token_ids=[*traces[0].token_ids[:22], 1, *traces[0].token_ids[23:]])]
    assert step_from_state(context_token + traces[1:])[:3] != base[:3]


def test_masked_output_projection_trains_like_the_full_one(tiny_model_dir):
    """The learner projects to the vocabulary only where the loss mask is 1; a learner made to project every
    position takes the same GRPO steps (with a KL reference, so its log-probs take the same route)."""
    results = []
    for masked_head in (True, False):
        learner = _learner(tiny_model_dir, lr=1e-3, precision="float32")
        assert final_hidden_feeds_head(learner._engine.module, "cpu")
        learner._masked_head = masked_head
        steps = [learner.grpo_step(_grpo(_turns(seed=s), seed=s), clip_eps=0.2, kl_coef=0.5) for s in (5, 6)]
        results.append([(r.loss, r.grad_norm, r.kl) for r in steps])
    for (loss_a, norm_a, kl_a), (loss_b, norm_b, kl_b) in zip(*results, strict=True):
        assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
        assert norm_a == pytest.approx(norm_b, rel=1e-4)
        assert kl_a == pytest.approx(kl_b, rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_shared_prompt_prefix_trains_like_separate_rows(tiny_model_dir, zero_stage):
    """Rows sharing a 24-token prompt (as a GRPO group does): running the prompt once for all rows gives the
    steps that running each row whole gives, for the policy and for the KL reference, also with ZeRO-3's
    partitioned weights (two forward calls before one backward)."""

    def group(seed: int) -> list[TrainSequence]:
        g = torch.Generator().manual_seed(seed)
        prompt = torch.randint(0, 500, (24,), generator=g).tolist()
        rows = []
        for length in (20, 14, 9):  # the rows' own tokens: policy turn, observation, policy turn
            own = torch.randint(0, 500, (length,), generator=g).tolist()
            mask = [0] * 24 + [1] * (length // 2) + [0] * 2 + [1] * (length - length // 2 - 2)
            rows.append(TrainSequence(prompt + own, mask))
        return _grpo(rows, seed=seed)

    assert shared_prefix_length(group(7)) == 24
    results = []
    for share in (True, False):
        learner = _learner(
            tiny_model_dir, lr=1e-3, precision="float32", share_prompt_prefix=share, zero_stage=zero_stage
        )
        steps = [learner.grpo_step(group(s), clip_eps=0.2, kl_coef=0.5) for s in (7, 8)]
        results.append([(r.loss, r.grad_norm, r.kl) for r in steps])
    for (loss_a, norm_a, kl_a), (loss_b, norm_b, kl_b) in zip(*results, strict=True):
        assert loss_a == pytest.approx(loss_b, rel=1e-4, abs=1e-6)
        assert norm_a == pytest.approx(norm_b, rel=1e-4)
        assert kl_a == pytest.approx(kl_b, rel=1e-3, abs=1e-7)
    assert results[0][1][2] > 0  # the second step's KL is measured, through the shared prefix too


def test_state_with_reference_continues_exactly(tiny_model_dir, tmp_path):
    a = _learner(tiny_model_dir, lr=1e-3, precision="float32")
    a.grpo_step(_grpo(_batch(), seed=1), clip_eps=0.2, kl_coef=0.2)
    a.grpo_step(_grpo(_batch(seed=2), seed=2), clip_eps=0.2, kl_coef=0.2)
    a.save_state(tmp_path / "state")
    expected = a.grpo_step(_grpo(_batch(seed=3), seed=3), clip_eps=0.2, kl_coef=0.2)
    assert expected.kl > 0

    b = _learner(tiny_model_dir, lr=1e-3, precision="float32")
    b.save_state(tmp_path / "plain")  # a state without a reference
    assert b.load_state(tmp_path / "state") == 2 and b.has_reference
    got = b.grpo_step(_grpo(_batch(seed=3), seed=3), clip_eps=0.2, kl_coef=0.2)
    assert (got.loss, got.kl, got.grad_norm) == (expected.loss, expected.kl, expected.grad_norm)
    assert b.checksum("float32") == a.checksum("float32")

    assert b.load_state(tmp_path / "plain") == 0 and not b.has_reference  # restoring drops a later reference
    assert b.grpo_step(_grpo(_batch(), seed=4), clip_eps=0.2).kl == 0.0
    (tmp_path / "state" / "reference.safetensors").unlink()
    with pytest.raises(ValueError, match="records a KL reference, but .*reference.safetensors is missing"):
        b.load_state(tmp_path / "state")
    assert b.version == 1 and not b.has_reference  # the refused restore changed nothing


# Does an update reach the policy the rollout serves, and does it push the right tokens the right way?


def _on_policy(learner: PolicyLearner, rows: list[TrainSequence], advantages: list[float]) -> list[TrainSequence]:
    """`rows` with the learner's own current log-probs as the sampler's (ratio 1) and the given advantages."""
    logprobs = _policy_logprobs(learner, rows)
    return [
        TrainSequence(r.token_ids, r.loss_mask, [lp * m for lp, m in zip(row, r.loss_mask, strict=True)], a)
        for r, row, a in zip(rows, logprobs, advantages, strict=True)
    ]


def _policy_logprobs(learner: PolicyLearner, rows: list[TrainSequence]) -> list[list[float]]:
    module = learner._engine.module
    with torch.no_grad():
        return [learner._token_logprobs(module, module, collate([r], "cpu"))[0].float().tolist() for r in rows]


def _served(learner: PolicyLearner) -> dict[str, bytes]:
    from mtr.weights import pack_state_dict

    return {p.name: bytes(p.data) for p in pack_state_dict(learner.named_weights(), dtype=learner.config.precision)}


def test_a_grpo_step_at_the_default_settings_changes_the_weights_the_rollout_loads(tiny_model_dir):
    """Learner and GRPO at their config defaults (GRPO's own rate, fresh moments): the packed served-dtype weights
    differ after one step, and the publish reports how many values changed."""
    from mtr.config import RunConfig

    grpo = RunConfig().grpo
    learner = PolicyLearner(tiny_model_dir, LearnerConfig(), total_steps=10)
    learner.set_learning_rate(grpo.lr)
    sequences = _on_policy(learner, _batch(), [1.0, -1.0, 1.0, -1.0])
    before = _served(learner)
    result = learner.grpo_step(
        sequences,
        grpo.clip_ratio_low,
        grpo.kl_coef,
        clip_eps_high=grpo.clip_ratio_high,
        loss_agg_mode=grpo.loss_agg_mode,
        reset_optimizer=grpo.reset_optimizer,
    )
    assert result.learning_rate == grpo.lr
    after = _served(learner)
    changed = [name for name in before if before[name] != after[name]]
    assert changed, f"a GRPO step at lr {grpo.lr} left every served ({learner.config.precision}) weight unchanged"
    info = learner.publish(1, "local")
    assert info.values == sum(len(b) for b in after.values()) // (2 if learner.config.precision != "float32" else 4)
    assert 0 < info.changed <= info.values
    assert learner.publish(1, "local").changed == 0  # nothing changed since the last publish


def test_a_grpo_step_raises_positive_and_lowers_negative_sequences(tiny_model_dir):
    learner = _learner(tiny_model_dir, precision="float32")
    learner.set_learning_rate(1e-4)
    rows = _batch(lengths=(40, 40), seed=4)
    sequences = _on_policy(learner, rows, [1.0, -1.0])
    before = _policy_logprobs(learner, rows)
    learner.grpo_step(sequences)
    after = _policy_logprobs(learner, rows)

    def mean_policy(values, row):
        return sum(v for v, m in zip(values, row.loss_mask, strict=True) if m) / sum(row.loss_mask)

    assert mean_policy(after[0], rows[0]) > mean_policy(before[0], rows[0])  # advantage +1: more likely
    assert mean_policy(after[1], rows[1]) < mean_policy(before[1], rows[1])  # advantage -1: less likely


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_reset_optimizer_makes_the_step_that_of_a_fresh_adamw(tiny_model_dir, tmp_path, zero_stage):
    """After SFT steps, a GRPO step with reset_optimizer equals the same step of a learner built fresh from the
    SFT weights (no SFT momentum, no SFT second moments); without the reset it differs."""
    sft = _learner(tiny_model_dir, lr=1e-2, precision="float32", zero_stage=zero_stage)
    for _ in range(2):
        sft.sft_step(_batch())
    sft.save_hf(tmp_path / "sft")
    state = sft.save_state(tmp_path / "state")
    grpo = _grpo(_batch(), seed=2)
    sft.set_learning_rate(1e-3)
    sft.grpo_step(grpo, reset_optimizer=True)
    reset = {name: t.clone() for name, t in sft.named_weights()}  # views of live parameters: copy
    sft.load_state(state)
    sft.grpo_step(grpo)
    kept = {name: t.clone() for name, t in sft.named_weights()}
    fresh = _learner(tmp_path / "sft", precision="float32", zero_stage=zero_stage)
    fresh.set_learning_rate(1e-3)
    fresh.grpo_step(grpo)
    weights = dict(fresh.named_weights())
    assert all(torch.allclose(reset[n], weights[n], rtol=0, atol=1e-7) for n in weights)
    assert not all(torch.allclose(kept[n], weights[n], rtol=0, atol=1e-6) for n in weights)
