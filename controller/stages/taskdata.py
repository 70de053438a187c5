"""Questions for a command, from dataset specs: the embedded world or benchmark files, split and tooled.

`data.train` and `data.eval` name datasets by spec. The embedded world has its own disjoint train and
held-out draws. A benchmark file listed on both sides is split by a stable hash of each question id, so
the held-out part never trains and the split is the same in every run and on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mtr.config import RunConfig
from mtr.datasets import DatasetError, RowError, load_tasks, parse_spec
from mtr.simclient import SimulatorClient
from mtr.task import Task
from mtr.worldquestions import embedded_tasks

log = logging.getLogger("mtr.data")

Side = Literal["train", "eval"]


@dataclass
class Dataset:
    name: str  # "synthetic", "hotpotqa", ... ("hotpotqa-2" when a kind appears twice)
    spec: str
    tasks: list[Task]
    skipped: list[RowError] = field(default_factory=list)


def load_side(config: RunConfig, side: Side, specs: Sequence[str] | None = None) -> list[Dataset]:
    """The datasets of one side (train or eval), each with its questions and the rows that were skipped."""
    specs = list(getattr(config.data, side) if specs is None else specs)
    other = set(config.data.eval if side == "train" else config.data.train)
    names: Counter = Counter()
    datasets = []
    for spec in specs:
        kind = parse_spec(spec).kind
        names[kind] += 1
        name = kind if names[kind] == 1 else f"{kind}-{names[kind]}"
        if kind == "synthetic":
            tasks, skipped = _synthetic(config, side), []
        else:
            loaded = load_tasks(spec, on_error=config.data.on_error, limit=config.data.limit)
            tasks, skipped = loaded.tasks, loaded.skipped
            for error in skipped:
                log.warning("skipped a malformed row: %s", error)
            if spec in other:
                tasks = [t for t in tasks if held_out(t.id, config.data.holdout_fraction) == (side == "eval")]
        datasets.append(Dataset(name, spec, tasks, skipped))
        log.info("%s %s: %d questions (%d rows skipped)", side, name, len(tasks), len(skipped))
    return datasets


def held_out(task_id: str, fraction: float) -> bool:
    """Stable split: the same id lands on the same side in every run, independent of file order."""
    digest = hashlib.sha256(task_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _synthetic(config: RunConfig, side: Side) -> list[Task]:
    world = config.world
    try:
        train, held = embedded_tasks(world.seed, world.n_train, world.n_eval)
    except ValueError as error:  # a config the world cannot satisfy: say which settings, no traceback
        raise DatasetError(f"synthetic (world.seed={world.seed}, world.n_train, world.n_eval): {error}") from None
    tasks = train if side == "train" else held[: config.eval.questions]
    if config.data.limit is not None:
        tasks = tasks[: config.data.limit]
    # The simulator serves the world as its corpus, so calls need not carry each task's documents.
    return [dataclasses.replace(t, documents=()) for t in tasks]


def with_tools(tasks: Sequence[Task], simulator: SimulatorClient) -> list[Task]:
    """Ask the ToolMaker for each question's tool set (what the policy is shown and may call)."""
    return [dataclasses.replace(t, tools=tuple(simulator.make_tools(t))) for t in tasks]
