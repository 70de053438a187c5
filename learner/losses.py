"""Token log-probabilities and the two training losses: SFT (masked NLL) and GRPO (clipped ratio + KL).

Shapes: B sequences (rows) × T positions × V vocabulary. A loss mask is 1 on tokens the policy
produced (the only ones that carry loss) and 0 on prompt, observation and padding tokens.
Losses take an optional `normalizer` so that summing the losses of several micro-batches (and ranks) gives
exactly the step's aggregate: the step's masked-token count for token means, its number of sequences for the
GRPO sequence-mean modes (`step_normalizer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# Bound on |new - old| log-prob before exp: a far off-policy token (stale or mismatched sampler log-probs)
# would otherwise overflow the ratio to inf and, with a negative advantage, the loss with it.
MAX_LOG_RATIO = 20.0

# How the GRPO loss sums over tokens (verl's `loss_agg_mode` names):
# token-mean: all policy tokens of the step weigh the same (long traces weigh more);
# seq-mean-token-mean: each sequence's token mean, then the mean over sequences (every trace weighs the same);
# seq-mean-token-sum: each sequence's token sum, then the mean over sequences (Dr. GRPO's unbiased sum).
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


@dataclass(frozen=True)
class GRPOStats:
    """Diagnostics of one GRPO loss evaluation over its masked tokens."""

    clip_fraction: float  # share of masked tokens whose gradient the clip removed
    mean_ratio: float  # mean importance ratio exp(new - old) over masked tokens
    tokens: int  # masked tokens counted (to combine micro-batches)
    kl: float = 0.0  # mean k3 KL estimate to the reference over masked tokens; 0 without a reference


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """logits [B,T,V], token_ids [B,T] -> [B,T]: out[:,t] = log p(ids[t] | ids[<t]), out[:,0] = 0.

    Position t-1's logits predict token t. Computed as gathered logit minus logsumexp, so no [B,T,V]
    log-softmax copy is kept besides what autograd needs.
    """
    if logits.dim() != 3 or token_ids.shape != logits.shape[:2]:
        raise ValueError(f"token_logprobs: logits {tuple(logits.shape)} and ids {tuple(token_ids.shape)} mismatch")
    predicting = logits[:, :-1].float()  # [B,T-1,V]
    targets = token_ids[:, 1:].unsqueeze(-1)  # [B,T-1,1]
    picked = predicting.gather(-1, targets).squeeze(-1) - predicting.logsumexp(-1)  # [B,T-1]
    first = picked.new_zeros(picked.shape[0], 1)  # [B,1]: nothing predicts the first token
    return torch.cat([first, picked], dim=1)


def masked_token_logprobs(
    hidden: torch.Tensor,
    output_head: Callable[[torch.Tensor], torch.Tensor],
    token_ids: torch.Tensor,
    loss_mask: torch.Tensor,
) -> torch.Tensor:
    """hidden [B,T,H] (final hidden states), token_ids and loss_mask [B,T] -> [B,T]: log p(ids[t] | ids[<t])
    where loss_mask[t] is 1, and 0 elsewhere.

    Only the masked tokens are ever used, and in a trace they are the minority (prompt and tool observations
    carry no loss). So the vocabulary projection `output_head` ([N,H] -> [N,V]) and its logsumexp run on
    those positions only: that projection is about a fifth of a small model's FLOPs, and its [B,T,V] float
    logits are the largest activation of a step.
    """
    if hidden.dim() != 3 or token_ids.shape != hidden.shape[:2] or loss_mask.shape != token_ids.shape:
        raise ValueError(
            f"masked_token_logprobs: hidden {tuple(hidden.shape)}, ids {tuple(token_ids.shape)} and mask "
            f"{tuple(loss_mask.shape)} mismatch"
        )
    predicting = loss_mask[:, 1:].bool()  # [B,T-1]: position t-1 predicts token t
    logits = output_head(hidden[:, :-1][predicting]).float()  # [N,V]
    targets = token_ids[:, 1:][predicting].unsqueeze(-1)  # [N,1]
    picked = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)  # [N]
    scattered = picked.new_zeros(predicting.shape).masked_scatter(predicting, picked)  # [B,T-1]
    first = picked.new_zeros(predicting.shape[0], 1)  # [B,1]: nothing predicts the first token
    return torch.cat([first, scattered], dim=1)


def step_normalizer(loss_masks: Sequence[Sequence[int]], loss_agg_mode: str = "token-mean") -> float:
    """What a step's micro-batch losses are divided by: its masked tokens (token-mean) or its sequences that
    carry loss (seq-mean modes). Ranks of a data-parallel step divide it by the world size."""
    _check_agg_mode(loss_agg_mode)
    if loss_agg_mode == "token-mean":
        return float(sum(sum(mask) for mask in loss_masks))
    return float(sum(1 for mask in loss_masks if any(mask)))


def _check_agg_mode(loss_agg_mode: str) -> None:
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {LOSS_AGG_MODES}, got {loss_agg_mode!r}")


def aggregate(values: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """values, loss_mask [B,T] -> scalar: the masked values summed as `loss_agg_mode` says, before the normalizer.

    token-mean: sum over masked tokens; seq-mean-token-mean: sum over rows of each row's masked mean;
    seq-mean-token-sum: sum over rows of each row's masked sum. Rows without a masked token add 0.
    """
    _check_agg_mode(loss_agg_mode)
    mask = loss_mask.bool()
    masked = torch.where(mask, values, torch.zeros_like(values))  # [B,T]
    if loss_agg_mode == "token-mean":
        return masked.sum()
    per_row = masked.sum(dim=1)  # [B]
    if loss_agg_mode == "seq-mean-token-sum":
        return per_row.sum()
    return (per_row / mask.sum(dim=1).clamp(min=1)).sum()


def _normalizer(loss_mask: torch.Tensor, normalizer: float | None, loss_agg_mode: str = "token-mean") -> float:
    value = step_normalizer(loss_mask.tolist(), loss_agg_mode) if normalizer is None else float(normalizer)
    if value <= 0:
        raise ValueError("loss normalizer must be positive: no token carries loss")
    return value


def sft_loss(logprobs: torch.Tensor, loss_mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """logprobs [B,T], loss_mask [B,T] -> scalar: negative log-likelihood summed over masked tokens / normalizer.

    `where` rather than multiplication, so that a non-finite value at a masked-out position cannot leak in.
    """
    mask = loss_mask.bool()
    nll = torch.where(mask, -logprobs, torch.zeros_like(logprobs))  # [B,T]
    return nll.sum() / _normalizer(loss_mask, normalizer)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """logprobs, ref_logprobs, loss_mask [B,T] -> [B,T]: the k3 estimate of KL(policy || reference) per token.

    With d = ref - new, k3 = exp(d) - d - 1: never negative, zero exactly where the two agree, and unbiased
    for the KL when tokens are sampled from the policy (Schulman's k3). 0 off the mask. `expm1` keeps the
    small-d values accurate; d is bounded like the importance ratio so a far-off token cannot overflow.
    """
    if ref_logprobs.shape != logprobs.shape:
        raise ValueError(f"ref_logprobs {tuple(ref_logprobs.shape)} must match logprobs {tuple(logprobs.shape)}")
    mask = loss_mask.bool()  # [B,T]
    d = torch.where(mask, ref_logprobs - logprobs, torch.zeros_like(logprobs))  # [B,T], 0 off-mask
    d = d.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.expm1(d) - d  # [B,T]; exactly 0 where d == 0


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    clip_eps: float,
    normalizer: float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    *,
    clip_eps_high: float | None = None,
    loss_agg_mode: str = "token-mean",
) -> tuple[torch.Tensor, GRPOStats]:
    """PPO-style clipped surrogate plus a k3 KL penalty to a reference, aggregated over masked tokens.

    logprobs, old_logprobs, loss_mask, ref_logprobs [B,T]; advantages [B] (one per sequence, broadcast over
    its tokens). Per token: l = -min(r·A, clip(r, 1-clip_eps, 1+clip_eps_high)·A) + kl_coef · k3, with
    r = exp(new - old); loss = aggregate(l, mask, loss_agg_mode) / normalizer (see `aggregate`; the default
    normalizer is this batch's `step_normalizer`). `clip_eps_high` None clips symmetrically; a larger one
    (DAPO's clip-higher, 0.28 against 0.2) lets unlikely tokens with a positive advantage grow more.
    With all advantages zero and no KL term the loss is identically zero, and so is its gradient.
    `ref_logprobs` without `kl_coef` only measures the KL (reported in the stats).
    """
    if advantages.dim() != 1 or advantages.shape[0] != logprobs.shape[0]:
        raise ValueError(f"advantages must be [B]={logprobs.shape[0]}, got {tuple(advantages.shape)}")
    if not (math.isfinite(kl_coef) and kl_coef >= 0):
        raise ValueError(f"kl_coef must be finite and >= 0, got {kl_coef}")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs (the reference policy's token log-probs)")
    high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = loss_mask.bool()  # [B,T]
    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))  # [B,T], 0 off-mask
    log_ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = log_ratio.exp()  # [B,T]
    adv = advantages.to(logprobs.dtype).unsqueeze(1)  # [B,1]
    unclipped = ratio * adv  # [B,T]
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + high) * adv  # [B,T]
    objective = torch.minimum(unclipped, clipped)  # [B,T]
    per_token = -objective  # [B,T]
    k3 = None if ref_logprobs is None else kl_k3(logprobs, ref_logprobs, loss_mask)  # [B,T]
    if kl_coef > 0:
        # Only when asked: adding 0·KL would still cost a backward path and could turn exact zeros inexact.
        per_token = per_token + kl_coef * k3
    loss = aggregate(per_token, loss_mask, loss_agg_mode) / _normalizer(loss_mask, normalizer, loss_agg_mode)
    with torch.no_grad():
        tokens = int(mask.sum())
        was_clipped = (clipped < unclipped) & mask  # the clipped branch won: this token's gradient is zero
        stats = GRPOStats(
            clip_fraction=float(was_clipped.sum()) / max(tokens, 1),
            mean_ratio=float(ratio[mask].mean()) if tokens else 1.0,
            tokens=tokens,
            kl=float(k3[mask].sum()) / max(tokens, 1) if k3 is not None else 0.0,
        )
    return loss, stats
