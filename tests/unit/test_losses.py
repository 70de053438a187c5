"""Token log-probs, SFT and GRPO losses: alignment, masking, normalization, clipping, zero-advantage gradients,
the k3 KL penalty to a reference, and GRPO's options (loss aggregation, asymmetric clipping, KL off) on known
batches."""

from __future__ import annotations

import math

import pytest
import torch

from learner.losses import (
    LOSS_AGG_MODES,
    grpo_loss,
    kl_k3,
    masked_token_logprobs,
    sft_loss,
    step_normalizer,
    token_logprobs,
)


def _random_logits(b: int = 2, t: int = 6, v: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, v, generator=torch.Generator().manual_seed(seed))


def test_token_logprobs_hand_example():
    # Vocabulary of 2; position 0 predicts token 1, position 1 predicts token 2.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])  # [1,3,2]
    ids = torch.tensor([[1, 1, 0]])
    out = token_logprobs(logits, ids)
    assert out.shape == (1, 3)
    assert out[0, 0].item() == 0.0
    assert out[0, 1].item() == pytest.approx(math.log(0.5))  # p(1 | pos 0) = 1/2
    assert out[0, 2].item() == pytest.approx(math.log(0.75))  # p(0 | pos 1) = 3/(3+1)


def test_token_logprobs_matches_log_softmax():
    logits, ids = _random_logits(), torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(1))
    expected = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, ids)[:, 1:], expected, atol=1e-6)


def test_token_logprobs_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatch"):
        token_logprobs(_random_logits(), torch.zeros(2, 5, dtype=torch.long))


def test_masked_token_logprobs_match_full_logits_on_the_mask_values_and_gradients():
    """Projecting only the masked positions gives the same log-probs there (0 elsewhere) and, through any loss
    over the mask, the same gradients for the hidden states and the head as the full projection."""
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(3, 7, 4, generator=g, requires_grad=True)
    head = torch.nn.Linear(4, 11, bias=False)
    ids = torch.randint(0, 11, (3, 7), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1]], dtype=torch.float32)
    masked = masked_token_logprobs(hidden, head, ids, mask)
    full = token_logprobs(head(hidden), ids)
    assert torch.allclose(masked, torch.where(mask.bool(), full, torch.zeros_like(full)), atol=1e-6)
    assert masked[mask == 0].abs().max() == 0
    grads = []
    for logprobs in (masked, full):
        hidden.grad, head.weight.grad = None, None
        sft_loss(logprobs, mask).backward(retain_graph=True)
        grads.append((hidden.grad.clone(), head.weight.grad.clone()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_masked_token_logprobs_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatch"):
        masked_token_logprobs(
            torch.zeros(2, 6, 4), torch.nn.Linear(4, 5), torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 5)
        )


def _sft(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return sft_loss(token_logprobs(logits, ids), mask)


def test_sft_ignores_logits_that_predict_masked_tokens():
    logits, ids = _random_logits(), torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0]], dtype=torch.float32)
    base = _sft(logits, ids, mask)
    changed = logits.clone()
    # Position t-1 predicts token t: disturb every position whose next token is masked out (and the last).
    for row in range(2):
        for t in range(6):
            if t == 5 or mask[row, t + 1] == 0:
                changed[row, t] = 100.0 * torch.randn(5)
    assert torch.allclose(_sft(changed, ids, mask), base)
    changed[0, 1] += torch.tensor([9.0, -9.0, 3.0, 0.0, 1.0])  # predicts token 2, which carries loss
    assert not torch.allclose(_sft(changed, ids, mask), base)


def test_sft_is_token_mean_and_normalizer_splits_it_exactly():
    logprobs = torch.tensor([[0.0, -1.0, -2.0], [0.0, -3.0, -5.0]])
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]], dtype=torch.float32)
    assert sft_loss(logprobs, mask).item() == pytest.approx((1 + 2 + 5) / 3)
    halves = sft_loss(logprobs[:1], mask[:1], normalizer=3) + sft_loss(logprobs[1:], mask[1:], normalizer=3)
    assert halves.item() == pytest.approx(sft_loss(logprobs, mask).item())


def test_sft_without_masked_tokens_is_an_error():
    with pytest.raises(ValueError, match="no token carries loss"):
        sft_loss(torch.zeros(1, 3), torch.zeros(1, 3))


