import json

from bench import grpo_sweep, sft_control, sft_plateau
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
    assert "has no eval.json and no traces" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_grpo_run_is_recomputed_from_its_per_question_traces(tmp_path):
    run = tmp_path / "grpo"
    (run / "traces").mkdir(parents=True)
    rows = [("step-0", "a", 0), ("step-0", "b", 1), ("step-0", "c", 0), ("step-8", "a", 1), ("step-8", "b", 1)]
    (run / "traces" / "eval.jsonl").write_text(
        "\n".join(json.dumps({"stage": s, "dataset": "w", "task_id": t, "exact_match": em}) for s, t, em in rows)
    )
    step = {"event": "grpo", "step": 0, "reward": 0.8, "groups_kept": 4, "weights_changed_fraction": 0.03}
    (run / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    document, text = record(run)
    assert [(r["stage"], r["n"], round(r["em"], 3)) for r in document["rows"]] == [
        ("step-0", 3, 0.333),
        ("step-8", 2, 1.0),
    ]
    [gain] = document["gains"]
    assert (gain["from"], gain["to"], gain["n_paired"], gain["gain"]) == ("step-0", "step-8", 2, 0.5)  # a: 0 -> 1
    assert document["grpo_steps"][0]["groups_kept"] == 4 and "step-8" in text


def test_the_grpo_sweep_records_each_variant_with_its_gain_and_hops(tmp_path):
    name = next(iter(grpo_sweep.VARIANTS))
    run = tmp_path / "sweep" / name
    (run / "traces").mkdir(parents=True)
    rows = [("step-0", "a", 2, 0), ("step-0", "b", 3, 1), ("step-6", "a", 2, 1), ("step-6", "b", 3, 1)]
    (run / "traces" / "eval.jsonl").write_text(
        "\n".join(
            json.dumps({"stage": s, "dataset": "w", "task_id": t, "hops": h, "exact_match": em}) for s, t, h, em in rows
        )
    )
    out = tmp_path / "results"
    argv = ["--record-only", "--variants", name, "--out-root", str(tmp_path / "sweep"), "--out-dir", str(out)]
    assert grpo_sweep.main(argv) == 0
    variant = json.loads((out / "grpo_sweep.json").read_text())["variants"][name]
    assert variant["gain_last_over_first"]["gain"] == 0.5
    assert variant["by_hops"] == {"step-0": {"2": 0.0, "3": 1.0}, "step-6": {"2": 1.0, "3": 1.0}}
    assert name in (out / "grpo_sweep.md").read_text()


def test_the_sft_plateau_table_reads_losses_and_shows_each_quarter(tmp_path):
    lines = [{"event": "sft", "step": s, "loss": 1.0 / (s + 1)} for s in range(4)] + [{"event": "stage", "name": "x"}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert sft_plateau.losses(tmp_path) == {0: 1.0, 1: 0.5, 2: 1 / 3, 3: 0.25}
    gain = {"gain": 0.05, "gain_ci": [-0.01, 0.11], "n_paired": 200}
    rows = [
        {"steps": 2, "loss": 0.5, "em": 0.6, "em_ci": [0.53, 0.67], "gain_over_previous": None},
        {"steps": 4, "loss": 0.25, "em": 0.65, "em_ci": [0.58, 0.72], "gain_over_previous": gain},
    ]
    table = sft_plateau.markdown({"checkpoints": rows})
    assert "| 4 | 0.2500 | 0.650 [0.580, 0.720] | +0.050 [-0.010, +0.110] |" in table


def test_the_sft_control_gets_grpo_training_time_and_compares_paired(tmp_path):
    grpo = tmp_path / "grpo"
    (grpo / "traces").mkdir(parents=True)
    events = [{"event": "eval", "step": 0, "seconds": 999.0}]
    events += [{"event": "grpo", "step": s, "rollout_seconds": 40.0, "learner_seconds": 60.0} for s in range(4)]
    events += [{"event": "weight_sync", "step": s, "publish_seconds": 1.0, "load_seconds": 0.5} for s in (1, 2, 3, 4)]
    (grpo / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    rows = [("step-0", t, em) for t, em in zip("abcd", (0, 0, 1, 1), strict=True)] + [
        ("step-2", t, em) for t, em in zip("abcd", (1, 1, 1, 1), strict=True)
    ]
    (grpo / "traces" / "eval.jsonl").write_text(
        "\n".join(json.dumps({"stage": s, "task_id": t, "exact_match": em}) for s, t, em in rows) + "\n"
    )
    stages = sft_control.question_em(grpo / "traces" / "eval.jsonl")
    assert sft_control._last_stage(stages) == ("step-2", 2)
    assert sft_control.grpo_training_seconds(grpo, 2) == 2 * 100.0 + 2 * 1.5  # steps 0-1, the syncs after them
    sft = tmp_path / "sft"
    sft.mkdir()
    sft_events = [{"event": "sft", "step": s, "seconds": x} for s, x in enumerate((30.0, 10.0, 12.0))]
    (sft / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in sft_events) + "\n")
    assert sft_control.sft_seconds_per_step(sft) == 12.0
    comparison = sft_control.compare(stages, {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0})
    assert comparison["grpo"]["stage"] == "step-2" and comparison["grpo"]["em"] == 1.0
    assert comparison["grpo_minus_control"]["gain"] == 0.25 and comparison["control_minus_start"]["gain"] == 0.25
    document = {"grpo_seconds": 203.0, "control_steps": 17, "control_traces": 400, "control_seconds": 210.0}
    table = sft_control.markdown({**document, "comparison": comparison})
    assert "SFT continued, 17 steps on 400 traces | 210 s | 0.750" in table and "GRPO − control: +0.250" in table


def test_the_grpo_curve_reads_steps_and_pairs_every_evaluation_with_the_start(tmp_path):
    from bench import grpo_curve

    run = tmp_path / "run"
    (run / "traces").mkdir(parents=True)
    steps = [{"event": "grpo", "step": s, "reward": 0.5 + s, "exact_match": 0.1, "groups_kept": 3} for s in range(2)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in [*steps, {"event": "eval"}]) + "\n")
    rows = [("step-0", "a", 0), ("step-0", "b", 1), ("step-10", "a", 1), ("step-10", "b", 1)]
    (run / "traces" / "eval.jsonl").write_text(
        "\n".join(json.dumps({"stage": s, "task_id": t, "exact_match": em}) for s, t, em in rows) + "\n"
    )
    (run / "grpo_curve.json").write_text(json.dumps({"rewards": [[0, 0.5], [1, 1.5]], "exact_match": []}))
    assert [s["reward"] for s in grpo_curve.per_step(run)] == [0.5, 1.5]
    evaluations = grpo_curve.evaluated(run)
    assert [(e["step"], e["em"], e["gain_over_start"]) for e in evaluations] == [(0, 0.5, 0.0), (10, 1.0, 0.5)]
    assert grpo_curve.main(["--run", str(run), "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "grpo_curve.png").stat().st_size > 0
    assert "| 10 | 1.000" in (tmp_path / "out" / "grpo_curve.md").read_text()
