"""The shared core stays light: importing it (and the controller's CLI) never pulls in torch, vLLM or Ray."""

import subprocess
import sys

LIGHT_MODULES = [
    "mtr.cli",
    "mtr.config",
    "mtr.task",
    "mtr.grammar",
    "mtr.toolschema",
    "mtr.answers",
    "mtr.world",
    "mtr.simclient",
    "mtr.serviceclients",
    "mtr.broadcast",
    "mtr.placement",
    "mtr.weights",
    "mtr.modelprep",
    "mtr.datasets",
    "mtr.hubdatasets",
    "mtr.metricsendpoint",
    "controller.scoring.reward",
    "controller.scoring.advantages",
    "controller.stages.autoagent",
]


def test_core_imports_no_heavy_frameworks():
    code = (
        "import sys\n"
        f"for name in {LIGHT_MODULES!r}: __import__(name)\n"
        "heavy = sorted(m for m in ('torch', 'vllm', 'ray', 'deepspeed', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported by the core: {out.stdout.strip()}"


def test_cli_help_is_instant_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "mtr.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "model", "simulator", "config"):
        assert command in out.stdout
