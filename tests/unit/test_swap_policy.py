"""The swap policy: which versions a (re)load touches, decided from snapshots alone."""

from __future__ import annotations

from server.lifecycle.swap_policy import SwapPlan, VersionSnapshot, plan_swap, retire_stale
from server.types import ModelState

READY = VersionSnapshot(ModelState.READY, serving=True, loaded_from=("m", "v1"))
FAILED = VersionSnapshot(ModelState.UNAVAILABLE, serving=False, loaded_from=None)


def test_first_load_loads_every_selected_version() -> None:
    assert plan_swap({}, [2, 1], digests=None, force=False) == SwapPlan(load=(1, 2), stale=())


def test_unchanged_files_are_not_reloaded() -> None:
    assert plan_swap({1: READY}, [1], digests={1: ("m", "v1")}, force=False) == SwapPlan(load=(), stale=())


def test_changed_files_reload_the_version() -> None:
    assert plan_swap({1: READY}, [1], digests={1: ("m", "v1-edited")}, force=False).load == (1,)


def test_a_model_level_change_reloads_too() -> None:
    assert plan_swap({1: READY}, [1], digests={1: ("m-edited", "v1")}, force=False).load == (1,)


def test_unknown_digests_and_forced_loads_reload() -> None:
    assert plan_swap({1: READY}, [1], digests=None, force=False).load == (1,)
    assert plan_swap({1: READY}, [1], digests={1: ("m", "v1")}, force=True).load == (1,)


def test_a_failed_version_is_retried() -> None:
    assert plan_swap({1: FAILED}, [1], digests={1: ("m", "v1")}, force=False).load == (1,)


def test_versions_no_longer_selected_are_stale() -> None:
    plan = plan_swap({1: READY, 2: READY}, [2, 3], digests={2: ("m", "v1"), 3: ("m", "v3")}, force=False)
    assert plan == SwapPlan(load=(3,), stale=(1,))


def test_stale_versions_go_only_once_a_selected_version_is_ready() -> None:
    assert retire_stale({1: READY, 2: READY}, [2])
    assert not retire_stale({1: READY, 2: FAILED}, [2])
    assert not retire_stale({1: READY}, [2])  # the selected version's load left no record
