"""Typed, validated configuration for a whole MTR run: one sub-config per service.

Loaded from a YAML file plus dotted overrides (`learner.lr=1e-5`); unknown keys and bad values fail
with the offending key in the message. The resolved config is written into every run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


class _Strict(BaseModel):
    # inf and NaN are never a meaningful setting: an infinite reward weight turns every reward into NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _custom_resources(resources: dict[str, float]) -> dict[str, float]:
    for name in resources:
        if not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(f"{name!r} is not a custom resource; CPUs and GPUs have their own num_* fields")
    return resources


# Custom Ray resources a role instance reserves, e.g. {"simulator": 1}: nodes started with
# `ray start --resources '{"simulator": 8}'` are the only ones that can host it.
Resources = Annotated[dict[str, Annotated[float, Field(gt=0)]], AfterValidator(_custom_resources)]


def _host_port(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return address


class ModelConfig(_Strict):
    path: str = Field(
        "default",
        description="Hugging Face checkpoint directory, or 'default' for the bundled SmolLM2-135M-Instruct "
        "(converted once from its GGUF into the cache by `mtr model prepare`).",
    )
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="Dtype the rollout engine runs and weights travel in. 'auto': bfloat16 where the hardware "
        "computes it natively (a CUDA device with bf16; a CPU with AVX512-BF16 or AMX), float32 elsewhere (on an "
        "AVX2-only CPU bf16 is emulated, 20-50x slower). The choice and its reason go into the run's config.yaml "
        "and report.md.",
    )


class WorldConfig(_Strict):
    seed: int = Field(0, description="Seed of the embedded fictional world; same seed, same world and questions.")
    n_train: int = Field(
        400,
        ge=1,
        description="Training questions drawn from the world: SFT traces for the first synth.questions, GRPO samples "
        "from all (the first 64 are the same questions whatever n_train is).",
    )
    n_eval: int = Field(
        200,
        ge=1,
        description="Held-out evaluation questions (disjoint from training). 200: one question is 0.5 EM points, and a "
        "95 % interval is about +-6.5 points wide; 24 questions could not tell a 10-point gain from noise.",
    )


class NoiseSchedule(_Strict):
    start: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of noisy observations (facts from unrelated documents) at GRPO step 0."
    )
    end: float = Field(0.0, ge=0.0, le=1.0, description="Share at the last GRPO step; linear in between.")

    def share(self, step: int, total_steps: int) -> float:
        """The noisy share at `step` of `total_steps` (linear from start to end)."""
        progress = min(1.0, step / max(1, total_steps - 1))
        return self.start + (self.end - self.start) * progress


class SimulatorConfig(_Strict):
    placement: Literal["auto", "local", "ray", "external"] = Field(
        "auto",
        description="Where the farm runs. 'local': replica processes on the controller's machine; 'ray': each "
        "replica a Ray actor (num_cpus_per_replica, resources), so it can live on its own nodes; 'external': "
        "replicas someone else runs (addresses), nothing is started. 'auto': external when addresses are given, "
        "ray when cluster.ray_address is set (other nodes cannot reliably reach the controller's loopback), "
        "else local.",
    )
    replicas: int = Field(1, ge=1, le=64, description="Replicas the run starts (placement local or ray).")
    host: str = Field(
        "127.0.0.1",
        description="Bind address of local replicas; loopback unless you mean to expose them. Ray-placed replicas "
        "bind their node's IP on a cluster and loopback on a local Ray.",
    )
    num_cpus_per_replica: float = Field(1.0, ge=0.0, description="Ray CPUs each Ray-placed replica reserves.")
    resources: Resources = Field(
        default_factory=dict,
        description="Custom Ray resources each Ray-placed replica reserves, e.g. {simulator: 1} to pin the farm to "
        "nodes started with that resource.",
    )
    addresses: list[Annotated[str, AfterValidator(_host_port)]] = Field(
        default_factory=list,
        description="placement 'external': host:port of the replicas, e.g. a Kubernetes Service; a hostname is "
        "expanded to every address it resolves to (a headless Service lists each pod).",
    )
    tools: Literal["minimal", "task"] = Field(
        "minimal",
        description="Tools offered to the policy: 'minimal' (search + open_page, ~200 prompt tokens) or 'task' "
        "(utility library by task class + task-specific tools, ~600-900 prompt tokens: slower to train on CPU).",
    )
    top_k: int = Field(3, ge=1, le=20, description="Documents a search observation returns.")
    max_argument_chars: int = Field(2000, ge=16, description="Larger tool-call arguments get an error observation.")
    call_timeout_s: float = Field(10.0, gt=0, description="Deadline of one tool call.")
    actor: Literal["grounded", "model"] = Field(
        "grounded",
        description="Who answers tool calls: 'grounded' (BM25 over the documents, exact computation) or 'model' (a "
        "trained ToolActor checkpoint, simulator.actor_model, generating each observation in a vLLM engine per "
        "replica from its weights alone; compare/date_diff/calculator stay exact). Write one with "
        "`mtr simulator train`.",
    )
    actor_model: str | None = Field(
        None, description="simulator.actor 'model': the ToolActor checkpoint (a Hugging Face directory)."
    )
    actor_max_tokens: int = Field(
        384, ge=16, le=4096, description="Token cap of one generated observation (simulator.actor 'model')."
    )
    noise: NoiseSchedule = Field(
        default_factory=NoiseSchedule,
        description="simulator.actor 'model': share of calls answered with a noisy observation, moved linearly "
        "over the GRPO steps (ZeroSearch's curriculum); exported as mtr_simulator_noise_share.",
    )

    @model_validator(mode="after")
    def _actor_model_given(self) -> SimulatorConfig:
        if self.actor == "model" and not self.actor_model:
            raise ValueError("simulator.actor 'model' needs simulator.actor_model (train one: mtr simulator train)")
        if self.actor == "grounded" and (self.noise.start or self.noise.end):
            raise ValueError("simulator.noise needs simulator.actor 'model' (the grounded actor has no noisy mode)")
        return self

    @model_validator(mode="after")
    def _addresses_match_placement(self) -> SimulatorConfig:
        if self.placement == "external" and not self.addresses:
            raise ValueError("placement 'external' needs addresses (host:port of running replicas)")
        if self.placement in ("local", "ray") and self.addresses:
            raise ValueError(f"addresses are only used with placement 'external', not {self.placement!r}")
        return self


class RolloutConfig(_Strict):
    workers: int = Field(1, ge=1, le=256, description="Rollout workers (one vLLM engine each, a Ray actor each).")
    num_cpus_per_worker: float = Field(1.0, ge=0.0, description="Ray CPUs each rollout worker reserves.")
    num_gpus_per_worker: float = Field(0.0, ge=0.0, description="Ray GPUs each rollout worker reserves (GPU: 1).")
    resources: Resources = Field(
        default_factory=dict, description="Custom Ray resources each rollout worker reserves, e.g. {rollout: 1}."
    )
    group_size: int = Field(4, ge=2, description="Samples per question in a GRPO group.")
    temperature: float = Field(
        0.7,
        ge=0.0,
        le=2.0,
        description="Sampling temperature of GRPO rollouts and pass@k (evaluation is greedy). 0.7: samples near the "
        "greedy policy the evaluation measures; GRPO at 0.7 gained +0.045 EM in 12 steps where 1.0 lost "
        "(bench/results/grpo_sweep.json).",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_turns: int = Field(
        6,
        ge=1,
        le=16,
        description="Assistant turns before a trace is cut (turn budget). A 4-hop question takes 4 searches and an "
        "answer (the SFT traces have up to 5 turns): with 4 it could not be answered; the sixth is a spare.",
    )
    max_tokens_per_turn: int = Field(96, ge=8, description="Token cap of one assistant turn.")
    max_model_len: int = Field(2048, ge=256, description="vLLM context length (prompt + all turns).")
    kv_cache_gib: int = Field(
        4,
        ge=1,
        description="KV-cache memory of a CPU vLLM engine: 4 GiB holds about 180,000 tokens, all 200 held-out "
        "evaluation traces at once (1 GiB holds about 45).",
    )
    cpu_reserved_cores: int = Field(
        0,
        ge=0,
        description="Cores a CPU vLLM engine keeps off its compute threads for its scheduler process "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU). vLLM reserves 1 on x86; on 2 cores that halves the compute, and 0 "
        "generated 1.47x the tokens/s (bench/results/vllm_threads.json).",
    )
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=0.95, description="Used on CUDA machines only.")


class LoRAConfig(_Strict):
    """Low-rank adapters (peft), as OpenRLHF/verl/TRL offer: only the adapters train, checkpoint and resume."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights (SFT and GRPO).")
    rank: int = Field(16, ge=1, le=1024, description="Adapter rank r.")
    alpha: float = Field(32.0, gt=0.0, description="Scaling numerator: the update is (alpha / rank) * B @ A.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Linear layers that get adapters (Llama/Qwen names; peft matches by suffix).",
    )
    sync: Literal["adapter", "merged"] = Field(
        "adapter",
        description="What reaches the rollout engines after a step: 'adapter' (the adapter alone, loaded into "
        "vLLM's LoRA slot in place: kilobytes, not the model) or 'merged' (full merged weights, as without LoRA).",
    )


