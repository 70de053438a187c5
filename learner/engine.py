"""The policy learner: a DeepSpeed engine that takes SFT and GRPO steps on token sequences.

One step = all given sequences, packed into micro-batches of at most `micro_batch_tokens` (padded
length × rows), gradients accumulated across them, then one optimizer step. Runs on CPU (gloo,
`DS_ACCELERATOR=cpu`) or CUDA (nccl). Served over gRPC by `learner.service`; usually hosted in a Ray actor.
As one rank of a data-parallel group (`learner.group`) a step trains on that rank's share of the sequences.
GRPO can add a KL penalty to a frozen reference: a copy of the policy taken the first time a GRPO step asks
for KL (the policy at GRPO start, i.e. the SFT checkpoint), held by every rank.
`save_state`/`load_state` write and restore everything an exact continuation needs, the reference included.
A GRPO step can start from fresh optimizer moments (`reset_optimizer`: the first step after SFT, so that
leftover SFT momentum and second moments do not drive or damp it). Each publish counts how many values of the
served-dtype weights changed since the previous one (`PublishInfo.changed`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from learner.losses import (
    GRPOStats,
    grpo_loss,
    masked_token_logprobs,
    sft_loss,
    step_normalizer,
    token_logprobs,
)
from mtr.chattemplate import apply_to as apply_chat_template
from mtr.config import LearnerConfig
from mtr.hardware import concrete_dtype
from mtr.modelprep import resolve_model_path
from mtr.placement import bind_address
from mtr.weights import ServedWeightsDiff, weights_checksum

if TYPE_CHECKING:
    from mtr.broadcast import PublishInfo, WeightBroadcast, WeightGroupInfo

# Floor of the cosine schedule, as a share of the peak rate: steps past `total_steps` still learn.
MIN_LR_RATIO = 0.1

# Layout of a training-state directory (see PolicyLearner.save_state).
STATE_FILE = "mtr_state.json"  # written last: its presence marks a complete state
STATE_FORMAT = 1
DEEPSPEED_TAG = "deepspeed"  # DeepSpeed's module + optimizer checkpoint lives in <dir>/deepspeed/
REFERENCE_FILE = "reference.safetensors"  # the frozen KL reference, in training precision (when there is one)


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


class LearnerError(RuntimeError):
    """The learner cannot continue (non-finite loss or gradient); restart from the last checkpoint."""


@dataclass(frozen=True)
class TrainSequence:
    """One trace as token ids; `loss_mask` is 1 on policy tokens. GRPO also needs `old_logprobs`/`advantage`."""

    token_ids: list[int]
    loss_mask: list[int]
    old_logprobs: list[float] | None = None
    advantage: float = 0.0


@dataclass(frozen=True)
class StepResult:
    loss: float  # the step's loss: token mean over masked tokens (GRPO: as its loss_agg_mode aggregates)
    grad_norm: float  # global gradient norm before clipping
    tokens: int  # tokens processed (sum of sequence lengths, padding excluded)
    seconds: float
    clip_fraction: float  # GRPO: share of masked tokens whose ratio was clipped; 0 for SFT
    learning_rate: float  # rate the optimizer step used
    kl: float = 0.0  # GRPO: mean k3 KL to the reference over masked tokens; 0.0 while there is no reference


class LearnerLike(Protocol):
    """What the gRPC servicer and the host need from a learner: one in-process rank or a group of ranks."""

    vocab_size: int

    @property
    def version(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def set_learning_rate(self, lr: float | None) -> None: ...

    def sft_step(self, sequences: Sequence[TrainSequence]) -> StepResult: ...

    def grpo_step(
        self,
        sequences: Sequence[TrainSequence],
        clip_eps: float | None = None,
        kl_coef: float = 0.0,
        *,
        clip_eps_high: float | None = None,
        loss_agg_mode: str = "token-mean",
        reset_optimizer: bool = False,
    ) -> StepResult: ...

    def checksum(self, dtype: str = "bfloat16") -> str: ...

    def save_hf(self, path: str | Path) -> Path: ...

    def save_state(self, path: str | Path) -> Path: ...

    def load_state(self, path: str | Path) -> int: ...

    def publish(self, version: int, broadcast: str) -> PublishInfo: ...

    def open_weight_group(self, receivers: int, host: str) -> WeightGroupInfo: ...

    def send_weights(self, version: int) -> PublishInfo: ...


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init_distributed() -> str:
    """Single-process defaults for torch.distributed, set before deepspeed is first imported.

    Existing values win, so a launcher (or a Ray actor placing several ranks) can set its own.
    Returns the device type the engine trains on.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(name, default)
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    return device


