"""Config sections of the services: the model, the embedded world, the simulator farm, the rollout workers, the
learner (with LoRA) and the Ray cluster. Re-exported by `mtr.config`, where `RunConfig` puts them together."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from mtr.config_base import Resources, Strict, host_port


class ModelConfig(Strict):
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


class WorldConfig(Strict):
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


class NoiseSchedule(Strict):
    start: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of noisy observations (facts from unrelated documents) at GRPO step 0."
    )
    end: float = Field(0.0, ge=0.0, le=1.0, description="Share at the last GRPO step; linear in between.")

    def share(self, step: int, total_steps: int) -> float:
        """The noisy share at `step` of `total_steps` (linear from start to end)."""
        progress = min(1.0, step / max(1, total_steps - 1))
        return self.start + (self.end - self.start) * progress


class SimulatorConfig(Strict):
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
    addresses: list[Annotated[str, AfterValidator(host_port)]] = Field(
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


class RolloutConfig(Strict):
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


class LoRAConfig(Strict):
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


class LearnerConfig(Strict):
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


class ClusterConfig(Strict):
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
