"""Table models.

Timestamps of readings are integer microseconds since the Unix epoch (UTC): exact,
the cheapest column to insert and index, and the same on every backend. Account
timestamps are rare and use DateTime.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "READING_PARTITION",
    "AlertEventRow",
    "AlertRow",
    "AuditEntry",
    "Base",
    "ClusterRules",
    "Counter",
    "Device",
    "FhirExport",
    "Observation",
    "PatientOwner",
    "PatientSettingsRow",
    "Probe",
    "Reading",
    "Replica",
    "Session",
    "User",
    "include_name",
    "is_reading_partition",
    "table_of",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); elsewhere use 64 bits.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores no offset and would return
    naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: every stored time must be UTC-aware")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    ward: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Who revoked it (an admin's name, or `os:<user>` for the CLI): the gateway, which
    # may learn of a revocation only from this table, closes its alerts in their name.
    revoked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    # Highest batch seq durably stored: updated in the same transaction as the readings,
    # so `welcome.last_seq` and duplicate detection never disagree with the data.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped by each new stream of the device, on any replica: a commit carries the
    # epoch of the stream its batch came on and stores nothing if it is not this one
    # (an older stream, fenced off by a newer one elsewhere).
    conn_epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Wall clock (µs) of the last commit of its readings: a replica taking over the
    # patient knows when the device went silent (the device-offline deadline).
    last_seen_us: Mapped[int | None] = mapped_column(BigInteger, default=None)


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    # The wards a clinician may see; admins see every ward whatever this says.
    wards: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class Reading(Base):
    """One metric value at one timestamp from one device; never updated or overwritten.

    On PostgreSQL the table is range-partitioned by UTC day on `ts_us` (migration 0004),
    so retention drops a day as one partition; a partitioned table's primary key must
    hold the partition key, so there it is (id, ts_us). The model keeps `id` alone: it
    is SQLite's rowid (an INTEGER PRIMARY KEY alone is), and SQLAlchemy cannot give one
    model a key per dialect (it refuses an autoincrementing id in a composite key on
    SQLite, and makes no sequence for one on PostgreSQL). Alembic's comparison of
    models and database does not look at primary keys or partitioning, and skips the
    partitions (`is_reading_partition`); `tests/storage/test_retention.py` checks both
    layouts. Ids come from one sequence on both, so they stay unique and in insert order.
    """

    __tablename__ = "readings"

    # Also the stable tie-breaker for equal timestamps and the snapshot bound of cursors.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))
    ts_us: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    received_us: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # patient + metric + time: charts, summaries, latest value.
        Index("ix_readings_patient_metric_ts", "patient_id", "metric", "ts_us", "id"),
        # patient + time (all metrics), and device + time: a device belongs to one
        # patient for good (devices are never re-assigned or deleted), so a device's
        # query is its patient's, filtered. A third index would cost every insert
        # another random page write (about 1.5x the write work at ward scale).
        Index("ix_readings_patient_ts", "patient_id", "ts_us", "id"),
    )


class Observation(Base):
    """What a clinician observed of a patient for NEWS2 (ACVPU, supplemental oxygen);
    never updated. Either may be absent: the score takes the latest entry of each."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    ts_us: Mapped[int] = mapped_column(BigInteger)  # when observed (µs since the epoch)
    consciousness: Mapped[str | None] = mapped_column(String(1), default=None)  # A C V P U
    oxygen: Mapped[bool | None] = mapped_column(Boolean, default=None)
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # A patient's latest entry: one index seek, newest first.
        Index("ix_observations_patient_ts", "patient_id", "ts_us", "id"),
    )


class PatientSettingsRow(Base):
    """A patient's own settings (`PUT /v1/patients/{id}/settings`), one row each,
    replaced whole: NEWS2's SpO2 scale and overrides of the ward's threshold rules
    (JSON, by rule name, as the API spells them). No row: scale 1, no overrides."""

    __tablename__ = "patient_settings"

    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    spo2_scale: Mapped[int] = mapped_column(Integer)
    overrides: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))


