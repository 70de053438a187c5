"""Group-relative advantages for GRPO: each trace's reward against the other samples of its question.

Groups whose rewards are all equal carry no learning signal (every advantage is zero); they are dropped
and counted rather than sent to the learner.
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


def has_signal(rewards: Sequence[float], tolerance: float = 1e-9) -> bool:
    return len(rewards) > 1 and max(rewards) - min(rewards) > tolerance
