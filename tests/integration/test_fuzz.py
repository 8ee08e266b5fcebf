"""Seeded fuzzing against the real server: every hostile variation gets a precise answer.

The figures (20,000 gRPC and 5,000 HTTP cases) come from ``python -m loadtest.bench_hardening``;
this test runs a smaller, fixed set on every build.
"""

from __future__ import annotations

from loadtest.fuzz import fuzz_grpc, fuzz_http
from scripts.harness import ServerProcess


def test_fuzzed_grpc_requests_never_get_internal_or_unknown(server: ServerProcess) -> None:
    results = fuzz_grpc(server.grpc_url, count=3000, seed=11, threads=4)
    assert results.sent == 3000
    assert results.defects == []
    assert results.outcomes["OK"] > 100  # the fuzz also reaches the model, not only the validation


def test_fuzzed_http_requests_never_get_a_500(server: ServerProcess) -> None:
    results = fuzz_http(server.http_port, count=1500, seed=11, threads=4)
    assert results.sent == 1500
    assert results.defects == []
    assert results.outcomes["200"] > 20
