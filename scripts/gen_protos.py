"""Regenerate the Python protobuf/gRPC modules in server/proto/ from protos/.

Usage, from the repository root:

    python scripts/gen_protos.py          # rewrite server/proto/*_pb2*.py[i]
    python scripts/gen_protos.py --check  # exit 1 if they are stale

protoc's output is post-processed deterministically so the modules can be
imported next to tritonclient, which owns the same ``inference.*`` names:

1. Descriptors go into the private pool ``server.proto._pool.POOL`` instead
   of protobuf's default pool (adding them there raises "duplicate symbol").
2. ``import model_config_pb2`` style imports become package imports.
3. The module name given to the message builder becomes the real dotted
   name, so ``__module__`` is right and messages can be pickled.
4. A ``# ruff: noqa`` line keeps the linter off code we do not write.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos"
OUT_DIR = REPO_ROOT / "server" / "proto"
PACKAGE = "server.proto"

# In dependency order: grpc_service.proto imports model_config.proto.
PROTO_FILES = ("model_config.proto", "grpc_service.proto")
# Only this file declares a service, so only it gets a _pb2_grpc module.
SERVICE_PROTOS = ("grpc_service.proto",)
LOCAL_MODULES = tuple(Path(name).stem + "_pb2" for name in PROTO_FILES)
GENERATED_FILES = (
    "model_config_pb2.py",
    "model_config_pb2.pyi",
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
)

_POOL_IMPORT = "from google.protobuf import descriptor_pool as _descriptor_pool\n"
_POOL_CALL = "_descriptor_pool.Default().AddSerializedFile("
_LOCAL_IMPORT = re.compile(r"^import (" + "|".join(LOCAL_MODULES) + r") as (\w+)$", re.MULTILINE)
_BUILDER_NAME = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'(\w+_pb2)'")
_NOQA = "# ruff: noqa\n"


class GenerationError(RuntimeError):
    """protoc failed or its output no longer matches what we rewrite."""


def _replace_once(text: str, old: str, new: str, filename: str) -> str:
    # Exactly one hit, so a protoc upgrade that changes the output fails
    # loudly here instead of silently leaving the default pool in place.
    count = text.count(old)
    if count != 1:
        msg = f"{filename}: expected 1 occurrence of {old!r}, found {count}"
        raise GenerationError(msg)
    return text.replace(old, new)


def _add_noqa(text: str) -> str:
    # Keep protoc's header comment (it says DO NOT EDIT) on top.
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines) and lines[index].startswith("#"):
        index += 1
    return "".join([*lines[:index], _NOQA, *lines[index:]])


def _rewrite_imports(text: str) -> str:
    return _LOCAL_IMPORT.sub(rf"from {PACKAGE} import \1 as \2", text)


def _rewrite_pb2(text: str, filename: str) -> str:
    text = _replace_once(text, _POOL_IMPORT, f"from {PACKAGE} import _pool\n", filename)
    text = _replace_once(text, _POOL_CALL, "_pool.POOL.AddSerializedFile(", filename)
    text, count = _BUILDER_NAME.subn(rf"\1'{PACKAGE}.\2'", text)
    if count != 1:
        msg = f"{filename}: expected 1 BuildTopDescriptorsAndMessages, found {count}"
        raise GenerationError(msg)
    return text


def postprocess(filename: str, text: str) -> str:
    """Apply the deterministic rewrites described in the module docstring."""
    if filename.endswith("_pb2.py"):
        text = _rewrite_pb2(text, filename)
    text = _rewrite_imports(text)
    leftover = _LOCAL_IMPORT.search(text)
    if leftover:
        msg = f"{filename}: top-level import left: {leftover.group(0)!r}"
        raise GenerationError(msg)
    return _add_noqa(text)


def _run_protoc(out_dir: Path) -> None:
    def protoc(flags: list[str], protos: tuple[str, ...]) -> None:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", *flags]
        cmd += [str(PROTO_DIR / name) for name in protos]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            msg = f"protoc failed ({result.returncode}):\n{result.stderr}"
            raise GenerationError(msg)

    protoc([f"--python_out={out_dir}", f"--pyi_out={out_dir}"], PROTO_FILES)
    protoc([f"--grpc_python_out={out_dir}"], SERVICE_PROTOS)


def generate() -> dict[str, bytes]:
    """Run protoc in a scratch directory and return the final file contents."""
    with tempfile.TemporaryDirectory(prefix="gen_protos_") as tmp:
        raw_dir = Path(tmp)
        _run_protoc(raw_dir)
        return {name: postprocess(name, (raw_dir / name).read_text("utf-8")).encode() for name in GENERATED_FILES}


def stale_files(generated: dict[str, bytes], out_dir: Path = OUT_DIR) -> list[str]:
    """Names of files in out_dir that are missing or differ from generated."""
    stale = []
    for name, content in generated.items():
        path = out_dir / name
        if not path.is_file() or path.read_bytes() != content:
            stale.append(name)
    return stale


def write(generated: dict[str, bytes], out_dir: Path = OUT_DIR) -> list[str]:
    """Write changed files only, so unchanged ones keep their mtime."""
    changed = stale_files(generated, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (out_dir / name).write_bytes(generated[name])
    return changed


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed files are stale",
    )
    args = parser.parse_args(argv)
    try:
        generated = generate()
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(generated)
        if not stale:
            print("generated protobuf code is up to date")
            return 0
        for name in stale:
            print(f"stale: {_relative(OUT_DIR / name)}", file=sys.stderr)
        print("run: python scripts/gen_protos.py", file=sys.stderr)
        return 1
    changed = write(generated)
    for name in changed:
        print(f"wrote {_relative(OUT_DIR / name)}")
    if not changed:
        print("generated protobuf code already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
