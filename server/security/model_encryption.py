"""Encrypted model files: ``model.onnx.enc``, AES-256-GCM, decrypted in memory at load.

File format: the 8-byte magic ``ORTSENC1``, a 12-byte random nonce, then the ciphertext with its
16-byte GCM tag; the magic is authenticated too. The plaintext ONNX bytes go straight to
``onnxruntime.InferenceSession(bytes)`` and never touch the disk. ONNX Runtime cannot resolve
external-data files for a model given as bytes, so an encrypted model must be one self-contained
file (a protobuf below 2 GiB).

The key: 32 bytes, in a file (raw, 64 hex digits or base64) or an environment variable (hex or
base64). A model's config may name its own with the parameters ``model_key_file`` or
``model_key_env``; otherwise ``--model-key-file`` / ``--model-key-env`` apply. A config that came
with a load request may not name a key source (the network does not choose server files).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.security.settings import ModelKeySource

MAGIC = b"ORTSENC1"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
ENCRYPTED_SUFFIX = ".enc"
KEY_FILE_PARAMETER = "model_key_file"
KEY_ENV_PARAMETER = "model_key_env"
KEY_PARAMETERS = frozenset({KEY_FILE_PARAMETER, KEY_ENV_PARAMETER})


class ModelKeyError(ValueError):
    """A key that cannot be read or is not 256 bits; the message never shows key material."""


class DecryptionError(ValueError):
    """Not an encrypted model file, the wrong key, or an altered file."""


def parse_key(data: bytes, what: str) -> bytes:
    """32 raw bytes, or text holding 64 hex digits or the base64 of 32 bytes. Raises ModelKeyError."""
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    try:
        if len(text) == 2 * KEY_BYTES:
            return bytes.fromhex(text.decode("ascii"))
        key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ModelKeyError(f"{what} must hold a 256-bit key: 32 raw bytes, 64 hex digits or base64 of 32 bytes")
    return key


def read_key(source: ModelKeySource, environ: Mapping[str, str] = os.environ) -> bytes:
    """Raises ModelKeyError when the source is missing, unreadable or not a 256-bit key."""
    if source.file is not None:
        try:
            data = source.file.read_bytes()
        except OSError as exc:
            raise ModelKeyError(f"cannot read the key file '{source.file}': {exc.strerror}") from None
        return parse_key(data, f"the key file '{source.file}'")
    if source.env is not None:
        value = environ.get(source.env)
        if value is None:
            raise ModelKeyError(f"the environment variable '{source.env}' that should hold the model key is not set")
        return parse_key(value.encode(), f"the environment variable '{source.env}'")
    raise ModelKeyError("no key is configured: set --model-key-file or --model-key-env, or the model config's model_key_file")


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encrypt(plaintext: bytes, key: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, MAGIC)


def decrypt(blob: bytes, key: bytes) -> bytes:
    """Raises DecryptionError: not this format, or authentication failed (wrong key, altered)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("it is not an ortserve encrypted model file (made by `ortserve encrypt-model`)")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], MAGIC)
    except InvalidTag:
        raise DecryptionError("wrong key, or the file was altered (AES-256-GCM authentication failed)") from None


def key_source_for(config: mc.ModelConfig, default: ModelKeySource, network_config: bool) -> ModelKeySource:
    """The config's own key source when it names one, else the command line's.

    Raises INVALID_ARG for a network config that names one, or one that names both.
    """
    params = {key: value.string_value for key, value in config.parameters.items() if key in KEY_PARAMETERS}
    if not params:
        return default
    if network_config:
        raise ServerError.invalid_arg(f"model '{config.name}': a config sent with a load request may not set {' or '.join(sorted(params))}")
    if len(params) == 2:
        raise ServerError.invalid_arg(f"model '{config.name}': set {KEY_FILE_PARAMETER} or {KEY_ENV_PARAMETER}, not both")
    if KEY_FILE_PARAMETER in params:
        return ModelKeySource(file=Path(params[KEY_FILE_PARAMETER]))
    return ModelKeySource(env=params[KEY_ENV_PARAMETER])


def decrypt_model(path: Path, shown: str, config: mc.ModelConfig, default: ModelKeySource, network_config: bool) -> bytes:
    """The plaintext ONNX bytes of ``path`` (named ``shown`` in messages).

    Raises UNAVAILABLE with the reason (no key, wrong key, altered or foreign file).
    """
    source = key_source_for(config, default, network_config)
    try:
        key = read_key(source)
        return decrypt(path.read_bytes(), key)
    except (ModelKeyError, DecryptionError) as exc:
        raise ServerError.unavailable(f"model '{config.name}': cannot decrypt '{shown}': {exc}") from None
    except OSError as exc:
        raise ServerError.unavailable(f"model '{config.name}': cannot read '{shown}': {exc.strerror}") from None
