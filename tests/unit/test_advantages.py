"""Group-relative advantages: mean-centred with and without the std division, and no signal from equal rewards."""

from __future__ import annotations

import statistics

import pytest

from controller.advantages import group_advantages, has_signal


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
