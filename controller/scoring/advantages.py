"""Group-relative advantages for GRPO: each trace's reward against the other samples of its question.

Groups whose rewards are all equal carry no learning signal (every advantage is zero), nor do groups whose
rewards differ by less than `grpo.min_reward_std`; they are dropped and counted rather than sent to the learner.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def group_advantages(rewards: Sequence[float], normalize_std: bool = True, eps: float = 1e-6) -> list[float]:
    """rewards: [G] for one group -> advantages: [G], mean-centred and, with `normalize_std`, divided by the std.

    `normalize_std` is `grpo.std_normalize`: on is the original GRPO; off (Dr. GRPO) keeps the reward scale, so
    groups with a small spread are not amplified. An all-equal group gives all zeros in both modes.
    """
    if not rewards:
        return []
    mean = statistics.fmean(rewards)
    centred = [r - mean for r in rewards]
    if not normalize_std:
        return centred
    std = statistics.pstdev(rewards)
    return [c / (std + eps) for c in centred]


def has_signal(rewards: Sequence[float], tolerance: float = 1e-9, min_std: float = 0.0) -> bool:
    """rewards: [G]. Whether the group can teach anything: its rewards differ (by more than `tolerance`) and
    their population std reaches `min_std` (`grpo.min_reward_std`). Below that, std normalization would turn
    rounding-level differences (one consistency check in one sample) into +-1 advantages: noise."""
    if len(rewards) < 2 or max(rewards) - min(rewards) <= tolerance:
        return False
    return statistics.pstdev(rewards) >= min_std


# Finish reasons of a trace cut by a budget before it answered (rollout.agent_loop): `grpo.truncated` applies.
TRUNCATED_REASONS = frozenset({"length", "turn_budget"})


def is_truncated(finish_reason: str) -> bool:
    return finish_reason in TRUNCATED_REASONS
