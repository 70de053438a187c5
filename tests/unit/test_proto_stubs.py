"""Generated stubs in mtr/v1 must match proto/ exactly: regenerate into a temp dir and compare bytes."""

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stubs_are_fresh(tmp_path: Path):
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto" / "mtr" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    generated = sorted(p.name for p in (tmp_path / "mtr" / "v1").iterdir())
    stale = [
        name
        for name in generated
        if not filecmp.cmp(tmp_path / "mtr" / "v1" / name, ROOT / "mtr" / "v1" / name, shallow=False)
    ]
    assert not stale, f"stale generated stubs (run `make proto`): {stale}"


def test_proto_is_not_an_importable_package():
    # proto-plus (installed with the vLLM stack) owns the top-level module name `proto`.
    assert not (ROOT / "proto" / "__init__.py").exists()