def _return_freed_memory(device: str) -> None:
    """Hand memory freed by the step back to the OS (glibc keeps it otherwise).

    Every step allocates [tokens × vocab] logits of a different shape; on CPU, glibc's allocator keeps the
    freed blocks, and a learner on 2k-token traces grew to 10.8 GB resident until the node's memory
    monitor killed it. `malloc_trim` returns them; it is a no-op on CUDA memory and where glibc is absent.
    """
    if device != "cpu":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def warmup_cosine_lr(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Rate of optimizer step `step` (0-based): linear warm-up to `peak`, then cosine down to MIN_LR_RATIO·peak."""
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress)))


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


def validate_kl_coef(kl_coef: float) -> None:
    if not (math.isfinite(kl_coef) and kl_coef >= 0):
        raise ValueError(f"kl_coef must be finite and >= 0, got {kl_coef}")


def resolve_clip(config_eps: float, low: float | None, high: float | None) -> tuple[float, float]:
    """(low, high) clip of the importance ratio, 1-low .. 1+high; None takes `learner.clip_eps` (low) / low (high)."""
    low = config_eps if low is None else low
    high = low if high is None else high
    if not 0.0 < low < 1.0:
        raise ValueError(f"clip_eps (lower clip) must be in (0, 1), got {low}")
    if not (math.isfinite(high) and high > 0.0):
        raise ValueError(f"clip_eps_high (upper clip) must be positive and finite, got {high}")
    return low, high


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


# Shortest shared prompt worth its own forward call (below it, the call costs about what it saves).
MIN_SHARED_PREFIX = 16


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
class _MicroBatch:
    token_ids: torch.Tensor  # [B,T] long, right-padded
    attention_mask: torch.Tensor  # [B,T] 1 on real tokens
    loss_mask: torch.Tensor  # [B,T]
    old_logprobs: torch.Tensor  # [B,T] (zeros for SFT)
    advantages: torch.Tensor  # [B]
    shared_prefix: int = 0  # leading tokens all rows share, no loss on them (see shared_prefix_length)


def _collate(rows: Sequence[TrainSequence], device: str, share_prefix: bool = False) -> _MicroBatch:
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
    return _MicroBatch(
        *(t.to(device) for t in (ids, attention, mask, old, advantages)),
        shared_prefix=prefix if prefix >= MIN_SHARED_PREFIX else 0,
    )


# A loss over one micro-batch: (token logprobs [B,T], batch, normalizer) -> (scalar loss, stats or None).
_LossFn = Callable[[torch.Tensor, _MicroBatch, float], "tuple[torch.Tensor, GRPOStats | None]"]


class PolicyLearner:
    """A Hugging Face causal LM wrapped in a DeepSpeed engine, with SFT and GRPO steps.

    `version` counts optimizer steps; rollout engines tag their samples with the version they hold.
    """

    def __init__(self, model_path: str | Path, config: LearnerConfig, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        if config.precision == "auto":  # a learner started without a resolved run config decides for itself
            config = config.model_copy(update={"precision": concrete_dtype("auto")})
        self.config = config
        self.model_path = resolve_model_path(str(model_path))
        self.total_steps = total_steps
        self._version = 0
        self._constant_lr: float | None = None
        self._failure: str | None = None
        self._broadcasts: dict[str, WeightBroadcast] = {}
        self._reference: torch.nn.Module | None = None  # frozen KL reference, made on first use
        # The weights as last published in the served dtype (rank 0), to count what each publish changes.
        self._served = ServedWeightsDiff(self.config.precision)
        self._device = _init_distributed()
        self._rank = torch.distributed.get_rank()
        self._world_size = torch.distributed.get_world_size()
        torch.manual_seed(config.seed)
        self._engine, self._optimizer = self._build_engine()
        self.vocab_size = int(self._engine.module.config.vocab_size)
        # Whether log-probs can skip the vocabulary projection off the loss mask (see `_token_logprobs`).
        self._masked_head = final_hidden_feeds_head(self._engine.module, self._device)

    def _build_engine(self):
        import deepspeed
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        model.config.use_cache = False
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=self._lr_for(0), weight_decay=self.config.weight_decay, betas=(0.9, 0.999)
        )
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self._deepspeed_config())
        return engine, optimizer

    def _deepspeed_config(self) -> dict:
        """ZeRO with a torch AdamW; the caller owns gradient accumulation (one `step()` per training step).

        `managed_gradient_accumulation: false` lets each step have its own number of micro-batches; the
        losses are pre-divided by the step's token count, so the accumulated gradient is the token mean.
        With several ranks DeepSpeed averages their gradients (see `_step` for how the loss accounts for it).
        """
        return {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,
            "gradient_clipping": self.config.max_grad_norm,
            "zero_optimization": {"stage": self.config.zero_stage},
            "zero_force_ds_cpu_optimizer": False,
            "bf16": {"enabled": self.config.precision == "bfloat16"},
            "steps_per_print": 1 << 30,
            "wall_clock_breakdown": False,
        }

    @property
    def version(self) -> int:
        """Optimizer steps taken."""
        return self._version

    def _lr_for(self, step: int) -> float:
        if self._constant_lr is not None:
            return self._constant_lr
        return warmup_cosine_lr(step, self.config.lr, self.config.warmup_steps, self.total_steps)

    def set_learning_rate(self, lr: float | None) -> None:
        """Train at a constant `lr` from the next step on (Stage 2's own rate); None returns to the schedule."""
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be positive and finite, got {lr}")
        self._constant_lr = lr

    @property
    def world_size(self) -> int:
        """Data-parallel ranks this engine trains with (1 unless it is one rank of a `learner.group`)."""
        return self._world_size

    @property
    def rank(self) -> int:
        return self._rank

    def sft_step(
        self,
        sequences: Sequence[TrainSequence],
        normalizer: float | None = None,
        micro_batches: int | None = None,
    ) -> StepResult:
        """One optimizer step of token-mean negative log-likelihood on the masked tokens.

        `normalizer` and `micro_batches` are for a rank of a data-parallel step (see `_step`).
        """
        if sequences or normalizer is None:
            validate_sequences(sequences, self.vocab_size, grpo=False)

        def loss_fn(logprobs: torch.Tensor, batch: _MicroBatch, normalizer: float):
            return sft_loss(logprobs, batch.loss_mask, normalizer), None

        return self._step(sequences, loss_fn, normalizer, micro_batches)

    def grpo_step(
        self,
        sequences: Sequence[TrainSequence],
        clip_eps: float | None = None,
        kl_coef: float = 0.0,
        *,
        clip_eps_high: float | None = None,
        loss_agg_mode: str = "token-mean",
        reset_optimizer: bool = False,
        normalizer: float | None = None,
        micro_batches: int | None = None,
    ) -> StepResult:
        """One optimizer step of the clipped GRPO objective (advantages already group-normalized).

        The ratio is clipped to [1 - clip_eps, 1 + clip_eps_high] (None: learner.clip_eps, and symmetric);
        `loss_agg_mode` is one of `learner.losses.LOSS_AGG_MODES`. `kl_coef` > 0 adds kl_coef × k3 KL to the
        frozen reference, aggregated like the policy term; the first such step takes the reference (the
        current weights, so its KL is 0). Once a reference exists every GRPO step measures the KL
        (`StepResult.kl`), also with `kl_coef` 0. `reset_optimizer` clears the optimizer's moments first.
        `normalizer`/`micro_batches`: see `_step` (for a rank: `step_normalizer` of the whole step / ranks).
        """
        if sequences or normalizer is None:
            validate_sequences(sequences, self.vocab_size, grpo=True)
        low, high = resolve_clip(self.config.clip_eps, clip_eps, clip_eps_high)
        validate_kl_coef(kl_coef)
        if normalizer is None:
            normalizer = step_normalizer([s.loss_mask for s in sequences], loss_agg_mode)
        if kl_coef > 0 and self._reference is None:
            self._check_usable()
            self._reference = self._snapshot_reference()
        if reset_optimizer:
            self.reset_optimizer()

        def loss_fn(logprobs: torch.Tensor, batch: _MicroBatch, normalizer: float):
            ref = self._reference_logprobs(batch)
            return grpo_loss(
                logprobs,
                batch.old_logprobs,
                batch.advantages,
                batch.loss_mask,
                low,
                normalizer,
                ref,
                kl_coef,
                clip_eps_high=high,
                loss_agg_mode=loss_agg_mode,
            )

        return self._step(sequences, loss_fn, normalizer, micro_batches)

    def reset_optimizer(self) -> None:
        """Forget the optimizer's moments (AdamW's exp_avg, exp_avg_sq and step count): the next step is the
        first of a fresh AdamW, as when GRPO starts from an SFT checkpoint in a new process.

        DeepSpeed's ZeRO (stages 1-3) and bf16 optimizers wrap this torch AdamW and step it on their fp32
        master partitions; its `state` is keyed by those partitions and refilled lazily at the next step, so
        clearing it resets every rank's shard. The master weights themselves are kept.
        """
        self._check_usable()
        self._optimizer.state.clear()

    @property
    def has_reference(self) -> bool:
        """Whether a frozen KL reference exists (taken by the first GRPO step with kl_coef > 0, or restored)."""
        return self._reference is not None

    def _new_reference_module(self) -> torch.nn.Module:
        """An empty-weighted copy of the policy's architecture in training precision, frozen and in eval mode."""
        from transformers import AutoModelForCausalLM

        dtype = torch.bfloat16 if self.config.precision == "bfloat16" else torch.float32
        module = AutoModelForCausalLM.from_config(self._engine.module.config, dtype=dtype)
        module.config.use_cache = False
        module.requires_grad_(False)
        return module.eval().to(self._device)

    def _snapshot_reference(self) -> torch.nn.Module:
        """Copy the current policy weights into a new frozen module (gathered first under ZeRO-3)."""
        reference = self._new_reference_module()
        with torch.no_grad():
            reference.load_state_dict(dict(self.named_weights()), strict=True)
        return reference

    def _reference_logprobs(self, batch: _MicroBatch) -> torch.Tensor | None:
        """The reference's token log-probs [B,T] for this micro-batch, or None without a reference."""
        if self._reference is None:
            return None
        with torch.no_grad():
            return self._token_logprobs(self._reference, self._reference, batch)

    def _token_logprobs(self, model: Callable, module: torch.nn.Module, batch: _MicroBatch) -> torch.Tensor:
        """Token log-probs [B,T] of `model` (the DeepSpeed engine or the reference; `module` is the HF model
        inside) on the batch, valid on the loss mask.

        When the model can hand back its final hidden states, the output projection runs on the masked
        positions only (`masked_token_logprobs`; about a fifth less compute per step on SmolLM2-135M traces);
        otherwise on every position.
        """
        if not self._masked_head:
            logits = model(input_ids=batch.token_ids, attention_mask=batch.attention_mask).logits
            return token_logprobs(logits, batch.token_ids)
        if batch.shared_prefix:
            return _prefix_shared_logprobs(model, module, batch)
        out = model(
            input_ids=batch.token_ids, attention_mask=batch.attention_mask, output_hidden_states=True, logits_to_keep=1
        )
        return masked_token_logprobs(
            out.hidden_states[-1], module.get_output_embeddings(), batch.token_ids, batch.loss_mask
        )

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise LearnerError(f"learner is unusable after an earlier failure: {self._failure}")

    def _step(
        self,
        sequences: Sequence[TrainSequence],
        loss_fn: _LossFn,
        normalizer: float | None,
        micro_batches: int | None,
    ) -> StepResult:
        """Forward/backward every micro-batch, then one optimizer step.

        Alone, the loss is divided by the step's masked-token count (GRPO passes its `step_normalizer`).
        As a rank of a data-parallel step the caller passes `normalizer` = (all ranks' masked tokens, or
        sequences) / world_size, because DeepSpeed averages the ranks' gradients; and `micro_batches`, the count
        every rank runs: ZeRO 2/3 reduce gradients inside each backward, so all ranks must call it equally often.
        Missing micro-batches (or a rank without any sequence) are filled with zero-weight ones that join the
        collectives but add nothing.
        """
        self._check_usable()
        start = time.perf_counter()
        step_number = self._version + 1
        lr = self._lr_for(self._version)
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        if normalizer is None:
            normalizer = float(sum(sum(s.loss_mask) for s in sequences))
        if not (math.isfinite(normalizer) and normalizer > 0):
            raise ValueError(f"loss normalizer must be positive and finite, got {normalizer}")
        plan = plan_micro_batches([len(s.token_ids) for s in sequences], self.config.micro_batch_tokens)
        if micro_batches is not None:
            if micro_batches < len(plan):
                raise ValueError(f"{len(sequences)} sequences need {len(plan)} micro-batches, {micro_batches} given")
            plan += [[] for _ in range(micro_batches - len(plan))]
        self._remember_served_weights()
        total_loss, clipped, kl_sum, masked = 0.0, 0.0, 0.0, 0
        for indices in plan:
            loss, stats = self._micro_batch_loss([sequences[i] for i in indices], loss_fn, normalizer)
            if not self._finite_on_all_ranks(loss):
                # Gradients of earlier micro-batches are already accumulated inside the engine.
                self._failure = f"step {step_number}: loss is {loss.item()} on micro-batch of rows {indices}"
                if math.isfinite(loss.item()):
                    self._failure = f"step {step_number}: another rank's loss is not finite"
                raise LearnerError(self._failure)
            self._engine.backward(loss)
            total_loss += loss.item()
            if stats is not None:
                clipped += stats.clip_fraction * stats.tokens
                kl_sum += stats.kl * stats.tokens
                masked += stats.tokens
        grad_norm = self._optimizer_step()
        if not math.isfinite(grad_norm):
            self._failure = f"step {step_number}: gradient norm is {grad_norm}; the update was skipped"
            raise LearnerError(self._failure)
        self._version += 1
        _return_freed_memory(self._device)
        return StepResult(
            loss=total_loss,
            grad_norm=grad_norm,
            tokens=sum(len(s.token_ids) for s in sequences),
            seconds=time.perf_counter() - start,
            clip_fraction=clipped / masked if masked else 0.0,
            learning_rate=lr,
            kl=kl_sum / masked if masked else 0.0,
        )

    def _micro_batch_loss(
        self, rows: Sequence[TrainSequence], loss_fn: _LossFn, normalizer: float
    ) -> tuple[torch.Tensor, GRPOStats | None]:
        """Loss of one micro-batch; with no rows, a zero-weight loss on a 2-token dummy row.

        The dummy still runs forward and backward through every parameter, so ZeRO's gradient hooks
        (and their collectives) fire exactly as on the other ranks, while the gradient it adds is zero.
        """
        dummy = not rows
        if dummy:
            rows = [TrainSequence(token_ids=[0, 0], loss_mask=[0, 1])]
        batch = _collate(rows, self._device, share_prefix=self.config.share_prompt_prefix and self._masked_head)
        logprobs = self._token_logprobs(self._engine, self._engine.module, batch)  # [B,T]
        if dummy:
            return logprobs.sum() * 0.0, None
        return loss_fn(logprobs, batch, normalizer)

    def _finite_on_all_ranks(self, loss: torch.Tensor) -> bool:
        """Whether every rank's micro-batch loss is finite; all ranks get the same answer.

        A rank that stopped alone would leave the others waiting in the next gradient reduction forever,
        so the ranks agree first (one tiny all-reduce per micro-batch, only when there are several ranks).
        """
        finite = bool(torch.isfinite(loss))
        if self._world_size == 1:
            return finite
        flag = torch.tensor([1 if finite else 0], dtype=torch.int32, device=self._device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def _optimizer_step(self) -> float:
        """Apply the accumulated gradients; return their global norm before clipping.

        ZeRO optimizers report the norm (and skip the update when it is not finite). Without ZeRO the
        gradients still sit on the parameters, so measure them here and refuse a non-finite update.
        """
        if self.config.zero_stage == 0:
            grads = [p.grad for p in self._engine.module.parameters() if p.grad is not None]
            norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            if not math.isfinite(norm):
                return norm
            self._engine.step()
            reported = self._engine.get_global_grad_norm()
            return norm if reported is None else float(reported)
        self._engine.step()
        reported = self._engine.get_global_grad_norm()
        if reported is None:
            raise LearnerError(f"DeepSpeed reported no gradient norm at ZeRO stage {self.config.zero_stage}")
        return float(reported)

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(Hugging Face name, CPU tensor) for every weight, `lm_head.weight` included when tied.

        vLLM loads the tied `lm_head.weight` too (and it wins), so it must travel. Tensors are views of
        the live parameters on CPU: copy them if you keep them across a step.
        """
        module = self._engine.module
        if self.config.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters())):
                gathered = {name: t.detach().to("cpu", copy=True) for name, t in module.state_dict().items()}
            yield from gathered.items()
            return
        state = module.state_dict()
        if module.config.tie_word_embeddings and "lm_head.weight" not in state:
            state["lm_head.weight"] = module.get_input_embeddings().weight
        for name, tensor in state.items():
            yield name, tensor.detach().cpu()

    def checksum(self, dtype: str = "bfloat16") -> str:
        """Checksum of the weights in the broadcast dtype; equals the rollout side's when weights match."""
        return weights_checksum(self.named_weights(), dtype=dtype)

    def save_hf(self, path: str | Path) -> Path:
        """Save a Hugging Face checkpoint (weights in training precision, config, tokenizer) at `path`.

        Written into a temp dir and renamed, so a crash never leaves a half checkpoint. An existing
        checkpoint at `path` is replaced; any other non-empty directory there is an error.
        """
        from transformers import AutoTokenizer

        target = Path(path)
        if target.exists() and any(target.iterdir()) and not (target / "config.json").is_file():
            raise FileExistsError(f"save_hf: {target} exists and is not a checkpoint; refusing to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; rollout workers may run as another user
        try:
            state = dict(self.named_weights())
            if self._engine.module.config.tie_word_embeddings:
                state.pop("lm_head.weight", None)  # re-tied on load; saving it would store the embedding twice
            self._engine.module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            apply_chat_template(tokenizer)  # served with `vllm serve`, it renders the trace grammar (mtr.chattemplate)
            tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def publish(self, version: int, broadcast: str) -> PublishInfo:
        """Publish the current weights under `version` through the named broadcast ("ray" or "local").

        The broadcast is made once per kind and kept: the Ray variant's published objects are owned by
        this process, so they live as long as it does. The returned info counts the values of the published
        (served-dtype) weights that differ from the previous publish, or from the weights before this
        learner's first step since it was built or restored: what the rollout workers' copy will change by.
        """
        served = self._served.track(self.named_weights())
        info = self._broadcast(broadcast).publish(version, served, dtype=self.config.precision)
        return dataclasses.replace(info, changed=self._served.changed, values=self._served.values)

    def _remember_served_weights(self) -> None:
        """Before the first update since build/restore: keep the weights the rollout holds, to diff publishes
        against. Every rank joins the gather under ZeRO-3; rank 0 (the one that publishes) keeps the copy."""
        if self._served.has_baseline:
            return
        weights = self.named_weights()
        if self._rank == 0:
            self._served.remember(weights)
        elif self.config.zero_stage == 3:
            for _ in weights:
                pass

    def open_weight_group(self, receivers: int, host: str) -> WeightGroupInfo:
        """Open the collective weight group as its rank 0 on `host` (NODE_IP: this node's IP). The rollout
        workers join it at the address returned; the group forms in the background as they do."""
        return self._broadcast("collective").open(receivers, bind_address(host))

    def send_weights(self, version: int) -> PublishInfo:
        """Broadcast the version the last collective publish staged to every rollout worker of the group."""
        return self._broadcast("collective").send(version)

    def _broadcast(self, kind: str) -> WeightBroadcast:
        from mtr.broadcast import create_broadcast

        if kind not in self._broadcasts:
            self._broadcasts[kind] = create_broadcast(
                kind,
                bucket_bytes=self.config.weight_bucket_mb << 20,
                timeout_s=self.config.weight_sync_timeout_s,
                device=str(self._device),
            )
        return self._broadcasts[kind]

    def save_state(self, path: str | Path) -> Path:
        """Write everything an exact continuation needs into directory `path`; every rank must call it.

        Layout: `deepspeed/` (DeepSpeed's checkpoint: module, optimizer moments and fp32 master weights, one
        optimizer shard per rank), `rng_rank<r>.pt` (each rank's torch/Python/NumPy RNG states),
        `reference.safetensors` (the KL reference, if one exists; every rank holds the same, rank 0 writes it)
        and, written last by rank 0 once all ranks are done, `mtr_state.json` (version, learning-rate override,
        world size, whether there is a reference).
        Saving again into the same directory replaces the state. Under several ranks `path` must be storage
        every rank sees.
        """
        target = Path(path)
        if target.exists() and not _is_state_dir_or_empty(target):
            raise FileExistsError(f"save_state: {target} exists and is not a training state; refusing to write there")
        meta = target / STATE_FILE
        if self._rank == 0:
            target.mkdir(parents=True, exist_ok=True)
            meta.unlink(missing_ok=True)  # until the new state is complete, the directory is not a valid one
        self._barrier()
        self._engine.save_checkpoint(str(target), tag=DEEPSPEED_TAG, client_state={"mtr_version": self._version})
        torch.save(_capture_rng(), target / _rng_file(self._rank))
        if self._rank == 0:
            self._save_reference(target / REFERENCE_FILE)
        self._barrier()
        if self._rank == 0:
            record = {
                "format": STATE_FORMAT,
                "version": self._version,
                "constant_lr": self._constant_lr,
                "world_size": self._world_size,
                "total_steps": self.total_steps,
                "reference": REFERENCE_FILE if self._reference is not None else None,
            }
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=2))
            os.replace(tmp, meta)
        self._barrier()
        return target

    def load_state(self, path: str | Path) -> int:
        """Restore a state written by `save_state` (every rank must call it); returns the version it continues from.

        Weights, optimizer, schedule position, learning-rate override, KL reference (or its absence) and RNG
        come back as they were, so the next step equals the step the saving learner would have taken. The
        learner must have been built on the same base model, config and world size.
        """
        if self._failure is not None:
            raise LearnerError(f"learner is unusable after an earlier failure ({self._failure}); restore a new one")
        target = Path(path)
        record = read_state_record(target)
        if record["world_size"] != self._world_size:
            raise ValueError(
                f"training state {target} was saved by {record['world_size']} ranks; this learner has "
                f"{self._world_size} (DeepSpeed's optimizer shards are per rank)"
            )
        rng_path = target / _rng_file(self._rank)
        if not rng_path.is_file():
            raise ValueError(f"training state {target} has no {rng_path.name} for rank {self._rank}")
        reference = self._load_reference(target, record.get("reference"))  # first: a bad file changes nothing
        try:
            loaded, _ = self._engine.load_checkpoint(
                str(target), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=False
            )
            rng = torch.load(rng_path, weights_only=False)  # our own file: holds Python/NumPy state tuples
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
            raise ValueError(f"training state {target} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        if loaded is None:
            raise ValueError(f"training state {target} has no DeepSpeed checkpoint under {DEEPSPEED_TAG}/")
        self._reference = reference
        self._served.clear()  # the restored weights become the baseline at the next step
        self._version = int(record["version"])
        self._constant_lr = record["constant_lr"]
        _restore_rng(rng)
        return self._version

    def _save_reference(self, path: Path) -> None:
        """Write the reference in its own precision (bit-exact), or remove a stale one when there is none."""
        from safetensors.torch import save_model

        if self._reference is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        save_model(self._reference, str(tmp))  # drops the tied lm_head duplicate; load_model re-ties it
        os.replace(tmp, path)

    def _load_reference(self, state_dir: Path, name: str | None) -> torch.nn.Module | None:
        """The reference a state recorded (None when it had none, so a restored run is as the saved one was)."""
        if name is None:
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        path = state_dir / name
        if not path.is_file():
            raise ValueError(f"training state {state_dir} records a KL reference, but {path} is missing")
        reference = self._new_reference_module()
        try:
            load_model(reference, str(path), strict=True, device=self._device)
        except (OSError, RuntimeError, SafetensorError) as exc:
            raise ValueError(f"KL reference {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        return reference

    def _barrier(self) -> None:
        if self._world_size > 1:
            torch.distributed.barrier()


def _prefix_shared_logprobs(model: Callable, module: torch.nn.Module, batch: _MicroBatch) -> torch.Tensor:
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


def _is_state_dir_or_empty(path: Path) -> bool:
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    return not names or STATE_FILE in names or DEEPSPEED_TAG in names


def read_state_record(path: Path) -> dict:
    """The `mtr_state.json` of a training-state directory, checked; ValueError naming the path otherwise."""
    meta = path / STATE_FILE
    if not meta.is_file():
        what = "does not exist" if not path.exists() else f"has no {STATE_FILE} (not a complete training state)"
        raise ValueError(f"training state {path} {what}")
    try:
        record = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"training state {meta} is unreadable: {exc}") from exc
    expected = {"format": int, "version": int, "world_size": int}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in expected.items()):
        raise ValueError(f"training state {meta} is corrupt: expected integer {sorted(expected)}, got {record!r}")
    if record["format"] != STATE_FORMAT:
        raise ValueError(f"training state {meta} has format {record['format']}, this learner reads {STATE_FORMAT}")
    reference = record.get("reference")
    if reference is not None and reference != REFERENCE_FILE:
        raise ValueError(f"training state {meta} is corrupt: reference {reference!r}")
    lr = record.get("constant_lr")
    if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"training state {meta} is corrupt: constant_lr {lr!r}")
    return record


def _capture_rng() -> dict:
    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
