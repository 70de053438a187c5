"""What a training step is made of: sequences, their checks, micro-batches by token budget, and collation.

A step's sequences are checked before any compute (ids in the vocabulary, masks and GRPO fields the right
length), split into micro-batches that fit `learner.micro_batch_tokens`, and padded into tensors; rows that
share a prompt are marked so the forward can run the shared prefix once (`learner.forward`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Shortest shared prompt worth its own forward call (below it, the call costs about what it saves).
MIN_SHARED_PREFIX = 16


@dataclass(frozen=True)
class TrainSequence:
    """One trace as token ids; `loss_mask` is 1 on policy tokens. GRPO also needs `old_logprobs`/`advantage`."""

    token_ids: list[int]
    loss_mask: list[int]
    old_logprobs: list[float] | None = None
    advantage: float = 0.0


def plan_micro_batches(lengths: Sequence[int], budget_tokens: int) -> list[list[int]]:
    """Group sequence indices so each group's padded size (rows × longest) stays within the budget.

    Longest first, so rows of similar length share a micro-batch and padding stays small. A sequence
    longer than the budget gets a micro-batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def validate_sequences(sequences: Sequence[TrainSequence], vocab_size: int, grpo: bool) -> None:
    """Reject malformed sequences before any gradient is computed; the message names the sequence."""
    if not sequences:
        raise ValueError("a training step needs at least one sequence")
    for i, seq in enumerate(sequences):
        where = f"sequence {i}"
        if len(seq.token_ids) < 2:
            raise ValueError(f"{where}: needs at least 2 tokens, has {len(seq.token_ids)}")
        if len(seq.loss_mask) != len(seq.token_ids):
            raise ValueError(f"{where}: loss_mask has {len(seq.loss_mask)} entries for {len(seq.token_ids)} tokens")
        if any(m not in (0, 1) for m in seq.loss_mask):
            raise ValueError(f"{where}: loss_mask must hold only 0 and 1")
        if seq.loss_mask[0]:
            raise ValueError(f"{where}: loss_mask[0] is 1, but the first token has no context to predict it")
        if not any(seq.loss_mask):
            raise ValueError(f"{where}: loss_mask has no 1, so the sequence carries no loss")
        bad = [t for t in seq.token_ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"{where}: token id {bad[0]} outside the vocabulary [0, {vocab_size})")
        if grpo:
            _validate_grpo_fields(seq, where)


def _validate_grpo_fields(seq: TrainSequence, where: str) -> None:
    if seq.old_logprobs is None:
        raise ValueError(f"{where}: GRPO needs old_logprobs")
    if len(seq.old_logprobs) != len(seq.token_ids):
        raise ValueError(f"{where}: old_logprobs has {len(seq.old_logprobs)} entries for {len(seq.token_ids)} tokens")
    if not math.isfinite(seq.advantage):
        raise ValueError(f"{where}: advantage {seq.advantage} is not finite")
    for t, (lp, m) in enumerate(zip(seq.old_logprobs, seq.loss_mask, strict=True)):
        if m and not math.isfinite(lp):
            raise ValueError(f"{where}: old_logprobs[{t}] = {lp} is not finite on a policy token")


def shared_prefix_length(rows: Sequence[TrainSequence]) -> int:
    """How many leading tokens every row has in common, up to the first token any row carries loss on.

    Stopping before the first policy token keeps every loss position outside the shared part, so each row's
    log-probs come from its own forward and the prefix needs no per-row log-probs. 0 for a single row.
    """
    if len(rows) < 2:
        return 0
    common = os.path.commonprefix([list(s.token_ids) for s in rows])
    return min(len(common), *(list(s.loss_mask).index(1) for s in rows))


@dataclass(frozen=True)
class MicroBatch:
    token_ids: torch.Tensor  # [B,T] long, right-padded
    attention_mask: torch.Tensor  # [B,T] 1 on real tokens
    loss_mask: torch.Tensor  # [B,T]
    old_logprobs: torch.Tensor  # [B,T] (zeros for SFT)
    advantages: torch.Tensor  # [B]
    shared_prefix: int = 0  # leading tokens all rows share, no loss on them (see shared_prefix_length)


def collate(rows: Sequence[TrainSequence], device: str, share_prefix: bool = False) -> MicroBatch:
    width = max(len(s.token_ids) for s in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.float32)
    old = torch.zeros(len(rows), width, dtype=torch.float32)
    for r, seq in enumerate(rows):
        n = len(seq.token_ids)
        ids[r, :n] = torch.tensor(seq.token_ids)
        attention[r, :n] = 1
        mask[r, :n] = torch.tensor(seq.loss_mask, dtype=torch.float32)
        if seq.old_logprobs is not None:
            old[r, :n] = torch.tensor(seq.old_logprobs, dtype=torch.float32)
    advantages = torch.tensor([s.advantage for s in rows], dtype=torch.float32)
    prefix = shared_prefix_length(rows) if share_prefix else 0
    return MicroBatch(
        *(t.to(device) for t in (ids, attention, mask, old, advantages)),
        shared_prefix=prefix if prefix >= MIN_SHARED_PREFIX else 0,
    )