def test_grpo_zero_advantages_give_zero_gradient():
    logits = _random_logits().requires_grad_()
    ids = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.float32)
    old = token_logprobs(logits, ids).detach() - 0.3
    loss, _ = grpo_loss(token_logprobs(logits, ids), old, torch.zeros(2), mask, clip_eps=0.2)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0

    logits.grad = None
    loss, _ = grpo_loss(token_logprobs(logits, ids), old, torch.tensor([1.0, -0.5]), mask, clip_eps=0.2)
    loss.backward()
    assert torch.count_nonzero(logits.grad) > 0


def test_grpo_on_policy_loss_is_minus_token_weighted_advantage():
    logprobs = torch.tensor([[0.0, -1.0, -2.0, -0.5], [0.0, -0.1, -0.2, -0.3]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.float32)
    loss, stats = grpo_loss(logprobs, logprobs.clone(), torch.tensor([2.0, -1.0]), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(3 * 2.0 + 1 * -1.0) / 4)
    assert stats.mean_ratio == pytest.approx(1.0)
    assert stats.clip_fraction == 0.0
    assert stats.tokens == 4


def test_grpo_counts_only_tokens_whose_gradient_the_clip_removes():
    old = torch.zeros(2, 5)
    # Row 0 (A>0): ratios e^0.5 (clipped), e^-0.5 (not: min keeps the smaller unclipped term), 1, 1.
    # Row 1 (A<0): ratio e^-0.5 is clipped, e^0.5 is not.
    new = torch.tensor([[0.0, 0.5, -0.5, 0.0, 0.0], [0.0, -0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.float32)
    _, stats = grpo_loss(new, old, torch.tensor([1.0, -1.0]), mask, clip_eps=0.2)
    assert stats.tokens == 6
    assert stats.clip_fraction == pytest.approx(2 / 6)


def test_grpo_ignores_garbage_at_masked_positions():
    new = torch.tensor([[0.0, -1.0, -2.0]])
    old = torch.tensor([[float("nan"), -1.2, float("-inf")]])
    mask = torch.tensor([[0, 1, 0]], dtype=torch.float32)
    loss, stats = grpo_loss(new, old, torch.tensor([1.0]), mask, clip_eps=0.2)
    assert math.isfinite(loss.item())
    assert stats.mean_ratio == pytest.approx(math.exp(0.2))


def test_grpo_far_off_policy_tokens_stay_finite():
    new, old = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, -500.0]])
    loss, _ = grpo_loss(new, old, torch.tensor([-1.0]), torch.tensor([[0.0, 1.0]]), clip_eps=0.2)
    assert math.isfinite(loss.item())


def test_grpo_rejects_advantages_of_wrong_shape():
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3), clip_eps=0.2)


# KL to the reference (k3 estimator).


def test_k3_is_zero_for_identical_policies_and_positive_otherwise():
    logprobs = token_logprobs(_random_logits(), torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(4)))
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 1]], dtype=torch.float32)
    assert torch.count_nonzero(kl_k3(logprobs, logprobs.clone(), mask)) == 0
    shifted = kl_k3(logprobs, logprobs + torch.linspace(-2.0, 2.0, 6), mask)  # d in [-2, 2], never 0
    assert (shifted[mask.bool()] > 0).all()
    assert torch.count_nonzero(shifted[~mask.bool()]) == 0


def test_k3_matches_hand_computed_values_and_ignores_masked_garbage():
    new = torch.tensor([[0.0, -1.0, -2.0, -3.0]])
    ref = torch.tensor([[float("nan"), -0.5, -2.5, float("-inf")]])  # garbage where mask is 0
    mask = torch.tensor([[0, 1, 1, 0]], dtype=torch.float32)
    k3 = kl_k3(new, ref, mask)
    # d = ref - new: +0.5 and -0.5; k3 = e^d - d - 1.
    assert k3[0, 1].item() == pytest.approx(math.exp(0.5) - 1.5, rel=1e-6)  # 0.148721...
    assert k3[0, 2].item() == pytest.approx(math.exp(-0.5) - 0.5, rel=1e-6)  # 0.106531...
    assert k3[0, 0].item() == 0.0 and k3[0, 3].item() == 0.0


