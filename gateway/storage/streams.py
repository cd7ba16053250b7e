"""Connection epochs of device streams: the fencing token of the one live stream per
device across replicas.

Each new stream takes the next epoch of its device (one UPDATE … RETURNING) and
announces it on `CHANNEL_DEVICES` in the same transaction; a replica holding an older
stream of that device closes it (4001), and every commit of that older stream is
refused by the guarded seq advance (storage/readings.py) even if the notification is
lost. Only on PostgreSQL: one SQLite process has one registry, which replaces a
device's older stream itself.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.notify import CHANNEL_DEVICES, notify_sql
from gateway.storage.schema import Device, table_of

__all__ = ["StreamEpochs", "epoch_payload", "parse_epoch_payload"]

_devices = table_of(Device)
_next_epoch = (
    _devices.update()
    .where(_devices.c.id == bindparam("device_id"))
    .values(conn_epoch=_devices.c.conn_epoch + 1)
    .returning(_devices.c.conn_epoch)
)
_epochs_of = select(_devices.c.id, _devices.c.conn_epoch).where(
    _devices.c.id.in_(bindparam("ids", expanding=True))
)


def epoch_payload(device_id: str, epoch: int) -> str:
    return f"{device_id} {epoch}"


def parse_epoch_payload(payload: str) -> tuple[str, int] | None:
    """(device id, epoch) of a `CHANNEL_DEVICES` payload; None if it is not one."""
    device_id, _, epoch = payload.rpartition(" ")
    return (device_id, int(epoch)) if device_id and epoch.isdigit() else None


class StreamEpochs:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def next_epoch(self, device_id: str) -> int | None:
        """The epoch of a new stream of `device_id`, announced to every replica; None
        for a device with no row."""
        async with self._engine.begin() as conn:
            epoch: int | None = await conn.scalar(_next_epoch, {"device_id": device_id})
            if epoch is not None:
                payload = epoch_payload(device_id, epoch)
                await conn.execute(notify_sql, {"channel": CHANNEL_DEVICES, "payload": payload})
        return epoch

    async def current(self, device_ids: list[str]) -> dict[str, int]:
        """The stored epoch of each device (catching up after a missed notification)."""
        if not device_ids:
            return {}
        async with self._engine.connect() as conn:
            return {r.id: r.conn_epoch for r in await conn.execute(_epochs_of, {"ids": device_ids})}
