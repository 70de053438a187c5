"""What both sides of the TRL benchmark share: settings, results, the run config, the questions of each step,
and the CPU-time windows. Used by `bench.trl_bench` (the command and the MTR side) and `bench.trl_side`."""

from __future__ import annotations

import json
import os
import re
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtr.config import RunConfig, load_config
from mtr.simclient import SimulatorClient
from mtr.task import Task

RESULTS_DIR = Path(__file__).parent / "results"


SIDES = ("mtr", "trl")


TOOL_NAMES = ("search", "open_page")  # the simulator's "minimal" tool set, which TRL's environment mirrors


ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    trl_dtype: str = "float32"  # TRL's precision: float32, or bfloat16 (the Trainer's CPU autocast)
    repeats: int = 1  # each side runs this many times, alone, one after the other

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
    """Both sides on one model, every repetition of each. `mtr_vs_trl`: MTR's median steady-state traces/s over
    TRL's; `mtr_vs_trl_with_startup`: the same with each repetition's start-up counted (traces over start-up
    plus measured seconds). None unless both sides ran."""

    model: str
    sides: list[SideResult]
    mtr_vs_trl: float | None
    mtr_vs_trl_with_startup: float | None = None


def median_traces_per_s(results: Sequence[SideResult], with_startup: bool = False) -> float:
    """Median over a side's repetitions of traces / seconds (steady state, or start-up included)."""
    values = [
        r.traces / (r.seconds + (r.startup_seconds if with_startup else 0.0))
        for r in results
        if r.seconds + (r.startup_seconds if with_startup else 0.0) > 0
    ]
    return statistics.median(values) if values else 0.0


def speedups(results: Sequence[SideResult]) -> tuple[float | None, float | None]:
    """(steady-state, start-up counted) MTR / TRL ratios of the median traces/s; None unless both sides ran."""
    mtr = [r for r in results if r.side == "mtr"]
    trl = [r for r in results if r.side == "trl"]
    if not mtr or not trl:
        return None, None
    ratios = []
    for with_startup in (False, True):
        base = median_traces_per_s(trl, with_startup)
        ratios.append(round(median_traces_per_s(mtr, with_startup) / base, 2) if base else None)
    return ratios[0], ratios[1]


@dataclass
class TraceStats:
    """What the traces of the measured steps did: filled by each side as it goes."""

    policy_tokens: list[float] = field(default_factory=list)
    assistant_turns: list[float] = field(default_factory=list)
    tool_calls: list[float] = field(default_factory=list)
    exact_match: list[float] = field(default_factory=list)

    def means(self) -> dict[str, float]:
        return {
            "policy_tokens_per_trace": mean(self.policy_tokens),
            "assistant_turns_per_trace": mean(self.assistant_turns),
            "tool_calls_per_trace": mean(self.tool_calls),
            "exact_match": mean(self.exact_match),
        }


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


def tooled_questions(config: RunConfig, simulator: SimulatorClient) -> list[Task]:
    from controller.stages.taskdata import load_side, with_tools

    return with_tools([t for d in load_side(config, "train") for t in d.tasks], simulator)


class Window:
    """Load average and the cores other processes used while a side's measured steps ran.

    The benchmark's own processes are this one and its descendants (the simulator farm, Ray's daemons and
    actors, the vLLM engine); the rest of the machine's busy time belongs to someone else.
    """

    def __init__(self) -> None:
        self._loads: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> Window:
        self._own, self._busy, self._start = own_cpu_s(), machine_busy_s(), time.monotonic()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self._loads.append(os.getloadavg()[0])
            if self._stop.wait(5.0):
                return

    def __exit__(self, *exc_info: object) -> None:
        own, busy, window = own_cpu_s() - self._own, machine_busy_s() - self._busy, time.monotonic() - self._start
        self._stop.set()
        self._thread.join()
        self.load_average = round(mean(self._loads), 2)
        self.other_cores = round(max(busy - own, 0.0) / max(window, 1e-9), 2)


def own_cpu_s() -> float:
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


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (the first line of /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def side_result(side, setup, settings, measured, startup, updates, stats, window, breakdown) -> SideResult:
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


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0