def test_k3_is_unbiased_for_kl_under_the_policy():
    """E_{x~pi}[k3(x)] = KL(pi || ref), checked exactly by weighting every outcome by its policy probability."""
    pi = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.4, 0.3, 0.2], dtype=torch.float64)
    k3 = kl_k3(pi.log()[None], ref.log()[None], torch.ones(1, 4))[0]  # one "token" per outcome
    expected = float((pi * (pi / ref).log()).sum())
    assert float((pi * k3).sum()) == pytest.approx(expected, rel=1e-12)


def test_grpo_kl_term_adds_coef_times_token_mean_k3():
    new = torch.tensor([[0.0, -1.0, -2.0, -0.5], [0.0, -0.1, -0.2, -0.3]])
    ref = new + torch.tensor([[0.0, 0.3, -0.2, 0.1], [0.0, 0.4, 9.0, 9.0]])  # row 1: last two tokens are masked out
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([2.0, -1.0])
    plain, plain_stats = grpo_loss(new, new.clone(), adv, mask, clip_eps=0.2)
    k3 = [math.exp(d) - d - 1 for d in (0.3, -0.2, 0.1, 0.4)]
    loss, stats = grpo_loss(new, new.clone(), adv, mask, clip_eps=0.2, ref_logprobs=ref, kl_coef=0.5)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * sum(k3) / 4, rel=1e-6)
    assert stats.kl == pytest.approx(sum(k3) / 4, rel=1e-6)
    assert plain_stats.kl == 0.0  # no reference, nothing measured
    measured, measured_stats = grpo_loss(new, new.clone(), adv, mask, clip_eps=0.2, ref_logprobs=ref)
    assert measured.item() == plain.item() and measured_stats.kl == stats.kl  # kl_coef 0: measured, not trained on
    halves = sum(
        grpo_loss(new[r : r + 1], new[r : r + 1], adv[r : r + 1], mask[r : r + 1], 0.2, 4, ref[r : r + 1], 0.5)[0]
        for r in range(2)
    )
    assert halves.item() == pytest.approx(loss.item(), rel=1e-6)  # the shared normalizer splits it exactly


def test_grpo_kl_gradient_is_zero_at_the_reference_and_pulls_toward_it():
    mask = torch.tensor([[0, 1, 1, 0]], dtype=torch.float32)
    ref = torch.tensor([[0.0, -1.0, -2.0, -3.0]])
    new = ref.clone().requires_grad_()
    loss, stats = grpo_loss(new, ref, torch.zeros(1), mask, clip_eps=0.2, ref_logprobs=ref, kl_coef=1.0)
    loss.backward()
    assert loss.item() == 0.0 and stats.kl == 0.0 and torch.count_nonzero(new.grad) == 0

    new = torch.tensor([[0.0, -0.5, -2.5, -3.0]], requires_grad=True)  # token 1 above the reference, token 2 below
    loss, _ = grpo_loss(new, new.detach(), torch.zeros(1), mask, clip_eps=0.2, ref_logprobs=ref, kl_coef=1.0)
    loss.backward()
    # d(k3)/d(new) = 1 - exp(ref - new), divided by the 2 masked tokens.
    assert new.grad[0, 1].item() == pytest.approx((1 - math.exp(-0.5)) / 2, rel=1e-6)  # > 0: descent lowers it
    assert new.grad[0, 2].item() == pytest.approx((1 - math.exp(0.5)) / 2, rel=1e-6)  # < 0: descent raises it
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 3].item() == 0.0


