"""The committed server/proto/ code must match what scripts/gen_protos.py makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "scripts" / "gen_protos.py"


def test_generated_code_is_up_to_date() -> None:
    # A subprocess runs the script exactly as a developer would.
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (
        "server/proto/ is stale relative to protos/*.proto (or protoc failed).\n"
        "Regenerate with: python scripts/gen_protos.py\n"
        f"exit status {result.returncode}\n{result.stdout}{result.stderr}"
    )
