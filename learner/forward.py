"""Forward passes that save compute: the shared prompt prefix run once, and whether the head can be skipped.

Used by `PolicyLearner._token_logprobs`; both leave the log-probs equal to the plain forward (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from learner.batches import MicroBatch
from learner.losses import masked_token_logprobs


def prefix_shared_logprobs(model: Callable, module: torch.nn.Module, batch: MicroBatch) -> torch.Tensor:
    """`_token_logprobs` for rows sharing their first P = batch.shared_prefix tokens: the prefix runs once
    (one row), its key/value cache is repeated for every row, and only the rows' own tokens run per row.

    Gradients reach the prefix's computation through the cache from every row, so the step's gradient is the
    one the plain forward gives (equal in fp32 to ~1e-5; in bf16 no further from fp32 than the plain one).
    A GRPO group's rows share the system prompt, tools and question: a third of a typical trace.
    """
    p, rows = batch.shared_prefix, batch.token_ids.shape[0]
    head = module.get_output_embeddings()
    prefix = model(input_ids=batch.token_ids[:1, :p], use_cache=True, output_hidden_states=True, logits_to_keep=1)
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(rows)
    rest = model(
        input_ids=batch.token_ids[:, p:],
        attention_mask=batch.attention_mask,  # prefix + own tokens: the rows' padding is at their end
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=True,
        logits_to_keep=1,
    )
    # The prefix's last hidden state predicts each row's first own token.
    last = prefix.hidden_states[-1][:, -1:].expand(rows, 1, -1)  # [B,1,H]
    hidden = torch.cat([last, rest.hidden_states[-1]], dim=1)  # positions p-1 .. T-1
    own = masked_token_logprobs(hidden, head, batch.token_ids[:, p - 1 :], batch.loss_mask[:, p - 1 :])
    return torch.cat([own.new_zeros(rows, p - 1), own], dim=1)  # [B,T]; no loss before p


def final_hidden_feeds_head(module: torch.nn.Module, device: str) -> bool:
    """Whether `module` takes `logits_to_keep` and its last returned hidden state, through its output
    embeddings, gives its logits, checked on a few tokens.

    Models differ in whether that hidden state is taken before or after the final norm; computing log-probs
    from the wrong one would train silently on wrong values, so a model that fails the check is run the
    plain way (full logits).
    """
    import inspect

    if "logits_to_keep" not in inspect.signature(module.forward).parameters or module.get_output_embeddings() is None:
        return False
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]], device=device)
    was_training = module.training
    module.eval()  # no dropout between the two forwards
    try:
        with torch.no_grad():
            full = module(input_ids=ids).logits
            out = module(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
            if not out.hidden_states:
                return False
            projected = module.get_output_embeddings()(out.hidden_states[-1])
    finally:
        module.train(was_training)
    return projected.shape == full.shape and torch.allclose(projected.float(), full.float(), atol=1e-3, rtol=1e-3)
