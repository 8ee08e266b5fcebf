"""Trace settings: --trace-config parsing, network updates in Triton's words, the global/model
hierarchy, and sampling by rate and count."""

from __future__ import annotations

import pytest

from server.cli import parse_settings
from server.errors import ErrorCode, ServerError
from server.observability.trace_options import DeprecatedTraceFlags, parse_trace_options
from server.observability.trace_settings import CLEAR, parse_update
from server.observability.tracing import LiveSetting, RequestTrace, Tracer
from server.settings import SettingsError, TraceMode, TraceOptions
from server.types import TraceSettings

# ---- --trace-config ----------------------------------------------------------------------------


def test_trace_config_reads_triton_s_format() -> None:
    options = parse_trace_options(["triton,file=/tmp/t.json", "triton,log-frequency=50", "rate=100", "level=TIMESTAMPS", "count=7"])
    assert options == TraceOptions(timestamps=True, rate=100, count=7, log_frequency=50, file="/tmp/t.json")


def test_opentelemetry_mode_takes_its_url_and_resources_and_ignores_triton_s_settings() -> None:
    options = parse_trace_options(
        ["mode=opentelemetry", "opentelemetry,url=http://c:4318/v1/traces", "opentelemetry,resource=service.name=a=b", "triton,file=x"]
    )
    assert options.mode is TraceMode.OPENTELEMETRY
    assert (options.otel_url, options.otel_resource, options.file) == ("http://c:4318/v1/traces", (("service.name", "a=b"),), "")


def test_an_explicit_off_wins_and_levels_read_triton_s_synonyms() -> None:
    assert parse_trace_options(["level=on", "triton,file=f"]).timestamps
    assert not parse_trace_options(["level=TIMESTAMPS", "level=OFF", "triton,file=f"]).timestamps
    assert not parse_trace_options([]).timestamps


def test_trace_config_wins_over_the_deprecated_flags() -> None:
    options = parse_trace_options(["rate=5"], DeprecatedTraceFlags(file="old.json", levels=["TIMESTAMPS"], rate="9", log_frequency="3"))
    assert (options.timestamps, options.rate, options.file, options.log_frequency) == (True, 5, "old.json", 3)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([",rate=1"], "No trace mode specified"),
        (["rate"], "--trace-config option format is '<trace mode>,<setting>=<value>'. Got rate"),
        (["triton,file="], "Got triton,file="),
        (["zipkin,url=x"], 'invalid value for trace mode option: zipkin. Available options are "triton" and "opentelemetry"'),
        (["level=verbose"], "invalid value for trace level option: verbose"),
        (["level=TENSORS", "triton,file=f"], "TENSORS is not supported"),
        (["rate=0"], "must be >= 1"),
        (["count=-2"], "must be >= -1"),
        (["colour=red"], "unknown setting 'colour'"),
        (["triton,url=x"], "unknown triton setting 'url'"),
        (["level=TIMESTAMPS"], "needs a file: --trace-config triton,file=<path>"),
    ],
)
def test_trace_config_mistakes_are_one_line_errors(entries: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=None) as raised:
        parse_trace_options(entries)
    assert message in str(raised.value)


def test_the_command_line_reaches_the_settings() -> None:
    settings = parse_settings(["--model-repository", ".", "--trace-config", "level=TIMESTAMPS", "--trace-file", "t.json"])
    assert settings.trace.timestamps and settings.trace.file == "t.json"


# ---- updates over the network -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "code", "message"),
    [
        ({"trace_file": ("/etc/passwd",)}, ErrorCode.UNSUPPORTED, "trace file location can not be updated through network protocol"),
        ({"trace_file": None}, ErrorCode.UNSUPPORTED, "trace file location can not be updated through network protocol"),
        ({"trace_level": ("OFF", "TIMESTAMPS")}, ErrorCode.INVALID_ARG, "Expect only one trace level 'OFF' is specified"),
        (
            {"trace_level": ("TENSORS",)},
            ErrorCode.UNSUPPORTED,
            "trace level 'TENSORS' is not supported by ortserve; it traces 'TIMESTAMPS'",
        ),
        ({"trace_rate": ("1", "2")}, ErrorCode.INVALID_ARG, "expect only 1 value for 'trace_rate'"),
        ({"trace_rate": ("fast",)}, ErrorCode.INVALID_ARG, "Unable to parse 'trace_rate', got: fast"),
        (
            {"trace_rate": ("4294967296",)},
            ErrorCode.INVALID_ARG,
            "Unable to parse 'trace_rate', value is out of range [ 0, 4294967295 ], got: 4294967296",
        ),
        ({"trace_count": ("-2",)}, ErrorCode.INVALID_ARG, "Unable to parse 'trace_count'. Expecting value >= -1, got: -2"),
        (
            {"log_frequency": ("-1",)},
            ErrorCode.INVALID_ARG,
            "Unable to parse 'log_frequency', value is out of range [ 0, 4294967295 ], got: -1",
        ),
    ],
)
def test_bad_updates_are_refused_in_triton_s_words(settings: dict, code: ErrorCode, message: str) -> None:
    with pytest.raises(ServerError) as raised:
        parse_update(settings)
    assert (raised.value.code, raised.value.message) == (code, message)


def test_updates_read_values_as_std_stoi_does_and_empty_values_clear() -> None:
    assert parse_update({"trace_rate": (" 12abc",), "trace_count": None, "trace_level": ("TIMESTAMPS",), "colour": ("red",)}) == {
        "rate": 12,
        "count": CLEAR,
        "timestamps": True,
    }
    assert parse_update({"trace_level": ("VERBOSE",)}) == {}  # Triton ignores levels it does not know


