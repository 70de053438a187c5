from pathlib import Path

import pytest

from mtr.cli import build_parser, resolve_config
from mtr.config import ConfigError, RunConfig, dump_config, load_config


def test_defaults_validate():
    config = load_config()
    assert isinstance(config, RunConfig)
    assert config.rollout.group_size >= 2


def test_unknown_key_is_named(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"learner\.lrr"):
        load_config(path)


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"rollout\.group_size"):
        load_config(overrides=["rollout.group_size=1"])


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="eval.questions"):
        load_config(overrides=["world.n_eval=4", "eval.questions=8"])


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_override_types_and_round_trip(tmp_path: Path):
    config = load_config(overrides=["learner.lr=1e-4", "model.path=/some/dir", "grpo.lr=null"])
    assert config.learner.lr == pytest.approx(1e-4)
    assert config.grpo.lr is None
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_quick_profile_and_every_shipped_profile_load():
    args = build_parser().parse_args(["run", "--quick", "--set", "sft.steps=3"])
    config = resolve_config(args)
    assert config.name == "mtr-quick"
    assert config.sft.steps == 3
    profiles = Path(__file__).resolve().parents[2] / "mtr" / "profiles"
    for profile in profiles.glob("*.yaml"):
        load_config(profile)


def test_learner_and_engine_dtypes_must_agree():
    with pytest.raises(ConfigError, match="learner.precision"):
        load_config(overrides=["learner.precision=float32"])
    config = load_config(overrides=["learner.precision=float32", "model.dtype=float32"])
    assert config.model.dtype == "float32"
