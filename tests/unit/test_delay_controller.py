"""Batching to a latency target: the AIMD rule and its observation windows, on a fake clock."""

from __future__ import annotations

import pytest

from server.errors import ErrorCode, ServerError
from server.model_config.config_file import parse_config_text
from server.model_config.latency_target import latency_target_ms
from server.scheduling.delay_controller import DelayController, DelayTarget, Window, next_delay, p99, wait_joins
from tests.fake_clock import FakeClock

MS = 1_000_000
US = 1_000
TARGET = DelayTarget(target_ns=20 * MS, ceiling_ns=10 * MS, step_ns=200 * US, window_requests=8, window_ns=100 * MS)


def window(p99_ms: float = 1.0, requests: int = 8, batches: int = 8, waits: int = 0, early: int = 0, late: int = 0) -> Window:
    return Window(int(p99_ms * MS), requests, batches, waits, early, late)


def test_the_defaults_follow_the_target() -> None:
    target = DelayTarget.for_target(20.0)
    assert (target.target_ns, target.ceiling_ns, target.step_ns) == (20 * MS, 10 * MS, 200 * US)
    # A configured max_queue_delay_microseconds is the ceiling; steps never pass it.
    capped = DelayTarget.for_target(20.0, configured_delay_ns=50 * US)
    assert (capped.ceiling_ns, capped.step_ns) == (50 * US, 50 * US)
    assert DelayTarget.for_target(0.5).step_ns == 10 * US


def test_over_the_target_the_delay_halves_and_under_one_step_it_is_zero() -> None:
    assert next_delay(4 * MS, window(p99_ms=25), TARGET) == 2 * MS
    assert next_delay(300 * US, window(p99_ms=25, requests=8, batches=1), TARGET) == 0


def test_waits_that_keep_gathering_late_or_fill_up_grow_the_delay_up_to_the_ceiling() -> None:
    # Requests arriving at random join both halves of a wait alike, however short it is.
    assert next_delay(200 * US, window(batches=6, waits=6, early=1, late=1), TARGET) == 400 * US
    assert next_delay(10 * MS - 100 * US, window(batches=2, waits=2, late=2), TARGET) == 10 * MS  # they filled up


def test_waits_that_gather_only_early_or_nothing_shrink_the_delay() -> None:
    # Two clients whose requests arrive together: the rest of the wait after the pair only delays them.
    assert next_delay(1 * MS, window(requests=8, batches=4, waits=4, early=4, late=1), TARGET) == 500 * US
    # A lone client: nobody joins at all.
    assert next_delay(1 * MS, window(requests=8, batches=8, waits=8), TARGET) == 500 * US


def test_without_waits_shared_batches_probe_upwards_and_lone_requests_keep_no_delay() -> None:
    assert next_delay(0, window(requests=8, batches=2), TARGET) == 200 * US
    assert next_delay(0, window(requests=8, batches=8), TARGET) == 0
    assert next_delay(800 * US, window(requests=8, batches=8), TARGET) == 400 * US


def test_an_empty_window_changes_nothing() -> None:
    assert next_delay(3 * MS, window(requests=0, batches=0), TARGET) == 3 * MS


def test_joins_count_by_the_half_of_the_wait_they_arrive_in_and_filling_up_counts_late() -> None:
    start, deadline = 1_000 * US, 2_000 * US
    assert wait_joins([1_010 * US, 1_020 * US], start, deadline, dispatched_ns=deadline) == (2, 0)
    assert wait_joins([1_100 * US, 1_600 * US], start, deadline, dispatched_ns=deadline) == (1, 1)
    assert wait_joins([1_100 * US], start, deadline, dispatched_ns=1_200 * US) == (1, 1)  # filled before the deadline
    assert wait_joins([], start, deadline, dispatched_ns=deadline) == (0, 0)


def test_p99_is_the_nearest_rank_sample() -> None:
    assert p99(list(range(1, 101))) == 100
    assert p99(list(range(1, 201))) == 199
    assert p99([7]) == 7


def test_a_window_closes_after_enough_requests() -> None:
    clock = FakeClock()
    controller = DelayController(TARGET, started_ns=clock.now_ns())
    # Three batches of 3 queued requests each: shared batches, nothing waited, well under target.
    assert not controller.batch_done([1 * MS] * 3, clock.now_ns())
    assert not controller.batch_done([1 * MS] * 3, clock.now_ns())
    assert controller.batch_done([1 * MS] * 3, clock.now_ns())
    assert controller.delay_ns == 200 * US


