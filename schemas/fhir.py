"""The FHIR facade's parameters and answers as the OpenAPI document describes them.

FHIR resources are FHIR's own (validated in the tests with `fhir.resources`); these
models only name what the document needs: the query and path parameters, a resource's
envelope (`resourceType` and any member), and the Bulk Data manifest.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BulkManifest",
    "ExportFilePath",
    "ExportJobPath",
    "ExportQuery",
    "FhirIdPath",
    "FhirResource",
    "ManifestFile",
    "ObservationQuery",
    "OperationOutcomeBody",
]

FhirId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]+$")]


class FhirResource(BaseModel):
    """Any FHIR R4 resource: `resourceType` and the members FHIR defines for it (FHIR's
    camelCase names are kept, here and in the manifest)."""

    model_config = ConfigDict(extra="allow")

    resourceType: str


class OperationOutcomeBody(FhirResource):
    """Every error of the FHIR facade: an OperationOutcome with one issue."""

    issue: list[dict[str, str]]


class FhirIdPath(BaseModel):
    id: FhirId


class ExportJobPath(BaseModel):
    job_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class ExportFilePath(ExportJobPath):
    file: Annotated[str, Field(pattern=r"^[0-9]{1,4}\.ndjson$")]


class ObservationQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    patient: Annotated[str, Field(description="`p-1` or `Patient/p-1` (required).")]
    code: Annotated[
        str | None,
        Field(description="LOINC codes, comma-separated; `http://loinc.org|8867-4` too."),
    ] = None
    date: Annotated[
        list[str] | None,
        Field(description="`ge`/`gt`/`le`/`lt` + a date or dateTime; repeat for a range."),
    ] = None
    count: Annotated[int | None, Field(alias="_count", ge=1, le=1000)] = None
    cursor: Annotated[
        str | None, Field(alias="_cursor", description="From the `next` link; opaque.")
    ] = None


class ExportQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Annotated[
        str | None,
        Field(alias="_type", description="Observation, Patient, Device, comma-separated."),
    ] = None
    since: Annotated[
        str | None,
        Field(alias="_since", description="Only readings received at or after this instant."),
    ] = None
    output_format: Annotated[
        str | None, Field(alias="_outputFormat", description="application/fhir+ndjson")
    ] = None


class ManifestFile(BaseModel):
    type: str
    url: str
    count: int | None = None  # resources in the file (Patient, Device)
    readings: int | None = None  # readings in an Observation file (a pair is one panel)


class BulkManifest(BaseModel):
    """The Bulk Data complete-status body."""

    transactionTime: str
    request: str
    requiresAccessToken: bool
    output: list[ManifestFile]
    error: list[ManifestFile]
