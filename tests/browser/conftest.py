"""Browser fixtures: a real ``geofence serve`` (no map tiles: the tests run offline) and
Debian's chromium driven by Playwright (never a browser Playwright downloads itself)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tools.processes import ROOT, SERVE, Process, free_port, service_env

CHROMIUM = os.environ.get("GEOFENCE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_KEY = "sys-admin-key-0001"  # service_env's
GATEWAY_SECRET = "browser-gateway-secret"
# the README's tour: the tests take the pictures; they are written over docs/console/ only
# when asked (GEOFENCE_SCREENSHOTS=1), so that a test run leaves the checkout as it was
TOUR = ROOT / "docs" / "console"
TIMEOUT_MS = 20_000  # a shared, slow machine: generous, never asserted


class Service:
    """The running service and a small admin client of its API (urllib: no event loop)."""

    def __init__(self, port: int, process: Process) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = process

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str = ADMIN_KEY,
        raw: bytes = b"",
        signature: str = "",
    ) -> tuple[int, Any]:
        """A JSON request with the key as Bearer, or ``raw`` bytes signed as the gateway signs."""
        data = raw or (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if signature:
            request.add_header("X-Geofence-Signature", signature)
        else:
            request.add_header("Authorization", f"Bearer {key}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read() or b"null")

    def catalogue_version(self) -> int:
        status, body = self.call("GET", "/v1/stores")
        assert status == 200, body
        return int(body["version"] or 0)

    def replace_stores(self, features: list[Any]) -> None:
        doc = {"type": "FeatureCollection", "features": features}
        path = "/v1/stores?allow_shrink=true&confirm_move=true"
        status, body = self.call("PUT", path, doc)
        assert status == 200, body


def wait_ready(url: str, process: Process, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert process.alive(), process.log()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"the service did not get ready: {process.log()[-2000:]}")


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the browser tests: in memory, an empty catalogue, no map tiles."""
    port = free_port()
    env = service_env(port, tile_url="", gateway_secret=GATEWAY_SECRET, dwell_s=120)
    logs = tmp_path_factory.mktemp("console")
    process = Process("serve", [*SERVE, "--stores", ""], env, logs)
    process.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield Service(port, process)
    finally:
        process.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: run scripts/ensure-chromium.sh"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """A fresh browser tab on the console, with every console message and page error kept."""

    def __init__(self, page: Page, service: Service, shots: Path) -> None:
        self.page = page
        self.service = service
        self.shots = shots
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))
        page.set_default_timeout(TIMEOUT_MS)

    def _console(self, message: ConsoleMessage) -> None:
        self.messages.append(f"{message.type}: {message.text}")

    def open(self, fragment: str = "") -> Page:
        self.page.goto(f"{self.service.url}/console/{fragment}")
        return self.page

    def log_in(self, key: str = ADMIN_KEY) -> Page:
        page = self.open()
        page.fill("#admin-key", key)
        page.click("#login-form button[type=submit]")
        return page

    def go(self, name: str) -> Page:
        self.page.click(f"nav a[href='#{name}']")
        self.page.wait_for_selector(f"#{name}:not([hidden])")
        return self.page

    def policy_violations(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m]

    def screenshot(self, name: str) -> None:
        shots = TOUR if os.environ.get("GEOFENCE_SCREENSHOTS") == "1" else self.shots
        shots.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(shots / f"{name}.png"))


@pytest.fixture
def console(browser: Browser, service: Service, tmp_path: Path) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    tab = Console(page, service, tmp_path)
    yield tab
    context.close()
    assert tab.policy_violations() == []
