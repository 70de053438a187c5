"""The TRL side of the benchmark: TRL's `GRPOTrainer` on the same questions, with the simulator farm as its
environment (the same tools, over gRPC), the same reward and the same step timing."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.trl_common import (
    ANSWER,
    MTR_CHAT_TEMPLATE,
    TOOL_NAMES,
    BenchSettings,
    SideResult,
    TraceStats,
    Window,
    run_config,
    side_result,
    step_questions,
    tooled_questions,
)
from mtr.answers import exact_match
from mtr.grammar import DEFAULT_SYSTEM_PROMPT
from mtr.simclient import SimulatorClient, ToolCallRequest
from mtr.task import Task


class SimulatorTools:
    """One TRL rollout's tools: TRL calls these methods when the model writes a tool call, and each call goes
    to the simulator farm (`SimulatorClient.call_many`), as MTR's rollout worker sends it.

    TRL builds the tool schemas it validates calls against from these signatures and docstrings; what the
    model reads in its prompt is the simulator's own schema (see MTR_CHAT_TEMPLATE).
    """

    def __init__(self, client: SimulatorClient) -> None:
        self._client = client
        self._task_id = ""

    def reset(self, task_id: str = "", **row: object) -> None:
        """TRL calls this before each rollout with the dataset row; the task id goes with every call."""
        self._task_id = task_id

    def search(self, query: str) -> str:
        """Search the encyclopedia. Returns the best-matching pages (title and text).

        Args:
            query: Keywords, e.g. an entity name and the fact you need.
        """
        return self._call("search", {"query": query})

    def open_page(self, title: str) -> str:
        """Open the encyclopedia page with exactly this title (case does not matter).

        Args:
            title: The page title.
        """
        return self._call("open_page", {"title": title})

    def _call(self, name: str, arguments: dict) -> str:
        call = ToolCallRequest(self._task_id, name, json.dumps(arguments, ensure_ascii=False))
        result = self._client.call_many([call])[0]
        return json.dumps(result.observation, ensure_ascii=False)


def final_answer(completion: Sequence[dict]) -> str:
    """The `<answer>` of the last assistant message of a TRL conversational completion ('' when there is none)."""
    for message in reversed(completion):
        if message.get("role") == "assistant":
            found = ANSWER.search(message.get("content") or "")
            return found.group(1).strip() if found else ""
    return ""


def exact_match_reward(stats: TraceStats | None = None) -> Callable[..., list[float]]:
    """TRL reward function: EM of the final answer against the row's gold answers; notes what each trace did."""

    def reward(completions: list, answers: list, completion_ids: list | None = None, **_: object) -> list[float]:
        scores = [exact_match(final_answer(c), golds) for c, golds in zip(completions, answers, strict=True)]
        if stats is not None:
            for completion, em in zip(completions, scores, strict=True):
                stats.assistant_turns.append(sum(m.get("role") == "assistant" for m in completion))
                stats.tool_calls.append(sum(m.get("role") == "tool" for m in completion))
                stats.exact_match.append(em)
        return scores

    reward.__name__ = "exact_match"
    return reward


def trl_rows(tasks: Sequence[Task]) -> list[dict]:
    """Conversational prompts with MTR's system prompt, plus what the tools and the reward need."""
    return [
        {
            "prompt": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": t.question}],
            "task_id": t.id,
            "answers": list(t.answers),
        }
        for t in tasks
    ]


def trl_tokenizer(model_path: str):
    """The model's tokenizer with MTR's grammar as its chat template and TRL's parser of `<tool_call>` turns."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen3_template

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.chat_template = MTR_CHAT_TEMPLATE
    tokenizer.response_template = qwen3_template
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tools_json(tasks: Sequence[Task]) -> str:
    """The tool list every question is offered, as MTR renders it; TRL's environment must offer the same tools."""
    sets = {json.dumps(list(t.tools), ensure_ascii=False) for t in tasks}
    if len(sets) != 1:
        raise ValueError(f"the questions are offered {len(sets)} different tool sets; the TRL side needs one")
    names = tuple(tool["function"]["name"] for tool in tasks[0].tools)
    if sorted(names) != sorted(TOOL_NAMES):
        raise ValueError(f"the simulator offers tools {names}; the TRL side implements {TOOL_NAMES} (simulator.tools)")
    return sets.pop()


