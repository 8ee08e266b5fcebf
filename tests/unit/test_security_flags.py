"""The security flags: Triton's TLS and restriction spellings, their environment twins, and
one-line errors for combinations that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import parse_settings
from server.security.groups import ApiGroup
from server.security.restricted import Restriction
from server.security.settings import ModelKeySource, SecuritySettings, TlsFiles
from tests.unit.test_cli import error_line


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def parse(repo: Path, *argv: str, environ: dict[str, str] | None = None) -> SecuritySettings:
    return parse_settings(["--model-repository", str(repo), *argv], environ or {}).security


def test_defaults_are_plaintext_and_open(repo: Path) -> None:
    security = parse(repo)
    assert security == SecuritySettings()
    assert not security.access_control


def test_tls_flags_per_port(repo: Path) -> None:
    security = parse(
        repo,
        "--grpc-use-ssl-mutual",
        "--grpc-server-cert=c.pem",
        "--grpc-server-key=k.pem",
        "--grpc-root-cert=ca.pem",
        "--http-use-ssl=true",
        "--http-server-cert=hc.pem",
        "--http-server-key=hk.pem",
    )
    assert security.grpc_tls == TlsFiles(Path("c.pem"), Path("k.pem"), Path("ca.pem"), mutual=True)
    assert security.http_tls == TlsFiles(Path("hc.pem"), Path("hk.pem"))
    assert security.metrics_tls is None


def test_tls_from_the_environment(repo: Path) -> None:
    environ = {
        "ORTSERVE_METRICS_USE_SSL": "1",
        "ORTSERVE_METRICS_SERVER_CERT": "/tls/tls.crt",
        "ORTSERVE_METRICS_SERVER_KEY": "/tls/tls.key",
    }
    assert parse(repo, environ=environ).metrics_tls == TlsFiles(Path("/tls/tls.crt"), Path("/tls/tls.key"))


def test_restrictions_and_the_rest(repo: Path) -> None:
    security = parse(
        repo,
        "--grpc-restricted-protocol=model-repository,logging:admin=a",
        "--grpc-restricted-protocol",
        "inference:infer=i",
        "--http-restricted-api=health:h=x",
        "--auth-config=/etc/ortserve/auth.yaml",
        "--disable-repository-api",
        "--http-health-port=9000",
        "--model-key-env=MODEL_KEY",
    )
    assert security.grpc_restrictions == {
        ApiGroup.MODEL_REPOSITORY: Restriction("triton-grpc-protocol-admin", "a"),
        ApiGroup.LOGGING: Restriction("triton-grpc-protocol-admin", "a"),
        ApiGroup.INFERENCE: Restriction("triton-grpc-protocol-infer", "i"),
    }
    assert security.http_restrictions == {ApiGroup.HEALTH: Restriction("h", "x")}
    assert security.auth_config == Path("/etc/ortserve/auth.yaml")
    assert security.disable_repository_api and security.health_port == 9000
    assert security.model_key == ModelKeySource(env="MODEL_KEY")
    assert security.access_control


def test_restrictions_from_the_environment_split_on_semicolons(repo: Path) -> None:
    environ = {"ORTSERVE_GRPC_RESTRICTED_PROTOCOL": "health,metadata:k=v;inference:i=j"}
    assert set(parse(repo, environ=environ).grpc_restrictions) == {ApiGroup.HEALTH, ApiGroup.METADATA, ApiGroup.INFERENCE}
    # The command line replaces the environment's.
    assert set(parse(repo, "--grpc-restricted-protocol=trace:t=u", environ=environ).grpc_restrictions) == {ApiGroup.TRACE}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grpc-use-ssl"], "--grpc-use-ssl requires --grpc-server-cert and --grpc-server-key"),
        (["--http-use-ssl-mutual", "--http-server-cert=c", "--http-server-key=k"], "--http-use-ssl-mutual requires --http-root-cert"),
        (["--metrics-server-cert=c"], "--metrics-server-cert given without --metrics-use-ssl or --metrics-use-ssl-mutual"),
        (["--http-restricted-api=bogus:k=v"], "unknown restricted api 'bogus'"),
        (
            ["--grpc-restricted-protocol=health"],
            "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got health",
        ),
        (["--model-key-file=k", "--model-key-env=K"], "give --model-key-file or --model-key-env, not both"),
        (["--http-health-port=8001"], "--http-health-port 8001 must differ from the HTTP, gRPC and metrics ports"),
        (["--http-health-port=70000"], "port 70000 is outside 0-65535"),
    ],
)
def test_one_line_errors(repo: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert error_line(capsys, ["--model-repository", str(repo), *argv]) == f"ortserve: error: {message}"