def test_grpo_kl_arguments_are_checked():
    args = (torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1), torch.tensor([[0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        grpo_loss(*args, clip_eps=0.2, kl_coef=0.1)
    with pytest.raises(ValueError, match="kl_coef must be finite and >= 0"):
        grpo_loss(*args, clip_eps=0.2, ref_logprobs=torch.zeros(1, 3), kl_coef=-0.1)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(*args, clip_eps=0.2, ref_logprobs=torch.zeros(1, 2), kl_coef=0.1)


# GRPO options on a known batch: row 0 has 3 policy tokens and advantage +1, row 1 has 1 and advantage -2.
KNOWN_MASK = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.float32)  # [2,4]
KNOWN_ADV = torch.tensor([1.0, -2.0])  # [2]


def _on_policy_known():
    old = torch.full((2, 4), -1.0)
    return old.clone().requires_grad_(True), old


@pytest.mark.parametrize(
    "mode, loss, grads",
    [
        # token-mean: every token / 4 tokens. Row 0: -1/4 each; row 1: +2/4.
        ("token-mean", (-3 + 2) / 4, (-1 / 4, 2 / 4)),
        # seq-mean-token-mean: each row's token mean, / 2 rows. Row 0: -1/(3*2) each; row 1: 2/2.
        ("seq-mean-token-mean", (-1 + 2) / 2, (-1 / 6, 1.0)),
        # seq-mean-token-sum: each row's token sum, / 2 rows. Row 0: -1/2 each; row 1: 2/2.
        ("seq-mean-token-sum", (-3 + 2) / 2, (-1 / 2, 1.0)),
    ],
)
def test_grpo_loss_aggregation_modes_on_a_known_batch(mode, loss, grads):
    new, old = _on_policy_known()
    value, _ = grpo_loss(new, old, KNOWN_ADV, KNOWN_MASK, 0.2, loss_agg_mode=mode)
    assert value.item() == pytest.approx(loss)
    value.backward()
    expected = torch.tensor([[0, grads[0], grads[0], grads[0]], [0, grads[1], 0, 0]])
    assert torch.allclose(new.grad, expected, atol=1e-6)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_grpo_micro_batches_with_the_step_normalizer_sum_to_the_whole_batch(mode):
    """Each row as its own micro-batch (or rank), divided by the step's normalizer, adds up to the whole."""
    g = torch.Generator().manual_seed(3)
    new, old = torch.randn(2, 4, generator=g) - 1, torch.randn(2, 4, generator=g) - 1
    whole, _ = grpo_loss(new, old, KNOWN_ADV, KNOWN_MASK, 0.2, loss_agg_mode=mode)
    normalizer = step_normalizer(KNOWN_MASK.tolist(), mode)
    assert normalizer == (4.0 if mode == "token-mean" else 2.0)
    parts = [
        grpo_loss(
            new[i : i + 1],
            old[i : i + 1],
            KNOWN_ADV[i : i + 1],
            KNOWN_MASK[i : i + 1],
            0.2,
            normalizer,
            loss_agg_mode=mode,
        )[0]
        for i in range(2)
    ]
    assert sum(p.item() for p in parts) == pytest.approx(whole.item(), abs=1e-6)


def test_unknown_loss_aggregation_is_refused():
    new, old = _on_policy_known()
    with pytest.raises(ValueError, match="loss_agg_mode"):
        grpo_loss(new, old, KNOWN_ADV, KNOWN_MASK, 0.2, loss_agg_mode="sum")


def test_clip_higher_lets_a_positive_token_grow_past_the_symmetric_clip():
    """ratio 1.25: past 1 + 0.2, within 1 + 0.28 (DAPO). A negative advantage at ratio 0.75 is clipped by the
    lower bound either way."""
    mask = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    old = torch.zeros(2, 2)
    for high, positive_grad, clipped in ((None, 0.0, 1.0), (0.28, -1.25 / 2, 0.5)):
        new = torch.tensor([[0.0, math.log(1.25)], [0.0, math.log(0.75)]], requires_grad=True)
        loss, stats = grpo_loss(new, old, adv, mask, 0.2, clip_eps_high=high)
        loss.backward()
        assert new.grad[0, 1].item() == pytest.approx(positive_grad)  # d(-r·A)/d logp = -r·A / 2 tokens
        assert new.grad[1, 1].item() == 0.0  # lower clip: 0.75 < 1 - 0.2 with A < 0
        assert stats.clip_fraction == pytest.approx(clipped)


def test_kl_off_adds_no_term_even_with_a_reference():
    new, old = _on_policy_known()
    ref = old - 0.5
    without, _ = grpo_loss(new, old, KNOWN_ADV, KNOWN_MASK, 0.2)
    measured, stats = grpo_loss(new, old, KNOWN_ADV, KNOWN_MASK, 0.2, ref_logprobs=ref, kl_coef=0.0)
    assert measured.item() == without.item() and stats.kl > 0  # measured, not trained on
    with_kl, _ = grpo_loss(new, old, KNOWN_ADV, KNOWN_MASK, 0.2, ref_logprobs=ref, kl_coef=0.1)
    assert with_kl.item() == pytest.approx(without.item() + 0.1 * stats.kl)  # token-mean k3 over 4 tokens
