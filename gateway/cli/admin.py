"""`vitals devices …` and `vitals users …`: provisioning on the configured database.

These work on the database directly, so the first admin exists before any gateway runs.
A running gateway notices revocations and rotations made here within
`revocation_check_s`: it closes the streams, dashboards and alerts concerned.
Only `add` creates the database; the other actions refuse one that is not there, naming
it, so a mistyped --database-url or a demo's database is never mistaken for an empty one.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import TYPE_CHECKING, Any

from rich.table import Table

from gateway.cli.common import add_config_options, run, settings_from
from gateway.client.output import add_json_option, show
from gateway.errors import ConfigError, InvalidParameter

if TYPE_CHECKING:
    from gateway.storage.accounts import AccountStore

__all__ = ["register"]

# The only actions that may create the database: every other one reads or changes what
# is there, and on a database it created it would find nothing, silently.
_CREATING_ACTIONS = frozenset({"add"})


def register(sub: argparse._SubParsersAction[Any]) -> None:
    devices = sub.add_parser("devices", help="provision, list and revoke devices")
    dsub = devices.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = dsub.add_parser("add", help="provision a device and print its token (shown once)")
    add.add_argument("device_id")
    add.add_argument("--patient", required=True, help="patient the device is worn by")
    add.add_argument("--ward", required=True)
    add.add_argument("--json", action="store_true", help='print {"id","patient_id","ward","token"}')
    add_config_options(add)
    add.set_defaults(func=lambda a: _with_store(a, _add_device))

    ls = dsub.add_parser("list", help="list devices (never their tokens)")
    add_json_option(ls, "object per device")
    add_config_options(ls)
    ls.set_defaults(func=lambda a: _with_store(a, _list_devices))

    rv = dsub.add_parser("revoke", help="revoke a device's token; its stream closes within seconds")
    rv.add_argument("device_id")
    add_config_options(rv)
    rv.set_defaults(func=lambda a: _with_store(a, _revoke_device))

    users = sub.add_parser("users", help="provision, list, revoke users and rotate their tokens")
    usub = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    uadd = usub.add_parser("add", help="create a user and print its token (shown once)")
    uadd.add_argument("name")
    uadd.add_argument("--role", required=True, choices=["clinician", "admin"])
    uadd.add_argument(
        "--ward",
        dest="wards",
        action="append",
        default=[],
        help="a ward the clinician may see (repeat for more; required for clinicians)",
    )
    uadd.add_argument("--json", action="store_true", help='print {"name","role","wards","token"}')
    add_config_options(uadd)
    uadd.set_defaults(func=lambda a: _with_store(a, _add_user))

    uls = usub.add_parser("list", help="list users (never their tokens)")
    add_json_option(uls, "object per user")
    add_config_options(uls)
    uls.set_defaults(func=lambda a: _with_store(a, _list_users))

    urv = usub.add_parser(
        "revoke", help="revoke a user: token and sessions end, dashboards close within seconds"
    )
    urv.add_argument("name")
    add_config_options(urv)
    urv.set_defaults(func=lambda a: _with_store(a, _revoke_user))

    urot = usub.add_parser(
        "rotate", help="print a new token for a user (shown once); the old one stops working"
    )
    urot.add_argument("name")
    urot.add_argument("--json", action="store_true", help='print {"name","token"}')
    add_config_options(urot)
    urot.set_defaults(func=lambda a: _with_store(a, _rotate_user))


def _with_store(args: argparse.Namespace, action: Any) -> int:
    # Imported here: every `vitals` command builds this parser; only these need SQLAlchemy.
    from gateway.storage.database import DatabaseMissing, open_storage

    settings = settings_from(args)

    async def main() -> int:
        try:
            storage = await open_storage(settings, create=args.action in _CREATING_ACTIONS)
        except DatabaseMissing as e:
            raise ConfigError(
                f"{e}; pass --database-url or --config, or run vitals serve first"
            ) from None
        try:
            result: int = await action(storage.accounts, args)
            if result == 0 and args.action != "list":
                await storage.audit.record(
                    _operator(), f"{args.command.rstrip('s')}.{args.action}", _target(args), "cli"
                )
            return result
        finally:
            await storage.close()

    return run(main())


def _operator() -> str:
    """Who ran the command: the operating-system account (there is no token on the CLI)."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:unknown"


def _target(args: argparse.Namespace) -> str:
    return str(getattr(args, "device_id", None) or getattr(args, "name", ""))


async def _add_device(store: AccountStore, args: argparse.Namespace) -> int:
    info, token = await store.add_device(args.device_id, args.patient, args.ward)
    if args.json:
        print(
            json.dumps(
                {"id": info.id, "patient_id": info.patient_id, "ward": info.ward, "token": token}
            )
        )
    else:
        print(token)
    return 0


async def _list_devices(store: AccountStore, args: argparse.Namespace) -> int:
    devices = await store.list_devices()
    records = (
        {
            "id": d.id,
            "patient_id": d.patient_id,
            "ward": d.ward,
            "created_at": d.created_at,
            "revoked_at": d.revoked_at,
            "last_seq": d.last_seq,
        }
        for d in devices
    )
    table = Table("device", "patient", "ward", "created", "status", "last seq")
    for d in devices:
        status = f"revoked {d.revoked_at:%Y-%m-%d %H:%M}" if d.revoked_at else "active"
        table.add_row(
            d.id, d.patient_id, d.ward, f"{d.created_at:%Y-%m-%d %H:%M}", status, str(d.last_seq)
        )
    show(table, records, json=args.json)
    return 0


async def _revoke_device(store: AccountStore, args: argparse.Namespace) -> int:
    await store.revoke_device(args.device_id, _operator())
    print(f"revoked {args.device_id}")
    return 0


async def _add_user(store: AccountStore, args: argparse.Namespace) -> int:
    from gateway.storage.accounts import Role

    if args.role == "clinician" and not args.wards:
        raise InvalidParameter("--ward", "a clinician needs at least one ward")
    token = await store.add_user(args.name, Role(args.role), args.wards)
    if args.json:
        print(
            json.dumps({"name": args.name, "role": args.role, "wards": args.wards, "token": token})
        )
    else:
        print(token)
    return 0


async def _list_users(store: AccountStore, args: argparse.Namespace) -> int:
    users = await store.list_users()
    records = (
        {
            "name": u.name,
            "role": u.role.value,
            "wards": u.wards,
            "created_at": u.created_at,
            "revoked_at": u.revoked_at,
        }
        for u in users
    )
    table = Table("user", "role", "wards", "created", "status")
    for u in users:
        status = f"revoked {u.revoked_at:%Y-%m-%d %H:%M}" if u.revoked_at else "active"
        wards = "all" if u.role.value == "admin" else ", ".join(u.wards)
        table.add_row(u.name, u.role.value, wards, f"{u.created_at:%Y-%m-%d %H:%M}", status)
    show(table, records, json=args.json)
    return 0


async def _revoke_user(store: AccountStore, args: argparse.Namespace) -> int:
    await store.revoke_user(args.name)
    print(f"revoked {args.name}")
    return 0


async def _rotate_user(store: AccountStore, args: argparse.Namespace) -> int:
    token = await store.rotate_user(args.name)
    print(json.dumps({"name": args.name, "token": token}) if args.json else token)
    return 0
