"""The Dagster UI in a real browser: every asset and check is there, and a partition launched from the
UI materializes. Drives Debian's Chromium with Playwright (no browser download); `.ci/run` installs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_CONFIG

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it with apt)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


@pytest.fixture(scope="module")
def dagster_ui(small_universe, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), KFS_PG_DSN=small_universe["dsn"], KFS_LAKE=str(root / "lake"),
               KFS_HOME=str(root / "kfs"), KFS_WAREHOUSE=str(root / "warehouse.duckdb"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for stream in ("snapshots", "deltas", "trades", "markets"):
        env[f"KFS_TABLE_{stream.upper()}"] = getattr(small_universe["tables"], stream)
    port = _free_port()
    log = open(root / "dagster-dev.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if _graphql(port, "{ assetNodes { id } }")["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(2)
        else:
            log_tail = (root / "dagster-dev.log").read_text()[-3000:]
            pytest.fail(f"dagster dev did not serve the definitions in time; log: {log_tail}")
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1800, "height": 4000})
        yield page
        browser.close()


DISMISS_BUTTONS = ("Skip", "Close", "Dismiss", "Got it", "No thanks", "Not now")


def _dismiss_popups(page, timeout_s: float = 30.0):
    """Close whatever dialog the UI opens on its own (onboarding, announcements; they may appear a few seconds
    after the page settles) until no overlay backdrop is left to swallow the next click."""
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        backdrops = page.locator(".bp5-overlay-backdrop")
        if not any(backdrops.nth(i).is_visible() for i in range(backdrops.count())):
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since >= 2.0:  # settled: no dialog for two seconds
                return
            page.wait_for_timeout(250)
            continue
        quiet_since = None
        buttons = [page.get_by_role("dialog").get_by_role("button", name=name) for name in DISMISS_BUTTONS]
        button = next((b.first for b in buttons if b.count() and b.first.is_visible()), None)
        if button is not None:
            button.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dagster_ui_dialog.png"))
    pytest.fail(f"a dialog of the UI would not close; see {ARTIFACTS / 'dagster_ui_dialog.png'}")


def _click_past_popups(page, target, attempts: int = 3):
    """Click `target` once no dialog of the UI's own covers it; a dialog that opens in between is closed too."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        _dismiss_popups(page)
        try:
            target.click(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def test_every_asset_and_check_is_in_the_ui(dagster_ui, browser_page):
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    browser_page.goto(f"http://127.0.0.1:{dagster_ui}/assets", wait_until="networkidle")
    browser_page.wait_for_timeout(3000)
    catalog = browser_page.inner_text("body")
    assert [a for a in assets if a not in catalog] == []
    checks_by_asset: dict[str, list[str]] = {}
    for check in graph.asset_check_keys:
        checks_by_asset.setdefault(check.asset_key.to_user_string(), []).append(check.name)
    for asset, names in sorted(checks_by_asset.items()):
        browser_page.goto(f"http://127.0.0.1:{dagster_ui}/assets/{asset}?view=checks", wait_until="networkidle")
        browser_page.wait_for_function(
            "names => names.every(n => document.body.innerText.includes(n))", arg=names, timeout=30_000)


@pytest.mark.slow
def test_a_partition_launched_from_the_ui_materializes(dagster_ui, browser_page):
    partition = SMALL_CONFIG.start.isoformat()
    page = browser_page
    page.goto(f"http://127.0.0.1:{dagster_ui}/assets/raw_trades", wait_until="networkidle")
    page.wait_for_timeout(2000)
    _click_past_popups(page, page.get_by_text("Materialize…").first)
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Show all partitions").click()
    selector = dialog.locator("input[type=text]").first
    selector.fill(partition)
    selector.press("Enter")
    dialog.get_by_text("1 partition").first.wait_for(timeout=15_000)
    dialog.get_by_role("button", name="Launch").last.click()
    deadline = time.time() + 300
    status = None
    while time.time() < deadline:
        runs = _graphql(dagster_ui, '{ runsOrError { ... on Runs { results { status tags { key value } } } } }')
        statuses = [r["status"] for r in runs["runsOrError"]["results"]
                    if {"key": "dagster/partition", "value": partition} in r["tags"]]
        status = statuses[0] if statuses else None
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"http://127.0.0.1:{dagster_ui}/runs", wait_until="networkidle")
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "dagster_ui_runs.png"))
    assert status == "SUCCESS"
