"""The run directory: resolved config, metrics.jsonl, traces, evaluation tables, checkpoints, report.md.

Everything is appended and flushed as it happens, so a run that dies keeps all it did up to that point.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from mtr.config import RunConfig, dump_config
from mtr.hardware import describe_machine


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "traces").mkdir(exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self._metrics = (self.path / "metrics.jsonl").open("a", encoding="utf-8")

    @classmethod
    def create(cls, config: RunConfig) -> RunDirectory:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(config.runs_dir) / f"{config.name}-{stamp}"
        suffix = 1
        while path.exists():
            path = Path(config.runs_dir) / f"{config.name}-{stamp}-{suffix}"
            suffix += 1
        run = cls(path)
        run.write_config(config)
        return run

    def write_config(self, config: RunConfig) -> Path:
        """config.yaml, headed by the machine and precision it ran on (comments: the file stays loadable)."""
        target = self.path / "config.yaml"
        target.write_text(provenance_header(config) + dump_config(config), encoding="utf-8")
        return target

    def log(self, event: str, step: int, **values) -> None:
        """Append one record: `event` names what happened (sft, grpo, eval, weight_sync, stage, error)."""
        record = {"time": time.time(), "event": event, "step": step, **values}
        self._metrics.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")
        self._metrics.flush()

    def append_jsonl(self, relative: str, records: Iterable[dict]) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return target

    def write_json(self, relative: str, value) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=float))
        return target

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.write_text(text, encoding="utf-8")
        return target

    def checkpoint_dir(self, name: str) -> Path:
        return self.path / "checkpoints" / name

    def close(self) -> None:
        self._metrics.close()

    def appended_sizes(self) -> dict[str, int]:
        """Bytes in each append-only record file (metrics.jsonl, traces/*.jsonl) now: saved with a checkpoint,
        so that resuming it can cut away what was logged after it."""
        self._metrics.flush()
        files = [self.path / "metrics.jsonl", *sorted((self.path / "traces").glob("*.jsonl"))]
        return {str(f.relative_to(self.path)): f.stat().st_size for f in files if f.is_file()}

    def rewind(self, sizes: dict[str, int]) -> dict[str, int]:
        """Cut each append-only record file back to `sizes` (taken by `appended_sizes` with the checkpoint being
        resumed); a file missing from `sizes` was started after it and is cut to nothing. The cut records are
        what the resumed run will do again: they are moved to FILE.superseded (appended), so nothing is lost
        and nothing is counted twice. Returns the bytes moved per file."""
        self._metrics.close()
        moved = {}
        try:
            files = [self.path / "metrics.jsonl", *sorted((self.path / "traces").glob("*.jsonl"))]
            for path in files:
                keep = sizes.get(str(path.relative_to(self.path)), 0)
                size = path.stat().st_size if path.is_file() else 0
                if size <= keep:
                    continue
                with path.open("rb+") as handle:
                    handle.seek(keep)
                    tail = handle.read()
                    with path.with_name(path.name + ".superseded").open("ab") as aside:
                        aside.write(tail)
                    handle.truncate(keep)
                moved[str(path.relative_to(self.path))] = len(tail)
        finally:
            self._metrics = (self.path / "metrics.jsonl").open("a", encoding="utf-8")
        return moved


def provenance_header(config: RunConfig) -> str:
    """YAML comments naming the machine and how the precision was chosen, so the figures of two runs on
    different CPUs are never compared blindly (the config itself stays loadable)."""
    machine = describe_machine()
    lines = [
        f"# machine: {machine['cpu_model']} ({machine['cpu_capability']}), {machine['cores']} cores, "
        f"torch {machine['torch']}, vllm {machine['vllm']}, deepspeed {machine['deepspeed']}"
    ]
    if machine["cuda_devices"]:
        lines.append(f"# cuda: {', '.join(machine['cuda_devices'])}")
    if config.precision_choice is not None:
        lines.append(f"# precision: {config.precision_choice.dtype} ({config.precision_choice.reason})")
    return "\n".join(lines) + "\n"
