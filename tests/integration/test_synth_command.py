"""`mtr synth` end to end on a real simulator farm: acceptance per dataset, bad rows, resume, a dead teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtr.cli import main
from mtr.grammar import from_openai

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MUSIQUE = DATA / "musique" / "musique_ans_dev_sample.jsonl"


@pytest.fixture
def musique_with_a_bad_row(tmp_path) -> Path:
    if not MUSIQUE.is_file():
        pytest.skip(f"benchmark sample {MUSIQUE} is absent (expected in ../shared/data next to the repository)")
    lines = MUSIQUE.read_text().splitlines()[:4]
    path = tmp_path / "musique.jsonl"
    path.write_text("\n".join([lines[0], '{"id": "broken", "question": ', *lines[1:]]) + "\n")
    return path


def _ledger(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.with_name("traces.ledger.jsonl").read_text().splitlines()]


def test_synth_counts_acceptance_per_dataset_skips_bad_rows_and_resumes(tmp_path, musique_with_a_bad_row):
    out = tmp_path / "traces.jsonl"
    argv = ["synth", "--data", "synthetic", "--data", f"musique:{musique_with_a_bad_row}", "--out", str(out)]
    argv += ["--set", f"runs_dir={tmp_path}"]
    assert main([*argv, "--limit", "2"]) == 0

    report = json.loads(out.with_name("traces.report.json").read_text())
    assert report["teacher"] == "oracle"
    assert report["skipped_rows"] == {"synthetic": 0, "musique": 1}  # line 2 of the file
    assert {name: stats["attempted"] for name, stats in report["datasets"].items()} == {"synthetic": 2, "musique": 2}
    accepted = sum(stats["accepted"] for stats in report["datasets"].values())
    assert accepted >= 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == accepted
    trace = from_openai(records[0])  # OpenAI chat layout with tools, tool_calls and tool messages
    assert trace.tool_calls and records[0]["tools"] and any(m["role"] == "tool" for m in records[0]["messages"])

    first = _ledger(out)
    assert main([*argv, "--limit", "3"]) == 0  # resumes: only the third question of each dataset is new
    second = _ledger(out)
    assert second[: len(first)] == first and len(second) == len(first) + 2
    assert len({e["key"] for e in second}) == len(second)


def test_synth_fails_on_a_bad_row_when_asked(tmp_path, musique_with_a_bad_row, capsys):
    out = tmp_path / "traces.jsonl"
    code = main(["synth", "--data", f"musique:{musique_with_a_bad_row}", "--on-error", "fail", "--out", str(out)])
    assert code == 2
    assert f"{musique_with_a_bad_row}: line 2" in capsys.readouterr().err


def test_an_unreachable_teacher_stops_synthesis_and_keeps_what_was_decided(tmp_path, free_port, capsys):
    out = tmp_path / "traces.jsonl"
    assert main(["synth", "--data", "synthetic", "--limit", "2", "--out", str(out)]) == 0
    before = out.read_text()
    argv = ["synth", "--data", "synthetic", "--limit", "3", "--out", str(out), "--teacher", "llm"]
    argv += ["--llm-url", f"http://127.0.0.1:{free_port}", "--llm-model", "m"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{free_port}" in err and "resume" in err
    assert out.read_text() == before and len(_ledger(out)) == 2