# ---- the hierarchy --------------------------------------------------------------------------------

FILE_OPTIONS = TraceOptions(timestamps=True, rate=1000, file="/tmp/t.json")


class NullSink:
    def __init__(self) -> None:
        self.ended: list[RequestTrace] = []
        self.retired: list[LiveSetting] = []

    def begin(self, trace: RequestTrace) -> None:
        pass

    def end(self, trace: RequestTrace) -> None:
        self.ended.append(trace)

    def retire(self, setting: LiveSetting) -> None:
        self.retired.append(setting)

    def close(self) -> None:
        pass


def tracer(options: TraceOptions = FILE_OPTIONS) -> Tracer:
    return Tracer(options, NullSink())


def described(rate: int, count: int = -1, on: bool = True, frequency: int = 0) -> TraceSettings:
    return TraceSettings(("TIMESTAMPS",) if on else ("OFF",), rate, count, frequency, "/tmp/t.json")


def test_a_model_setting_mirrors_the_global_fields_it_does_not_specify() -> None:
    t = tracer()
    t.update("mlp", parse_update({"trace_rate": ("5",)}))
    t.update("", parse_update({"trace_count": ("9",), "trace_rate": ("50",)}))
    assert t.settings("mlp") == described(rate=5, count=9)
    assert t.settings("simple") == t.settings("") == described(rate=50, count=9)


def test_clearing_every_field_a_model_specified_returns_it_to_the_global_setting() -> None:
    t = tracer()
    t.update("mlp", parse_update({"trace_rate": ("5",)}))
    t.update("mlp", parse_update({"trace_rate": None}))
    t.update("", parse_update({"trace_rate": ("7",)}))
    assert t.settings("mlp") == described(rate=7)


def test_clearing_a_global_field_restores_the_command_line_s_value() -> None:
    t = tracer()
    t.update("", parse_update({"trace_rate": ("3",), "log_frequency": ("4",)}))
    t.update("", parse_update({"trace_rate": None}))
    assert t.settings("") == described(rate=1000, frequency=4)


def test_a_setting_that_cannot_trace_is_refused_unless_it_turns_tracing_off() -> None:
    no_file = tracer(TraceOptions())
    with pytest.raises(ServerError) as raised:
        no_file.update("", parse_update({"trace_level": ("TIMESTAMPS",)}))
    assert (raised.value.code, raised.value.message) == (
        ErrorCode.INVALID_ARG,
        "Attempting to set invalid trace setting :trace file name is not given",
    )
    t = tracer()
    with pytest.raises(ServerError, match="Attempting to set invalid trace setting :sample rate must be non-zero"):
        t.update("mlp", parse_update({"trace_rate": ("0",)}))
    t.update("", parse_update({"trace_rate": ("0",), "trace_level": ("OFF",)}))  # off: accepted
    assert t.settings("") == described(rate=0, on=False)
    assert not t.active


def test_opentelemetry_mode_needs_no_file() -> None:
    t = tracer(TraceOptions(mode=TraceMode.OPENTELEMETRY))
    t.update("", parse_update({"trace_level": ("TIMESTAMPS",), "trace_rate": ("1",)}))
    assert t.active and t.settings("").level == ("TIMESTAMPS",)


# ---- sampling -------------------------------------------------------------------------------------


def sample(t: Tracer, model: str, requests: int) -> list[RequestTrace]:
    traces = [t.start(model, 1, "", None, 0) for _ in range(requests)]
    return [trace for trace in traces if trace is not None]


def test_every_rate_th_request_is_traced_while_the_count_lasts() -> None:
    t = tracer(TraceOptions(timestamps=True, rate=3, count=2, file="f"))
    traced = sample(t, "mlp", 12)
    assert len(traced) == 2 and [trace.trace_id for trace in traced] == [1, 2]
    assert t.settings("").count == 0
    assert not t.active  # the count ran out: the request path is back to one check


def test_each_model_setting_samples_on_its_own_and_an_update_starts_afresh() -> None:
    t = tracer(TraceOptions(timestamps=True, rate=2, file="f"))
    t.update("mlp", parse_update({"trace_rate": ("1",)}))
    assert len(sample(t, "mlp", 4)) == 4
    assert len(sample(t, "simple", 3)) == 1
    old_global = t._global
    t.update("", parse_update({"trace_rate": ("2",)}))
    assert isinstance(t._sink, NullSink) and old_global in t._sink.retired  # what it collected gets written
    assert len(sample(t, "simple", 1)) == 0  # the new setting counts from its own first request


def test_tracing_off_never_samples_and_is_not_active() -> None:
    t = tracer(TraceOptions(file="f"))
    assert not t.active
    assert sample(t, "mlp", 5) == []
    t.update("mlp", parse_update({"trace_level": ("TIMESTAMPS",), "trace_rate": ("1",)}))
    assert t.active and len(sample(t, "mlp", 2)) == 2 and sample(t, "simple", 2) == []


def test_the_environment_twin_separates_entries_with_semicolons() -> None:
    environ = {"ORTSERVE_TRACE_CONFIG": "triton,file=/tmp/t.json;level=TIMESTAMPS;rate=5"}
    settings = parse_settings(["--model-repository", "."], environ)
    assert (settings.trace.file, settings.trace.timestamps, settings.trace.rate) == ("/tmp/t.json", True, 5)
    # The command line wins over the environment.
    assert parse_settings(["--model-repository", ".", "--trace-config", "rate=9"], environ).trace.rate == 9
