"""The learner's pure helpers (no engine): micro-batches by token budget, the shared prompt prefix, the
learning-rate schedule, and the checks that refuse malformed sequences with a reason."""

import pytest

from learner.batches import TrainSequence, plan_micro_batches, shared_prefix_length, validate_sequences
from learner.engine import warmup_cosine_lr


def test_micro_batches_respect_the_token_budget():
    lengths = [100, 30, 60, 90, 40]
    batches = plan_micro_batches(lengths, budget_tokens=256)
    assert sorted(i for batch in batches for i in batch) == list(range(5))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 256
    assert plan_micro_batches([300, 10], budget_tokens=256) == [[0], [1]]


def test_shared_prefix_stops_at_the_first_difference_or_policy_token():
    prompt = list(range(20))
    rows = [TrainSequence(prompt + [50 + i, 60, 70], [0] * 20 + [1, 1, 1]) for i in range(3)]
    assert shared_prefix_length(rows) == 20
    assert shared_prefix_length(rows[:1]) == 0  # one row shares nothing
    early_policy = TrainSequence(prompt + [50, 60], [0] * 12 + [1] * 10)
    assert shared_prefix_length([*rows, early_policy]) == 12
    other_prompt = TrainSequence([0, 1, 2, 99] + prompt[4:] + [50], [0] * 20 + [1])
    assert shared_prefix_length([*rows, other_prompt]) == 3


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
