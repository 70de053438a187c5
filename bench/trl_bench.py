"""GRPO traces/s of MTR against TRL's `GRPOTrainer` on the same work: `python -m bench.trl_bench [--quick]`.

Both sides run GRPO steps of N questions x G samples on the same model, the same questions in the same order
(the embedded world's training split), the same sampling (temperature, top-p), the same cap on tokens per
assistant turn and the same turn budget, with tool calls answered by the simulator farm over gRPC:

- MTR: the simulator farm, a vLLM rollout worker and a DeepSpeed learner (Ray actors behind gRPC), driven by
  `controller.stages.training.GRPOStepper`: a step is the rollout of every group (multi-turn, tool calls batched into
  `SimulatorClient.call_many`), the composite reward, advantages, one learner update and the weight sync.
- TRL: `GRPOTrainer` on CPU (`use_cpu=True`, Hugging Face `generate`, no vLLM) with its own tool-calling loop:
  an `environment_factory` whose `search` / `open_page` methods forward each call to the same farm, a reward
  of exact match (`mtr.answers.exact_match`) on the final `<answer>`. The tokenizer gets a chat template that
  renders MTR's trace grammar byte for byte (`mtr.grammar`: same system prompt, tool list, `<tool_call>` and
  `<tool_response>` blocks), so both sides prompt the model with identical tokens, and TRL parses tool calls
  with its own Qwen-style response template (`<think>`, `<tool_call>{json}</tool_call>`).

A warm-up step on each side is not measured. Each side's traces/s is traces / wall seconds of its measured
steps. The two sides run one after the other on the same cores, and so does whatever else runs on the machine:
each side records the load average and the cores used by processes that are not the benchmark's own during its
measured steps. Results go to bench/results/trl.json and, as a markdown table, bench/results/trl.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import bench_dtype, machine
from mtr.answers import exact_match
from mtr.config import RunConfig, load_config
from mtr.grammar import DEFAULT_SYSTEM_PROMPT
from mtr.simclient import SimulatorClient, ToolCallRequest
from mtr.task import Task

RESULTS_DIR = Path(__file__).parent / "results"
SIDES = ("mtr", "trl")
TOOL_NAMES = ("search", "open_page")  # the simulator's "minimal" tool set, which TRL's environment mirrors
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# MTR's trace grammar (mtr.grammar.render_prompt / render_assistant_turn / render_observation) as a chat template:
# the tool list comes from the `tools_json` template variable (the simulator's schemas, exactly as MTR shows
# them); `tools` (TRL's schemas from the tool methods' docstrings) is the fallback for TRL's own template checks.
MTR_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set rest = messages[1:] %}{%- else %}{%- set system = '' %}{%- set rest = messages %}{%- endif %}"
    "{{- '<|im_start|>system\\n' + system + '\\n<tools>\\n' }}"
    "{%- if tools_json is defined %}{{- tools_json }}{%- elif tools %}{{- tools | tojson }}{%- else %}[]{%- endif %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- for message in rest %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.get('reasoning_content') %}{{- '<think>' + message['reasoning_content'] + '</think>\\n' }}"
    "{%- endif %}"
    "{{- message['content'] or '' }}"
    "{%- for call in message.get('tool_calls') or [] %}"
    "{%- set call = call['function'] if call['function'] is defined else call %}"
    "{{- '<tool_call>' + {'name': call['name'], 'arguments': call['arguments']} | tojson + '</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>tool\\n<tool_response>' + message['content'] + '</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class BenchSettings:
    """What both sides do; one GRPO step is `questions_per_step` groups of `group_size` traces."""

    model: str
    dtype: str
    questions_per_step: int
    group_size: int
    max_tokens_per_turn: int
    max_turns: int
    max_model_len: int
    warmup_steps: int
    steps: int
    lr: float
    seed: int
    quick: bool
    trl_micro_batch: int = 2

    def __post_init__(self) -> None:
        if self.trl_micro_batch < 1 or self.traces_per_step % self.trl_micro_batch:
            raise ValueError(
                f"--trl-micro-batch {self.trl_micro_batch} must be a positive divisor of the traces per step "
                f"({self.questions_per_step} x {self.group_size} = {self.traces_per_step})"
            )

    @property
    def traces_per_step(self) -> int:
        return self.questions_per_step * self.group_size


@dataclass(frozen=True)
class SideResult:
    """One side's measured steps. Per-trace numbers are means over the measured traces."""

    side: str
    setup: str
    steps: int
    traces: int
    seconds: float
    seconds_per_step: float
    traces_per_s: float
    step_seconds: list[float]
    startup_seconds: float
    updates: int  # measured steps that ended in an optimizer update
    policy_tokens_per_trace: float
    assistant_turns_per_trace: float
    tool_calls_per_trace: float
    exact_match: float
    load_average: float  # 1-minute load average, mean over the measured steps
    other_cores: float  # cores busy with processes outside the benchmark during the measured steps
    breakdown: dict[str, float] = field(default_factory=dict)  # mean seconds per step of a side's phases


