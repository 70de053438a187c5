"""`auto` precision: bf16 only where the hardware computes it, with the reason recorded (capability mocked)."""

import logging

import pytest

from mtr import hardware
from mtr.config import ConfigError, load_config


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU-only machine with the given capability."""

    def set_capability(capability: str) -> None:
        monkeypatch.setattr(hardware, "_cuda_bf16", lambda: None)
        monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)

    return set_capability


@pytest.mark.parametrize("capability", ["AVX2", "AVX512", "DEFAULT"])
def test_auto_is_float32_where_bf16_is_emulated(cpu, capability):
    cpu(capability)
    choice = hardware.choose_precision("auto")
    assert choice.dtype == "float32"
    assert capability in choice.reason and "emulated" in choice.reason


@pytest.mark.parametrize("capability", ["AVX512_BF16", "AMX"])
def test_auto_is_bfloat16_where_the_cpu_computes_it(cpu, capability):
    cpu(capability)
    choice = hardware.choose_precision("auto")
    assert (choice.dtype, choice.capability) == ("bfloat16", capability)
    assert "native" in choice.reason


def test_auto_on_cuda_follows_the_device(monkeypatch):
    monkeypatch.setattr(hardware, "_cuda_bf16", lambda: True)
    assert hardware.choose_precision("auto").dtype == "bfloat16"
    monkeypatch.setattr(hardware, "_cuda_bf16", lambda: False)
    assert hardware.choose_precision("auto").dtype == "float32"


def test_gpus_requested_from_ray_mean_bf16_even_on_a_cpu_head_node(cpu):
    cpu("AVX2")
    choice = hardware.choose_precision("auto", wants_gpu=True)
    assert (choice.dtype, choice.capability) == ("bfloat16", "CUDA")


def test_explicit_bf16_on_emulating_cpu_runs_with_a_warning_naming_the_cost(cpu, caplog):
    cpu("AVX2")
    with caplog.at_level(logging.WARNING, logger="mtr.hardware"):
        choice = hardware.choose_precision("bfloat16")
    assert choice.dtype == "bfloat16"
    assert "slower than fp32" in caplog.text and "AVX2" in caplog.text


def test_explicit_float32_is_kept_on_a_bf16_cpu(cpu):
    cpu("AMX")
    assert hardware.choose_precision("float32").dtype == "float32"


def test_resolved_run_config_is_concrete_and_carries_its_reason(cpu):
    cpu("AVX2")
    config = hardware.resolve_precision(load_config())
    assert (config.model.dtype, config.learner.precision) == ("float32", "float32")
    assert config.precision_choice.requested == "auto" and "AVX2" in config.precision_choice.reason


def test_auto_beside_an_explicit_value_follows_it(cpu):
    cpu("AMX")
    config = hardware.resolve_precision(load_config(overrides=["model.dtype=float32"]))
    assert (config.model.dtype, config.learner.precision) == ("float32", "float32")


def test_two_different_explicit_values_still_fail():
    with pytest.raises(ConfigError, match="must equal model.dtype"):
        load_config(overrides=["model.dtype=float32", "learner.precision=bfloat16"])


def test_concrete_dtype_passes_explicit_values_through(cpu):
    cpu("AVX2")
    assert hardware.concrete_dtype("bfloat16") == "bfloat16"
    assert hardware.concrete_dtype("auto") == "float32"


def test_machine_description_names_cpu_capability_cores_and_versions():
    machine = hardware.describe_machine()
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["cpu_capability"]
    assert machine["torch"]
