"""Every loadtest/bench_*.py imports and answers --help, so a benchmark cannot rot unnoticed.

A benchmark only runs by hand (it takes minutes), so nothing else would notice when it names a
helper that was moved or removed: loadtest/bench_http.py did, for a while.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from scripts.harness import REPO_ROOT

BENCHMARKS = sorted(path.stem for path in (REPO_ROOT / "loadtest").glob("bench_*.py"))


def test_the_benchmarks_are_found() -> None:
    assert {"bench_foundation", "bench_http"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_imports_and_prints_its_usage(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"loadtest.{name}")
    monkeypatch.setattr(sys, "argv", [str(Path(module.__file__ or name).name), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
