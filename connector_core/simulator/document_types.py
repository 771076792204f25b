"""The Platform API's document types: Get All Document Types, Get Document Type, and its versions.

Shapes follow the SDK pages ``/api/03-get-document-types/``, ``/api/04-get-document-type/`` and
``/api/05-get-document-type-version/`` field for field: the list is wrapped in ``result`` and
carries no workflow parameters; one type adds ``workflowParameters``, whose ``value`` is a
number of hours (the page's example: 72, "time limit in hours"). The cancellation and
rejection windows come from the simulator's live settings, so a compressed window shows here
as a fraction of an hour, exactly what the cancel and reject rules enforce.

LHDN publishes neither its internal ids nor the dates; the ones below are the simulator's.
The type ids differ from the type codes on purpose: a client that confuses them fails here as
it would at LHDN.
"""

from __future__ import annotations

from connector_core.codes import code_table

from .config import SimulatorConfig

#: MyInvois went live for the first taxpayers on 1 August 2024.
GO_LIVE = "2024-08-01T00:00:00Z"
#: Versions 1.2/1.3 serve the Special Voluntary Disclosure Programme (release note of
#: 8 July 2026), usable until the end of 2027 (API.md §7.2).
SVDP_FROM = "2026-07-08T00:00:00Z"
SVDP_TO = "2027-12-31T23:59:59Z"
VERSIONS = (("1.0", GO_LIVE, None), ("1.1", GO_LIVE, None), ("1.2", SVDP_FROM, SVDP_TO), ("1.3", SVDP_FROM, SVDP_TO))
FIRST_TYPE_ID = 45  # the SDK pages' example id
PARAMETERS = ("submissionDuration", "cancellationDuration", "rejectionDuration")


def _type_ids() -> dict[int, str]:
    """Document type id -> e-invoice type code ("01" ... "14"), in code order."""
    return {FIRST_TYPE_ID + n: code for n, code in enumerate(sorted(code_table("EInvoiceTypes")))}


def _version_id(type_id: int, position: int) -> int:
    return type_id * 100 + position + 1


def _versions(type_id: int, code: str) -> list[dict]:
    description = code_table("EInvoiceTypes")[code]
    return [
        {
            "id": _version_id(type_id, position),
            "name": name,
            "description": f"{description} version {name}",
            "activeFrom": active_from,
            "activeTo": active_to,
            "versionNumber": float(name),
            "status": "published",
        }
        for position, (name, active_from, active_to) in enumerate(VERSIONS)
    ]


def _summary(type_id: int, code: str) -> dict:
    return {
        "id": type_id,
        "invoiceTypeCode": int(code),  # documented as a Number
        "description": code_table("EInvoiceTypes")[code],
        "activeFrom": GO_LIVE,
        "activeTo": None,
        "documentTypeVersions": _versions(type_id, code),
    }


def workflow_parameters(type_id: int, config: SimulatorConfig) -> list[dict]:
    hours = {
        # How old a document's issue date-time may be when submitted (the 72-hour rule).
        "submissionDuration": config.validation.max_issue_age_hours,
        "cancellationDuration": config.cancellation_window_seconds() / 3600,
        "rejectionDuration": config.rejection_window_seconds() / 3600,
    }
    return [
        {"id": type_id * 10 + n, "parameter": name, "value": hours[name], "activeFrom": GO_LIVE, "activeTo": None}
        for n, name in enumerate(PARAMETERS, start=1)
    ]


def all_document_types() -> dict:
    return {"result": [_summary(type_id, code) for type_id, code in _type_ids().items()]}


def document_type(type_id: int, config: SimulatorConfig) -> dict | None:
    code = _type_ids().get(type_id)
    if code is None:
        return None
    return {**_summary(type_id, code), "workflowParameters": workflow_parameters(type_id, config)}


def document_type_version(type_id: int, version_id: int) -> dict | None:
    code = _type_ids().get(type_id)
    if code is None:
        return None
    for version in _versions(type_id, code):
        if version["id"] == version_id:
            # The version page lists these fields only (no id): the caller already has it.
            return {
                "invoiceTypeCode": int(code),
                "name": version["name"],
                "description": version["description"],
                "versionNumber": version["versionNumber"],
                "status": version["status"],
                "activeFrom": version["activeFrom"],
                "activeTo": version["activeTo"],
            }
    return None