@dataclass(frozen=True)
class ModelRun:
    """Both sides on one model; `mtr_vs_trl` is MTR's traces/s over TRL's (None unless both ran)."""

    model: str
    sides: list[SideResult]
    mtr_vs_trl: float | None


@dataclass
class _TraceStats:
    """What the traces of the measured steps did: filled by each side as it goes."""

    policy_tokens: list[float] = field(default_factory=list)
    assistant_turns: list[float] = field(default_factory=list)
    tool_calls: list[float] = field(default_factory=list)
    exact_match: list[float] = field(default_factory=list)

    def means(self) -> dict[str, float]:
        return {
            "policy_tokens_per_trace": _mean(self.policy_tokens),
            "assistant_turns_per_trace": _mean(self.assistant_turns),
            "tool_calls_per_trace": _mean(self.tool_calls),
            "exact_match": _mean(self.exact_match),
        }


# ---------------------------------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    runs: list[ModelRun] = []
    for label, path in args.model or [("default", "default")]:
        model_settings = dataclasses.replace(settings, model=path)
        results = []
        for side in args.sides:
            result = (run_mtr if side == "mtr" else run_trl)(model_settings)
            print(f"{label}: {_row(result)}", flush=True)
            results.append(result)
        runs.append(ModelRun(label, results, _speedup(results)))
        table = write_results(args.out_dir, settings, runs)  # after every model, so a later failure keeps it
    print(table)
    return 0


