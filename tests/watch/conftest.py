"""What the watcher's tests share: a pipe to stand in for the clinician's keyboard."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

STDIN_CLOSE_WAIT_S = 5.0


@pytest.fixture
async def stdin_pipe() -> AsyncIterator[tuple[Any, int]]:
    """A pipe as stdin: (read end as a text file, write end's fd)."""
    r, w = os.pipe()
    reader = os.fdopen(r, "r")
    yield reader, w
    os.close(w)
    # The read end is closed only once the reader thread has seen EOF: its fd number
    # must not be reused under a thread still reading it.
    async with asyncio.timeout(STDIN_CLOSE_WAIT_S):
        while any(t.name == "vitals-watch-stdin" for t in threading.enumerate()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    reader.close()
