"""MyInvois's error structures turned into sentences for the clerk who fixes the invoice,
plus the raw structure kept alongside for the integrator."""

from __future__ import annotations

import dataclasses
from typing import Any

from connector_core.api import ApiError, ErrorDetail


def rejection_messages(error: ErrorDetail | None, *, when: str = "when it was submitted") -> list[str]:
    if error is None:
        return [f"MyInvois refused the document {when} without giving a reason; contact LHDN support"]
    messages = []
    for leaf in error.leaves() or [error]:
        field = leaf.property_path or leaf.target or leaf.property_name
        text = leaf.message or leaf.message_ms or leaf.code or "no reason given"
        where = f" (field {field})" if field else ""
        messages.append(f"MyInvois refused the document {when}: {text}{where}")
    return messages


def error_details(error: ErrorDetail | None) -> list[dict[str, Any]]:
    return [dataclasses.asdict(error)] if error is not None else []


def api_error_messages(exc: ApiError) -> list[str]:
    detail = getattr(exc, "detail", None)
    details = getattr(exc, "details", ()) or ()
    messages = [str(exc)]
    for leaf in details:
        if leaf.message:
            messages.append(f"MyInvois: {leaf.message}" + (f" (field {leaf.target})" if leaf.target else ""))
    if detail is not None and not details:
        messages.extend(m for m in rejection_messages(detail, when="with its whole submission") if m not in messages)
    return messages
