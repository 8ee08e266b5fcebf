"""``--trace-config`` and Triton's deprecated ``--trace-*`` flags → TraceOptions.

Triton's format (command_line_parser.cc): ``--trace-config <setting>=<value>`` for the global
settings (level, rate, count, mode) and ``--trace-config <mode>,<setting>=<value>`` for a mode's
own: ``triton,file=<path>``, ``triton,log-frequency=<n>``, ``opentelemetry,url=<url>`` and
``opentelemetry,resource=<key>=<value>``. A ``--trace-config`` setting wins over its deprecated
flag. Where Triton silently accepts what cannot trace (an unknown setting, a rate of 0, tracing
on in triton mode without a file), ortserve refuses at start with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from server.settings import SettingsError, TraceMode, TraceOptions

_FORMAT = "--trace-config option format is '<trace mode>,<setting>=<value>'."
_GLOBAL = ("level", "rate", "count", "mode")
_MODE_SETTINGS = {TraceMode.TRITON: ("file", "log-frequency"), TraceMode.OPENTELEMETRY: ("url", "resource")}


@dataclass
class DeprecatedTraceFlags:
    """Triton's older flags, each None when not given (``levels`` may repeat)."""

    file: str | None = None
    levels: list[str] = field(default_factory=list)
    rate: str | None = None
    count: str | None = None
    log_frequency: str | None = None


def parse_mode(text: str) -> TraceMode:
    try:
        return TraceMode(text.lower())
    except ValueError:
        raise SettingsError(f'invalid value for trace mode option: {text}. Available options are "triton" and "opentelemetry"') from None


def parse_level(text: str) -> bool:
    """True for TIMESTAMPS (and Triton's synonyms), False for OFF."""
    value = text.lower()
    if value in ("false", "off"):
        return False
    if value in ("true", "on", "min", "max", "timestamps"):
        return True
    if value == "tensors":
        raise SettingsError("trace level TENSORS is not supported by ortserve (it traces TIMESTAMPS)")
    raise SettingsError(f"invalid value for trace level option: {text}")


def split_entry(entry: str) -> tuple[TraceMode | None, str, str]:
    """``[mode,]setting=value`` → (mode or None for a global setting, setting, value)."""
    comma = entry.find(",")
    if comma == 0:
        raise SettingsError(
            f"No trace mode specified. --trace-config option format is <trace mode>,<setting>=<value> or <setting>=<value>. Got {entry}"
        )
    mode = parse_mode(entry[:comma]) if comma > 0 else None
    setting, equals, value = entry[comma + 1 :].partition("=")
    if not equals or not setting or not value:
        raise SettingsError(f"{_FORMAT} Got {entry}")
    return mode, setting, value


def _int(entry: str, value: str, lowest: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"--trace-config '{entry}': '{value}' is not an integer") from None
    if number < lowest:
        raise SettingsError(f"--trace-config '{entry}': must be >= {lowest}")
    return number


def parse_trace_options(entries: Sequence[str], deprecated: DeprecatedTraceFlags | None = None) -> TraceOptions:
    """Raises SettingsError (one line) for a malformed entry or a setting that cannot trace."""
    entries = [*_deprecated_entries(deprecated or DeprecatedTraceFlags()), *entries]
    split = [(entry, *split_entry(entry)) for entry in entries]
    options = TraceOptions()
    levels: list[bool] = []
    for entry, mode, setting, value in split:
        if mode is not None:
            continue
        if setting == "level":
            levels.append(parse_level(value))
        elif setting == "rate":
            options = replace(options, rate=_int(entry, value, 1))
        elif setting == "count":
            options = replace(options, count=_int(entry, value, -1))
        elif setting == "mode":
            options = replace(options, mode=parse_mode(value))
        else:
            raise SettingsError(f"--trace-config '{entry}': unknown setting '{setting}' (global settings: {', '.join(_GLOBAL)})")
    # Like Triton: levels add up, and an explicit OFF anywhere turns tracing off.
    options = replace(options, timestamps=bool(levels) and all(levels))
    for entry, mode, setting, value in split:
        if mode is not None:
            options = _mode_setting(options, entry, mode, setting, value)
    if options.timestamps and options.mode is TraceMode.TRITON and not options.file:
        raise SettingsError("trace level TIMESTAMPS in triton mode needs a file: --trace-config triton,file=<path>")
    return options


def _mode_setting(options: TraceOptions, entry: str, mode: TraceMode, setting: str, value: str) -> TraceOptions:
    if setting not in _MODE_SETTINGS[mode]:
        known = ", ".join(_MODE_SETTINGS[mode])
        raise SettingsError(f"--trace-config '{entry}': unknown {mode.value} setting '{setting}' (settings: {known})")
    if mode is not options.mode:  # Triton ignores another mode's settings
        return options
    if setting == "file":
        return replace(options, file=value)
    if setting == "log-frequency":
        return replace(options, log_frequency=_int(entry, value, 0))
    if setting == "url":
        return replace(options, otel_url=value)
    key, equals, attribute = value.partition("=")
    if not equals or not key:
        raise SettingsError(f"--trace-config '{entry}': expected resource=<key>=<value>")
    return replace(options, otel_resource=(*options.otel_resource, (key, attribute)))


def _deprecated_entries(flags: DeprecatedTraceFlags) -> list[str]:
    """The older flags as the --trace-config entries they stand for (given first, so the new flag wins)."""
    entries = [f"level={level}" for level in flags.levels]
    entries += [f"rate={flags.rate}"] if flags.rate is not None else []
    entries += [f"count={flags.count}"] if flags.count is not None else []
    entries += [f"triton,file={flags.file}"] if flags.file is not None else []
    entries += [f"triton,log-frequency={flags.log_frequency}"] if flags.log_frequency is not None else []
    return entries
