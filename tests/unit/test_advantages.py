"""Group-relative advantages: mean-centred with and without the std division, and no signal from equal rewards."""

from __future__ import annotations

import statistics

import pytest

from controller.scoring.advantages import group_advantages, has_signal


def test_std_normalized_advantages_have_zero_mean_and_unit_spread():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0], normalize_std=True)
    assert adv == pytest.approx([1.0, -1.0, -1.0, 1.0], rel=1e-5)
    scaled = group_advantages([10.0, 0.0, 0.0, 10.0], normalize_std=True)
    assert scaled == pytest.approx(adv, rel=1e-5)  # the reward scale cancels
    skewed = group_advantages([3.0, 1.0, 1.0, 1.0], normalize_std=True)
    assert sum(skewed) == pytest.approx(0.0, abs=1e-12)
    assert statistics.pstdev(skewed) == pytest.approx(1.0, rel=1e-5)


def test_centred_only_advantages_keep_the_reward_scale():
    assert group_advantages([2.0, 0.0], normalize_std=False) == [1.0, -1.0]
    assert group_advantages([3.0, 1.0, 1.0, 1.0], normalize_std=False) == [1.5, -0.5, -0.5, -0.5]
    assert group_advantages([10.0, 0.0], normalize_std=False) == [5.0, -5.0]  # scale is not divided out


@pytest.mark.parametrize("normalize_std", [True, False])
def test_all_equal_group_gives_all_zero_advantages(normalize_std):
    rewards = [0.7, 0.7, 0.7, 0.7]
    assert group_advantages(rewards, normalize_std=normalize_std) == [0.0, 0.0, 0.0, 0.0]
    assert not has_signal(rewards)
    assert has_signal([0.7, 0.7, 0.7, 0.2])


def test_empty_group_has_no_advantages():
    assert group_advantages([], normalize_std=True) == [] == group_advantages([], normalize_std=False)


def test_groups_below_the_reward_std_floor_have_no_signal():
    """Default weights: one consistency sub-check (0.5 x 1/5) differing in one of 4 samples gives std 0.043, under
    the 0.05 floor; any answer that differs (w_answer 1) gives std >= 0.43 with 4 samples."""
    consistency_only = [1.4, 1.4, 1.4, 1.3]
    assert has_signal(consistency_only)  # it differs...
    assert statistics.pstdev(consistency_only) == pytest.approx(0.0433, abs=1e-4)
    assert not has_signal(consistency_only, min_std=0.05)  # ...but by noise
    assert group_advantages(consistency_only, normalize_std=True)[3] == pytest.approx(-1.732, abs=1e-3)  # +-1.7
    assert has_signal([1.4, 0.4, 0.4, 0.4], min_std=0.05)
    assert has_signal([1.0] + [0.0] * 63, min_std=0.05)  # one right answer among 64 samples: std 0.124
    assert not has_signal([0.7], min_std=0.0)


def test_truncated_means_cut_by_a_budget():
    from controller.scoring.advantages import is_truncated

    assert is_truncated("length") and is_truncated("turn_budget")
    assert not is_truncated("answer") and not is_truncated("malformed")
