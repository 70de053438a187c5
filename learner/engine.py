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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from learner import lora
from learner.batches import (
    MicroBatch,
    TrainSequence,
    collate,
    plan_micro_batches,
    validate_sequences,
)
from learner.checkpointing import Checkpointing, LearnerError
from learner.distributed import init_distributed, return_freed_memory
from learner.forward import final_hidden_feeds_head, prefix_shared_logprobs
from learner.losses import (
    GRPOStats,
    grpo_loss,
    masked_token_logprobs,
    sft_loss,
    step_normalizer,
    token_logprobs,
)
from learner.publishing import Publishing
from mtr.config import LearnerConfig
from mtr.hardware import concrete_dtype
from mtr.modelprep import resolve_model_path
from mtr.weights import ServedWeightsDiff

if TYPE_CHECKING:
    from mtr.broadcast import PublishInfo, WeightBroadcast, WeightGroupInfo

# Floor of the cosine schedule, as a share of the peak rate: steps past `total_steps` still learn.
MIN_LR_RATIO = 0.1


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


def warmup_cosine_lr(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Rate of optimizer step `step` (0-based): linear warm-up to `peak`, then cosine down to MIN_LR_RATIO·peak."""
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress)))


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


# A loss over one micro-batch: (token logprobs [B,T], batch, normalizer) -> (scalar loss, stats or None).
_LossFn = Callable[[torch.Tensor, MicroBatch, float], "tuple[torch.Tensor, GRPOStats | None]"]


class PolicyLearner(Checkpointing, Publishing):
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
        self._device = init_distributed()
        self._rank = torch.distributed.get_rank()
        self._world_size = torch.distributed.get_world_size()
        torch.manual_seed(config.seed)
        self._engine, self._optimizer = self._build_engine()
        # The Hugging Face model itself (inside peft's wrapper under LoRA, its layers carrying the adapters).
        self._hf = lora.inner_model(self._engine.module)
        self.vocab_size = int(self._hf.config.vocab_size)
        # Whether log-probs can skip the vocabulary projection off the loss mask (see `_token_logprobs`).
        self._masked_head = final_hidden_feeds_head(self._hf, self._device)

    def _build_engine(self):
        import deepspeed
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        model.config.use_cache = False
        if self.config.lora.enabled:
            model = lora.wrap(model, self.config.lora)  # base weights frozen: the optimizer holds adapters only
        model.train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self._lr_for(0),
            weight_decay=self.config.weight_decay,
            betas=(0.9, 0.999),
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

        def loss_fn(logprobs: torch.Tensor, batch: MicroBatch, normalizer: float):
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
        if kl_coef > 0 and self._reference is None and not self.config.lora.enabled:
            self._check_usable()
            self._reference = self._snapshot_reference()  # under LoRA the reference is the adapters switched off
        if reset_optimizer:
            self.reset_optimizer()

        def loss_fn(logprobs: torch.Tensor, batch: MicroBatch, normalizer: float):
            # An existing snapshot is measured against even at kl_coef 0; the adapters-off forward only when used.
            ref = self._reference_logprobs(batch) if kl_coef > 0 or not self.config.lora.enabled else None
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
        module = AutoModelForCausalLM.from_config(self._hf.config, dtype=dtype)
        module.config.use_cache = False
        module.requires_grad_(False)
        return module.eval().to(self._device)

    def _snapshot_reference(self) -> torch.nn.Module:
        """Copy the current policy weights into a new frozen module (gathered first under ZeRO-3)."""
        reference = self._new_reference_module()
        with torch.no_grad():
            reference.load_state_dict(dict(self.named_weights()), strict=True)
        return reference

    def _reference_logprobs(self, batch: MicroBatch) -> torch.Tensor | None:
        """The reference's token log-probs [B,T] for this micro-batch, or None without a reference. Under LoRA
        the reference is the policy with its adapters disabled: the base weights, with no second copy."""
        if self.config.lora.enabled:
            with torch.no_grad(), self._engine.module.disable_adapter():
                return self._token_logprobs(self._hf, self._hf, batch)
        if self._reference is None:
            return None
        with torch.no_grad():
            return self._token_logprobs(self._reference, self._reference, batch)

    def _token_logprobs(self, model: Callable, module: torch.nn.Module, batch: MicroBatch) -> torch.Tensor:
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
            return prefix_shared_logprobs(model, module, batch)
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
        return_freed_memory(self._device)
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
        batch = collate(rows, self._device, share_prefix=self.config.share_prompt_prefix and self._masked_head)
        logprobs = self._token_logprobs(self._engine, self._hf, batch)  # [B,T]
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
