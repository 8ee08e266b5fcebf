"""The thread plan (pure) and the session options it turns into (no session is opened here:
a global pool, once created, would bind every later session of the test process)."""

from __future__ import annotations

import pytest

from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.runtime.session_options import build_session_options, sets_thread_counts
from server.runtime.threads import ThreadPlan, plan_threads
from server.settings import OrtThreadSettings

SPINNING = "session.intra_op.allow_spinning"


def config_with(**parameters: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m")
    for key, value in parameters.items():
        config.parameters[key.replace("__", ".")].string_value = value
    return config


def test_default_plan_gives_every_session_every_core_without_spinning() -> None:
    assert plan_threads(OrtThreadSettings(), cores=8) == ThreadPlan(
        global_pool=False, intra_op_threads=8, inter_op_threads=1, spinning=False
    )


def test_backend_config_sizes_the_default_or_the_global_pool() -> None:
    assert plan_threads(OrtThreadSettings(intra_op_threads=2), cores=8).intra_op_threads == 2
    assert plan_threads(OrtThreadSettings(True, 0, 4), cores=8) == ThreadPlan(True, 8, 4)


def test_a_session_without_counts_follows_the_plan_and_does_not_spin() -> None:
    options = build_session_options(config_with(), ThreadPlan(False, 6, 1))
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (6, 1)
    assert options.get_session_config_entry(SPINNING) == "0"
    assert options.use_per_session_threads


def test_a_models_own_counts_and_spinning_win_over_the_plan() -> None:
    config = config_with(intra_op_thread_count="3", inter_op_thread_count="2", session__intra_op__allow_spinning="1")
    options = build_session_options(config, ThreadPlan(False, 6, 1))
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)
    assert options.get_session_config_entry(SPINNING) == "1"
    assert sets_thread_counts(config) and not sets_thread_counts(config_with())


def test_under_the_global_pool_every_session_joins_it_even_with_counts() -> None:
    options = build_session_options(config_with(intra_op_thread_count="3"), ThreadPlan(True, 6, 1))
    assert not options.use_per_session_threads


def test_a_malformed_count_is_the_models_error() -> None:
    with pytest.raises(ServerError, match="parameter 'intra_op_thread_count' must be an integer"):
        build_session_options(config_with(intra_op_thread_count="many"), ThreadPlan(False, 2))