def write_results(out_dir: Path, settings: BenchSettings, runs: Sequence[ModelRun]) -> str:
    """trl.json (machine, shared settings, every run) and trl.md (the table and its caption); returns the latter."""
    shared = {k: v for k, v in asdict(settings).items() if k != "model"}  # a model is named by its label only
    document = {"machine": _machine(settings.dtype), "settings": shared, "runs": [asdict(run) for run in runs]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trl.json").write_text(json.dumps(document, indent=2) + "\n")
    table = markdown_table(runs) + "\n" + caption(settings, runs)
    (out_dir / "trl.md").write_text(table)
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.trl_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smoke run: 1 question x 8 per step, short turns.")
    parser.add_argument(
        "--model",
        action="append",
        type=_model,
        help="[LABEL=]PATH of a Hugging Face checkpoint ('default': the bundled SmolLM2-135M-Instruct); repeat to "
        "benchmark several models in one run.",
    )
    parser.add_argument("--dtype", type=bench_dtype, default="auto", help="MTR's model dtype (auto: as a run picks).")
    parser.add_argument("--questions", type=int, help="Questions (groups) per step (default 2; quick 1).")
    parser.add_argument("--group-size", type=int, default=8, help="Samples per question.")
    parser.add_argument("--max-tokens-per-turn", type=int, help="Token cap of one assistant turn (default 128).")
    parser.add_argument("--max-turns", type=int, help="Assistant turns per trace (default 4; quick 2).")
    parser.add_argument("--steps", type=int, help="Measured steps per side (default 3; quick 1).")
    parser.add_argument("--warmup-steps", type=int, default=1, help="Unmeasured steps before them.")
    parser.add_argument(
        "--trl-micro-batch",
        type=int,
        default=2,
        help="Traces per TRL forward/backward pass (its per_device_train_batch_size; gradients accumulate over a "
        "step's traces, so a step is still one update). Its fp32 logits over the full vocabulary are what limits "
        "memory: 8 traces of ~2k tokens at once did not fit in 24 GB.",
    )
    parser.add_argument("--sides", type=lambda s: s.split(","), default=list(SIDES), help="mtr,trl")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return parser


def _model(text: str) -> tuple[str, str]:
    """'sft=path/to/ckpt' -> ('sft', 'path/to/ckpt'); a bare path is labelled by its directory name."""
    label, _, path = text.rpartition("=")
    return (label or Path(path).name or path, path)


def _settings(args: argparse.Namespace) -> BenchSettings:
    for side in args.sides:
        if side not in SIDES:
            raise SystemExit(f"--sides: unknown side {side!r}; expected some of {SIDES}")
    quick = args.quick
    return BenchSettings(
        model="default",
        dtype=args.dtype,
        questions_per_step=args.questions or (1 if quick else 2),
        group_size=args.group_size,
        max_tokens_per_turn=args.max_tokens_per_turn or (32 if quick else 128),
        max_turns=args.max_turns or (2 if quick else 4),
        max_model_len=2048,
        warmup_steps=args.warmup_steps,
        steps=args.steps or (1 if quick else 3),
        lr=1e-5,
        seed=0,
        quick=quick,
        trl_micro_batch=args.trl_micro_batch,
    )


# ---------------------------------------------------------------------------------------------------- shared


def run_config(settings: BenchSettings, runs_dir: Path) -> RunConfig:
    """MTR's config for the benchmark; the TRL side reads its farm and world settings from it too."""
    n_train = settings.questions_per_step * (settings.warmup_steps + settings.steps)
    overrides = {
        "runs_dir": str(runs_dir),
        "name": "trl-bench",
        "seed": settings.seed,
        "model.path": settings.model,
        "model.dtype": settings.dtype,
        "learner.precision": settings.dtype,
        "world.n_train": max(n_train, 1),
        "rollout.group_size": settings.group_size,
        "rollout.max_tokens_per_turn": settings.max_tokens_per_turn,
        "rollout.max_turns": settings.max_turns,
        "rollout.max_model_len": settings.max_model_len,
        "grpo.lr": settings.lr,
        "grpo.questions_per_step": settings.questions_per_step,
    }
    return load_config(overrides=[f"{key}={json.dumps(value)}" for key, value in overrides.items()])


def step_questions(settings: BenchSettings, train: Sequence[Task]) -> list[list[Task]]:
    """The questions of every step (warm-up first), in order: both sides see exactly these."""
    n = settings.questions_per_step
    total = settings.warmup_steps + settings.steps
    if len(train) < n * total:
        raise ValueError(f"need {n * total} training questions for {total} steps of {n}, the world gave {len(train)}")
    return [list(train[i * n : (i + 1) * n]) for i in range(total)]


def _tooled_questions(config: RunConfig, simulator: SimulatorClient) -> list[Task]:
    from controller.stages.taskdata import load_side, with_tools

    return with_tools([t for d in load_side(config, "train") for t in d.tasks], simulator)


class _Window:
    """Load average and the cores other processes used while a side's measured steps ran.

    The benchmark's own processes are this one and its descendants (the simulator farm, Ray's daemons and
    actors, the vLLM engine); the rest of the machine's busy time belongs to someone else.
    """

    def __init__(self) -> None:
        self._loads: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> _Window:
        self._own, self._busy, self._start = _own_cpu_s(), _machine_busy_s(), time.monotonic()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self._loads.append(os.getloadavg()[0])
            if self._stop.wait(5.0):
                return

    def __exit__(self, *exc_info: object) -> None:
        own, busy, window = _own_cpu_s() - self._own, _machine_busy_s() - self._busy, time.monotonic() - self._start
        self._stop.set()
        self._thread.join()
        self.load_average = round(_mean(self._loads), 2)
        self.other_cores = round(max(busy - own, 0.0) / max(window, 1e-9), 2)


def _own_cpu_s() -> float:
    import psutil

    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        total += times.user + times.system
    return total


def _machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (the first line of /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _CLOCK_TICKS


# ---------------------------------------------------------------------------------------------------- MTR side


def run_mtr(settings: BenchSettings) -> SideResult:
    """Services + learner + rollout worker + GRPOStepper, as `mtr run` wires them; steps timed end to end."""
    from controller.cluster.services import Services
    from controller.reports.metrics import ControllerMetrics
    from controller.reports.rundir import RunDirectory
    from controller.stages.training import GRPOStepper
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(settings.model))
    with tempfile.TemporaryDirectory(prefix="trl-bench-mtr-") as runs:
        config = run_config(settings, Path(runs))
        run_dir = RunDirectory.create(config)
        started = time.perf_counter()
        with Services(config, run_dir.path / "logs") as services:
            services.start()
            steps = step_questions(settings, _tooled_questions(config, services.simulator))
            _, learner = services.learner(model_path, len(steps))
            _, rollout = services.rollout(model_path)
            stepper = GRPOStepper(config, learner, rollout, run_dir, ControllerMetrics())
            startup = time.perf_counter() - started
            for index in range(settings.warmup_steps):
                stepper.step(index, steps[index])
            measured = []
            with _Window() as window:
                for index in range(settings.warmup_steps, len(steps)):
                    begin = time.perf_counter()
                    stepper.step(index, steps[index])
                    measured.append(time.perf_counter() - begin)
        run_dir.close()
        records, traces = _mtr_records(run_dir.path, settings.warmup_steps)
    stats = _mtr_trace_stats(traces)
    for record in records:
        traces = record.get("traces") or settings.traces_per_step
        stats.policy_tokens.append(record.get("generated_tokens", 0) / traces)
    return _result(
        "mtr",
        f"vLLM rollout worker + DeepSpeed learner (Ray actors, gRPC), {settings.dtype}",
        settings,
        measured,
        startup,
        sum("learner_seconds" in r for r in records),
        stats,
        window,
        {
            "rollout_s": _mean([r.get("rollout_seconds", 0.0) for r in records]),
            "learner_s": _mean([r.get("learner_seconds", 0.0) for r in records]),
        },
    )


def _mtr_records(run_dir: Path, warmup_steps: int) -> tuple[list[dict], list[dict]]:
    """The measured steps' `grpo` records (metrics.jsonl) and trace records (traces/grpo.jsonl)."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    records = [r for r in metrics if r.get("event") == "grpo" and r["step"] >= warmup_steps]
    trace_file = run_dir / "traces" / "grpo.jsonl"
    lines = trace_file.read_text().splitlines() if trace_file.exists() else []
    traces = [t for t in map(json.loads, lines) if t["step"] >= warmup_steps]
    return records, traces


def _mtr_trace_stats(traces: Sequence[dict]) -> _TraceStats:
    """Turns and tool calls from the rendered trace text: one assistant header per turn, one tool block per call."""
    stats = _TraceStats()
    for trace in traces:
        stats.assistant_turns.append(trace["text"].count("<|im_start|>assistant\n"))
        stats.tool_calls.append(trace["text"].count("<|im_start|>tool\n"))
        stats.exact_match.append(float(trace.get("exact_match", 0.0)))
    return stats


# ---------------------------------------------------------------------------------------------------- TRL side


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
            found = _ANSWER.search(message.get("content") or "")
            return found.group(1).strip() if found else ""
    return ""


def exact_match_reward(stats: _TraceStats | None = None) -> Callable[..., list[float]]:
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
            steps = step_questions(settings, _tooled_questions(config, services.simulator))
            stats = _TraceStats()
            timer = _step_timer(settings.warmup_steps)
            trainer = _trl_trainer(settings, model_path, steps, services.simulator, stats, timer, Path(runs))
            startup = time.perf_counter() - started
            trainer.train()
    measured = timer.durations[settings.warmup_steps :]
    skip = settings.warmup_steps * settings.traces_per_step
    measured_stats = _TraceStats(
        timer.policy_tokens, stats.assistant_turns[skip:], stats.tool_calls[skip:], stats.exact_match[skip:]
    )
    return _result(
        "trl",
        "TRL GRPOTrainer on CPU: Hugging Face generate (no vLLM), float32, tool loop (environment_factory)",
        settings,
        measured,
        startup,
        len(measured),
        measured_stats,
        timer.window,
        {},
    )


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
        # fp32 weights and compute (TRL defaults to bf16 autocast, which generated no faster here), and no
        # gradient checkpointing (TRL's default trades compute for memory this small model does not need).
        bf16=False,
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
            self.window = _Window()
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


# ---------------------------------------------------------------------------------------------------- results


def _result(side, setup, settings, measured, startup, updates, stats, window, breakdown) -> SideResult:
    seconds = sum(measured)
    traces = settings.traces_per_step * len(measured)
    return SideResult(
        side=side,
        setup=setup,
        steps=len(measured),
        traces=traces,
        seconds=round(seconds, 2),
        seconds_per_step=round(seconds / max(len(measured), 1), 2),
        traces_per_s=round(traces / seconds, 3) if seconds else 0.0,
        step_seconds=[round(d, 2) for d in measured],
        startup_seconds=round(startup, 1),
        updates=updates,
        **{key: round(value, 3) for key, value in stats.means().items()},
        load_average=getattr(window, "load_average", float("nan")),
        other_cores=getattr(window, "other_cores", float("nan")),
        breakdown={key: round(value, 2) for key, value in breakdown.items()},
    )


def _speedup(results: Sequence[SideResult]) -> float | None:
    by_side = {r.side: r.traces_per_s for r in results}
    if by_side.get("mtr") and by_side.get("trl"):
        return round(by_side["mtr"] / by_side["trl"], 2)
    return None


def markdown_table(runs: Sequence[ModelRun]) -> str:
    """Traces/s and seconds per step of each side, MTR's speed-up over TRL, what the traces did, machine load."""
    lines = [
        "| model | side | setup | steps | traces/step | s/step | traces/s | vs TRL | policy tokens/trace | turns/trace "
        "| tool calls/trace | EM | updates | load avg | cores: other processes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for r in run.sides:
            ratio = f"{run.mtr_vs_trl:.2f}x" if r.side == "mtr" and run.mtr_vs_trl else "-"
            lines.append(
                f"| {run.model} | {r.side.upper()} | {r.setup} | {r.steps} | {r.traces // max(r.steps, 1)} "
                f"| {r.seconds_per_step:.1f} | {r.traces_per_s:.3f} | {ratio} | {r.policy_tokens_per_trace:.1f} "
                f"| {r.assistant_turns_per_trace:.2f} | {r.tool_calls_per_trace:.2f} | {r.exact_match:.3f} "
                f"| {r.updates}/{r.steps} | {r.load_average:.2f} | {r.other_cores:.2f} |"
            )
    return "\n".join(lines) + "\n"


def caption(settings: BenchSettings, runs: Sequence[ModelRun]) -> str:
    """Under the table: the shared settings and how to read the numbers."""
    phases = []
    for run in runs:
        for r in run.sides:
            if r.side == "mtr" and r.breakdown:
                phases.append(
                    f"{run.model}: rollout {r.breakdown.get('rollout_s', 0):.1f} s, learner "
                    f"{r.breakdown.get('learner_s', 0):.1f} s"
                )
    breakdown = f" MTR's step ({'; '.join(phases)}); the rest is reward, weight sync and RPCs." if phases else ""
    return (
        f"Same model per row pair, same {settings.questions_per_step} question(s) x {settings.group_size} samples "
        f"per step, temperature 1, at most {settings.max_tokens_per_turn} tokens per assistant turn and "
        f"{settings.max_turns} turns per trace, tool calls answered by the simulator farm over gRPC; "
        f"{settings.warmup_steps} warm-up step(s) not measured, then {settings.steps}. Identical prompt tokens on "
        "both sides (TRL's tokenizer renders MTR's trace grammar); TRL parses and runs tool calls with its own "
        f"tool loop, {settings.trl_micro_batch} traces per forward/backward pass with gradients accumulated over "
        "the step. MTR's reward is the composite trace reward, TRL's the exact match. `updates`: measured steps "
        "that ended in an optimizer update (MTR skips the update when no group has reward variance). "
        f"MTR's dtype: {settings.dtype}.{breakdown} {os.cpu_count()} CPU cores shared by both sides' processes and "
        "anything else running: `load avg` and `cores: other processes` are measured over each side's steps. "
        "`python -m bench.trl_bench`\n"
    )


def _row(result: SideResult) -> str:
    return (
        f"{result.side}: {result.traces_per_s:.3f} traces/s, {result.seconds_per_step:.1f} s/step "
        f"({result.step_seconds}), turns/trace {result.assistant_turns_per_trace:.2f}, tool calls/trace "
        f"{result.tool_calls_per_trace:.2f}, load avg {result.load_average:.2f}, other cores {result.other_cores:.2f}"
    )


def _machine(precision: str) -> dict:
    import transformers

    versions = {"transformers": transformers.__version__}
    try:
        import trl

        versions["trl"] = trl.__version__
    except ImportError:
        pass
    return {**machine(f"MTR {precision}; TRL float32"), **versions}


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


if __name__ == "__main__":
    # A terminated benchmark unwinds like an interrupted one, so the simulator farm and Ray are shut down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
