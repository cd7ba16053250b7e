"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, against a
real `vitals serve` process on a database provisioned once by the real CLI.

Under `CI=true` a missing browser (or Playwright) fails the tests; elsewhere they
skip, saying how to install it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from gateway.http.web import STATIC_DIR
from tests.support.processes import GatewayProcess

from .browsing import CHROMIUM, CHROMIUM_ARGS, DESKTOP, RESULTS_DIR, OpenPage, PageProblems
from .harness import CLINICIANS, DEVICES, Provisioned, provision, quick_rules

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Route, ViewportSize


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, and Playwright to drive it: present, or skip (fail under CI)."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    if not CHROMIUM.is_file():
        _unavailable(f"no browser at {CHROMIUM}: apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def provisioned(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    """Clinicians and devices made once by `vitals users add` / `vitals devices add`."""
    path = tmp_path_factory.mktemp("template") / "vitals.db"
    users, devices = provision(f"sqlite+aiosqlite:///{path}", CLINICIANS, DEVICES)
    return Provisioned(path, users, devices)


@pytest.fixture
def database(provisioned: Provisioned, tmp_path: Path) -> Path:
    """A fresh copy of the provisioned database for one test."""
    path = tmp_path / "vitals.db"
    shutil.copyfile(provisioned.template, path)
    return path


# The browser tests share one event loop, so that one Chromium serves them all: a
# launch (driver and browser) costs seconds of CPU. Each test still gets its own
# browser contexts (cookies, storage) and its own gateway process and database.
@pytest_asyncio.fixture(loop_scope="session")
async def live_gateway(database: Path, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A running `vitals serve` process on a free port, with the shipped alert limits
    but short `for_s` (see `quick_rules`); stopped (or killed) at the end."""
    gw = GatewayProcess(
        db=database, log_dir=tmp_path, extra=("--rules", str(quick_rules(tmp_path)))
    )
    try:
        await asyncio.to_thread(gw.start)
        yield gw
    finally:
        await asyncio.to_thread(gw.stop)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(
    browser: Browser, live_gateway: GatewayProcess, provisioned: Provisioned
) -> AsyncIterator[OpenPage]:
    """`await open_page(login_as="dr-ana")`: the dashboard in a fresh browser context
    (its own cookies), signed in through the login form when `login_as` is given;
    `init_script` runs in the page before its own scripts (to instrument an API).
    At the end, no page may have broken its CSP or thrown."""
    contexts: list[BrowserContext] = []
    problems = PageProblems()

    async def open_(
        login_as: str | None = None,
        viewport: ViewportSize = DESKTOP,
        init_script: str | None = None,
    ) -> Page:
        context = await browser.new_context(viewport=viewport)
        context.set_default_timeout(10_000)
        contexts.append(context)
        if init_script is not None:
            await context.add_init_script(init_script)
        page = await context.new_page()
        problems.watch(page)
        await page.goto(live_gateway.url + "/")
        if login_as is not None:
            await page.locator("#login").wait_for(state="visible")
            await page.fill("#token", provisioned.users[login_as].token)
            await page.click("#login-submit")
            await page.locator("#connection[data-state=connected]").wait_for()
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()
    assert not problems.found, "\n".join(problems.found)


@pytest.fixture
def results_dir() -> Path:
    """Where screenshots and measurements go for people to look at."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR


STATIC_ORIGIN = "http://dashboard.test"
_STATIC_TYPES = {".js": "text/javascript", ".html": "text/html"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def static_page(browser: Browser) -> AsyncIterator[Page]:
    """A blank page on a made-up origin whose /static/ is the package's static folder,
    for the page's pure modules; shared by one module's tests, which keep their state
    in their own objects."""

    async def serve(route: Route) -> None:
        path = route.request.url.removeprefix(STATIC_ORIGIN)
        if path == "/blank.html":
            await route.fulfill(body="<!doctype html><title>t</title>", content_type="text/html")
            return
        file = STATIC_DIR / path.removeprefix("/static/")
        if not path.startswith("/static/") or not file.is_file():
            await route.fulfill(status=404)
            return
        await route.fulfill(body=file.read_bytes(), content_type=_STATIC_TYPES[file.suffix])

    context = await browser.new_context()
    try:
        await context.route(f"{STATIC_ORIGIN}/**", serve)
        p = await context.new_page()
        await p.goto(f"{STATIC_ORIGIN}/blank.html")
        yield p
    finally:
        await context.close()
