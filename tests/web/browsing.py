"""Browser-side helpers for the web tests: Chromium's flags, viewports, and a watch
for what a page must never do (break its own CSP, throw)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Error, Page, ViewportSize

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DESKTOP",
    "RESULTS_DIR",
    "TABLET",
    "OpenPage",
    "PageProblems",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
TABLET: ViewportSize = {"width": 820, "height": 1180}
# Screenshots for people to look at; .gitignore keeps test-results/ out of git.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "test-results" / "web"

# `await open_page(login_as="dr-ana", viewport=TABLET)`
OpenPage = Callable[..., Awaitable["Page"]]


@dataclass
class PageProblems:
    """Console CSP violations and uncaught exceptions of every page watched."""

    found: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_console(msg: ConsoleMessage) -> None:
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
                self.found.append(f"CSP: {msg.text}")

        def on_error(error: Error) -> None:
            self.found.append(f"uncaught: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_error)
