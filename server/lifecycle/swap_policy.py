"""Which versions a (re)load touches, as a pure function of what is on record and on disk.

The availability rule: versions the policy now selects are loaded next to whatever serves them;
versions it no longer selects are retired only once a selected one is READY, so a model never
goes dark because its new version failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.types import ModelState


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    state: ModelState
    serving: bool
    # (model-level digest, version digest) it was loaded from; None when unknown.
    loaded_from: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class SwapPlan:
    # Versions to (re)load now, ascending.
    load: tuple[int, ...]
    # Versions to retire once the loads are done, if a selected version is READY then.
    stale: tuple[int, ...]


def plan_swap(
    current: Mapping[int, VersionSnapshot],
    selected: list[int],
    digests: Mapping[int, tuple[str, str]] | None,
    force: bool,
) -> SwapPlan:
    """``digests`` maps each selected version to the digests of its files now (None: unknown,
    which reloads); ``force`` reloads every selected version (an explicit load request)."""

    def needs_load(version: int) -> bool:
        snapshot = current.get(version)
        if force or snapshot is None or not snapshot.serving or digests is None:
            return True
        return snapshot.loaded_from != digests.get(version)

    return SwapPlan(
        load=tuple(v for v in sorted(selected) if needs_load(v)),
        stale=tuple(v for v in sorted(current) if v not in selected),
    )


def retire_stale(current_after: Mapping[int, VersionSnapshot], selected: list[int]) -> bool:
    """Whether stale versions may go: some selected version serves (READY) after the loads."""
    return any(current_after[v].state is ModelState.READY for v in selected if v in current_after)
