"""Counters the tests and benchmarks read from ``GET /_simulator/stats``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    logins: dict[str, int] = field(default_factory=dict)
    submissions: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    # Cancellations and rejection requests made on the "portal" (control API), not through the API.
    portal_events: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests.clear()
        self.logins.clear()
        self.submissions = 0
        self.faults_injected.clear()
        self.portal_events.clear()

    def count_request(self, endpoint: str, status: int) -> None:
        per_status = self.requests.setdefault(endpoint, {})
        key = str(status)
        per_status[key] = per_status.get(key, 0) + 1

    def count_login(self, client_id: str) -> None:
        self.logins[client_id] = self.logins.get(client_id, 0) + 1

    def count_fault(self, name: str) -> None:
        self.faults_injected[name] = self.faults_injected.get(name, 0) + 1

    def count_portal_event(self, name: str) -> None:
        self.portal_events[name] = self.portal_events.get(name, 0) + 1
