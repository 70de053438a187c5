"""Config sections of the stages: SFT, GRPO (and its curriculum), the datasets, trace synthesis, the reward,
evaluation, and the ToolActor model's training. Re-exported by `mtr.config`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mtr.config_base import Strict


class SFTConfig(Strict):
    steps: int = Field(40, ge=0, description="SFT optimizer steps on AutoAgent traces.")
    batch_size: int = Field(
        4,
        ge=1,
        description="Traces per optimizer step. The learner splits them into micro-batches of at most "
        "learner.micro_batch_tokens (length-bucketed) and accumulates their gradients.",
    )
    save_every: int = Field(
        0, ge=0, description="`mtr sft`: checkpoint (weights + optimizer) every N steps; 0: at the end."
    )


class CurriculumConfig(Strict):
    enabled: bool = Field(
        False,
        description="Sample GRPO questions by difficulty level (hop count) and success rate; off: uniformly. Off by "
        "default: starting at 2 hops taught the policy to stop searching early (3-hop EM 0.54 -> 0.20 in 8 steps).",
    )
    start_level: int = Field(2, ge=1, description="Hop count the curriculum starts at.")
    promote_at: float = Field(
        0.6, gt=0.0, le=1.0, description="Running success rate of the current level that unlocks the next level."
    )
    window: int = Field(32, ge=1, description="Recent traces per question bucket the running success rate uses.")
    balance_levels: bool = Field(
        False,
        description="Draw each question from an unlocked level chosen uniformly, then by success weight within it: "
        "hard levels get an equal share of the steps instead of their share of the questions (the embedded world "
        "has 3 two-hop questions for every 3-4-hop one, and SFT is weakest on the latter).",
    )


class GRPOConfig(Strict):
    steps: int = Field(
        12,
        ge=0,
        description="GRPO steps (one rollout batch + one update each). The measured gain appeared between steps 6 "
        "and 12 (bench/results/grpo_sweep.json); about 2 min each on 2 CPU cores.",
    )
    questions_per_step: int = Field(4, ge=1, description="Questions (groups) per GRPO step.")
    lr: float | None = Field(
        2e-5,
        gt=0.0,
        description="Learning rate in Stage 2 (None keeps the SFT rate); changes 2-3 % of the bf16 weights a step.",
    )
    std_normalize: bool = Field(True, description="Divide group-centred rewards by the group's std (Dr. GRPO: off).")
    kl_coef: float = Field(
        0.0, ge=0.0, description="Weight of the k3 KL estimate to a frozen reference (the policy at GRPO start)."
    )
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="'async' overlaps the rollout of step t+1 with learning on step t, within max_staleness.",
    )
    max_staleness: int = Field(
        1, ge=0, description="Async: most policy versions a trace may lag the learner when it is trained on."
    )
    save_every: int = Field(0, ge=0, description="`mtr grpo`: checkpoint every N steps (0: at the end only).")
    eval_every: int = Field(0, ge=0, description="`mtr grpo`: held-out evaluation every N steps (0: start and end).")
    reset_optimizer: bool = Field(
        True,
        description="Start Stage 2 with fresh AdamW moments (as verl/TRL/OpenRLHF do from an SFT checkpoint): "
        "otherwise its first updates replay SFT momentum, and SFT's second moments shrink its steps.",
    )
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = Field(
        "token-mean",
        description="How the loss sums over tokens (verl's names): the step's token mean (long traces weigh "
        "more); each trace's token mean averaged over traces (original GRPO); each trace's token sum averaged "
        "over traces (Dr. GRPO).",
    )
    clip_ratio_low: float | None = Field(
        None, gt=0.0, lt=1.0, description="Lower importance-ratio clip, 1 - low (None: learner.clip_eps)."
    )
    clip_ratio_high: float | None = Field(
        None, gt=0.0, le=10.0, description="Upper clip, 1 + high (None: as the lower; DAPO's clip-higher: 0.28)."
    )
    truncated: Literal["keep", "mask", "penalize"] = Field(
        "keep",
        description="Traces cut by the token or turn budget (finish_reason 'length' or 'turn_budget'): trained on "
        "as scored, left out of the loss (TRL's mask_truncated_completions; still in their group's advantage "
        "baseline), or scored reward.format_penalty.",
    )
    min_reward_std: float = Field(
        0.05,
        ge=0.0,
        description="A group whose reward std is below this has no signal: dropped and counted. 0.05 lies between "
        "a single consistency sub-check differing in one sample (std 0.043 with 4 samples and default weights) "
        "and any answer that differs (std >= 0.12 up to 64 samples); std normalization would blow the former up "
        "to +-1 advantages.",
    )
    dynamic_sampling: bool = Field(
        True,
        description="DAPO's dynamic sampling: when groups are dropped, draw the missing number of new questions "
        "(unused this step) and generate again, until the step has questions_per_step groups with signal or "
        "max_draws_per_step rollouts were made.",
    )
    max_draws_per_step: int = Field(
        3, ge=1, le=64, description="Dynamic sampling: most rollout batches (first draw included) per step."
    )
    curriculum: CurriculumConfig = CurriculumConfig()


class DataConfig(Strict):
    train: list[str] = Field(
        default_factory=lambda: ["synthetic"],
        description="Dataset specs the AutoAgent writes traces for (and GRPO samples from): 'synthetic' (the "
        "embedded world), 'hotpotqa:PATH', 'musique:PATH', '2wiki:PATH', 'bamboogle:PATH', 'hf:ID[:CONFIG][@SPLIT]'.",
    )
    eval: list[str] = Field(default_factory=lambda: ["synthetic"], description="Dataset specs evaluated.")
    on_error: Literal["skip", "fail"] = Field(
        "skip", description="A malformed dataset row is reported with file and line, then skipped or fatal."
    )
    limit: int | None = Field(None, ge=1, description="At most this many questions per dataset (None: all).")
    holdout_fraction: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="A file dataset listed in both train and eval is split by a stable hash of the question id: "
        "this share is held out for eval, the rest trains.",
    )

    @model_validator(mode="after")
    def _specs_parse(self) -> DataConfig:
        from mtr.datasets import parse_spec

        for key in ("train", "eval"):
            for spec in getattr(self, key):
                try:
                    parse_spec(spec)
                except ValueError as error:
                    raise ValueError(f"data.{key}: {error}") from None
        return self


class SynthConfig(Strict):
    questions: int | None = Field(
        64,
        ge=1,
        description="`mtr run`: the AutoAgent writes SFT traces for the first this many training questions of each "
        "train dataset (None: all); GRPO samples from all of them, so most of its questions are new to the policy.",
    )
    teacher: Literal["oracle", "llm"] = Field(
        "oracle",
        description="'oracle': traces from gold decompositions / supporting facts / evidence triples; 'llm': a "
        "teacher model behind an OpenAI-compatible endpoint writes the traces (needs llm_url and llm_model).",
    )
    llm_url: str | None = Field(None, description="Base URL of the teacher's OpenAI-compatible API (…/v1).")
    llm_model: str | None = Field(None, description="Model name the teacher endpoint serves.")
    llm_api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    attempts: int = Field(4, ge=1, le=64, description="LLM teacher: samples per question until one is accepted.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="LLM teacher sampling temperature.")
    max_turns: int = Field(6, ge=1, le=16, description="LLM teacher: assistant turns before a trace is cut.")
    max_tokens_per_turn: int = Field(256, ge=8, description="LLM teacher: token cap of one assistant turn.")

    @model_validator(mode="after")
    def _llm_needs_endpoint(self) -> SynthConfig:
        if self.teacher == "llm" and not (self.llm_url and self.llm_model):
            raise ValueError("teacher 'llm' needs llm_url and llm_model")
        return self


class RewardConfig(Strict):
    w_answer: float = Field(1.0, ge=0.0, description="Weight of answer correctness.")
    w_consistency: float = Field(0.5, ge=0.0, description="Weight of internal consistency.")
    correctness: Literal["em", "f1"] = "em"
    format_penalty: float = Field(-0.5, le=0.0, description="Reward of a trace that does not parse.")

    @model_validator(mode="after")
    def _some_weight(self) -> RewardConfig:
        if self.w_answer + self.w_consistency <= 0:
            raise ValueError("w_answer + w_consistency must be positive")
        return self


class EvalConfig(Strict):
    questions: int | None = Field(
        None, ge=1, description="Held-out questions of the world evaluated at each checkpoint (None: all world.n_eval)."
    )
    base_questions: int = Field(
        24,
        ge=1,
        description="`mtr run`: the base model's row uses the first this many held-out questions of each dataset (a "
        "stated subset: the base model cannot follow the trace grammar, and its rambling traces are the slowest).",
    )
    pass_samples: int = Field(
        0,
        ge=0,
        description="Samples per question (rollout.temperature/top_p) for pass@k, k in (1, 4, 8) up to this; 0: "
        "off. `mtr run` measures it at the SFT checkpoint, `mtr eval` for every model.",
    )
    bootstrap_resamples: int = Field(
        10_000, ge=100, description="Bootstrap resamples of the questions for every 95 % interval (EM, gains, pass@k)."
    )
    bootstrap_seed: int = Field(0, description="Seed of the bootstrap resampling; same seed, same intervals.")


class ToolModelConfig(Strict):
    """`mtr simulator train`: fine-tunes a ToolActor model on (call -> grounded observation) pairs."""

    base_model: str = Field(
        "default", description="Checkpoint the ToolActor model starts from ('default': the embedded SmolLM2-135M)."
    )
    steps: int = Field(
        200,
        ge=1,
        description="Optimizer steps on the harvested pairs (200 x 8 pairs of ~360 tokens: about 45 minutes on 2 "
        "bf16-native cores, estimated from the SFT learner's ~200 tokens/s; not yet measured).",
    )
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    lr: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate (warm-up + cosine, as SFT).")
    save_every: int = Field(
        50,
        ge=0,
        description="Checkpoint (with the optimizer state) every N steps, so `--resume` continues a run cut short "
        "(the newest only; about 2 GB for the default model); 0: only the final checkpoint.",
    )
    noisy_pairs: bool = Field(
        True, description="Also harvest a noisy pair per call (facts from another call's documents), as ZeroSearch."
    )
