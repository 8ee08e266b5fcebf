"""Encrypted model files: the format, keys, tampering, and `ortserve encrypt-model`."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import onnxruntime as ort
import pytest

from scripts import onnx_models
from server.cli import main
from server.errors import ErrorCode, ServerError
from server.proto import model_config_pb2 as mc
from server.security.model_encryption import (
    MAGIC,
    DecryptionError,
    ModelKeyError,
    decrypt,
    decrypt_model,
    encrypt,
    key_source_for,
    new_key,
    parse_key,
    read_key,
)
from server.security.settings import ModelKeySource


def model_bytes() -> bytes:
    return onnx_models.add_constant("FP32", ["batch", 4], 1.0).SerializeToString()


def test_round_trip_and_a_fresh_nonce_each_time() -> None:
    key, plaintext = new_key(), model_bytes()
    first, second = encrypt(plaintext, key), encrypt(plaintext, key)
    assert first.startswith(MAGIC) and first != second
    assert plaintext not in first
    assert decrypt(first, key) == decrypt(second, key) == plaintext


@pytest.mark.parametrize("position", [0, len(MAGIC), len(MAGIC) + 12, -1])
def test_any_altered_byte_is_refused(position: int) -> None:
    key = new_key()
    blob = bytearray(encrypt(model_bytes(), key))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(bytes(blob), key)


def test_wrong_key_is_refused() -> None:
    with pytest.raises(DecryptionError, match="wrong key, or the file was altered"):
        decrypt(encrypt(b"model", new_key()), new_key())


def test_key_forms() -> None:
    key = new_key()
    assert parse_key(key, "k") == key
    assert parse_key(key.hex().encode() + b"\n", "k") == key
    assert parse_key(base64.b64encode(key) + b"\n", "k") == key
    for bad in (b"", b"short", key[:31], key.hex()[:-2].encode(), b"z" * 64):
        with pytest.raises(ModelKeyError) as caught:
            parse_key(bad, "the key file 'k'")
        # The message names the source, never its content.
        assert str(caught.value) == "the key file 'k' must hold a 256-bit key: 32 raw bytes, 64 hex digits or base64 of 32 bytes"


def test_key_from_env_and_missing_sources(tmp_path: Path) -> None:
    key = new_key()
    assert read_key(ModelKeySource(env="K"), {"K": key.hex()}) == key
    with pytest.raises(ModelKeyError, match="'K' that should hold the model key is not set"):
        read_key(ModelKeySource(env="K"), {})
    with pytest.raises(ModelKeyError, match="cannot read the key file"):
        read_key(ModelKeySource(file=tmp_path / "none"))
    with pytest.raises(ModelKeyError, match="no key is configured"):
        read_key(ModelKeySource())


def config_with(**params: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m")
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def test_config_key_source_wins_but_not_from_the_network(tmp_path: Path) -> None:
    default = ModelKeySource(env="DEFAULT")
    assert key_source_for(config_with(), default, False) == default
    assert key_source_for(config_with(model_key_file="/k"), default, False) == ModelKeySource(file=Path("/k"))
    assert key_source_for(config_with(model_key_env="E"), default, False) == ModelKeySource(env="E")
    with pytest.raises(ServerError, match="a config sent with a load request may not set model_key_file"):
        key_source_for(config_with(model_key_file="/etc/passwd"), default, True)
    with pytest.raises(ServerError, match="not both"):
        key_source_for(config_with(model_key_file="/k", model_key_env="E"), default, False)


def test_decrypt_model_failures_are_unavailable(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(new_key().hex())
    path = tmp_path / "model.onnx.enc"
    path.write_bytes(encrypt(model_bytes(), new_key()))
    with pytest.raises(ServerError) as caught:
        decrypt_model(path, "1/model.onnx.enc", config_with(), ModelKeySource(file=key_file), False)
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert caught.value.message == (
        "model 'm': cannot decrypt '1/model.onnx.enc': wrong key, or the file was altered (AES-256-GCM authentication failed)"
    )
    path.write_bytes(model_bytes())
    with pytest.raises(ServerError, match="is not an ortserve encrypted model file"):
        decrypt_model(path, "1/model.onnx.enc", config_with(), ModelKeySource(file=key_file), False)


# ---- ortserve encrypt-model ----------------------------------------------------------------------


def test_encrypt_model_with_a_new_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, key_file = tmp_path / "model.onnx", tmp_path / "model.key"
    model.write_bytes(model_bytes())
    assert main(["encrypt-model", "--key-file", str(key_file), "--new-key", str(model), "--remove-plaintext"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert not model.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    plaintext = decrypt((tmp_path / "model.onnx.enc").read_bytes(), read_key(ModelKeySource(file=key_file)))
    assert plaintext == model_bytes()
    ort.InferenceSession(plaintext, providers=["CPUExecutionProvider"])


def test_encrypt_model_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, key_file = tmp_path / "model.onnx", tmp_path / "model.key"
    key_file.write_text(new_key().hex())
    model.write_bytes(b"not an onnx model")
    assert main(["encrypt-model", "--key-file", str(key_file), str(model)]) == 1
    assert "ONNX Runtime cannot open" in capsys.readouterr().err
    model.write_bytes(model_bytes())
    (tmp_path / "model.onnx.enc").write_bytes(b"old")
    assert main(["encrypt-model", "--key-file", str(key_file), str(model)]) == 1
    assert "exists already (--force overwrites it)" in capsys.readouterr().err
    assert main(["encrypt-model", "--key-file", str(key_file), "--new-key", str(model), "--force"]) == 1
    assert "--new-key: " in capsys.readouterr().err
    os.environ.pop("ORTSERVE_TEST_NO_KEY", None)
    assert main(["encrypt-model", "--key-env", "ORTSERVE_TEST_NO_KEY", str(model), "--force"]) == 1
    assert "is not set" in capsys.readouterr().err
    assert main(["encrypt-model", "--key-file", str(key_file), str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err
