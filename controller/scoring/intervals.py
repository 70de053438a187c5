"""Bootstrap confidence intervals for evaluation scores, and the unbiased pass@k estimator.

Used by `controller.stages.evaluation` (EM of one checkpoint, pass@k) and `controller.reports.evalreport`
(stage-to-stage gains) in `mtr run` and `mtr eval`. Percentile bootstrap over questions: a resample draws
question indices with replacement; a paired interval draws them once for both checkpoints, so question
difficulty cancels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
CONFIDENCE = 0.95
_CHUNK_CELLS = 4_000_000  # resamples × questions drawn at once: bounds memory (~32 MB of indices) for any n


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; `n` is the number of questions it rests on."""

    estimate: float
    low: float
    high: float
    n: int

    @property
    def bounds(self) -> list[float]:
        """[low, high], as eval.json writes it."""
        return [self.low, self.high]


def bootstrap_mean(
    scores: Sequence[float] | np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE
) -> Interval:
    """Mean of per-question scores (0/1 or float) with its percentile bootstrap interval; empty → all zeros."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return Interval(0.0, 0.0, 0.0, 0)
    means = _resampled_means(values, resamples, seed)
    low, high = _percentiles(means, confidence)
    return Interval(float(values.mean()), low, high, int(values.size))


def paired_difference(
    before: Mapping[Hashable, float],
    after: Mapping[Hashable, float],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean of `after - before` over the questions both score (keyed by question id), with a paired interval.

    Each resample draws question indices once and applies them to both checkpoints, which is the same as
    resampling the per-question differences. Questions only one side has are left out (`n` counts the pairs).
    """
    shared = [key for key in before if key in after]
    differences = np.array([after[key] - before[key] for key in shared], dtype=np.float64)
    return bootstrap_mean(differences, resamples, seed, confidence)


def pass_at_k(samples: int, correct: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Per question, the unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), with n samples, c correct.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which avoids huge binomials; 1 when fewer than k are wrong.
    """
    if not 1 <= k <= samples:
        raise ValueError(f"pass@{k} needs 1 <= k <= samples ({samples})")
    counts = np.asarray(correct, dtype=np.int64)
    if np.any((counts < 0) | (counts > samples)):
        raise ValueError(f"correct counts must lie in [0, {samples}]: {counts.tolist()}")
    values = np.ones(counts.shape, dtype=np.float64)
    for index, c in enumerate(counts):
        if samples - c >= k:
            values[index] = 1.0 - np.prod(1.0 - k / np.arange(samples - c + 1, samples + 1, dtype=np.float64))
    return values


def pass_at_k_interval(
    samples: int,
    correct: Sequence[int] | np.ndarray,
    k: int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Interval:
    """pass@k averaged over questions, with a bootstrap interval over questions."""
    return bootstrap_mean(pass_at_k(samples, correct, k), resamples, seed, confidence)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` bootstrap resamples of `values`: float64[resamples]; same seed, same means."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    n = values.size
    chunk = max(1, _CHUNK_CELLS // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        indices = rng.integers(0, n, size=(stop - start, n))  # int64[chunk, n]
        means[start:stop] = values[indices].mean(axis=1)
    return means


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
