"""The bad-input suite of the `mtr` command, table-driven: each case is an argv, the exit code, the words the
message must hold, and the promise that nothing was started or changed.

A case passes only when the exit is non-zero, the message names what was wrong and where, no traceback
reaches the user, and no file that existed before is changed (the run directory is never created). The
config cases are generated from the config model itself, so every setting of every section is covered:
a wrong type, a value out of its bounds, an infinity, a choice that does not exist, a key that does not.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from mtr.cli import main
from mtr.config import RunConfig


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    words: tuple[str, ...]
    exit_code: int = 2

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:90]


# ------------------------------------------------------------------------------------------- config cases
def _leaves(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", annotation, field


def _bound(field, kind: str):
    for item in field.metadata:
        value = getattr(item, kind, None)
        if value is not None:
            return value
    return None


def _config_cases() -> list[Case]:
    cases = []
    sections = [name for name, f in RunConfig.model_fields.items() if isinstance(f.annotation, type)]
    sections = [s for s in sections if issubclass(RunConfig.model_fields[s].annotation, BaseModel)]
    for section in sections:
        cases.append(Case(("config", "show", "--set", f"{section}.no_such_key=1"), (f"{section}.no_such_key", "Extra")))
    for key, annotation, field in _leaves(RunConfig):
        base = typing.get_args(annotation)[0] if isinstance(annotation, types.UnionType) else annotation
        if base is float:
            cases.append(Case(("config", "show", "--set", f"{key}=.inf"), (key, "finite number")))
            cases.append(Case(("config", "show", "--set", f"{key}=plenty"), (key, "valid number")))
        elif base is int:
            cases.append(Case(("config", "show", "--set", f"{key}=plenty"), (key, "valid integer")))
        elif base is bool:
            cases.append(Case(("config", "show", "--set", f"{key}=maybe"), (key, "valid boolean")))
        elif typing.get_origin(base) is typing.Literal:
            cases.append(Case(("config", "show", "--set", f"{key}=no_such_choice"), (key, "Input should be")))
        if base in (int, float):
            low = _bound(field, "ge")
            low_strict = _bound(field, "gt")
            high = _bound(field, "le")
            if low is not None:
                cases.append(Case(("config", "show", "--set", f"{key}={low - 1}"), (key, "greater than or equal")))
            elif low_strict is not None:
                cases.append(Case(("config", "show", "--set", f"{key}={low_strict}"), (key, "greater than")))
            if high is not None:
                cases.append(Case(("config", "show", "--set", f"{key}={high + 1}"), (key, "less than or equal")))
    return cases


CONFIG_CASES = _config_cases()

# -------------------------------------------------------------------------- hand-written command cases
MISSING = "/nonexistent/mtr-bad-input"
COMMAND_CASES = [
    Case(("config", "show", "--set", "noequals"), ("noequals", "section.key=value")),
    Case(("config", "show", "--set", "grpo.steps=1", "--config", MISSING + ".yaml"), ("does not exist",)),
    Case(("config", "show", "--set", "name=../../etc"), ("name", "pattern")),
    Case(("config", "show", "--set", "simulator.actor=model"), ("simulator.actor_model",)),
    Case(("config", "show", "--set", "simulator.noise.end=0.5"), ("needs simulator.actor 'model'",)),
    Case(("config", "show", "--set", "data.train=['nokind:x']"), ("data.train", "unknown dataset kind 'nokind'")),
    Case(("config", "show", "--set", "data.train=['hotpotqa']"), ("data.train", "missing a file path")),
    Case(("config", "show", "--set", "data.eval=['synthetic:x']"), ("data.eval", "takes no path")),
    Case(("config", "show", "--set", "learner.precision=bfloat16", "--set", "model.dtype=float32"), ("must equal",)),
    Case(("config", "show", "--set", "cluster.num_cpus=2", "--set", "cluster.ray_address=auto"), ("num_cpus",)),
    Case(("config", "show", "--set", "simulator.placement=external"), ("needs addresses",)),
    Case(("config", "show", "--set", "simulator.addresses=['nohostport']"), ("simulator.addresses",)),
    Case(("config", "show", "--set", "reward.w_answer=0", "--set", "reward.w_consistency=0"), ("must be positive",)),
    Case(("synth", "--data", f"hotpotqa:{MISSING}.json", "--out", "OUT/t.jsonl"), ("cannot open dataset file",)),
    Case(("synth", "--data", "musique:{DIR}", "--out", "OUT/t.jsonl"), ("cannot open dataset file",)),
    Case(("synth", "--data", "hotpotqa:{EMPTY}", "--out", "OUT/t.jsonl"), ("is empty",)),
    Case(("synth", "--data", "musique:{HOTPOT}", "--out", "OUT/t.jsonl"), ("none of its 2 rows is a musique row",)),
    Case(("synth", "--data", "hotpotqa:{HOTPOT}", "--out", "{HOTPOT}"), ("would overwrite the dataset",)),
    Case(("synth", "--data", "hotpotqa:{ARRAY_EMPTY}", "--out", "OUT/t.jsonl"), ("holds no rows",)),
    Case(("synth", "--data", "hotpotqa:{BINARY}", "--out", "OUT/t.jsonl"), ("neither a JSON array nor JSON Lines",)),
    Case(("synth", "--out", "{FOREIGN}"), ("not a traces file this command was writing", "nothing was changed")),
    Case(("synth", "--set", "world.n_train=40000", "--out", "OUT/t.jsonl"), ("embedded world cannot provide",)),
    Case(("sft", "--traces", f"{MISSING}.jsonl", "--out", "OUT/sft"), ("does not exist",)),
    Case(("sft", "--traces", "{EMPTY}", "--out", "OUT/sft"), ("no usable trace",)),
    Case(("sft", "--traces", "{HOTPOT}", "--out", "OUT/sft"), ("no usable trace",)),
    Case(("sft", "--traces", "{EMPTY}", "--out", "OUT/sft", "--set", "model.path=" + MISSING), (MISSING,)),
    Case(("eval", "--model", MISSING, "--out", "OUT/eval"), (MISSING, "not a directory")),
    Case(("eval", "--model", "x={DIR}", "--out", "OUT/eval"), ("config.json",)),
    Case(("eval", "--model", "{NOWEIGHTS}", "--out", "OUT/eval"), ("no weights",)),
    Case(("eval", "--data", "musique:{HOTPOT}", "--out", "OUT/eval"), ("none of its 2 rows is a musique row",)),
    Case(("eval", "--model", "a={NOWEIGHTS}", "--model", "b={DIR}"), ("no weights",)),
    Case(("grpo", "--model", MISSING, "--out", "OUT/grpo"), (MISSING,)),
    Case(("run", "--set", f"data.train=['hotpotqa:{MISSING}.json']"), ("cannot open dataset file",)),
    Case(("run", "--set", "data.eval=['musique:{HOTPOT}']"), ("none of its 2 rows is a musique row",)),
    Case(("run", "--set", "model.path=" + MISSING), (MISSING,)),
    Case(("serve", MISSING), (MISSING,)),
    Case(("simulator", "train", "--data", "musique:{HOTPOT}", "--out", "OUT/tm"), ("none of its 2 rows",)),
    Case(("simulator", "train", "--set", "toolmodel.base_model=" + MISSING, "--out", "OUT/tm"), (MISSING,)),
    Case(("simulator", "train", "--out", "{UNFINISHED}"), ("unfinished run", "--resume", "--force")),
    Case(("config", "show", "--set", "toolmodel.save_every=-1"), ("toolmodel.save_every",)),
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    hotpot_row = {"_id": "h", "question": "q?", "answer": "a", "context": [["T", ["s."]]], "supporting_facts": []}
    made = {
        "EMPTY": tmp_path / "empty.jsonl",
        "HOTPOT": tmp_path / "hotpot.jsonl",
        "ARRAY_EMPTY": tmp_path / "array.json",
        "BINARY": tmp_path / "random.jsonl",
        "FOREIGN": tmp_path / "foreign.jsonl",
        "DIR": tmp_path / "a-directory",
        "NOWEIGHTS": tmp_path / "ckpt",
        "UNFINISHED": tmp_path / "toolmodel",
    }
    made["EMPTY"].write_text("")
    made["HOTPOT"].write_text(json.dumps(hotpot_row) + "\n" + json.dumps({**hotpot_row, "_id": "h2"}) + "\n")
    made["ARRAY_EMPTY"].write_text("[]")
    made["BINARY"].write_bytes(bytes(range(256)) * 8)
    made["FOREIGN"].write_text("".join(json.dumps({"row": i}) + "\n" for i in range(4)))
    made["DIR"].mkdir()
    made["NOWEIGHTS"].mkdir()
    (made["NOWEIGHTS"] / "config.json").write_text('{"model_type": "llama"}')
    (made["NOWEIGHTS"] / "tokenizer.json").write_text("{}")
    (made["UNFINISHED"] / "checkpoints" / "step-000050").mkdir(parents=True)
    (made["UNFINISHED"] / "checkpoints" / "step-000050" / "trainer_state.json").write_text('{"step": 50}')
    return {name: str(path) for name, path in made.items()} | {"OUT": str(tmp_path / "out")}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(case: Case, files: dict[str, str], tmp_path: Path, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = [arg.format(**files) if "{" in arg else arg.replace("OUT", files["OUT"]) for arg in case.argv]
    before = _snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    captured = capsys.readouterr()
    message = captured.err + captured.out
    after = _snapshot(tmp_path)
    changed = [path for path, content in before.items() if after.get(path) != content]
    assert not changed, f"bad input changed or removed files that existed before: {changed}"
    assert not (tmp_path / "runs").exists(), "a run directory was created for bad input"
    return code, message


@pytest.mark.parametrize("case", CONFIG_CASES + COMMAND_CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly_and_changes_nothing(case, files, tmp_path, capsys, monkeypatch):
    code, message = _run(case, files, tmp_path, capsys, monkeypatch)
    assert code == case.exit_code, message
    for words in case.words:
        assert words in message, f"{words!r} not in: {message}"
    assert "Traceback" not in message


def test_the_suite_is_large_enough_to_mean_something():
    assert len(CONFIG_CASES) + len(COMMAND_CASES) >= 150
