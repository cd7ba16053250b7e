"""The answers of one device stream, in frame order, with no task of their own.

Every frame a device sends gets exactly one answer, and answers go out in the order
of the frames. An ack of a stored batch may go out only once its commit is done, and
any answer waits behind the ones before it. Answers are written from the commit's
done-callback, in the loop iteration the commit ends, straight to the socket: no queue
hop and no task switch per batch, which at thousands of batches a second is a good
part of the event loop's time.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from gateway.services.frames import FrameSink

__all__ = ["Replies"]

# (commit to wait for or None, frame to send once it is done, perf_counter on arrival)
_Item = tuple["asyncio.Future[bool] | None", bytes, float]


class Replies:
    """At most `limit` answers outstanding: the reader waits in `room()` at the limit,
    so a device whose batches are not stored yet is not read any further (TCP slows it).

    A failed commit ends the stream's answers: `on_failure(error)` is called once (it
    sends the error and closes the socket), and nothing is written after it.
    """

    # One per connection, idle ones included: slots keep it small.
    __slots__ = ("_items", "_limit", "_on_acked", "_on_failure", "_out", "_waiters", "failed")

    def __init__(
        self,
        out: FrameSink,
        limit: int,
        *,
        on_acked: Callable[[float], None],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._out = out
        self._limit = limit
        self._on_acked = on_acked
        self._on_failure = on_failure
        self._items: collections.deque[_Item] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []
        self.failed = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, commit: asyncio.Future[bool] | None, frame: bytes, arrived: float) -> None:
        """Queue the answer to one frame; it is written as soon as it may be."""
        if self.failed:
            return
        self._items.append((commit, frame, arrived))
        if commit is not None and not commit.done():
            commit.add_done_callback(self._flush)
        elif len(self._items) == 1:
            self._flush()

    def _flush(self, _: object = None) -> None:
        items = self._items
        frames: list[bytes] = []
        acked: list[float] = []
        failed: BaseException | None = None
        while items:
            commit, frame, arrived = items[0]
            if commit is not None:
                if not commit.done():
                    break
                if commit.cancelled():
                    failed = asyncio.CancelledError()
                    break
                error = commit.exception()
                if error is not None:
                    failed = error
                    break
                acked.append(arrived)
            frames.append(frame)
            items.popleft()
        if frames:  # before any failure's error: these batches are stored
            self._out.write(b"".join(frames))
            for arrived in acked:
                self._on_acked(arrived)
        if failed is not None:
            self.failed = True
            items.clear()
            self._on_failure(failed)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            # One future per waiter: a cancelled waiter must not cancel the others.
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    @property
    def has_room(self) -> bool:
        """Another answer may be queued now (checked for every frame: no coroutine)."""
        return len(self._items) < self._limit and not self._out.backed_up

    async def room(self) -> None:
        """Return once another answer may be queued, and the peer reads what it gets."""
        if len(self._items) >= self._limit:
            await self._until(lambda: self.failed or len(self._items) < self._limit)
        await self._out.drained()

    async def join(self) -> None:
        """Return once every answer queued so far is written (or can never be)."""
        await self._until(lambda: self.failed or not self._items)
