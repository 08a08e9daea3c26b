"""The examples run with their documented commands (small sizes, against the suite's server)."""

from __future__ import annotations

import re
import subprocess
import sys

import anyio.to_thread
import pytest

from rushpy import RedisConfig
from tests.helpers import REPO, worker_env

pytestmark = pytest.mark.usefixtures("anyio_backend")


async def run_example(config: RedisConfig, name: str, *args: str) -> str:
    """Run ``python examples/NAME.py ARGS`` as documented; returns its output (it must succeed)."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, f"examples/{name}.py", *args],
            cwd=REPO,
            env=worker_env(config),  # $RUSHPY_REDIS_URL: the suite's server instead of an embedded one
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )

    result = await anyio.to_thread.run_sync(run)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def best(output: str) -> float:
    match = re.search(r"best y = ([0-9.]+) at x = \(", output)
    assert match, output
    return float(match.group(1))


async def test_random_search(config: RedisConfig, network_id: str) -> None:
    args = ["--workers", "2", "--evals", "20", "--network", network_id]
    out = await run_example(config, "random_search", *args)
    match = re.search(r"(\d+) evaluations by 2 workers", out)
    assert match and 20 <= int(match.group(1)) <= 21, out  # a worker may propose once past the budget
    assert "top 5:" in out
    assert best(out) >= 0.397887  # Branin's global minimum


async def test_adbo(config: RedisConfig, network_id: str) -> None:
    out = await run_example(config, "adbo", "--workers", "2", "--evals", "10", "--network", network_id)
    assert re.search(r"\d+ evaluations by 2 workers", out), out
    weights = re.search(r"exploration weight per worker: \{(.*)\}", out)
    # One lambda per worker that evaluated (on a loaded machine a late worker may find the
    # budget spent before its first proposal).
    assert weights and 1 <= weights.group(1).count(":") <= 2, out
    assert best(out) >= 0.397887


async def test_inflight(config: RedisConfig, network_id: str) -> None:
    args = ["--workers", "2", "--in-flight", "4", "--evals", "20", "--failure-rate", "0.5"]
    out = await run_example(config, "inflight", *args, "--network", network_id)
    pattern = r"20 evaluations \((\d+) finished, (\d+) failed\) in [0-9.]+ s, at most (\d+) in flight"
    match = re.search(pattern, out)
    assert match, out
    finished, failed, in_flight = (int(g) for g in match.groups())
    assert finished + failed == 20
    assert failed > 0  # P(no failure in 20 at rate 0.5) = 1e-6
    assert in_flight == 4
    assert "a failure: RuntimeError: simulated failure" in out


async def test_optuna_study(config: RedisConfig, network_id: str) -> None:
    out = await run_example(
        config, "optuna_study", "--trials", "12", "--in-flight", "3", "--network", network_id
    )
    match = re.search(r"12 trials, 3 in flight: \{(.*)\}", out)
    assert match, out
    counts = dict(re.findall(r"'(\w+)': (\d+)", match.group(1)))
    assert set(counts) <= {"COMPLETE", "FAIL"}  # never left RUNNING
    assert sum(int(n) for n in counts.values()) == 12
    assert re.search(r"best value = [0-9.]+ at \{'x1'", out), out


async def test_gridsearch(config: RedisConfig, network_id: str) -> None:
    out = await run_example(config, "gridsearch", "--workers", "2", "--network", network_id)
    assert re.search(r"160 fits on 2 rushpy workers", out), out
    accuracy = re.search(r"best cross-validated accuracy: ([0-9.]+)", out)
    assert accuracy and float(accuracy.group(1)) > 0.9, out
