"""A bounded queue that drops its oldest item when full: for streams where the newest
matters most and a consumer that falls behind must not stop the producer."""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

__all__ = ["DropOldest"]

T = TypeVar("T")


class DropOldest(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[T] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait_or_drop(self, item: T) -> bool:
        """Append `item`; True if the oldest item was dropped to make room."""
        full = len(self._items) == self._items.maxlen
        self._items.append(item)
        self._ready.set()
        return full

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()