class LearnerConfig(_Strict):
    lr: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(2, ge=0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Dtype of the weights the learner computes with (the optimizer keeps fp32 master weights); "
        "must equal model.dtype so the rollout engine runs exactly the learner's weights. 'auto' resolves as "
        "model.dtype does, and follows model.dtype when that one is explicit.",
    )
    micro_batch_tokens: int = Field(4096, ge=256, description="Token budget of one micro-batch.")
    share_prompt_prefix: bool = Field(
        True,
        description="Run the prompt that all rows of a micro-batch share (a GRPO group's question, the system "
        "prompt and tools) through the model once and let every row attend to it, instead of once per row. "
        "Same gradients up to rounding.",
    )
    weight_sync: Literal["object_store", "collective"] = Field(
        "object_store",
        description="How new weights reach the rollout workers. object_store: through Ray's object store (any "
        "nodes, no setup). collective: a broadcast from the learner to every rollout engine in a group of "
        "their own (NCCL on GPUs, gloo on CPU); rank 0's address must be reachable from the rollout nodes.",
    )
    weight_bucket_mb: int = Field(
        64,
        ge=1,
        le=65536,
        description="Weights travel in buckets of this many MiB; a rollout engine starts loading when the first "
        "arrives (collective: while the next is on the wire), and a rollout host holds one or two buckets beyond "
        "the weights. Smaller buckets start loading sooner, larger ones mean fewer transfers.",
    )
    weight_sync_timeout_s: float = Field(
        600.0, gt=0.0, description="collective: how long ranks wait for each other (joining, or in a sync)."
    )
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0, description="GRPO importance-ratio clip.")
    world_size: int = Field(
        1,
        ge=1,
        le=1024,
        description="Data-parallel learner ranks, one Ray actor each (gloo on CPU, NCCL on GPU); a step's "
        "sequences are split across them and DeepSpeed averages the gradients.",
    )
    num_cpus_per_rank: float = Field(1.0, gt=0.0, description="Ray CPUs reserved by each learner rank.")
    num_gpus_per_rank: float = Field(0.0, ge=0.0, description="Ray GPUs per learner rank (1 on a GPU cluster).")
    resources: Resources = Field(
        default_factory=dict,
        description="Custom Ray resources each learner rank reserves, e.g. {learner: 1}, pinning the learner "
        "to the nodes that offer them.",
    )
    seed: int = 0
    lora: LoRAConfig = Field(
        default_factory=LoRAConfig,
        description="LoRA adapters instead of full fine-tuning. The KL reference is the model with its adapters "
        "disabled (no second copy of the weights); checkpoints hold the merged weights (what vLLM and "
        "transformers load) and the adapter alone (adapter/).",
    )

    @model_validator(mode="after")
    def _adapter_sync_needs_the_object_store(self) -> LearnerConfig:
        if self.lora.enabled and self.lora.sync == "adapter" and self.weight_sync == "collective":
            raise ValueError(
                "lora.sync 'adapter' travels through the object store; set weight_sync=object_store, or "
                "lora.sync=merged to broadcast merged weights over the collective group"
            )
        return self


