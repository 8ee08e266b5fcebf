"""CLI flags (Triton's spelling), ORTSERVE_* environment twins, and one-line errors with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import env_name, parse_settings
from server.settings import LogFormat, ModelControlMode, OrtThreadSettings, Settings


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    return parse_settings(argv, environ or {})


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str] | None = None) -> str:
    """Parse expecting failure; return the one line written to stderr."""
    with pytest.raises(SystemExit) as caught:
        parse(argv, environ)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("\n")
    assert captured.err.count("\n") == 1
    return captured.err.rstrip("\n")


def test_defaults(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo)])
    assert settings.model_repositories == (repo,)
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (8000, 8001, 8002)
    assert settings.host == "0.0.0.0"
    assert (settings.allow_http, settings.allow_grpc, settings.allow_metrics) == (True, True, True)
    assert settings.strict_readiness is True
    assert settings.exit_on_error is False
    assert settings.exit_timeout_secs == 30.0
    assert settings.model_control_mode is ModelControlMode.NONE
    assert settings.repository_poll_secs == 15.0
    assert settings.load_models == ()
    assert settings.model_load_thread_count == 4
    assert settings.default_max_batch_size == 4
    assert settings.log_format is LogFormat.TEXT
    assert settings.server_id == "ortserve"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--strict-readiness=false"], False),
        (["--strict-readiness", "false"], False),
        (["--strict-readiness=0"], False),
        (["--strict-readiness=true"], True),
        (["--strict-readiness"], True),
    ],
    ids=["equals-false", "separate-false", "zero", "equals-true", "bare"],
)
def test_strict_readiness(repo: Path, flags: list[str], expected: bool) -> None:
    assert parse([*flags, "--model-repository", str(repo)]).strict_readiness is expected


def test_bare_exit_on_error_before_another_flag(repo: Path) -> None:
    assert parse(["--exit-on-error", "--model-repository", str(repo)]).exit_on_error is True


def test_bare_exit_on_error_last(repo: Path) -> None:
    assert parse(["--model-repository", str(repo), "--exit-on-error"]).exit_on_error is True


def test_repeatable_model_repository(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    settings = parse(["--model-repository", str(first), f"--model-repository={second}"])
    assert settings.model_repositories == (first, second)


def test_env_names() -> None:
    assert env_name("--grpc-port") == "ORTSERVE_GRPC_PORT"
    assert env_name("--model-repository") == "ORTSERVE_MODEL_REPOSITORY"


def test_env_sets_port(repo: Path) -> None:
    assert parse(["--model-repository", str(repo)], {"ORTSERVE_GRPC_PORT": "9001"}).grpc_port == 9001


def test_flag_wins_over_env(repo: Path) -> None:
    assert parse(["--model-repository", str(repo), "--grpc-port", "9002"], {"ORTSERVE_GRPC_PORT": "9001"}).grpc_port == 9002


def test_env_model_repository_with_commas(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    settings = parse([], {"ORTSERVE_MODEL_REPOSITORY": f"{first},{second}"})
    assert settings.model_repositories == (first, second)


def test_repeatable_flag_replaces_env_value(tmp_path: Path) -> None:
    from_env, from_flag = tmp_path / "env", tmp_path / "flag"
    from_env.mkdir()
    from_flag.mkdir()
    settings = parse(["--model-repository", str(from_flag)], {"ORTSERVE_MODEL_REPOSITORY": str(from_env)})
    assert settings.model_repositories == (from_flag,)


def test_env_booleans_and_choices(repo: Path) -> None:
    environ = {"ORTSERVE_STRICT_READINESS": "false", "ORTSERVE_EXIT_ON_ERROR": "yes", "ORTSERVE_MODEL_CONTROL_MODE": "poll"}
    settings = parse(["--model-repository", str(repo)], environ)
    assert settings.strict_readiness is False
    assert settings.exit_on_error is True
    assert settings.model_control_mode is ModelControlMode.POLL


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"ORTSERVE_GRPC_PORT": "abc"}, "ortserve: error: ORTSERVE_GRPC_PORT: invalid literal for int() with base 10: 'abc'"),
        ({"ORTSERVE_STRICT_READINESS": "maybe"}, "ortserve: error: ORTSERVE_STRICT_READINESS: expected true or false, got 'maybe'"),
        (
            {"ORTSERVE_MODEL_CONTROL_MODE": "manual"},
            "ortserve: error: ORTSERVE_MODEL_CONTROL_MODE: 'manual' is not one of ['none', 'poll', 'explicit']",
        ),
    ],
    ids=["port-not-int", "bool", "choice"],
)
def test_bad_env_value_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], repo: Path, environ: dict[str, str], expected: str) -> None:
    assert error_line(capsys, ["--model-repository", str(repo)], environ) == expected


def test_bad_flag_value_is_one_line(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    line = error_line(capsys, ["--model-repository", str(repo), "--strict-readiness=maybe"])
    assert line.startswith("ortserve: error: argument --strict-readiness: ")


def test_no_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_line(capsys, []) == "ortserve: error: at least one --model-repository is required"


def test_missing_repository(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    line = error_line(capsys, ["--model-repository", str(missing)])
    assert line == f"ortserve: error: model repository '{missing}' does not exist or is not a directory"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--backend-config=onnxruntime,default-max-batch-size=16"], 16),
        (["--backend-config=onnxruntime,default-max-batch-size=0"], 0),
        (["--backend-config=onnxruntime,default-max-batch-size=2", "--backend-config=onnxruntime,default-max-batch-size=8"], 8),
        # Triton's backend-agnostic form applies to every backend, ONNX Runtime's included.
        (["--backend-config=default-max-batch-size=32"], 32),
    ],
    ids=["16", "zero", "last-wins", "every-backend"],
)
def test_backend_config(repo: Path, flags: list[str], expected: int) -> None:
    assert parse(["--model-repository", str(repo), *flags]).default_max_batch_size == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "tensorflow,default-max-batch-size=4",
            "--backend-config 'tensorflow,default-max-batch-size=4': expected onnxruntime,<key>=<value>",
        ),
        ("onnxruntime", "--backend-config 'onnxruntime': expected onnxruntime,<key>=<value>"),
        (
            "onnxruntime,default-max-batch-size=",
            "--backend-config 'onnxruntime,default-max-batch-size=': expected onnxruntime,<key>=<value>",
        ),
        (
            "onnxruntime,enable-pinned=1",
            "--backend-config 'onnxruntime,enable-pinned=1': unknown onnxruntime setting 'enable-pinned' (supported: "
            "default-max-batch-size, intra_op_thread_count, inter_op_thread_count, enable-global-threadpool)",
        ),
        (
            "onnxruntime,enable-global-threadpool=maybe",
            "--backend-config 'onnxruntime,enable-global-threadpool=maybe': expected true or false, got 'maybe'",
        ),
        ("onnxruntime,default-max-batch-size=big", "--backend-config 'onnxruntime,default-max-batch-size=big': 'big' is not an integer"),
        ("onnxruntime,default-max-batch-size=-1", "default-max-batch-size must be >= 0"),
    ],
    ids=["other-backend", "no-setting", "no-value", "unknown-key", "not-bool", "not-int", "negative"],
)
def test_bad_backend_config(capsys: pytest.CaptureFixture[str], repo: Path, value: str, expected: str) -> None:
    assert error_line(capsys, ["--model-repository", str(repo), f"--backend-config={value}"]) == f"ortserve: error: {expected}"


def test_thread_backend_config(repo: Path) -> None:
    assert parse(["--model-repository", str(repo)]).ort_threads == OrtThreadSettings(False, 0, 0)
    flags = [
        "--backend-config=onnxruntime,enable-global-threadpool=false",
        "--backend-config=onnxruntime,intra_op_thread_count=3",
        "--backend-config=inter_op_thread_count=2",
    ]
    assert parse(["--model-repository", str(repo), *flags]).ort_threads == OrtThreadSettings(False, 3, 2)
    assert parse(["--model-repository", str(repo), "--backend-config=onnxruntime,enable-global-threadpool=1"]).ort_threads.global_pool


def test_load_model_in_explicit_mode(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo), "--model-control-mode=explicit", "--load-model=a", "--load-model=b"])
    assert settings.load_models == ("a", "b")


def test_load_model_without_explicit_mode(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    line = error_line(capsys, ["--model-repository", str(repo), "--load-model=a"])
    assert line == "ortserve: error: --load-model requires --model-control-mode=explicit"


def test_load_model_star_must_be_alone(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    line = error_line(capsys, ["--model-repository", str(repo), "--model-control-mode=explicit", "--load-model=*", "--load-model=a"])
    assert line == "ortserve: error: --load-model=* must be the only --load-model"


def test_duplicate_ports(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    line = error_line(capsys, ["--model-repository", str(repo), "--grpc-port=8000"])
    assert line == "ortserve: error: the HTTP, gRPC and metrics ports must differ, got [8000, 8000, 8002]"


def test_duplicate_port_allowed_when_that_endpoint_is_off(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo), "--metrics-port=8000", "--allow-metrics=false"])
    assert settings.metrics_port == 8000


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--http-port=70000"], "port 70000 is outside 0-65535"),
        (["--exit-timeout-secs=-1"], "--exit-timeout-secs must be >= 0"),
        (["--model-load-thread-count=0"], "--model-load-thread-count must be >= 1"),
        (["--model-control-mode=poll", "--repository-poll-secs=0"], "--repository-poll-secs must be > 0 in poll mode"),
        (["--log-format=xml"], "argument --log-format: invalid choice: 'xml' (choose from 'text', 'json')"),
    ],
    ids=["port-range", "exit-timeout", "thread-count", "poll-secs", "log-format"],
)
def test_invalid_settings(capsys: pytest.CaptureFixture[str], repo: Path, flags: list[str], expected: str) -> None:
    assert error_line(capsys, ["--model-repository", str(repo), *flags]) == f"ortserve: error: {expected}"


def test_sample_capture_is_off_by_default_and_set_by_flag_or_environment(repo: Path, tmp_path: Path) -> None:
    defaults = parse(["--model-repository", str(repo)])
    assert (defaults.sample_capture_dir, defaults.sample_capture_count, defaults.sample_capture_bytes) == (None, 256, 64 * 2**20)
    flagged = parse(["--model-repository", str(repo), "--sample-capture-dir", str(tmp_path / "c"), "--sample-capture-count", "5"])
    assert (flagged.sample_capture_dir, flagged.sample_capture_count) == (tmp_path / "c", 5)
    assert parse(["--model-repository", str(repo)], {"ORTSERVE_SAMPLE_CAPTURE_DIR": "/data/c"}).sample_capture_dir == Path("/data/c")


def test_negative_sample_capture_bounds(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    line = error_line(capsys, ["--model-repository", str(repo), "--sample-capture-count", "-1"])
    assert line == "ortserve: error: --sample-capture-count and --sample-capture-bytes must be >= 0"


def test_optimize_is_a_subcommand_and_its_flag_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    assert main(["optimize", "/nonexistent/model", "--method", "nothing"]) == 1
    methods = "int8-dynamic, int8-static, fp16, graph, prune:RATIO, auto"
    assert capsys.readouterr().err == f"ortserve optimize: error: --method nothing: unknown method (methods: {methods})\n"
    with pytest.raises(SystemExit) as caught:
        main(["optimize", "--method", "graph"])  # no model directory
    assert caught.value.code == 1


# ---- response cache and shared memory ---------------------------------------------------


def test_no_cache_and_no_client_shared_memory_by_default(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo)])
    assert (settings.cache_size_bytes, settings.cache_ttl_secs) == (0, 0.0)
    assert (settings.allow_client_shm, settings.max_shm_regions, settings.max_shm_bytes) == (False, 128, 0)


def test_cache_config_in_tritons_spelling(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo), "--cache-config", "local,size=1048576", "--cache-config", "local,ttl_secs=2.5"])
    assert (settings.cache_size_bytes, settings.cache_ttl_secs) == (1048576, 2.5)


def test_cache_config_from_the_environment_split_at_commas(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo)], {"ORTSERVE_CACHE_CONFIG": "local,size=4096,ttl_secs=1"})
    assert (settings.cache_size_bytes, settings.cache_ttl_secs) == (4096, 1.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("size=10", "No cache specified. --cache-config option format is <cache name>,<setting>=<value>. Got size=10"),
        ("redis,size=10", "--cache-config 'redis,size=10': ortserve has only the 'local' cache"),
        ("local,size=big", "--cache-config 'local,size=big': 'big' is not a number"),
        ("local,colour=blue", "--cache-config 'local,colour=blue': unknown local cache setting 'colour' (supported: size, ttl_secs)"),
        ("local,ttl_secs=1", "--cache-config local needs size=<bytes> > 0"),
        ("local,size=0", "--cache-config local needs size=<bytes> > 0"),
    ],
    ids=["no-cache-name", "other-cache", "not-a-number", "unknown-setting", "no-size", "zero-size"],
)
def test_bad_cache_config_is_one_line(repo: Path, capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    assert error_line(capsys, ["--model-repository", str(repo), "--cache-config", value]) == f"ortserve: error: {message}"


def test_client_shared_memory_flags(repo: Path) -> None:
    settings = parse(["--model-repository", str(repo), "--allow-client-shm", "--max-shm-regions", "4", "--max-shm-bytes", "1024"])
    assert (settings.allow_client_shm, settings.max_shm_regions, settings.max_shm_bytes) == (True, 4, 1024)
    assert parse(["--model-repository", str(repo)], {"ORTSERVE_ALLOW_CLIENT_SHM": "true"}).allow_client_shm is True
