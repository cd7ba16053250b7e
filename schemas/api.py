"""REST API request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.metrics import Metric

__all__ = [
    "AuditEntryOut",
    "AuditPage",
    "DeviceCreate",
    "DeviceCreated",
    "DeviceOut",
    "ErrorBody",
    "LatestValue",
    "PatientLatest",
    "ReadingOut",
    "ReadingsPage",
    "Summary",
    "SummaryBucket",
    "UserCreate",
    "UserCreated",
]

# Identifiers appear in URLs, logs and CSV: keep them to a safe, readable alphabet.
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
UserRole = Literal["clinician", "admin"]


class ErrorBody(BaseModel):
    error: str
    detail: str
    param: str | None = None


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Ident
    patient_id: Ident
    ward: Ident


class DeviceCreated(BaseModel):
    id: str
    patient_id: str
    ward: str
    token: str


class DeviceOut(BaseModel):
    """A device as listed; never carries its token."""

    id: str
    patient_id: str
    ward: str
    created_at: datetime
    revoked_at: datetime | None
    last_seq: int


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Ident
    role: UserRole
    # The wards a clinician may see (required for clinicians; admins see all).
    wards: Annotated[list[Ident], Field(max_length=100)] = []


class UserCreated(BaseModel):
    name: str
    role: UserRole
    wards: list[str]
    token: str


class ReadingOut(BaseModel):
    device_id: str
    patient_id: str
    metric: Metric
    ts: AwareDatetime
    value: float
    unit: str


class ReadingsPage(BaseModel):
    items: list[ReadingOut]
    next_cursor: str | None


class SummaryBucket(BaseModel):
    start: AwareDatetime
    count: int
    min: float
    max: float
    mean: float


class Summary(BaseModel):
    buckets: list[SummaryBucket]


class LatestValue(BaseModel):
    value: float
    unit: str
    ts: AwareDatetime
    device_id: str


class PatientLatest(BaseModel):
    patient_id: str
    metrics: dict[Metric, LatestValue]


class AuditEntryOut(BaseModel):
    id: int
    at: AwareDatetime
    actor: str
    action: str
    target: str
    address: str
    detail: str


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
