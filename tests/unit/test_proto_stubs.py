"""Generated stubs in mtr/v1 must match proto/: regenerate into a temp dir and compare what the stubs define.

Compared: each `_pb2` module's serialized FileDescriptorProto (messages, fields, enums, services, methods,
options), each `_pb2_grpc` module's classes, method names and RPC wiring (paths, kinds, request and response
types), and each `.pyi`'s classes and annotated names. Not compared: the generators' version stamps
(`GRPC_GENERATED_VERSION`, `Protobuf Python Version`, the runtime version checks), which change with
grpcio-tools alone.
"""

import ast
import difflib
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, text_format

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "mtr" / "v1"
RPC_CALLS = {"unary_unary", "unary_stream", "stream_unary", "stream_stream"}


def _generate(out: Path) -> Path:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto" / "mtr" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    return out / "mtr" / "v1"


def _file_descriptor(path: Path) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto a `_pb2` module registers, read from its source without importing it."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        candidates = [*node.args[:1]] if getattr(node.func, "attr", None) == "AddSerializedFile" else []
        candidates += [k.value for k in node.keywords if k.arg == "serialized_pb"]
        for value in candidates:
            if isinstance(value, ast.Constant) and isinstance(value.value, bytes):
                return descriptor_pb2.FileDescriptorProto.FromString(value.value)
    raise AssertionError(f"{path.name}: no serialized file descriptor found")


def _grpc_surface(path: Path) -> list[str]:
    """Classes, functions and RPC wiring of a `_pb2_grpc` module; version checks and private options left out."""
    tree = ast.parse(path.read_text())
    surface = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = [f.name for f in node.body if isinstance(f, ast.FunctionDef)]
            surface.append(f"class {node.name}: {', '.join(methods)}")
        elif isinstance(node, ast.FunctionDef):
            surface.append(f"def {node.name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        kind = node.func.attr
        if kind not in RPC_CALLS and not kind.endswith("_rpc_method_handler"):
            continue
        # Only what names the RPC and its types: string paths and dotted references such as
        # `mtr_dot_v1_dot_task__pb2.Task.FromString` or `servicer.TrainStep`, not pass-through parameters.
        args = [a for a in node.args if isinstance(a, ast.Attribute) or isinstance(getattr(a, "value", None), str)]
        args += [k.value for k in node.keywords if isinstance(k.value, ast.Attribute)]
        surface.append(f"{ast.unparse(node.func)}({', '.join(ast.unparse(a) for a in args)})")
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if keys:
                surface.append(f"handlers: {', '.join(keys)}")
    return surface


def _pyi_surface(path: Path) -> list[str]:
    """Class names and annotated names (fields, FIELD_NUMBER constants) of a `.pyi`, nested classes included."""

    def walk(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                yield f"class {prefix}{node.name}"
                yield from walk(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                yield f"{prefix}{node.target.id}"

    return sorted(walk(ast.parse(path.read_text()).body, ""))


def _diff(name: str, committed: list[str], fresh: list[str]) -> str:
    return "\n".join(difflib.unified_diff(committed, fresh, f"committed {name}", f"from proto/ {name}", lineterm=""))


def test_stubs_are_fresh(tmp_path: Path):
    fresh_dir = _generate(tmp_path)
    generated = sorted(p.name for p in fresh_dir.iterdir())
    committed = sorted(p.name for p in STUBS.iterdir() if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")))
    missing, extra = sorted(set(generated) - set(committed)), sorted(set(committed) - set(generated))
    assert not missing and not extra, f"mtr/v1 lacks {missing} and has extra {extra} (run `make proto`)"

    stale = []
    for name in generated:
        old, new = STUBS / name, fresh_dir / name
        if name.endswith("_pb2.py"):
            old_fd, new_fd = _file_descriptor(old), _file_descriptor(new)
            if old_fd != new_fd:
                lines = [text_format.MessageToString(fd).splitlines() for fd in (old_fd, new_fd)]
                stale.append(_diff(name, *lines))
        elif name.endswith("_pb2_grpc.py"):
            if _grpc_surface(old) != _grpc_surface(new):
                stale.append(_diff(name, _grpc_surface(old), _grpc_surface(new)))
        elif _pyi_surface(old) != _pyi_surface(new):
            stale.append(_diff(name, _pyi_surface(old), _pyi_surface(new)))
    assert not stale, "stale generated stubs (run `make proto`):\n" + "\n".join(stale)


def test_proto_is_not_an_importable_package():
    # proto-plus (installed with the vLLM stack) owns the top-level module name `proto`.
    assert not (ROOT / "proto" / "__init__.py").exists()
