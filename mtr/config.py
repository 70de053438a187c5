"""Typed, validated configuration for a whole MTR run: one sub-config per service (`mtr.config_services`)
and per stage (`mtr.config_stages`), all importable from here.

Loaded from a YAML file plus dotted overrides (`learner.lr=1e-5`); unknown keys and bad values fail
with the offending key in the message. The resolved config is written into every run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from mtr.config_base import ConfigError, Resources, Strict
from mtr.config_services import (
    ClusterConfig,
    LearnerConfig,
    LoRAConfig,
    ModelConfig,
    NoiseSchedule,
    RolloutConfig,
    SimulatorConfig,
    WorldConfig,
)
from mtr.config_stages import (
    CurriculumConfig,
    DataConfig,
    EvalConfig,
    GRPOConfig,
    RewardConfig,
    SFTConfig,
    SynthConfig,
    ToolModelConfig,
)

# The sections are defined beside this module and imported from here by everyone.
__all__ = [
    "ClusterConfig",
    "ConfigError",
    "CurriculumConfig",
    "DataConfig",
    "EvalConfig",
    "GRPOConfig",
    "LearnerConfig",
    "LoRAConfig",
    "ModelConfig",
    "NoiseSchedule",
    "Resources",
    "RewardConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "SimulatorConfig",
    "SynthConfig",
    "ToolModelConfig",
    "WorldConfig",
    "dump_config",
    "load_config",
    "parse_override",
]


class RunConfig(Strict):
    name: str = Field(
        "mtr",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Run name; the run directory is <runs_dir>/<name>-<timestamp>. Letters, digits, '_', '.', '-' "
        "(no path separators: it names a directory inside runs_dir).",
    )
    runs_dir: str = Field("runs", description="Parent of run directories.")
    seed: int = 0
    model: ModelConfig = ModelConfig()
    world: WorldConfig = WorldConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    data: DataConfig = DataConfig()
    synth: SynthConfig = SynthConfig()
    sft: SFTConfig = SFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    reward: RewardConfig = RewardConfig()
    eval: EvalConfig = EvalConfig()
    cluster: ClusterConfig = ClusterConfig()
    toolmodel: ToolModelConfig = ToolModelConfig()
    _precision: Any = PrivateAttr(None)  # mtr.hardware.PrecisionChoice once `auto` is resolved

    @property
    def precision_choice(self) -> Any:
        """How model.dtype / learner.precision were chosen (mtr.hardware.resolve_precision), or None."""
        return self._precision

    def set_precision_choice(self, choice: Any) -> None:
        self._precision = choice

    @model_validator(mode="after")
    def _rollout_runs_the_learners_weights(self) -> RunConfig:
        # Measured: an fp32 learner broadcasting into a bf16 engine loses small fine-tuning updates to
        # rounding, and the engine then behaves like an older policy than the learner's.
        if "auto" not in (self.learner.precision, self.model.dtype) and self.learner.precision != self.model.dtype:
            raise ValueError(
                f"learner.precision ({self.learner.precision}) must equal model.dtype ({self.model.dtype}): "
                "the rollout engine would otherwise round away the learner's updates"
            )
        return self

    @property
    def simulator_placement(self) -> Literal["local", "ray", "external"]:
        """simulator.placement with 'auto' resolved (see its description)."""
        if self.simulator.placement != "auto":
            return self.simulator.placement
        if self.simulator.addresses:
            return "external"
        return "ray" if self.cluster.ray_address else "local"

    @model_validator(mode="after")
    def _farm_resources_need_ray(self) -> RunConfig:
        if self.simulator.resources and self.simulator_placement != "ray":
            raise ValueError(
                f"simulator.resources only place Ray actors, but the farm's placement is {self.simulator_placement!r}"
                " (set simulator.placement=ray)"
            )
        return self

    @model_validator(mode="after")
    def _eval_fits_world(self) -> RunConfig:
        if self.eval.questions is not None and self.eval.questions > self.world.n_eval:
            raise ValueError(f"eval.questions ({self.eval.questions}) exceeds world.n_eval ({self.world.n_eval})")
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`learner.lr=1e-5` -> ("learner.lr", 1e-05); the value is read as YAML so types come out right."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _format_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """Merge `base` (a profile), the YAML file at `path` and dotted overrides, then validate."""
    tree: dict[str, Any] = dict(base or {})
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; --config takes a YAML file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        tree = _deep_merge(tree, loaded)
        origin = str(path)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    if overrides:
        origin = f"{origin} + --set" if origin != "defaults" else "--set"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