def run_trl(settings: BenchSettings) -> SideResult:
    """`GRPOTrainer` on CPU with its tool loop, on the same questions, one step per MTR step."""
    from controller.cluster.services import Services
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(settings.model))
    with tempfile.TemporaryDirectory(prefix="trl-bench-trl-") as runs:
        config = run_config(settings, Path(runs))
        started = time.perf_counter()
        with Services(config, Path(runs) / "logs") as services:
            services.start(ray=False)
            steps = step_questions(settings, tooled_questions(config, services.simulator))
            stats = TraceStats()
            timer = _step_timer(settings.warmup_steps)
            trainer = _trl_trainer(settings, model_path, steps, services.simulator, stats, timer, Path(runs))
            startup = time.perf_counter() - started
            trainer.train()
    measured = timer.durations[settings.warmup_steps :]
    skip = settings.warmup_steps * settings.traces_per_step
    measured_stats = TraceStats(
        timer.policy_tokens, stats.assistant_turns[skip:], stats.tool_calls[skip:], stats.exact_match[skip:]
    )
    return side_result(
        "trl",
        f"TRL GRPOTrainer on CPU: Hugging Face generate (no vLLM), {_precision(settings)}, tool loop "
        "(environment_factory)",
        settings,
        measured,
        startup,
        len(measured),
        measured_stats,
        timer.window,
        {},
    )


def _precision(settings: BenchSettings) -> str:
    return "bf16 autocast (fp32 weights)" if settings.trl_dtype == "bfloat16" else "float32"


def _trl_trainer(settings, model_path, steps, simulator, stats, timer, out_dir):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    tokenizer = trl_tokenizer(model_path)
    questions = [t for tasks in steps for t in tasks]
    tool_list = tools_json(questions)
    longest_prompt = max(
        len(tokenizer.apply_chat_template(row["prompt"], tools_json=tool_list, add_generation_prompt=True))
        for row in trl_rows(questions)
    )
    args = GRPOConfig(
        output_dir=str(out_dir / "trl"),
        use_cpu=True,
        seed=settings.seed,
        learning_rate=settings.lr,
        num_generations=settings.group_size,
        # One optimizer step per generation batch of N questions x G samples (TRL generates the whole batch at
        # once: steps_per_generation defaults to the accumulation steps), in micro-batches of trl_micro_batch.
        per_device_train_batch_size=settings.trl_micro_batch,
        gradient_accumulation_steps=settings.traces_per_step // settings.trl_micro_batch,
        max_steps=len(steps),
        shuffle_dataset=False,  # step i trains on questions[i*N : (i+1)*N], as MTR's step i does
        temperature=1.0,
        top_p=1.0,
        # MTR caps each turn at max_tokens_per_turn and a trace at the engine's context; TRL caps the whole
        # completion (policy + tool tokens) at max_completion_length and each generate call at max_new_tokens.
        generation_kwargs={"max_new_tokens": settings.max_tokens_per_turn},
        max_completion_length=settings.max_model_len - longest_prompt,
        max_tool_calling_iterations=settings.max_turns - 1,
        chat_template_kwargs={"tools_json": tool_list},
        beta=0.0,
        # fp32 weights; bf16 compute (the Trainer's CPU autocast) when asked, so both sides can compute in the
        # same precision. No gradient checkpointing (TRL's default trades compute for memory this small model
        # does not need).
        bf16=settings.trl_dtype == "bfloat16",
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return GRPOTrainer(
        model=model_path,
        reward_funcs=[exact_match_reward(stats)],
        args=args,
        train_dataset=Dataset.from_list(trl_rows(questions)),
        processing_class=tokenizer,
        environment_factory=lambda: SimulatorTools(simulator),
        callbacks=[timer],
    )


def _step_timer(warmup_steps: int):
    """A TrainerCallback that times each optimizer step (generation, tool calls, reward, backward, update)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Steps are timed end to end (from one step's end to the next), so logging and batching count too."""

        def __init__(self) -> None:
            self.durations: list[float] = []
            self.policy_tokens: list[float] = []
            self.window = Window()
            self._last: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self._last is None:
                self._last = time.perf_counter()
                if warmup_steps == 0:
                    self.window.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.durations.append(now - self._last)
            self._last = now
            if len(self.durations) == warmup_steps:
                self.window.__enter__()

        def on_train_end(self, args, state, control, **kwargs):
            if len(self.durations) > warmup_steps:
                self.window.__exit__()

        def on_log(self, args, state, control, logs=None, **kwargs):
            # TRL's completion length with tools counts policy tokens only (its tool mask), as MTR's does.
            if logs and "completions/mean_length" in logs and state.global_step > warmup_steps:
                self.policy_tokens.append(float(logs["completions/mean_length"]))

    return StepTimer()
