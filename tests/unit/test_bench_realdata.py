"""bench.realdata: which files it trains and evaluates on, how it calls `mtr run`, and the per-dataset table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.realdata import SAMPLES, data_specs, finished_run, gains_table, run_arguments


def test_every_sample_is_listed_and_a_missing_one_is_named(tmp_path):
    for relative in SAMPLES.values():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("[]")
    specs = data_specs(tmp_path)
    assert specs[0] == "synthetic" and [s.split(":", 1)[0] for s in specs[1:]] == list(SAMPLES)
    (tmp_path / SAMPLES["musique"]).unlink()
    with pytest.raises(SystemExit, match="musique sample .* not found"):
        data_specs(tmp_path)


def test_the_same_files_train_and_evaluate_so_the_run_splits_them():
    argv = run_arguments(["synthetic", "hotpotqa:/d/h.json"], Path("runs/x"), ["grpo.steps=2"])
    assert "data.train=[synthetic,hotpotqa:/d/h.json]" in argv and "data.eval=[synthetic,hotpotqa:/d/h.json]" in argv
    assert argv[-2:] == ["--set", "grpo.steps=2"] and "runs_dir=runs/x" in argv


def test_the_newest_finished_run_is_recorded(tmp_path):
    assert finished_run(tmp_path) is None
    for stamp in ("realdata-20260101-000000", "realdata-20260102-000000"):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "report.md").write_text("#")
    (tmp_path / "realdata-20260103-000000").mkdir()  # started, never finished
    assert finished_run(tmp_path).name == "realdata-20260102-000000"


def test_table_gives_sft_and_grpo_em_and_the_paired_gain_per_dataset():
    document = {
        "rows": [
            {"dataset": "musique", "stage": "sft", "em": 0.1, "em_ci": [0.05, 0.15]},
            {"dataset": "musique", "stage": "grpo", "em": 0.12, "em_ci": [0.06, 0.18]},
        ],
        "gains": [
            {"dataset": "musique", "before": "base", "after": "sft", "gain": 0.1, "n_paired": 24, "gain_ci": [0, 0.2]},
            {
                "dataset": "musique",
                "before": "sft",
                "after": "grpo",
                "gain": 0.02,
                "n_paired": 100,
                "gain_ci": [-0.01, 0.05],
            },
        ],
    }
    table = gains_table(document)
    assert "| musique | 100 | 0.100 [0.050, 0.150] | 0.120 [0.060, 0.180] | +0.020 [-0.010, +0.050] |" in table
    assert table.count("| musique |") == 1
