"""Trace settings as Triton 2.41 keeps them (server/src/tracer.cc), as pure values and rules.

There is one global setting and, optionally, one per model. A model's setting names the fields
it *specifies*; the others mirror the global setting, and follow it when it changes. A field
cleared (an empty value over gRPC, ``null`` over HTTP) stops being specified: the global value
applies again (for the global setting, the value from the command line). A model setting that
specifies nothing is removed. A setting that cannot trace is refused unless it turns tracing
off: ``Attempting to set invalid trace setting :<reason>``.

Requests over the network never name the trace file: Triton answers UNSUPPORTED "trace file
location can not be updated through network protocol" since CVE-2024-0100, whose 2.41 allowed
any client to write trace output to any path the server could write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import ServerError

FIELDS = ("timestamps", "rate", "count", "log_frequency", "file")
# The network names of the fields, in the order Triton reads them.
NAMES = {"file": "trace_file", "timestamps": "trace_level", "rate": "trace_rate", "count": "trace_count", "log_frequency": "log_frequency"}
UINT32_MAX, INT32_MAX = 2**32 - 1, 2**31 - 1
MIN_COUNT = -1


class Clear:
    """The value of an update that clears a field (an empty value / JSON null)."""


CLEAR = Clear()

# What a request asks: field → new value, or CLEAR; fields it does not name are absent.
Update = dict[str, object]


@dataclass(frozen=True, slots=True)
class SettingValues:
    timestamps: bool
    rate: int
    count: int
    log_frequency: int
    file: str


@dataclass(frozen=True, slots=True)
class Entry:
    """A setting in force and the fields it specifies (the rest mirror the setting above it)."""

    values: SettingValues
    specified: frozenset[str] = frozenset()


def parse_update(settings: Mapping[str, tuple[str, ...] | None]) -> Update:
    """Network values (each a tuple of strings; None or () clears) → an Update, with Triton's
    checks and words. Unknown names are ignored, as in Triton. Raises ServerError."""
    if "trace_file" in settings:
        raise ServerError.unsupported("trace file location can not be updated through network protocol")
    update: Update = {}
    if "trace_level" in settings:
        level = _level(settings["trace_level"])
        if level is not None:
            update["timestamps"] = level
    for field, lowest, highest in (("rate", 0, UINT32_MAX), ("count", MIN_COUNT, INT32_MAX), ("log_frequency", 0, UINT32_MAX)):
        name = NAMES[field]
        if name in settings:
            update[field] = _number(name, settings[name], lowest, highest)
    return update


def _level(values: tuple[str, ...] | None) -> bool | Clear | None:
    """True (TIMESTAMPS), False (OFF), CLEAR, or None when no known level was named."""
    if not values:
        return CLEAR
    level: bool | None = None
    for value in values:
        if value == "OFF":
            if len(values) != 1:
                raise ServerError.invalid_arg("Expect only one trace level 'OFF' is specified")
            level = False
        elif value == "TIMESTAMPS":
            level = True
        elif value == "TENSORS":
            raise ServerError.unsupported("trace level 'TENSORS' is not supported by ortserve; it traces 'TIMESTAMPS'")
    return level


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def _number(name: str, values: tuple[str, ...] | None, lowest: int, highest: int) -> int | Clear:
    """Triton reads these with std::stoi: leading blanks and an integer prefix; the rest is ignored."""
    if not values:
        return CLEAR
    if len(values) != 1:
        raise ServerError.invalid_arg(f"expect only 1 value for '{name}'")
    text = values[0]
    match = _LEADING_INT.match(text)
    if match is None:
        raise ServerError.invalid_arg(f"Unable to parse '{name}', got: {text}")
    number = int(match.group(1))
    if number < lowest and name == "trace_count":
        raise ServerError.invalid_arg(f"Unable to parse '{name}'. Expecting value >= {MIN_COUNT}, got: {text}")
    if not lowest <= number <= highest:
        raise ServerError.invalid_arg(f"Unable to parse '{name}', value is out of range [ {lowest}, {highest} ], got: {text}")
    return number


def merge(update: Update, current: Entry | None, fallback: SettingValues) -> Entry:
    """The setting after ``update``: specified fields keep or take their values, the others
    mirror ``fallback`` (the global setting for a model, the command line's for the global one)."""
    specified = set(current.specified if current is not None else ())
    values: dict[str, Any] = {}
    for field in FIELDS:
        change = update.get(field)
        if isinstance(change, Clear):
            specified.discard(field)
        elif change is not None:
            specified.add(field)
        if field not in specified:
            values[field] = getattr(fallback, field)
        else:
            values[field] = change if change is not None else getattr(current.values if current else fallback, field)
    return Entry(SettingValues(**values), frozenset(specified))


def invalid_reason(values: SettingValues, needs_file: bool) -> str:
    """Why a setting cannot trace ("" when it can). A count of 0 is valid: nothing more to
    collect (Triton refuses it with an empty reason)."""
    if not values.timestamps:
        return "tracing is disabled"
    if values.rate == 0:
        return "sample rate must be non-zero"
    if needs_file and not values.file:
        return "trace file name is not given"
    return ""


def check_settable(values: SettingValues, needs_file: bool) -> None:
    """Raises INVALID_ARG for a setting that cannot trace, unless it turns tracing off."""
    reason = invalid_reason(values, needs_file)
    if reason and values.timestamps:
        raise ServerError.invalid_arg(f"Attempting to set invalid trace setting :{reason}")
