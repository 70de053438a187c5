import json

from bench.record_run import main, record


def _run_dir(tmp_path):
    run = tmp_path / "mtr-1"
    run.mkdir()
    (run / "config.yaml").write_text("# machine: CPU X (AVX2), 2 cores\n# precision: float32 (auto)\nseed: 0\n")
    lines = [
        {"event": "stage", "name": "sft", "seconds": 12.5, "cores_busy": 1.7},
        {"event": "eval", "stage": "sft"},
        {"event": "stage", "name": "grpo", "seconds": 30.0, "cores_busy": 1.8},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (run / "eval.json").write_text(json.dumps({"rows": [{"stage": "sft", "em": 0.5}], "gains": [], "pass_at_k": []}))
    (run / "report.md").write_text("# report\n")
    return run


def test_a_run_is_recorded_with_its_machine_and_stage_times(tmp_path):
    document, text = record(_run_dir(tmp_path), wall_seconds=99.0)
    assert document["provenance"] == {"machine": "CPU X (AVX2), 2 cores", "precision": "float32 (auto)"}
    assert document["stages"]["sft"] == {"seconds": 12.5, "cores_busy": 1.7}
    assert set(document["stages"]) == {"sft", "grpo"}
    assert document["rows"] == [{"stage": "sft", "em": 0.5}] and document["command_wall_seconds"] == 99.0
    assert text == "# report\n"


def test_a_directory_that_is_not_a_run_is_refused_with_a_message(tmp_path, capsys):
    assert main([str(tmp_path), "--name", "x", "--out-dir", str(tmp_path / "out")]) == 2
    assert "has no eval.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