class SFTConfig(_Strict):
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


class CurriculumConfig(_Strict):
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


class GRPOConfig(_Strict):
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


class DataConfig(_Strict):
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


class SynthConfig(_Strict):
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


class RewardConfig(_Strict):
    w_answer: float = Field(1.0, ge=0.0, description="Weight of answer correctness.")
    w_consistency: float = Field(0.5, ge=0.0, description="Weight of internal consistency.")
    correctness: Literal["em", "f1"] = "em"
    format_penalty: float = Field(-0.5, le=0.0, description="Reward of a trace that does not parse.")

    @model_validator(mode="after")
    def _some_weight(self) -> RewardConfig:
        if self.w_answer + self.w_consistency <= 0:
            raise ValueError("w_answer + w_consistency must be positive")
        return self


class EvalConfig(_Strict):
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


class ClusterConfig(_Strict):
    ray_address: str | None = Field(
        None,
        description="Existing Ray cluster to join: 'auto', 'host:port' (its GCS) or 'ray://host:10001' (Ray "
        "Client). None starts a local Ray; `mtr` fills it from RAY_ADDRESS when that is set (as under "
        "`ray job submit`). On a cluster, services bind and advertise their node's IP instead of loopback.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance (None: all).")
    metrics_port: int = Field(0, ge=0, le=65535, description="Controller Prometheus port (0 picks a free one).")
    connect_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="How long joining a Ray cluster (ray_address) may take to reach its head before the command "
        "stops with an error naming the address; Ray itself would retry for minutes.",
    )

    @model_validator(mode="after")
    def _local_sizing_only(self) -> ClusterConfig:
        if self.ray_address and self.num_cpus is not None:
            raise ValueError("num_cpus sizes a local Ray instance; an existing cluster (ray_address) brings its own")
        return self


