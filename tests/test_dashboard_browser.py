"""The dashboard in a real browser: headless Chromium, driven through WebDriver, against a live network.

Chromium and chromedriver come from Debian's ``chromium`` and
``chromium-driver`` (``.ci/run`` installs them); a missing one fails these
tests, never skips them. The tests keep screenshots of the main views in
``docs/assets/`` for the dashboard's page of the docs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from rushpy import Controller, EmbeddedServer, RedisConfig
from rushpy.server import _free_port
from tests.dashboard import running_dashboard

pytestmark = pytest.mark.usefixtures("anyio_backend")

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "docs" / "assets"
TOKEN = "browser-test-token-0123456789"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: apt-get install chromium chromium-driver (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _tool("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named explicitly: selenium would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=_tool("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(browser: WebDriver, check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll ``check`` (in this thread: WebDriver calls block) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except Exception as exc:  # an element not there yet, or replaced while read
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def text_of(browser: WebDriver, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text).strip()


def no_script_errors(browser: WebDriver) -> None:
    """No JavaScript error on the page (refused requests, such as a 403, are the network's, not errors)."""
    logged = browser.get_log("browser")
    errors = [e for e in logged if e["level"] == "SEVERE" and e.get("source") != "network"]
    assert not errors, errors


@pytest.fixture(autouse=True)
def blank_page(browser: WebDriver) -> Iterator[None]:
    """Each test starts on a blank page with an empty console (the last page's server is gone)."""
    browser.get("about:blank")
    browser.get_log("browser")
    yield
    browser.get("about:blank")


async def test_the_page_loads_and_counts_move_while_tasks_finish(
    browser: WebDriver, config: RedisConfig, controller: Controller, study: Any
) -> None:
    with running_dashboard(config, network=controller.network_id) as url:
        await anyio.to_thread.run_sync(browser.get, f"{url}/#network={controller.network_id}")

        def finished() -> str:
            return text_of(browser, "#count-finished")

        await anyio.to_thread.run_sync(lambda: until(browser, lambda: finished() == "3", "3 finished"))
        assert text_of(browser, "#count-failed") == "3"
        keys = await controller.push_tasks([{"x": 2 * i} for i in range(10)])
        await controller.wait_for_tasks(keys, timeout=60)
        await anyio.to_thread.run_sync(lambda: until(browser, lambda: finished() == "13", "13 finished"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr")
        assert {r.get_attribute("data-worker-id") for r in rows} == set(study["workers"])
        browser.save_screenshot(str(SHOTS / "dashboard-overview.png"))
        no_script_errors(browser)


async def test_a_failed_tasks_traceback_is_two_clicks_away(
    browser: WebDriver, config: RedisConfig, controller: Controller, study: Any
) -> None:
    with running_dashboard(config, network=controller.network_id) as url:
        await anyio.to_thread.run_sync(browser.get, f"{url}/#network={controller.network_id}")

        def open_traceback() -> str:
            until(browser, lambda: text_of(browser, "#count-failed") == "3", "3 failed")
            browser.find_element(By.CSS_SELECTOR, "#count-failed").click()  # click 1: the failed tasks
            row = until(
                browser,
                lambda: [
                    r
                    for r in browser.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr[data-key]")
                    if "failed" in r.text
                ],
                "failed rows",
            )
            shown = browser.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
            assert all("failed" in r.text for r in shown)
            row[0].click()  # click 2: one failed task
            return str(until(browser, lambda: text_of(browser, "#task-detail .traceback"), "a traceback"))

        traceback = await anyio.to_thread.run_sync(open_traceback)
        assert "Traceback (most recent call last)" in traceback and "ValueError: odd input" in traceback
        browser.save_screenshot(str(SHOTS / "dashboard-task.png"))
        no_script_errors(browser)


async def test_the_history_plot_has_one_point_per_finished_task(
    browser: WebDriver, config: RedisConfig, controller: Controller, study: Any
) -> None:
    keys = await controller.push_tasks([{"x": 2 * i} for i in range(3, 20)])
    await controller.wait_for_tasks(keys, timeout=60)
    n_finished = (await controller.status()).n_finished_tasks
    assert n_finished == 20
    with running_dashboard(config, network=controller.network_id) as url:
        await anyio.to_thread.run_sync(browser.get, f"{url}/#network={controller.network_id}")

        def points() -> int:
            return len(browser.find_elements(By.CSS_SELECTOR, "#history-plot circle.point"))

        await anyio.to_thread.run_sync(lambda: until(browser, lambda: points() == n_finished, "points", 30))
        assert browser.find_elements(By.CSS_SELECTOR, "#history-plot path.best-so-far")
        history = browser.find_element(By.CSS_SELECTOR, "#history-plot")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", history)
        browser.save_screenshot(str(SHOTS / "dashboard-history.png"))
        no_script_errors(browser)


async def test_an_action_without_the_token_is_refused(
    browser: WebDriver, config: RedisConfig, controller: Controller, study: Any
) -> None:
    with running_dashboard(config, network=controller.network_id, token=TOKEN) as url:
        await anyio.to_thread.run_sync(browser.get, f"{url}/#network={controller.network_id}")

        def refuse() -> str:
            until(browser, lambda: text_of(browser, "#count-failed") == "3", "3 failed")
            browser.execute_script("sessionStorage.clear()")
            field = browser.find_element(By.CSS_SELECTOR, "#token-input")
            field.clear()
            browser.find_element(By.CSS_SELECTOR, "#retry-all-failed").click()
            return str(until(browser, lambda: "token" in text_of(browser, "#action-message"), "a refusal"))

        await anyio.to_thread.run_sync(refuse)
        assert "token" in text_of(browser, "#action-message")
        assert (await controller.status()).n_failed_tasks == 3  # nothing was retried

        def with_token() -> None:
            field = browser.find_element(By.CSS_SELECTOR, "#token-input")
            field.clear()
            field.send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "#retry-all-failed").click()

        await anyio.to_thread.run_sync(with_token)
        done = await anyio.to_thread.run_sync(
            lambda: until(browser, lambda: "done" in text_of(browser, "#action-message"), "the retry")
        )
        assert done
        # The retried tasks ran again (and failed again: fail_on_odd): a second attempt each.
        failed = [study["keys"][i] for i in (1, 3, 5)]
        deadline = anyio.current_time() + 30
        while [(await controller.fetch_task(k))["attempts"] for k in failed] != [2, 2, 2]:
            assert anyio.current_time() < deadline, "the retried tasks did not run again"
            await anyio.sleep(0.1)
        no_script_errors(browser)


async def test_the_page_rides_out_a_reset_and_a_server_restart(browser: WebDriver, tmp_path: Path) -> None:
    """Open on a network, then reset it and stop the server: the page says so and comes back by itself."""
    server = EmbeddedServer(port=_free_port(), data_dir=tmp_path, appendonly=True)
    server.start()
    try:
        config = RedisConfig.from_url(f"{server.url}?reconnect_budget=1&socket_timeout=1")
        async with Controller("rides-out", config=config) as rush:
            await rush.push_tasks([{"x": 1}, {"x": 2}])
            with running_dashboard(config, network="rides-out") as url:
                await anyio.to_thread.run_sync(browser.get, f"{url}/#network=rides-out")

                def shows(selector: str, wanted: str) -> Callable[[], bool]:
                    what = f"{selector} showing {wanted!r}"
                    return lambda: until(browser, lambda: text_of(browser, selector) == wanted, what)

                def banner() -> str:
                    node = browser.find_element(By.CSS_SELECTOR, "#banner")
                    return str(node.text) if node.is_displayed() else ""

                await anyio.to_thread.run_sync(shows("#count-queued", "2"))
                await rush.reset()
                gone = lambda: until(browser, lambda: "does not exist" in banner(), "the reset")  # noqa: E731
                await anyio.to_thread.run_sync(gone)
                await rush.push_tasks([{"x": 3}])
                await anyio.to_thread.run_sync(shows("#count-queued", "1"))
                await anyio.to_thread.run_sync(lambda: until(browser, lambda: banner() == "", "no banner"))
                server.stop()
                await anyio.to_thread.run_sync(shows("#status-indicator", "server down"))
                browser.save_screenshot(str(SHOTS / "dashboard-server-down.png"))
                server.start()
                await anyio.to_thread.run_sync(shows("#status-indicator", "live"))
                await anyio.to_thread.run_sync(shows("#count-queued", "1"))  # the AOF kept it
                no_script_errors(browser)
    finally:
        server.stop()
