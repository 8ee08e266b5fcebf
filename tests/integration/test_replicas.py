"""Scale-out behaviour on one machine: ortserve replicas on 127.0.0.1 and a real grpcio client.

The client is what tritonclient uses underneath (a grpcio channel) with Triton-compatible raw stubs
from server.proto: a static address list (``ipv4:127.0.0.1:p1,...``) balanced with ``round_robin``,
optionally health-checked (grpc.health.v1 Watch, via the service config's healthCheckConfig) and
retrying UNAVAILABLE. The experiments live in loadtest/bench_replicas.py, which prints the same
figures at larger sizes; here they are short and their behaviour is asserted. Figures are printed
as each test runs. About 40 s.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest import bench_replicas as bench
from scripts.harness import REPO_ROOT, ServerProcess

THREADS = 6


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Three ready replicas on bundled model_repo/. Tests may replace a member (same ports) in place."""
    group = bench.start_replicas(3, tmp_path_factory.mktemp("replicas"))
    yield group
    bench.stop_all(group)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a figure straight to the terminal, even under -q and output capture."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"\n  [replicas] {line}", end="")

    return say


def test_round_robin_spreads_requests_evenly(replicas: list[ServerProcess], report: Callable[[str], None]) -> None:
    result = bench.spread(replicas, requests=300, threads=3)
    report(f"round_robin, 300 requests → per replica {result.per_replica}")
    assert sum(result.per_replica) == 300
    assert all(90 <= count <= 110 for count in result.per_replica), result.per_replica


def test_a_replica_that_is_not_ready_gets_no_requests_from_a_health_checking_client(
    replicas: list[ServerProcess], tmp_path: Path, report: Callable[[str], None]
) -> None:
    # Live and serving `simple`, but not ready: another model failed to load (--strict-readiness).
    unready = ServerProcess([bench.broken_repository(tmp_path)], log_path=tmp_path / "unready.log").start(wait_for="live")
    try:
        result = bench.not_ready(replicas[:2], unready, requests=150, threads=3)
    finally:
        bench.stop_all([unready])
    report(
        f"not-ready replica (HTTP ready {result.not_ready_http_status}, health {result.not_ready_health}): "
        f"health-checking client {result.with_health_check}, plain client {result.without_health_check} (its count last)"
    )
    assert result.not_ready_http_status == 400
    assert result.not_ready_health == "NOT_SERVING"
    assert sum(result.with_health_check) == 150
    assert result.with_health_check[-1] == 0
    # It does serve `simple`: the health check, not a failure, is what keeps requests away.
    assert result.without_health_check[-1] > 0


def test_a_crashed_replica_costs_only_requests_in_flight_and_none_with_retries(
    replicas: list[ServerProcess], report: Callable[[str], None]
) -> None:
    plain, replicas[2] = bench.kill_under_load(replicas, 2, signal.SIGKILL, retries=False, threads=THREADS, duration_secs=2.0)
    retried, replicas[2] = bench.kill_under_load(replicas, 2, signal.SIGKILL, retries=True, threads=THREADS, duration_secs=2.0)
    for kill in (plain, retried):
        report(
            f"SIGKILL 1 of 3 under load, retries {'on ' if kill.retries else 'off'}: {sum(kill.errors.values())} failed "
            f"of {kill.sent} {kill.errors} ({kill.in_flight_at_kill} requests in flight over all replicas at the kill)"
        )
    assert plain.ok + sum(plain.errors.values()) == plain.sent
    assert set(plain.errors) <= {"UNAVAILABLE"}
    # The requests in flight on the victim, plus the few routed to it before the channel saw the
    # connection drop: a handful, never a share of the whole run.
    assert sum(plain.errors.values()) <= 3 * THREADS
    assert retried.errors == {}
    assert retried.ok == retried.sent


def test_a_graceful_stop_under_load_loses_nothing_with_retries(replicas: list[ServerProcess], report: Callable[[str], None]) -> None:
    result, replicas[2] = bench.kill_under_load(replicas, 2, signal.SIGTERM, retries=True, threads=THREADS, duration_secs=2.0)
    report(f"SIGTERM 1 of 3 under load, retries on: {sum(result.errors.values())} failed of {result.sent} {result.errors}")
    assert result.errors == {}


def test_a_replica_the_client_listed_from_the_start_gets_traffic_once_up(
    replicas: list[ServerProcess], report: Callable[[str], None]
) -> None:
    bench.stop_all([replicas[2]])
    late, replicas[2] = bench.late_static_list(replicas[:2], replicas[2], window_secs=2.0)
    report(bench.late_line(late))
    assert late.secs_to_first_request is not None
    assert late.secs_to_first_request < 5.0
    assert late.share_after > 0.2


def test_max_connection_age_lets_a_replica_added_behind_an_l4_proxy_get_its_share(tmp_path: Path, report: Callable[[str], None]) -> None:
    """Six pick_first clients through a TCP proxy that pins each connection to one backend, as a
    ClusterIP Service does; a third replica joins the proxy while they run."""
    figures = {}
    for age_ms in (0, 1000):
        args = [f"--grpc-max-connection-age-ms={age_ms}", "--grpc-max-connection-age-grace-ms=500"] if age_ms else []
        early = bench.start_replicas(2, tmp_path / f"age{age_ms}", args)
        late = ServerProcess([REPO_ROOT / "model_repo"], args, log_path=tmp_path / f"age{age_ms}" / "late.log")
        try:
            figures[age_ms] = bench.late_behind_proxy(early, late, age_ms, clients=6, window_secs=2.0)
        finally:
            bench.stop_all([*early, late])
        report(bench.late_line(figures[age_ms]))
    pinned, aged = figures[0], figures[1000]
    assert pinned.secs_to_first_request is None
    assert pinned.per_replica_after[-1] == 0
    assert aged.secs_to_first_request is not None
    assert aged.secs_to_first_request < 4.0
    assert aged.share_after > 0.15
