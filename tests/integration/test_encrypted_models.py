"""Encrypted model files made by `ortserve encrypt-model` are served, decrypted in memory; a wrong
key, an altered file or a missing key makes that model UNAVAILABLE with the reason while the
others keep serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import REPO_ROOT, ServerProcess
from tests.repository_builder import SIMPLE_CONFIG, write_model

ENV_KEY = "ORTSERVE_TEST_MODEL_KEY"


def encrypt_model(model: Path, key_file: Path, *extra: str) -> None:
    """The real command line, as an operator runs it."""
    command = [sys.executable, "-m", "server", "encrypt-model", "--key-file", str(key_file), str(model), "--remove-plaintext", *extra]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def build(root: Path) -> tuple[Path, bytes]:
    """A repository: plaintext 'simple', and mlp encrypted four times over (good key, wrong key,
    altered byte, a key named by the config's parameters). Returns it and mlp's plaintext."""
    repository = root / "models"
    write_model(repository, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    server_key, other_key = root / "server.key", root / "other.key"
    plaintext = b""
    for name in ("secret_mlp", "wrong_key_mlp", "altered_mlp", "env_key_mlp"):
        version_dir = write_model(repository, name, onnx_models.mlp())
        plaintext = (version_dir / "model.onnx").read_bytes()
        key, extra = {"wrong_key_mlp": (other_key, ())}.get(name, (server_key, ()))
        encrypt_model(version_dir / "model.onnx", key, *(("--new-key",) if not key.exists() else extra))
    altered = repository / "altered_mlp" / "1" / "model.onnx.enc"
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0x40
    altered.write_bytes(bytes(data))
    (repository / "env_key_mlp" / "config.pbtxt").write_text(
        f'parameters {{ key: "model_key_env" value {{ string_value: "{ENV_KEY}" }} }}\n'
    )
    return repository, plaintext


def test_encrypted_models_serve_and_bad_ones_fail_alone(tmp_path: Path) -> None:
    repository, plaintext = build(tmp_path)
    server_key = tmp_path / "server.key"
    os.environ[ENV_KEY] = server_key.read_text().strip()
    try:
        process = ServerProcess(
            [repository], [f"--model-key-file={server_key}", "--strict-readiness=false"], log_path=tmp_path / "server.log"
        )
        with process:
            process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
            check_serving(process, plaintext)
            check_failures(process)
            assert_no_plaintext_on_disk(process, repository, plaintext)
    finally:
        os.environ.pop(ENV_KEY, None)


def check_serving(process: ServerProcess, plaintext: bytes) -> None:
    client = grpcclient.InferenceServerClient(process.grpc_url)
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    reference = ort.InferenceSession(plaintext, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    for name in ("secret_mlp", "env_key_mlp"):
        assert client.is_model_ready(name), name
        inputs = [grpcclient.InferInput("input", [3, 256], "FP32")]
        inputs[0].set_data_from_numpy(x)
        np.testing.assert_allclose(client.infer(name, inputs).as_numpy("output"), reference, rtol=1e-6)
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    assert np.array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), 2 * a)


def check_failures(process: ServerProcess) -> None:
    index = {m.name: m for m in grpcclient.InferenceServerClient(process.grpc_url).get_model_repository_index().models}
    wrong = "cannot decrypt '1/model.onnx.enc': wrong key, or the file was altered (AES-256-GCM authentication failed)"
    for name in ("wrong_key_mlp", "altered_mlp"):
        assert (index[name].state, index[name].reason) == ("UNAVAILABLE", f"Unavailable: model '{name}': {wrong}")
    assert {index[n].state for n in ("secret_mlp", "env_key_mlp", "simple")} == {"READY"}
    inputs = [grpcclient.InferInput("input", [1, 256], "FP32")]
    inputs[0].set_data_from_numpy(np.zeros((1, 256), np.float32))
    # Triton's answer for a model none of whose versions loaded.
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'wrong_key_mlp' has no available versions"):
        grpcclient.InferenceServerClient(process.grpc_url).infer("wrong_key_mlp", inputs)


def assert_no_plaintext_on_disk(process: ServerProcess, repository: Path, plaintext: bytes) -> None:
    """Neither the repository nor any file the server holds open contains the decrypted model."""
    assert [p for p in repository.rglob("*") if p.is_file() and plaintext in p.read_bytes()] == []
    assert process.process is not None
    for fd in Path(f"/proc/{process.process.pid}/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
            if target.is_file() and target.stat().st_size >= len(plaintext):
                assert plaintext not in target.read_bytes(), target
        except OSError:
            continue


def test_encrypted_model_without_a_key_is_unavailable(tmp_path: Path) -> None:
    repository, _ = build(tmp_path)
    with ServerProcess([repository], ["--strict-readiness=false"], log_path=tmp_path / "server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        index = {m.name: m for m in grpcclient.InferenceServerClient(process.grpc_url).get_model_repository_index().models}
        assert index["secret_mlp"].state == "UNAVAILABLE"
        assert "no key is configured: set --model-key-file or --model-key-env" in index["secret_mlp"].reason
        assert "'ORTSERVE_TEST_MODEL_KEY' that should hold the model key is not set" in index["env_key_mlp"].reason
        assert index["simple"].state == "READY"


@pytest.mark.parametrize("field", ["model_key_file", "model_key_env"])
def test_a_load_request_cannot_name_a_key_source(tmp_path: Path, field: str) -> None:
    repository, _ = build(tmp_path)
    args = [f"--model-key-file={tmp_path / 'server.key'}", "--model-control-mode=explicit", "--strict-readiness=false"]
    with ServerProcess([repository], args, log_path=tmp_path / "server.log") as process:
        client = grpcclient.InferenceServerClient(process.grpc_url)
        config = json.dumps({"parameters": {field: {"string_value": "/etc/hostname"}}})
        with pytest.raises(Exception, match=f"a config sent with a load request may not set {field}"):
            client.load_model("secret_mlp", config=config)
        client.load_model("secret_mlp")  # the repository's own config and the command line's key
        assert client.is_model_ready("secret_mlp")
