import re
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
        load_config(overrides=["learner.precision=float32", "model.dtype=bfloat16"])
    config = load_config(overrides=["learner.precision=float32", "model.dtype=float32"])
    assert config.model.dtype == "float32"


def test_farm_placement_defaults_follow_the_cluster():
    assert load_config().simulator_placement == "local"
    on_cluster = load_config(overrides=["cluster.ray_address=auto"])
    assert on_cluster.simulator_placement == "ray"
    external = load_config(overrides=["cluster.ray_address=auto", "simulator.addresses=[mtr-simulator:50051]"])
    assert external.simulator_placement == "external"
    pinned = load_config(overrides=["simulator.placement=local", "cluster.ray_address=auto"])
    assert pinned.simulator_placement == "local"


def test_farm_placement_rules_name_the_key():
    with pytest.raises(ConfigError, match=r"simulator: .*needs addresses"):
        load_config(overrides=["simulator.placement=external"])
    with pytest.raises(ConfigError, match=r"simulator: .*only used with placement 'external'"):
        load_config(overrides=["simulator.placement=ray", "simulator.addresses=[h:1]"])
    with pytest.raises(ConfigError, match=r"simulator\.addresses\.0: .*not host:port"):
        load_config(overrides=["simulator.addresses=[no-port]"])
    with pytest.raises(ConfigError, match=r"simulator\.resources only place Ray actors.*'local'"):
        load_config(overrides=["simulator.resources={simulator: 1}"])
    config = load_config(overrides=["simulator.placement=ray", "simulator.resources={simulator: 1}"])
    assert config.simulator.resources == {"simulator": 1.0}


def test_role_resources_are_custom_and_positive():
    config = load_config(overrides=["rollout.resources={rollout: 1}", "learner.resources={learner: 0.5}"])
    assert config.rollout.resources == {"rollout": 1.0} and config.learner.resources == {"learner": 0.5}
    with pytest.raises(ConfigError, match=r"rollout\.resources: .*'GPU' is not a custom resource"):
        load_config(overrides=["rollout.resources={GPU: 1}"])
    with pytest.raises(ConfigError, match=r"learner\.resources\.learner: .*greater than 0"):
        load_config(overrides=["learner.resources={learner: 0}"])
    group = load_config(overrides=["learner.resources={learner: 1}", "learner.world_size=2"])
    assert group.learner.resources == {"learner": 1.0}  # each rank of the group reserves it


def test_cluster_address_from_flag_or_environment(monkeypatch):
    with pytest.raises(ConfigError, match=r"cluster: .*num_cpus sizes a local Ray"):
        load_config(overrides=["cluster.ray_address=auto", "cluster.num_cpus=2"])
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    args = build_parser().parse_args(["run"])
    assert resolve_config(args).cluster.ray_address == "10.0.0.1:6379"  # as under `ray job submit`
    args = build_parser().parse_args(["synth", "--ray-address", "ray://head:10001"])
    assert resolve_config(args).cluster.ray_address == "ray://head:10001"  # the flag wins
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_config(build_parser().parse_args(["run"])).cluster.ray_address is None


def test_a_model_tool_actor_needs_its_checkpoint_and_noise_needs_a_model_actor():
    from mtr.config import ConfigError, load_config

    config = load_config(overrides=["simulator.actor=model", "simulator.actor_model=runs/toolmodel/checkpoints/final"])
    assert config.simulator.noise.share(0, 10) == 0.0
    with pytest.raises(ConfigError, match="simulator.actor_model"):
        load_config(overrides=["simulator.actor=model"])
    with pytest.raises(ConfigError, match="needs simulator.actor 'model'"):
        load_config(overrides=["simulator.noise.end=0.5"])
    with pytest.raises(ConfigError, match="noise"):
        load_config(overrides=["simulator.actor=model", "simulator.actor_model=x", "simulator.noise.end=1.5"])
    noisy = load_config(overrides=["simulator.actor=model", "simulator.actor_model=x", "simulator.noise.end=0.5"])
    assert [noisy.simulator.noise.share(s, 3) for s in range(3)] == [0.0, 0.25, 0.5]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("reward.w_answer=.inf", "reward.w_answer: Input should be a finite number"),
        ("learner.weight_decay=.nan", "learner.weight_decay: Input should be a finite number"),
        ("grpo.lr=-.inf", "grpo.lr: Input should be a finite number"),
        ("name=../../etc", "name: String should match pattern"),
    ],
)
def test_numbers_are_finite_and_the_run_name_is_a_name(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        load_config(overrides=[override])
    assert "(--set)" in str(caught.value)  # the override, not the defaults, was wrong


def test_a_directory_given_as_config_is_called_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; --config takes a YAML file"):
        load_config(tmp_path)
