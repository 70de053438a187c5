"""Bootstrap intervals and pass@k on inputs whose answers are known."""

from math import comb

import numpy as np
import pytest

from controller.scoring.intervals import bootstrap_mean, paired_difference, pass_at_k, pass_at_k_interval


def test_all_equal_scores_give_a_zero_width_interval():
    for value in (0.0, 1.0, 0.3):
        interval = bootstrap_mean([value] * 50)
        assert interval.low == interval.high == pytest.approx(value, abs=1e-12)
        assert interval.n == 50


def test_interval_contains_the_mean_and_narrows_with_more_questions():
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.integers(0, 2, 40))
    large = bootstrap_mean(rng.integers(0, 2, 1000))
    for interval in (small, large):
        assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0
    assert large.high - large.low < small.high - small.low
    # The normal approximation for a proportion: half-width about 1.96 * sqrt(p(1-p)/n).
    half = 1.96 * np.sqrt(large.estimate * (1 - large.estimate) / 1000)
    assert (large.high - large.low) / 2 == pytest.approx(half, rel=0.1)


def test_seeded_resampling_is_reproducible_and_the_seed_matters():
    scores = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0]
    assert bootstrap_mean(scores, seed=7) == bootstrap_mean(scores, seed=7)
    assert bootstrap_mean(scores, seed=7) != bootstrap_mean(scores, seed=8)


def test_empty_scores_are_zero_not_an_error():
    assert bootstrap_mean([]).bounds == [0.0, 0.0] and bootstrap_mean([]).n == 0


def test_paired_difference_of_a_constant_shift_is_exact():
    before = {f"q{i}": float(i % 2) for i in range(30)}
    after = {key: value + 1.0 for key, value in before.items()}
    interval = paired_difference(before, after)
    assert (interval.estimate, interval.low, interval.high, interval.n) == (1.0, 1.0, 1.0, 30)


def test_paired_difference_aligns_by_question_and_is_narrower_than_unpaired():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2, 200).astype(float)
    improved = base.copy()
    improved[rng.choice(np.flatnonzero(base == 0), 20, replace=False)] = 1.0  # 20 questions fixed, none broken
    before = {f"q{i}": v for i, v in enumerate(base)}
    after = {f"q{i}": v for i, v in reversed(list(enumerate(improved)))}  # order must not matter
    after["only-after"] = 1.0
    paired = paired_difference(before, after)
    assert paired.n == 200 and paired.estimate == pytest.approx(0.1)
    assert 0.0 < paired.low <= 0.1 <= paired.high
    unpaired_width = (bootstrap_mean(improved).high - bootstrap_mean(improved).low) * np.sqrt(2)
    assert paired.high - paired.low < unpaired_width


def test_chunked_resampling_covers_large_evaluations():
    scores = np.random.default_rng(0).integers(0, 2, 5000)  # 10k × 5000 draws: several chunks
    interval = bootstrap_mean(scores, resamples=10_000)
    assert interval.low < interval.estimate < interval.high


def test_pass_at_k_matches_the_binomial_formula():
    n, correct = 8, [0, 1, 3, 8, 5]
    for k in (1, 4, 8):
        expected = [1 - comb(n - c, k) / comb(n, k) for c in correct]
        assert pass_at_k(n, correct, k) == pytest.approx(expected)
    assert pass_at_k(8, correct, 1) == pytest.approx([c / 8 for c in correct])  # pass@1 is the sample mean


def test_pass_at_k_interval_and_bad_arguments():
    interval = pass_at_k_interval(4, [4, 4, 4, 4], 4)
    assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)
    interval = pass_at_k_interval(4, [0, 1, 2, 4, 0, 3], 1)
    assert interval.estimate == pytest.approx(10 / 24) and interval.low < interval.estimate < interval.high
    with pytest.raises(ValueError, match="k <= samples"):
        pass_at_k(4, [1], 8)
    with pytest.raises(ValueError, match="correct counts"):
        pass_at_k(4, [5], 1)
