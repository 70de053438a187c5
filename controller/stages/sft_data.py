"""Turn traces into training sequences with the loss on policy-written tokens only.

Each segment of the trace grammar is tokenized on its own, exactly as the rollout worker tokenizes its
prompt and each observation, so SFT sequences and rollout sequences share token boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtr.grammar import Trace, render_segments


@dataclass(frozen=True)
class TokenizedTrace:
    token_ids: list[int]
    loss_mask: list[int]


def tokenize_trace(trace: Trace, tokenizer) -> TokenizedTrace:
    ids: list[int] = []
    mask: list[int] = []
    for segment in render_segments(trace):
        piece = tokenizer.encode(segment.text, add_special_tokens=False)
        ids.extend(piece)
        mask.extend([1 if segment.trainable else 0] * len(piece))
    return TokenizedTrace(ids, mask)
