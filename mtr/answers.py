"""Answer metrics: Exact Match and token F1 with the SQuAD v1.1 normalization.

The same numbers are the reward's correctness term and the benchmark score, so they follow the official
evaluation scripts exactly (SQuAD v1.1 normalization; HotpotQA's yes/no/noanswer rule for F1), and take
the best score over all gold aliases.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
# HotpotQA scores a yes/no answer as all-or-nothing: "no" must not earn partial credit against "yes".
_CLOSED_ANSWERS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (SQuAD v1.1, in that order)."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold alias, else 0.0."""
    predicted = normalize_answer(prediction)
    return max(float(predicted == normalize_answer(gold)) for gold in _require_golds(golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-level F1 between prediction and the best-matching gold alias."""
    return max(_f1_single(prediction, gold) for gold in _require_golds(golds))


def _f1_single(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction), normalize_answer(gold)
    if (predicted in _CLOSED_ANSWERS or expected in _CLOSED_ANSWERS) and predicted != expected:
        return 0.0
    predicted_tokens, expected_tokens = predicted.split(), expected.split()
    same = sum((Counter(predicted_tokens) & Counter(expected_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(expected_tokens)
    return 2 * precision * recall / (precision + recall)


def _require_golds(golds: Sequence[str]) -> Sequence[str]:
    # A bare string would silently be scored character by character; no golds has no meaningful score.
    if isinstance(golds, str):
        raise TypeError(f"golds must be a sequence of answer strings, got the single string {golds!r}")
    if len(golds) == 0:
        raise ValueError("cannot score an answer against an empty list of gold answers")
    return golds
