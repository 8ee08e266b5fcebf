"""Which version directories a model's ``version_policy`` asks to serve (Triton's semantics)."""

from __future__ import annotations

from collections.abc import Iterable

from server.errors import ServerError
from server.proto import model_config_pb2 as mc


def select_versions(policy: mc.ModelVersionPolicy, available: Iterable[int]) -> list[int]:
    """The versions to load, ascending.

    latest{n} (the default, n=1) serves the n highest versions present; all serves every one;
    specific serves the listed versions that exist. Raises INVALID_ARG for latest{0}.
    """
    present = sorted(set(available))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return present
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in present if v in wanted]
    num_versions = policy.latest.num_versions if choice == "latest" else 1
    if num_versions < 1:
        raise ServerError.invalid_arg("version_policy latest.num_versions must be at least 1")
    return present[-num_versions:]


def describe(policy: mc.ModelVersionPolicy) -> str:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        return f"specific {list(policy.specific.versions)}"
    return f"latest {policy.latest.num_versions if choice == 'latest' else 1}"


def parse_version(version: str) -> int:
    """A request's version string as a number; raises INVALID_ARG like Triton for anything else."""
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise ServerError.invalid_arg(
            f"failed to get model version from specified version string '{version}' (details: a version must be a positive decimal integer)"
        )
    return int(version)
