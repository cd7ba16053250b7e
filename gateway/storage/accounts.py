"""Devices and users: provisioning, revocation, and token authentication.

Tokens are 32 random bytes, shown once, stored only as a SHA-256 hash. Looking a
token up by its hash compares nothing secret in application code; the final
`compare_digest` keeps even that comparison constant-time.

A user's revocation or token rotation ends its browser sessions in the same
transaction; open sockets learn of it through `stale_credentials` (each `Principal`
remembers the credential it was authenticated with).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConflictError, NotFoundError
from gateway.storage.schema import Device, Session, User, table_of

__all__ = [
    "AccountStore",
    "DeviceInfo",
    "Principal",
    "Role",
    "UserInfo",
    "hash_token",
    "new_token",
]

# `Principal.credential` prefixes: a bearer token's hash, or a session cookie's hash.
_TOKEN = "token:"
_SESSION = "session:"


class Role(StrEnum):
    DEVICE = "device"
    CLINICIAN = "clinician"
    ADMIN = "admin"


def new_token() -> str:
    """256 random bits, URL-safe, never starting with "-": a token is passed on command
    lines (`--token T`), where a leading dash reads as an option (one in 64 did)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to: a device (with its patient and ward) or a user (with the
    wards a clinician may see)."""

    name: str
    role: Role
    patient_id: str | None = None
    ward: str | None = None
    wards: frozenset[str] = frozenset()
    # What it was authenticated with ("token:<hash>" or "session:<hash>"), so an open
    # socket can be closed once that stops working; not part of who it is.
    credential: str | None = field(default=None, compare=False)

    def sees(self, ward: str) -> bool:
        """Whether this user may see patients of `ward`: admins every ward, clinicians
        their own, devices none."""
        return self.role is Role.ADMIN or (self.role is Role.CLINICIAN and ward in self.wards)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    patient_id: str
    ward: str
    created_at: datetime
    revoked_at: datetime | None
    last_seq: int


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as listed: never its token."""

    name: str
    role: Role
    wards: list[str]
    created_at: datetime
    revoked_at: datetime | None


class AccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_device(
        self, device_id: str, patient_id: str, ward: str
    ) -> tuple[DeviceInfo, str]:
        token = new_token()
        row = {
            "id": device_id,
            "patient_id": patient_id,
            "ward": ward,
            "token_hash": hash_token(token),
            "created_at": datetime.now(UTC),
            "revoked_at": None,
            "last_seq": 0,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(table_of(Device).insert(), row)
        except IntegrityError as e:
            raise ConflictError(f"device {device_id!r} already exists") from e
        del row["token_hash"]
        return DeviceInfo(**row), token  # type: ignore[arg-type]

    async def list_devices(self) -> list[DeviceInfo]:
        t = table_of(Device)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    t.c.id, t.c.patient_id, t.c.ward, t.c.created_at, t.c.revoked_at, t.c.last_seq
                ).order_by(t.c.id)
            )
            return [DeviceInfo(*r) for r in rows]

    async def revoke_device(self, device_id: str, by: str | None = None) -> None:
        """Revoke the device's token, recording `by` (who); revoking again changes
        nothing (the first revocation's time and author stay)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(Device)
                .where(Device.id == device_id, Device.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC), revoked_by=by)
            )
            if result.rowcount == 0 and not await conn.scalar(
                select(exists().where(Device.id == device_id))
            ):
                raise NotFoundError(f"no device {device_id!r}")

    async def revoked_among(self, device_ids: Iterable[str]) -> dict[str, str]:
        """Which of these devices are revoked or deleted (their streams must close, their
        alerts too), each with who revoked it ("unknown" when not recorded)."""
        ids = set(device_ids)
        if not ids:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(Device.id, Device.revoked_at, Device.revoked_by).where(Device.id.in_(ids))
            )
            found = {r.id: r for r in rows}
        return {
            i: (found[i].revoked_by if i in found else None) or "unknown"
            for i in ids
            if i not in found or found[i].revoked_at is not None
        }

    async def add_user(self, name: str, role: Role, wards: Iterable[str] = ()) -> str:
        if role is Role.DEVICE:
            raise ValueError("a user's role is clinician or admin")
        ward_list = sorted(set(wards))
        token = new_token()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    table_of(User).insert(),
                    {
                        "name": name,
                        "role": role.value,
                        "wards": ward_list,
                        "token_hash": hash_token(token),
                        "created_at": datetime.now(UTC),
                    },
                )
        except IntegrityError as e:
            raise ConflictError(f"user {name!r} already exists") from e
        return token

    async def list_users(self) -> list[UserInfo]:
        t = table_of(User)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(t.c.name, t.c.role, t.c.wards, t.c.created_at, t.c.revoked_at).order_by(
                    t.c.name
                )
            )
            return [
                UserInfo(r.name, Role(r.role), list(r.wards or ()), r.created_at, r.revoked_at)
                for r in rows
            ]

    async def revoke_user(self, name: str) -> None:
        """Revoke the user's token and end its sessions, in one transaction; revoking
        again changes nothing.

        Raises NotFoundError, or ConflictError for the last active admin: nobody could
        provision or revoke anything through the API after it.
        """
        other_admin = (
            select(User.name)
            .where(User.role == Role.ADMIN.value, User.revoked_at.is_(None), User.name != name)
            .exists()
        )
        async with self._engine.begin() as conn:
            # Locks the active admins' rows (PostgreSQL; SQLite has one writer anyway),
            # so two admins revoking each other cannot both succeed.
            await conn.execute(
                select(User.name)
                .where(User.role == Role.ADMIN.value, User.revoked_at.is_(None))
                .with_for_update()
            )
            row = (
                await conn.execute(select(User.role, User.revoked_at).where(User.name == name))
            ).first()
            if row is None:
                raise NotFoundError(f"no user {name!r}")
            if row.revoked_at is not None:
                return
            # The condition again in the statement: it holds at the moment of the write.
            result = await conn.execute(
                update(User)
                .where(
                    User.name == name,
                    User.revoked_at.is_(None),
                    (User.role != Role.ADMIN.value) | other_admin,
                )
                .values(revoked_at=datetime.now(UTC))
            )
            if result.rowcount == 0:
                raise ConflictError(
                    f"{name!r} is the last active admin: add another admin before revoking it"
                )
            await conn.execute(delete(Session).where(Session.user_name == name))

    async def rotate_user(self, name: str) -> str:
        """Give the user a new token (returned, shown once) and end its sessions: the
        old token, and every login made with it, stop working at once.

        Raises NotFoundError, or ConflictError for a revoked user.
        """
        token = new_token()
        async with self._engine.begin() as conn:
            revoked_at = (
                await conn.execute(select(User.revoked_at).where(User.name == name))
            ).first()
            if revoked_at is None:
                raise NotFoundError(f"no user {name!r}")
            if revoked_at[0] is not None:
                raise ConflictError(f"user {name!r} is revoked: add a new user instead")
            await conn.execute(
                update(User).where(User.name == name).values(token_hash=hash_token(token))
            )
            await conn.execute(delete(Session).where(Session.user_name == name))
        return token

    async def authenticate(self, token: str) -> Principal | None:
        """The live (not revoked) device or user holding `token`, or None."""
        digest = hash_token(token)
        async with self._engine.connect() as conn:
            dev = (
                await conn.execute(
                    select(Device.id, Device.patient_id, Device.ward, Device.token_hash).where(
                        Device.token_hash == digest, Device.revoked_at.is_(None)
                    )
                )
            ).first()
            if dev is not None and hmac.compare_digest(dev.token_hash, digest):
                return Principal(
                    dev.id,
                    Role.DEVICE,
                    patient_id=dev.patient_id,
                    ward=dev.ward,
                    credential=_TOKEN + digest,
                )
            user = (
                await conn.execute(
                    select(User.name, User.role, User.wards, User.token_hash).where(
                        User.token_hash == digest, User.revoked_at.is_(None)
                    )
                )
            ).first()
            if user is not None and hmac.compare_digest(user.token_hash, digest):
                return Principal(
                    user.name,
                    Role(user.role),
                    wards=frozenset(user.wards or ()),
                    credential=_TOKEN + digest,
                )
        return None

    async def open_session(self, user: Principal, ttl_s: float) -> tuple[str, datetime]:
        """A new browser session for `user`; returns its cookie token and expiry."""
        token = new_token()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_s)
        async with self._engine.begin() as conn:
            await conn.execute(delete(Session).where(Session.expires_at < now))
            await conn.execute(
                table_of(Session).insert(),
                {
                    "token_hash": hash_token(token),
                    "user_name": user.name,
                    "created_at": now,
                    "expires_at": expires,
                },
            )
        return token, expires

    async def session_user(self, token: str) -> Principal | None:
        """The live user behind a session cookie, or None (unknown, expired, revoked)."""
        digest = hash_token(token)
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(User.name, User.role, User.wards)
                    .join(Session, Session.user_name == User.name)
                    .where(
                        Session.token_hash == digest,
                        Session.expires_at > datetime.now(UTC),
                        User.revoked_at.is_(None),
                    )
                )
            ).first()
        if row is None:
            return None
        return Principal(
            row.name,
            Role(row.role),
            wards=frozenset(row.wards or ()),
            credential=_SESSION + digest,
        )

    async def stale_credentials(self, credentials: Iterable[str]) -> set[str]:
        """Which of these `Principal.credential`s of users no longer authenticate: the
        token was rotated or its user revoked, or the session ended (logout, rotation,
        revocation). Their sockets must close. Session expiry is not checked: a socket
        outlives its cookie's expiry, as it always did."""
        tokens = {c.removeprefix(_TOKEN) for c in credentials if c.startswith(_TOKEN)}
        sessions = {c.removeprefix(_SESSION) for c in credentials if c.startswith(_SESSION)}
        live: set[str] = set()
        async with self._engine.connect() as conn:
            if tokens:
                query = select(User.token_hash).where(
                    User.token_hash.in_(tokens), User.revoked_at.is_(None)
                )
                live |= {_TOKEN + h for h in await conn.scalars(query)}
            if sessions:
                query = (
                    select(Session.token_hash)
                    .join(User, Session.user_name == User.name)
                    .where(Session.token_hash.in_(sessions), User.revoked_at.is_(None))
                )
                live |= {_SESSION + h for h in await conn.scalars(query)}
        return ({_TOKEN + h for h in tokens} | {_SESSION + h for h in sessions}) - live

    async def wards_of(
        self, *, patient_id: str | None = None, device_id: str | None = None
    ) -> set[str]:
        """The wards of a patient's devices (or of one device): who may see their data."""
        query = select(Device.ward).distinct()
        if patient_id is not None:
            query = query.where(Device.patient_id == patient_id)
        if device_id is not None:
            query = query.where(Device.id == device_id)
        async with self._engine.connect() as conn:
            return set(await conn.scalars(query))

    async def close_session(self, token: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(Session).where(Session.token_hash == hash_token(token)))
