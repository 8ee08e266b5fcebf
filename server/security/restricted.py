"""Triton's header restrictions: ``--grpc-restricted-protocol`` and ``--http-restricted-api``.

Both take ``<groups>:<key>=<value>`` (groups comma-separated, Triton's names) and may repeat, each
group in at most one of them. A call to a restricted group must carry the header ``key`` with
exactly ``value``; over gRPC the metadata key is ``triton-grpc-protocol-<key>``, as in Triton.
Groups named in no restriction stay as they are. Parsing follows Triton's command_line_parser.cc,
and so do the error messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.security.groups import ApiGroup

GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


@dataclass(frozen=True, slots=True)
class Restriction:
    header: str  # lower case: gRPC metadata keys are, and HTTP header names compare without case
    value: str


class RestrictionError(ValueError):
    """A malformed restriction flag; the message is Triton's."""


def _split_option(text: str, flag: str) -> tuple[str, str, str]:
    groups, colon, rest = text.partition(":")
    key, equals, value = rest.partition("=")
    if not (colon and equals and groups and key and value):
        raise RestrictionError(f"--{flag} option format is '<config name>:<setting>=<value>'. Got {text}")
    return groups, key, value


def parse_restrictions(options: Iterable[str], flag: str, feature_type: str, header_prefix: str) -> dict[ApiGroup, Restriction]:
    """``feature_type`` is Triton's word in its messages: "protocol" (gRPC) or "api" (HTTP).

    Raises RestrictionError for a malformed option, an unknown group or a group given twice.
    """
    restrictions: dict[ApiGroup, Restriction] = {}
    for option in options:
        groups, key, value = _split_option(option, flag)
        for name in (g for g in groups.split(",") if g):
            try:
                group = ApiGroup(name)
            except ValueError:
                raise RestrictionError(f"unknown restricted {feature_type} '{name}'") from None
            if group in restrictions:
                raise RestrictionError(f"restricted {feature_type} '{name}' can not be specified in multiple config groups")
            restrictions[group] = Restriction((header_prefix + key).lower(), value)
    return restrictions


def grpc_restrictions(options: Iterable[str]) -> dict[ApiGroup, Restriction]:
    return parse_restrictions(options, "grpc-restricted-protocol", "protocol", GRPC_HEADER_PREFIX)


def http_restrictions(options: Iterable[str]) -> dict[ApiGroup, Restriction]:
    return parse_restrictions(options, "http-restricted-api", "api", "")
