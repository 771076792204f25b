"""When a request's last byte left this machine: the moment from which LHDN can count the call.

httpx hands every step of a request to an optional ``trace`` callback (httpcore's request
extension); the step "request body sent" marks the moment the whole request was written to the
socket. The rate policy counts the call from then on (plus a guard for its way to LHDN), rather
than from its answer, which comes later by the server's processing time.
"""

from __future__ import annotations

import time
from typing import Any

#: httpcore names its steps "<protocol>.<step>.<started|complete|failed>"; the body step ends a
#: request in HTTP/1.1 ("http11") and HTTP/2 ("http2") alike.
_BODY_SENT = ".send_request_body.complete"


class SendWatch:
    """One call's watch: pass :attr:`extensions` to the request, then ask :meth:`sent_seconds_ago`.

    The callback runs in the sending thread right after the socket write returned: on a busy
    machine it only runs later, which stamps the call later than it left, on the safe side.
    """

    # Not shared: httpx runs the callback in the thread that makes the call and then reads it.
    def __init__(self) -> None:
        self._sent_at: float | None = None

    @property
    def extensions(self) -> dict[str, Any]:
        return {"trace": self._trace}

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(_BODY_SENT):
            # The latest, should the pool send the request twice: the later stamp is the safe one.
            self._sent_at = time.monotonic()

    def sent_seconds_ago(self) -> float | None:
        """Seconds since the request was completely written; None if it never was (as far as we saw)."""
        return None if self._sent_at is None else time.monotonic() - self._sent_at
