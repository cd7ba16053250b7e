"""`Replies`: one answer per frame, in frame order, each ack once its commit is done."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StorageError
from gateway.services.replies import Replies


class Socket:
    """What the answers were written as: one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, frames: bytes) -> bool:
        self.writes.append(frames)
        return True

    backed_up = False

    async def drained(self) -> None:
        return None


def replies(limit: int = 16) -> tuple[Replies, Socket, list[float], list[str]]:
    sock, acked, failures = Socket(), list[float](), list[str]()
    r = Replies(
        sock, limit, on_acked=acked.append, on_failure=lambda _error: failures.append("failed")
    )
    return r, sock, acked, failures


async def settle() -> None:
    """Let done-callbacks run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_answers_with_nothing_to_wait_for_go_out_at_once() -> None:
    """An error or duplicate ack with nothing ahead of it is written immediately."""
    r, sock, acked, _ = replies()
    r.add(None, b"err", 1.0)
    assert sock.writes == [b"err"]
    assert acked == []  # only stored batches count as acks
    assert len(r) == 0


async def test_an_answer_waits_behind_an_earlier_uncommitted_batch() -> None:
    """Order is the frames' order: an error after a pending batch waits for its ack,
    and everything ready then goes out in one write."""
    r, sock, acked, _ = replies()
    commit = asyncio.get_running_loop().create_future()
    r.add(commit, b"ack1", 1.0)
    r.add(None, b"err2", 2.0)
    await settle()
    assert sock.writes == []
    commit.set_result(True)
    await settle()
    assert sock.writes == [b"ack1err2"]
    assert acked == [1.0]


async def test_commits_finishing_out_of_order_are_answered_in_order() -> None:
    """A later batch committed first is still acked after the earlier one."""
    loop = asyncio.get_running_loop()
    r, sock, _, _ = replies()
    first, second = loop.create_future(), loop.create_future()
    r.add(first, b"a1", 1.0)
    r.add(second, b"a2", 2.0)
    second.set_result(True)
    await settle()
    assert sock.writes == []
    first.set_result(True)
    await settle()
    assert sock.writes == [b"a1a2"]


async def test_a_failed_commit_ends_the_answers() -> None:
    """A refused commit: its ack and everything after it is dropped, `on_failure` runs
    once, and later answers are ignored."""
    loop = asyncio.get_running_loop()
    r, sock, acked, failures = replies()
    ok, bad = loop.create_future(), loop.create_future()
    r.add(ok, b"a1", 1.0)
    r.add(bad, b"a2", 2.0)
    r.add(None, b"err3", 3.0)
    ok.set_result(True)
    bad.set_exception(StorageError("refused"))
    await settle()
    assert sock.writes == [b"a1"]  # the stored batch is still acked, first
    assert acked == [1.0]
    assert failures == ["failed"]
    assert r.failed
    r.add(None, b"late", 4.0)
    await r.join()  # nothing left that could ever be written
    assert sock.writes == [b"a1"]


async def test_room_waits_at_the_limit_and_join_waits_for_the_last_ack() -> None:
    """At `limit` outstanding answers `room()` blocks until one is written; `join()`
    returns once all are."""
    loop = asyncio.get_running_loop()
    r, sock, _, _ = replies(limit=2)
    commits = [loop.create_future() for _ in range(2)]
    for i, c in enumerate(commits):
        r.add(c, f"a{i}".encode(), float(i))
    assert not r.has_room
    room = asyncio.create_task(r.room())
    joined = asyncio.create_task(r.join())
    await settle()
    assert not room.done()
    commits[0].set_result(True)
    await asyncio.wait_for(room, 1)
    assert r.has_room
    assert not joined.done()
    commits[1].set_result(True)
    await asyncio.wait_for(joined, 1)
    assert sock.writes == [b"a0", b"a1"]


async def test_a_cancelled_waiter_does_not_disturb_another() -> None:
    """The reader cancelled while waiting for room (shutdown) leaves a concurrent
    `join()` waiting, and it still returns once the answers are out."""
    commit = asyncio.get_running_loop().create_future()
    r, _, _, _ = replies(limit=1)
    r.add(commit, b"a", 1.0)
    room = asyncio.create_task(r.room())
    joined = asyncio.create_task(r.join())
    await settle()
    room.cancel()
    with pytest.raises(asyncio.CancelledError):
        await room
    commit.set_result(True)
    await asyncio.wait_for(joined, 1)
