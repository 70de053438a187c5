"""A run that fails keeps what it did: config, metrics with the error, and a report naming what finished."""

import json

import pytest

from controller.cluster.simfarm import SimulatorFarmError
from controller.stages.pipeline import Pipeline, sft_questions
from mtr.config import load_config
from mtr.task import Task


def test_simulator_that_cannot_start_fails_clearly_and_keeps_the_run_dir(tmp_path):
    # A non-loopback bind without --allow-remote makes the replica exit before it is ready.
    config = load_config(overrides=[f"runs_dir={tmp_path}", "simulator.host=0.0.0.0"])
    pipeline = Pipeline(config, model_path="unused-before-ray")
    with pytest.raises(SimulatorFarmError, match="exited"):
        pipeline.run()
    run_dir = pipeline.run_dir.path
    assert (run_dir / "config.yaml").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "error" and "SimulatorFarmError" in records[-1]["error"]
    assert "no evaluation finished" in (run_dir / "report.md").read_text()
    assert "allow-remote" in (run_dir / "logs" / "simulator-0.log").read_text()


def test_task_without_question_or_answer_is_rejected_with_its_id():
    with pytest.raises(ValueError, match="'q7' has an empty question"):
        Task("q7", "   ", ("x",))
    with pytest.raises(ValueError, match="'q8' has no gold answer"):
        Task("q8", "Who?", ())


def test_sft_traces_are_written_for_the_first_questions_of_each_dataset():
    train = [Task(f"s{i}", "q?", ("a",), source="synthetic") for i in range(5)]
    train += [Task(f"h{i}", "q?", ("a",), source="hotpotqa") for i in range(3)]
    assert [t.id for t in sft_questions(train, 2)] == ["s0", "s1", "h0", "h1"]
    assert sft_questions(train, None) == train


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("data.train=['hotpotqa:/nonexistent/hotpot.jsonl']", "/nonexistent/hotpot.jsonl"),
        ("data.eval=['musique:{bad}']", "none of its 1 rows is a musique row"),
    ],
)
def test_mtr_run_checks_its_data_before_anything_starts(tmp_path, capsys, override, words):
    from controller.commands.run import run

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "nothing": 1}\n')
    config = load_config(overrides=[f"runs_dir={tmp_path / 'runs'}", override.format(bad=bad)])
    assert run(config) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no run directory, no services: nothing started


def test_a_world_too_small_for_the_config_is_named_not_a_traceback(tmp_path, capsys):
    from controller.commands.run import run

    config = load_config(overrides=[f"runs_dir={tmp_path}", "world.n_train=40000"])
    assert run(config) == 2
    assert "world.n_train, world.n_eval): embedded world cannot provide n_train=40000" in capsys.readouterr().err
