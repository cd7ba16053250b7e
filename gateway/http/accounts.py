"""Admin provisioning endpoints: devices and users, their revocation and token rotation.

Revoking a device closes its stream and its open alerts; revoking a user or rotating
its token closes its dashboards (4003) here at once, while the revocation watcher in
app.py does the same for changes the CLI makes on the database.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from gateway.errors import InvalidParameter
from gateway.http.auth import require_admin, require_user
from gateway.http.keys import ACCOUNTS, ALERTS, AUDIT, DEVICES, HUB
from gateway.services.revocation import retire_device
from gateway.storage.accounts import DeviceInfo, Role, UserInfo
from schemas.api import (
    DeviceCreate,
    DeviceCreated,
    DeviceList,
    DeviceOut,
    TokenRotated,
    UserCreate,
    UserCreated,
    UserList,
    UserOut,
)
from schemas.codes import CloseCode

__all__ = ["routes"]

routes = web.RouteTableDef()


def _body_error(e: ValidationError) -> InvalidParameter:
    first = e.errors(include_url=False)[0]
    return InvalidParameter(".".join(str(p) for p in first["loc"]) or "body", first["msg"])


def _device_out(d: DeviceInfo) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        patient_id=d.patient_id,
        ward=d.ward,
        created_at=d.created_at,
        revoked_at=d.revoked_at,
        last_seq=d.last_seq,
    )


def _address(request: web.Request) -> str:
    return request.remote or "?"


@routes.post("/v1/devices")
async def add_device(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    try:
        body = DeviceCreate.model_validate_json(await request.read())
    except ValidationError as e:
        raise _body_error(e) from e
    info, token = await request.app[ACCOUNTS].add_device(body.id, body.patient_id, body.ward)
    await request.app[AUDIT].record(
        admin.name,
        "device.add",
        info.id,
        _address(request),
        f"patient {info.patient_id}, ward {info.ward}",
    )
    created = DeviceCreated(id=info.id, patient_id=info.patient_id, ward=info.ward, token=token)
    return web.json_response(text=created.model_dump_json(), status=201)


@routes.get("/v1/devices")
async def list_devices(request: web.Request) -> web.Response:
    principal = await require_user(request)
    devices = [d for d in await request.app[ACCOUNTS].list_devices() if principal.sees(d.ward)]
    body = DeviceList(items=[_device_out(d) for d in devices])
    return web.json_response(text=body.model_dump_json())


@routes.delete("/v1/devices/{device_id}")
async def revoke_device(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    device_id = request.match_info["device_id"]
    await request.app[ACCOUNTS].revoke_device(device_id, admin.name)
    await request.app[AUDIT].record(admin.name, "device.revoke", device_id, _address(request))
    # Answered once the closing events are stored and pushed: the caller's own
    # dashboard already shows the alerts gone.
    await retire_device(
        device_id,
        admin.name,
        _address(request),
        registry=request.app[DEVICES],
        alerts=request.app[ALERTS],
        audit=request.app[AUDIT],
    )
    return web.Response(status=204)


@routes.post("/v1/users")
async def add_user(request: web.Request) -> web.Response:
    admin = await require_admin(request)
    try:
        body = UserCreate.model_validate_json(await request.read())
    except ValidationError as e:
        raise _body_error(e) from e
    if body.role == "clinician" and not body.wards:
        raise InvalidParameter("wards", "a clinician needs at least one ward")
    token = await request.app[ACCOUNTS].add_user(body.name, Role(body.role), body.wards)
    await request.app[AUDIT].record(
        admin.name,
        "user.add",
        body.name,
        _address(request),
        f"role {body.role}, wards {', '.join(body.wards) or '-'}",
    )
    created = UserCreated(name=body.name, role=body.role, wards=body.wards, token=token)
    return web.json_response(text=created.model_dump_json(), status=201)


def _user_out(u: UserInfo) -> UserOut:
    return UserOut(
        name=u.name,
        role=u.role.value,
        wards=u.wards,
        created_at=u.created_at,
        revoked_at=u.revoked_at,
    )


@routes.get("/v1/users")
async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    users = await request.app[ACCOUNTS].list_users()
    return web.json_response(text=UserList(items=[_user_out(u) for u in users]).model_dump_json())


@routes.delete("/v1/users/{name}")
async def revoke_user(request: web.Request) -> web.Response:
    """Revoke a user: its token and sessions stop working, its dashboards close (4003)."""
    admin = await require_admin(request)
    name = request.match_info["name"]
    await request.app[ACCOUNTS].revoke_user(name)
    await request.app[AUDIT].record(admin.name, "user.revoke", name, _address(request))
    await request.app[HUB].close_where(lambda p: p.name == name, CloseCode.REVOKED, "revoked")
    return web.Response(status=204)


@routes.post("/v1/users/{name}/rotate")
async def rotate_user(request: web.Request) -> web.Response:
    """A new token for a user, shown this once; the old one and every session and
    dashboard opened with it end at once (a rotation is what follows a leak)."""
    admin = await require_admin(request)
    name = request.match_info["name"]
    token = await request.app[ACCOUNTS].rotate_user(name)
    await request.app[AUDIT].record(admin.name, "user.rotate", name, _address(request))
    await request.app[HUB].close_where(lambda p: p.name == name, CloseCode.REVOKED, "token rotated")
    return web.json_response(text=TokenRotated(name=name, token=token).model_dump_json())
