"""The dashboard with a big network: API times, page load time and update latency in headless Chromium.

Run from the repository root (needs the test extra and Chromium with chromedriver)::

    .venv/bin/python -m benchmarks.dashboard [--tasks 100000]

On a private embedded server it records ``--tasks`` finished tasks (two
numeric inputs, one numeric result), 1,000 failed and 1,000 queued ones,
serves the dashboard, and reports:

- each API call's time (median of 5): summary, workers, a task page (first
  and last), a failed task page, one task, the history (10,000 points), the log tail;
- the page's load time: from navigation until the counts show the network
  and the history plot has drawn its points;
- the update latency: from recording one more finished task until the page
  shows the new count (summaries come every second, so this includes up to
  a second of waiting for the next one).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import rushpy
from tests.dashboard import running_dashboard

__all__ = ["main"]


async def _fill(rush: rushpy.Controller, n: int) -> list[str]:
    keys: list[str] = []
    for start in range(0, n, 10_000):
        xss = [{"a": i % 97, "b": (i * 7) % 89} for i in range(start, min(n, start + 10_000))]
        yss = [{"loss": (x["a"] - 40) ** 2 + (x["b"] - 30) ** 2} for x in xss]
        keys += await rush.push_finished_tasks(xss, yss)
    await rush.push_failed_tasks([{"a": i, "b": i} for i in range(1000)], ["broken"] * 1000)
    await rush.push_tasks([{"a": i, "b": i} for i in range(1000)])
    return keys


async def _api_times(url: str, network: str, key: str) -> dict[str, float]:
    base = f"/api/n/{network}"
    calls = {
        "summary": base + "/summary",
        "workers": base + "/workers",
        "tasks, first page": base + "/tasks?limit=50",
        "tasks, last page": base + "/tasks?limit=50&offset=101950",
        "failed tasks page": base + "/tasks?state=failed&limit=50",
        "one task": base + f"/task/{key}",
        "history (10,000 points)": base + "/history?limit=10000",
        "log tail": base + "/logs?limit=200",
    }
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for name, path in calls.items():
            times = []
            for _ in range(5):
                started = time.perf_counter()
                response = await client.get(path)
                times.append(time.perf_counter() - started)
                response.raise_for_status()
            out[name] = statistics.median(times)
    return out


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def _wait(check: Any, timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if check():
                return time.perf_counter() - started
        except Exception:  # the page is still building that element
            pass
        time.sleep(0.02)
    raise TimeoutError("the page did not show it in time")


async def _run(n: int) -> None:
    with rushpy.EmbeddedServer() as server:
        network = "dashboard-bench"
        async with rushpy.Controller(network, config=server.config) as rush:
            started = time.perf_counter()
            keys = await _fill(rush, n)
            print(
                f"recorded {n:,} finished tasks (+1,000 failed, +1,000 queued) "
                f"in {time.perf_counter() - started:.1f} s"
            )
            with running_dashboard(server.config, network=network) as url:
                for name, seconds in (await _api_times(url, network, keys[-1])).items():
                    print(f"  GET {name:26} {1000 * seconds:8.1f} ms")
                browser = _browser()
                try:
                    expected = f"{n:,}".replace(",", "")

                    def loaded() -> bool:
                        shown = browser.find_element(By.CSS_SELECTOR, "#count-finished").text.replace(",", "")
                        points = browser.find_elements(By.CSS_SELECTOR, "#history-plot circle.point")
                        return shown.strip() == expected and len(points) >= min(n, 10_000) // 2

                    started = time.perf_counter()
                    await asyncio.to_thread(browser.get, f"{url}/#network={network}")
                    load = time.perf_counter() - started + await asyncio.to_thread(_wait, loaded)
                    print(f"  page load (counts and history drawn): {load:.2f} s")
                    latencies = []
                    for i in range(5):
                        await rush.push_finished_tasks([{"a": 1, "b": 2}], [{"loss": 1.0}])
                        target = str(n + i + 1)
                        latencies.append(
                            await asyncio.to_thread(
                                _wait,
                                lambda t=target: (
                                    browser.find_element(By.CSS_SELECTOR, "#count-finished")
                                    .text.replace(",", "")
                                    .strip()
                                    == t
                                ),
                            )
                        )
                    print(
                        "  update latency (one more result until shown): "
                        f"median {statistics.median(latencies):.2f} s, "
                        f"max {max(latencies):.2f} s"
                    )
                finally:
                    browser.quit()
            await rush.reset()


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dashboard", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.tasks))


if __name__ == "__main__":
    main()