def test_a_window_closes_after_its_time_even_with_few_requests() -> None:
    clock = FakeClock()
    controller = DelayController(TARGET, started_ns=clock.now_ns(), delay_ns=2 * MS)
    controller.wait_ended(early=0, late=0)
    assert not controller.batch_done([3 * MS], clock.now_ns())
    clock.advance_us(100_000)
    controller.wait_ended(early=0, late=0)
    assert controller.batch_done([3 * MS], clock.now_ns())
    assert controller.delay_ns == 1 * MS


def lone_client(controller: DelayController, clock: FakeClock, windows: int, latency_ns: int) -> list[int]:
    """One request at a time: every batch is one request; a delay makes each wait in vain."""
    delays = []
    for _ in range(windows * TARGET.window_requests):
        if controller.delay_ns:
            controller.wait_ended(early=0, late=0)
        controller.batch_done([latency_ns + controller.delay_ns], clock.now_ns())
        clock.advance_us(500)
        delays.append(controller.delay_ns)
    return delays


def test_a_lone_client_never_gets_a_delay() -> None:
    clock = FakeClock()
    controller = DelayController(TARGET, started_ns=clock.now_ns())
    assert set(lone_client(controller, clock, windows=20, latency_ns=300 * US)) == {0}


def test_a_delay_left_from_heavy_load_decays_to_zero_for_a_lone_client() -> None:
    clock = FakeClock()
    controller = DelayController(TARGET, started_ns=clock.now_ns(), delay_ns=TARGET.ceiling_ns)
    delays = lone_client(controller, clock, windows=8, latency_ns=300 * US)
    assert delays[-1] == 0
    assert delays == sorted(delays, reverse=True)


def test_heavy_load_grows_the_delay_until_the_p99_passes_the_target_then_backs_off() -> None:
    clock = FakeClock()
    controller = DelayController(TARGET, started_ns=clock.now_ns())
    delays = []
    for _ in range(200):
        # A model whose p99 is 2 ms plus the delay it is given, with batches that keep filling up.
        controller.wait_ended(early=2, late=1)
        latency = 2 * MS + 3 * controller.delay_ns
        controller.batch_done([latency] * TARGET.window_requests, clock.now_ns())
        clock.advance_us(1_000)
        delays.append(controller.delay_ns)
    assert max(delays) * 3 + 2 * MS > TARGET.target_ns  # it found the target
    settled = delays[100:]
    assert all(3 * d + 2 * MS <= TARGET.target_ns + 3 * TARGET.step_ns for d in settled)  # and stays near it
    assert min(settled) >= (TARGET.target_ns - 2 * MS) // 3 // 2 - TARGET.step_ns  # AIMD: never far below


def config_with(parameter: str, batching: str = "max_batch_size: 8\ndynamic_batching { }") -> str:
    return f'name: "m"\n{batching}\nparameters {{ key: "ortserve.target_latency_p99_ms" value {{ string_value: "{parameter}" }} }}'


@pytest.mark.parametrize("value", ["20", " 0.5 ", "60000"])
def test_the_parameter_reads_as_milliseconds(value: str) -> None:
    assert latency_target_ms(parse_config_text(config_with(value), "config.pbtxt")) == float(value)


@pytest.mark.parametrize("value", ["", "fast", "0", "-5", "nan", "inf", "60001"])
def test_a_bad_value_is_invalid_arg(value: str) -> None:
    with pytest.raises(ServerError) as raised:
        latency_target_ms(parse_config_text(config_with(value), "config.pbtxt"))
    assert raised.value.code is ErrorCode.INVALID_ARG
    assert raised.value.message == (
        f"model 'm': parameter 'ortserve.target_latency_p99_ms' must be a number of milliseconds in (0, 60000], got '{value}'"
    )


@pytest.mark.parametrize("batching", ["max_batch_size: 8", "max_batch_size: 0\ndynamic_batching { }"])
def test_a_model_that_does_not_merge_requests_cannot_have_a_target(batching: str) -> None:
    with pytest.raises(ServerError, match="needs dynamic_batching with max_batch_size > 0") as raised:
        latency_target_ms(parse_config_text(config_with("20", batching), "config.pbtxt"))
    assert raised.value.code is ErrorCode.INVALID_ARG


def test_no_parameter_no_target() -> None:
    assert latency_target_ms(parse_config_text('name: "m"\nmax_batch_size: 8', "config.pbtxt")) is None


def test_random_arrivals_climb_past_small_delays() -> None:
    # However short the delay, requests arriving at random join both halves of a wait alike.
    clock = FakeClock()
    controller = DelayController(TARGET, started_ns=clock.now_ns(), delay_ns=TARGET.step_ns)
    for _ in range(30):
        controller.wait_ended(early=1, late=1)
        controller.batch_done([1 * MS] * TARGET.window_requests, clock.now_ns())
    assert controller.delay_ns == 31 * TARGET.step_ns
