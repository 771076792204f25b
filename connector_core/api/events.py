"""What the client tells the rest of the connector about each HTTP call it makes.

Metrics and ledger counters are kept elsewhere: the client only hands an :class:`ApiCall` to
each listener. A listener that raises is logged and skipped; it never breaks the call, and the
other listeners still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .endpoints import Endpoint

log = logging.getLogger(__name__)


class ApiCall(NamedTuple):
    endpoint: Endpoint
    method: str
    #: HTTP status, or None when no response arrived (timeout, connection error).
    status: int | None
    duration_s: float
    #: 1 for the first try of a call, 2 for its first retry, ...
    attempt: int
    #: Name of the error class this answer maps to (e.g. "RetriableError"), None on success.
    error: str | None = None
    #: Seconds from a Retry-After header, when there was one.
    retry_after: float | None = None
    correlation_id: str | None = None


Listener = Callable[[ApiCall], None]


def notify(listeners: Iterable[Listener], event: ApiCall) -> None:
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            log.exception("API call listener %r failed; ignoring it", listener)