class ToolModelConfig(_Strict):
    """`mtr simulator train`: fine-tunes a ToolActor model on (call -> grounded observation) pairs."""

    base_model: str = Field(
        "default", description="Checkpoint the ToolActor model starts from ('default': the embedded SmolLM2-135M)."
    )
    steps: int = Field(300, ge=1, description="Optimizer steps on the harvested pairs.")
    batch_size: int = Field(16, ge=1, description="Pairs per optimizer step.")
    lr: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate (warm-up + cosine, as SFT).")
    noisy_pairs: bool = Field(
        True, description="Also harvest a noisy pair per call (facts from another call's documents), as ZeroSearch."
    )


class RunConfig(_Strict):
    name: str = Field(
        "mtr",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Run name; the run directory is <runs_dir>/<name>-<timestamp>. Letters, digits, '_', '.', '-' "
        "(no path separators: it names a directory inside runs_dir).",
    )
    runs_dir: str = Field("runs", description="Parent of run directories.")
    seed: int = 0
    model: ModelConfig = ModelConfig()
    world: WorldConfig = WorldConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    data: DataConfig = DataConfig()
    synth: SynthConfig = SynthConfig()
    sft: SFTConfig = SFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    reward: RewardConfig = RewardConfig()
    eval: EvalConfig = EvalConfig()
    cluster: ClusterConfig = ClusterConfig()
    toolmodel: ToolModelConfig = ToolModelConfig()
    _precision: Any = PrivateAttr(None)  # mtr.hardware.PrecisionChoice once `auto` is resolved

    @property
    def precision_choice(self) -> Any:
        """How model.dtype / learner.precision were chosen (mtr.hardware.resolve_precision), or None."""
        return self._precision

    def set_precision_choice(self, choice: Any) -> None:
        self._precision = choice

    @model_validator(mode="after")
    def _rollout_runs_the_learners_weights(self) -> RunConfig:
        # Measured: an fp32 learner broadcasting into a bf16 engine loses small fine-tuning updates to
        # rounding, and the engine then behaves like an older policy than the learner's.
        if "auto" not in (self.learner.precision, self.model.dtype) and self.learner.precision != self.model.dtype:
            raise ValueError(
                f"learner.precision ({self.learner.precision}) must equal model.dtype ({self.model.dtype}): "
                "the rollout engine would otherwise round away the learner's updates"
            )
        return self

    @property
    def simulator_placement(self) -> Literal["local", "ray", "external"]:
        """simulator.placement with 'auto' resolved (see its description)."""
        if self.simulator.placement != "auto":
            return self.simulator.placement
        if self.simulator.addresses:
            return "external"
        return "ray" if self.cluster.ray_address else "local"

    @model_validator(mode="after")
    def _farm_resources_need_ray(self) -> RunConfig:
        if self.simulator.resources and self.simulator_placement != "ray":
            raise ValueError(
                f"simulator.resources only place Ray actors, but the farm's placement is {self.simulator_placement!r}"
                " (set simulator.placement=ray)"
            )
        return self

    @model_validator(mode="after")
    def _eval_fits_world(self) -> RunConfig:
        if self.eval.questions is not None and self.eval.questions > self.world.n_eval:
            raise ValueError(f"eval.questions ({self.eval.questions}) exceeds world.n_eval ({self.world.n_eval})")
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`learner.lr=1e-5` -> ("learner.lr", 1e-05); the value is read as YAML so types come out right."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _format_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """Merge `base` (a profile), the YAML file at `path` and dotted overrides, then validate."""
    tree: dict[str, Any] = dict(base or {})
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; --config takes a YAML file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        tree = _deep_merge(tree, loaded)
        origin = str(path)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    if overrides:
        origin = f"{origin} + --set" if origin != "defaults" else "--set"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
