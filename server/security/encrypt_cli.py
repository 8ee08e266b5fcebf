"""``ortserve encrypt-model``: write ``model.onnx.enc`` from ``model.onnx`` (AES-256-GCM).

    ortserve encrypt-model --key-file model.key --new-key  repo/m/1/model.onnx   # makes a key too
    ortserve encrypt-model --key-file model.key repo/m/1/model.onnx --remove-plaintext

The model is opened with ONNX Runtime from its bytes first (as the server will open it), so a
model that needs external-data files, which cannot load from bytes, is refused here, not at the
server. Exit status 0 on success, 1 on a failure, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from server.security.model_encryption import ENCRYPTED_SUFFIX, ModelKeyError, decrypt, encrypt, new_key, read_key
from server.security.settings import ModelKeySource


class EncryptModelError(Exception):
    """One-line reason the command failed."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ortserve encrypt-model", description="Encrypt an ONNX model file for ortserve (AES-256-GCM).")
    p.add_argument("model", type=Path, help="the plaintext ONNX file (one self-contained file)")
    p.add_argument("-o", "--output", type=Path, default=None, help=f"where to write it (default: MODEL{ENCRYPTED_SUFFIX})")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--key-file", type=Path, help="the 256-bit key (raw, hex or base64)")
    source.add_argument("--key-env", help="environment variable holding the key (hex or base64)")
    p.add_argument("--new-key", action="store_true", help="create --key-file with a fresh random key (hex, mode 0600) first")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--remove-plaintext", action="store_true", help="delete MODEL once the encrypted file is written and checked")
    p.add_argument("--no-check", action="store_true", help="skip opening the model with ONNX Runtime first")
    return p


def _write_new_key(path: Path) -> bytes:
    key = new_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise EncryptModelError(f"--new-key: '{path}' exists already; it is not overwritten") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def _check_loads(plaintext: bytes, model: Path) -> None:
    import onnxruntime as ort

    try:
        ort.InferenceSession(plaintext, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        raise EncryptModelError(f"ONNX Runtime cannot open '{model}' from memory (external data cannot be encrypted): {exc}") from None


def run(args: argparse.Namespace) -> Path:
    """Raises EncryptModelError."""
    if args.model.is_dir() or not args.model.is_file():
        raise EncryptModelError(f"'{args.model}' is not a file (a model directory with external data cannot be encrypted)")
    output: Path = args.output or args.model.with_name(args.model.name + ENCRYPTED_SUFFIX)
    if output.exists() and not args.force:
        raise EncryptModelError(f"'{output}' exists already (--force overwrites it)")
    if args.new_key and args.key_file is None:
        raise EncryptModelError("--new-key needs --key-file")
    plaintext = args.model.read_bytes()
    if not args.no_check:
        _check_loads(plaintext, args.model)
    try:
        key = _write_new_key(args.key_file) if args.new_key else read_key(ModelKeySource(file=args.key_file, env=args.key_env))
    except ModelKeyError as exc:
        raise EncryptModelError(str(exc)) from None
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_bytes(encrypt(plaintext, key))
    temporary.replace(output)
    if decrypt(output.read_bytes(), key) != plaintext:  # what was written reads back, before anything is removed
        raise EncryptModelError(f"'{output}' does not decrypt to the model; '{args.model}' is kept")
    if args.remove_plaintext:
        args.model.unlink()
    return output


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        output = run(args)
    except (EncryptModelError, OSError) as exc:
        print(f"ortserve encrypt-model: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output} ({output.stat().st_size} bytes)")
    return 0
