"""One set of alert rules across replicas: the database holds the cluster's rules, and
every replica follows them.

Design:

- **Version.** `RuleSet.version` (core/rules.py): a 12-hex-digit hash of the rules as
  parsed, so identical rules give the identical version on every replica.
- **The database is the source.** The `rules` row (storage/rules_store.py) holds the
  rules file's text, its version, when and by which replica it was set. A reload on
  any replica (SIGHUP or `POST /v1/rules/reload`) reads and validates that replica's
  own file (a bad one raises RulesError: nothing changes anywhere, the answer is 422 as
  before), then writes text and version in one transaction that also sends
  `pg_notify(CHANNEL_RULES, version)`. It then follows the row itself at once, so the
  reload answers once its own replica applies the new rules.
- **Following.** Every replica (the reloading one too) reads the row when notified,
  when its listener (re)connects (a notification sent while it was away is lost) and
  every `poll_s` as a safety net; if the stored version is not the one it applies, it
  parses the stored text with the same parser and puts it in force through
  `AlertService.apply_rules` (the engine's `replace_rules`, exactly as a reload did
  before). Then it writes its `replicas.rules_version`, which `GET /v1/rules` lists
  for every live replica. A notification is only a wake-up: a missed one costs at
  most `poll_s`, never divergence.
- **Start.** A starting replica loads its own file (a bad one stops start-up, as
  before) and publishes it: the last replica to start or reload sets the rules for
  all. Run every replica with the same rules file, and reload after changing it.
- **Refused text.** Stored rules this replica cannot parse (a newer gateway's rule
  kind, during a rolling upgrade) are logged once and not applied: it keeps its rules
  and reports their version, so the difference shows in `GET /v1/rules`.
- **SQLite** (one process): the same path, with in-process notifications.

Concurrent reloads on two replicas: each commits its row; the later commit wins, and
its notification comes last, so every replica ends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.core.rules import RulesError, RuleSet, parse_rules, read_rules
from gateway.errors import StorageError
from gateway.services.alerting import AlertService
from gateway.storage.notify import CHANNEL_RULES, Notifications
from gateway.storage.rules_store import ReplicaRules, RulesStore

__all__ = ["POLL_S", "RulesSync"]

log = logging.getLogger(__name__)

# The safety net: how often the row is read without a notification. Notifications
# carry the 2 s promise; this bounds the delay when one was lost.
POLL_S = 5.0


class RulesSync:
    """Keeps this replica's alert rules at the cluster's (see the module docstring)."""

    def __init__(
        self,
        store: RulesStore,
        alerts: AlertService,
        rules_path: Path,
        replica_id: str,
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self._store = store
        self._alerts = alerts
        self._rules_path = rules_path
        self._replica_id = replica_id
        self._poll_s = poll_s
        # One follow at a time: two could apply an older row after a newer one.
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        # The stored version last acted on (applied, or refused: not parsed again).
        self._seen: str | None = None
        self._failing = False  # the last follow failed (logged once until it works)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        store: RulesStore,
        alerts: AlertService,
        notifications: Notifications,
        rules_path: Path,
        replica_id: str,
        *,
        poll_s: float = POLL_S,
    ) -> AsyncIterator[RulesSync]:
        """Publish this replica's rules file as the cluster's, then follow the cluster's
        rules until exit. `notifications` must not be started yet: the caller starts
        it once every listener is registered.

        Raises RulesError for an unusable rules file (start-up stops).
        """
        sync = cls(store, alerts, rules_path, replica_id, poll_s=poll_s)
        notifications.listen(CHANNEL_RULES, sync._notified, sync.wake)
        await sync.reload()
        task = asyncio.create_task(sync._follow_forever(), name="rules-sync")
        try:
            yield sync
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def version(self) -> str:
        """The version of the rules this replica applies."""
        return self._alerts.rules.version

    def wake(self) -> None:
        """Read the cluster's rules soon (a notification, a reconnected listener)."""
        self._wanted.set()

    def _notified(self, version: str) -> None:
        if version != self.version:
            self.wake()

    async def reload(self) -> RuleSet:
        """This replica's rules file becomes every replica's rules; returns them once
        in force here. RulesError (a bad file: nothing changes anywhere) or
        StorageError (the database refused: nothing changes either)."""
        text, rules = read_rules(self._rules_path)
        await self._store.publish(text, rules.version, self._replica_id)
        log.info("alert rules %s from %s set for every replica", rules.version, self._rules_path)
        await self.follow()
        return rules

    async def follow(self) -> str:
        """Apply the cluster's rules if this replica's differ; record the version it
        applies in its `replicas` row. Returns that version. StorageError if the
        database cannot be read."""
        async with self._lock:
            stored = await self._store.current()
            if stored is not None and stored.version not in (self.version, self._seen):
                self._seen = stored.version
                source = f"set by replica {stored.set_by}"
                try:
                    rules = parse_rules(stored.text, f"the cluster's rules ({source})")
                except RulesError as e:
                    log.error("cannot apply the cluster's rules %s: %s", stored.version, e)
                else:
                    with contextlib.suppress(StorageError):  # in force; events stay pending
                        await self._alerts.apply_rules(rules, source)
            await self._store.record_applied(self._replica_id, self.version)
            return self.version

    async def replicas(self) -> list[ReplicaRules]:
        """Every live replica and its rules version; this one always, with the version
        it applies now (its row may not be there yet, or lag)."""
        live = await self._store.live_replicas()
        me = ReplicaRules(self._replica_id, self.version, 0.0)
        for i, replica in enumerate(live):
            if replica.replica_id == self._replica_id:
                live[i] = ReplicaRules(self._replica_id, self.version, replica.heartbeat_age_s)
                return live
        return sorted([*live, me], key=lambda r: r.replica_id)

    async def _follow_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self._poll_s)
            self._wanted.clear()
            try:
                await self.follow()
            except StorageError as e:
                if not self._failing:
                    log.warning("cannot read the cluster's alert rules, will retry: %s", e)
                self._failing = True
                continue
            except Exception:
                log.exception("following the cluster's alert rules failed")
                continue
            if self._failing:
                log.info("reading the cluster's alert rules again")
                self._failing = False
