"""Commit planning, sans-I/O: which batches of a group a commit stores, and each
device's `last_seq` after it. A pure function of the group and the committed last_seqs;
the group committer (services/committer.py) carries the decision out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

__all__ = ["SeqBatch", "plan_commit"]


class SeqBatch(Protocol):
    """A device's numbered batch, as far as planning a commit is concerned."""

    @property
    def device_id(self) -> str: ...

    @property
    def seq(self) -> int: ...


B = TypeVar("B", bound=SeqBatch)


def plan_commit(group: Sequence[B], last_seq: Mapping[str, int]) -> tuple[list[B], dict[str, int]]:
    """Which batches of `group` are new, and each device's last_seq after storing them.

    A batch is new when its seq is above its device's last_seq, counting the batches of
    `group` before it: a batch queued twice (by an old and a new connection) is stored
    once. `last_seq` is left as it is; the caller updates it once the commit is stored.
    """
    fresh: list[B] = []
    advanced: dict[str, int] = {}
    for batch in group:
        current = advanced.get(batch.device_id, last_seq.get(batch.device_id, 0))
        if batch.seq > current:
            fresh.append(batch)
            advanced[batch.device_id] = batch.seq
    return fresh, advanced