class AlertRow(Base):
    """An alert's current state (one episode of one rule for one patient)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    rule: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(String(64))
    ward: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    direction: Mapped[str | None] = mapped_column(String(8))
    first_value: Mapped[float | None] = mapped_column(Float)
    last_value: Mapped[float | None] = mapped_column(Float)
    worst_value: Mapped[float | None] = mapped_column(Float)
    raised_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    cleared_at: Mapped[float | None] = mapped_column(Float)
    acked_at: Mapped[float | None] = mapped_column(Float)
    acked_by: Mapped[str | None] = mapped_column(String(64))
    # Closed other than by the clinical lifecycle (its device revoked): by whom, why.
    closed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    closed_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    # Alarm handling (migration 0006): the rule's label when raised, the last silence,
    # times escalated.
    label: Mapped[str | None] = mapped_column(String(64), default=None)
    silenced_until: Mapped[float | None] = mapped_column(Float, default=None)
    silenced_by: Mapped[str | None] = mapped_column(String(64), default=None)
    escalation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The patient's NEWS2 when the alert last changed (migration 0007); null: none.
    news2_score: Mapped[int | None] = mapped_column(Integer, default=None)
    news2_band: Mapped[str | None] = mapped_column(String(16), default=None)
    news2_complete: Mapped[bool | None] = mapped_column(Boolean, default=None)
    last_event_id: Mapped[int] = mapped_column(BigInteger, index=True)


class AlertEventRow(Base):
    """Append-only: every change of every alert, exactly as it was pushed.

    `event_id` is assigned by the gateway (not a sequence, which may skip values on
    rollback), so the ids dashboards see are gap-free.
    """

    __tablename__ = "alert_events"

    event_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    alert_id: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # the alert's status after the change
    ward: Mapped[str] = mapped_column(String(64))  # replays show clinicians their wards only
    # The `alert` message as sent (JSON text): a replay sends the very same bytes.
    payload: Mapped[str] = mapped_column(Text)


class Counter(Base):
    """Numbers every replica draws from: `event_id` (taken inside the transaction that
    stores the events, so ids are gap-free and in commit order) and `alert_id` (taken in
    blocks)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Replica(Base):
    """A running gateway process (one row per `replica_id`), kept alive by heartbeats.

    `epoch` grows each time the replica (re)starts or loses its lease, so a process
    that froze and woke up cannot pass for the one that holds the lease now.
    `heartbeat_at` is the database's clock, never a replica's.
    """

    __tablename__ = "replicas"

    replica_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    rules_version: Mapped[str] = mapped_column(String(64), default="", server_default="")


class ClusterRules(Base):
    """The alert rules every replica applies: one row (id 1), rewritten by each start
    and reload. `text` is the rules file as read (each replica parses it with its own
    parser), `version` its `RuleSet.version`; `set_at` is the database's clock (epoch
    seconds), `set_by` the replica that set them."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    set_at: Mapped[float] = mapped_column(Float)
    set_by: Mapped[str] = mapped_column(String(128))


class PatientOwner(Base):
    """Which replica evaluates a patient's alerts, at which of its epochs. Every write
    of a patient's alert events checks this row in its transaction."""

    __tablename__ = "patient_owners"

    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    replica_id: Mapped[str] = mapped_column(String(128), index=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    claimed_at: Mapped[float] = mapped_column(Float)


class Session(Base):
    """A browser login: the cookie carries the token, the table only its hash.

    Stored (not in memory) so an open dashboard page survives a gateway restart.
    """

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class Probe(Base):
    """One row rewritten by `/readyz`: proves the database takes writes right now."""

    __tablename__ = "readiness_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """Append-only record of who provisioned, revoked or acknowledged what, from where."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64))  # client address, or "cli"
    detail: Mapped[str] = mapped_column(Text, default="")


class FhirExport(Base):
    """A FHIR Bulk Data export (`$export`): who asked, for what, and its files.

    Kept in the database so any replica answers its status and serves its files. The
    export is the readings with ids up to `snapshot` (the highest committed at
    kick-off, `transaction_us`); `files` are id ranges of it, cut while the job plans
    (`planned_to`: the id planned up to) and fixed from then on. A cancelled export's
    row is deleted.
    """

    __tablename__ = "fhir_exports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    # The wards it covers (JSON list); null: every ward (an admin's export).
    wards: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    request: Mapped[str] = mapped_column(Text)  # the kick-off URL, for the manifest
    types: Mapped[str] = mapped_column(String(64))  # resource types, comma-separated
    since_us: Mapped[int | None] = mapped_column(BigInteger, default=None)  # `_since`
    transaction_us: Mapped[int] = mapped_column(BigInteger)
    snapshot: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # planning, complete, failed
    planned_to: Mapped[int] = mapped_column(BigInteger, default=0)
    # [[type, lo, hi, count], ...]: Observations are the readings with lo < id <= hi.
    files: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)
    # Wall clock (µs) of the planner's last step: a poll on any replica takes over a
    # planning job whose planner went quiet (its replica stopped).
    heartbeat_us: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text, default=None)


# The partitions of readings on PostgreSQL (`readings_p20261205`, `readings_default`):
# tables of the database that are no model of their own.
READING_PARTITION = re.compile(r"readings_(p\d{8}|default)")


def is_reading_partition(name: str | None) -> bool:
    """Whether a table name is one of the readings partitions (for Alembic's comparison
    and autogenerate, which would otherwise see them as tables to drop)."""
    return name is not None and READING_PARTITION.fullmatch(name) is not None


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: everything but the readings partitions."""
    del parent_names
    return not (type_ == "table" and is_reading_partition(name))


def table_of(model: type[Base]) -> Table:
    """A model's Core table, for Core statements (mypy types `__table__` as a FromClause)."""
    return cast(Table, model.__table__)
