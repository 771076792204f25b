"""How long after validation MyInvois still lets a document be cancelled or its rejection asked.

LHDN says 72 hours, but the figure is published per document type in Get Document Type's
``workflowParameters`` (``cancellationDuration``, ``rejectionDuration``, in hours), so it is
read from there rather than hard-coded: Get All Document Types once for LHDN's id of each type
code (the id is not the code), then Get Document Type for each code the connector meets. Both
are kept for the life of the process and read again after :data:`REFRESH`; when they cannot be
read, 72 hours stand in, and the read is tried again after :data:`RETRY_AFTER_FAILURE`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from connector_core.api import ApiError, MyInvoisClient, workflow_hours
from connector_core.ledger import utcnow

log = logging.getLogger("connector_core.pipeline.windows")

#: LHDN's published window (Cancel Document, Reject Document): what stands in when the document
#: type's own figure cannot be read.
DEFAULT_WINDOW = timedelta(hours=72)
#: LHDN changes these figures by release note, not by the minute: read once a day.
REFRESH = timedelta(days=1)
#: After a failed read, 72 hours stand in this long before the read is tried again.
RETRY_AFTER_FAILURE = timedelta(hours=1)
#: Both sides' windows: the watch lasts as long as the longer of the two.
PARAMETERS = ("cancellationDuration", "rejectionDuration")


class LifecycleWindows:
    """The window of each document type code, read through any profile's client (document
    types are the same for every taxpayer). Thread-safe: the poll stage asks from several
    threads, and only one of them reads MyInvois."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._ids_read_at: datetime | None = None
        self._windows: dict[str, tuple[timedelta, datetime]] = {}
        self._failed_at: datetime | None = None

    def window(self, client: MyInvoisClient, type_code: str | None, validated_at: datetime) -> timedelta:
        """How long after validation a document of ``type_code``, validated at
        ``validated_at``, may be cancelled or rejected."""
        if not type_code:
            return DEFAULT_WINDOW
        now = utcnow()  # the cache's clock; the parameters in force are those at validation
        with self._lock:
            known = self._windows.get(type_code)
            if known is not None and now - known[1] < REFRESH:
                return known[0]
            if self._failed_at is not None and now - self._failed_at < RETRY_AFTER_FAILURE:
                return known[0] if known is not None else DEFAULT_WINDOW
            try:
                window = self._read(client, type_code, now, validated_at)
            except ApiError as exc:
                self._failed_at = now
                log.warning(
                    "the cancellation window of document type %s could not be read from Get Document Type (%s); "
                    "72 hours are assumed, read again in %s",
                    type_code,
                    exc,
                    RETRY_AFTER_FAILURE,
                )
                return known[0] if known is not None else DEFAULT_WINDOW
            self._failed_at = None
            self._windows[type_code] = (window, now)
            return window

    def _read(self, client: MyInvoisClient, type_code: str, now: datetime, validated_at: datetime) -> timedelta:
        if self._ids_read_at is None or now - self._ids_read_at >= REFRESH or type_code not in self._ids:
            self._ids = {t.type_code: t.id for t in client.get_document_types()}
            self._ids_read_at = now
        type_id = self._ids.get(type_code)
        if type_id is None:
            log.warning("Get Document Types lists no type %s; its cancellation window is taken as 72 hours", type_code)
            return DEFAULT_WINDOW
        body = client.get_document_type(type_id)
        hours = [h for h in (workflow_hours(body, name, validated_at) for name in PARAMETERS) if h is not None]
        if not hours:
            log.warning("document type %s carries no cancellation window; 72 hours are assumed", type_code)
            return DEFAULT_WINDOW
        return timedelta(hours=max(hours))
