"""What every config section shares: strict models (unknown keys and inf/NaN refused), the error type, and the
validated types several sections use (Ray resources, host:port)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


class Strict(BaseModel):
    # inf and NaN are never a meaningful setting: an infinite reward weight turns every reward into NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _custom_resources(resources: dict[str, float]) -> dict[str, float]:
    for name in resources:
        if not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(f"{name!r} is not a custom resource; CPUs and GPUs have their own num_* fields")
    return resources


# Custom Ray resources a role instance reserves, e.g. {"simulator": 1}: nodes started with
# `ray start --resources '{"simulator": 8}'` are the only ones that can host it.
Resources = Annotated[dict[str, Annotated[float, Field(gt=0)]], AfterValidator(_custom_resources)]


def host_port(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return address
