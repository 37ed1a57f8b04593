"""The benchmark runs end to end (tiny sizes). Figures are not asserted: they are not tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    n = result["sizes"]["events"]
    assert result["ours_1_subscriber"]["completed"] >= n
    assert result["ours_5_subscribers"]["completed"] >= 5 * n
    assert result["ours_1_subscriber_batched"]["completed"] >= n
    assert result["ours_few_users"]["completed"] >= n
    assert result["naive_1_subscriber"]["completed"] >= n
    assert result["naive_5_subscribers"]["completed"] >= 5 * n
    assert result["naive_1_subscriber_pinned"]["completed"] >= n
    assert len(result["rounds"]) == result["sizes"]["rounds"]
    assert result["celery_noop"]["completed"] >= n
    assert result["bare_http"]["requests"] == n
    assert result["live_max"]["events"] == result["latency"]["events"] == n // 4 * 4
    assert result["live_max"]["lost"] == result["latency"]["lost"] == 0
    assert result["retry_lateness"]["retries"] == result["sizes"]["lateness_events"]
    assert result["retry_lateness"]["sent_twice"] == 0
    assert result["pending_retries"]["pending"] == result["sizes"]["pending"]
    assert {"cores", "python", "redis", "date"} <= set(result["machine"])
    assert result["fairness"]["unaccounted"] == 0
    assert result["fairness"]["all_healthy"]["healthy_missing"] == 0
    assert len(result["targets"]) == 13
    assert "ratios:" in run.stdout
