"""Seeded fault injection: what goes wrong with one call, decided when it arrives.

All draws come from one random.Random(seed), so the same sequence of calls meets the same
faults again. The settings can be swapped at run time; the random sequence carries on.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from .config import FaultRate, FaultsConfig


@dataclass(slots=True, frozen=True)
class FaultPlan:
    latency_seconds: float = 0.0
    server_error: int | None = None  # 500 or 503
    spurious_429: bool = False
    lost_response: bool = False
    revoke_token: bool = False


def _rate(value: FaultRate, endpoint: str) -> float:
    if isinstance(value, dict):
        return value.get(endpoint, 0.0)
    return value


class FaultInjector:
    def __init__(self, config: FaultsConfig, seed: int) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # the runtime-change endpoint and requests may interleave

    def replace(self, config: FaultsConfig) -> None:
        with self._lock:
            self.config = config

    def _happens(self, rate: float) -> bool:
        # Draw only for a non-zero rate, so enabling one fault does not shift another's sequence.
        return rate > 0 and self._rng.random() < rate

    def plan(self, endpoint: str, authenticated: bool) -> FaultPlan:
        with self._lock:
            config = self.config
            spec = config.latency_by_endpoint.get(endpoint)
            fixed_ms, jitter_ms = (
                (spec.fixed_ms, spec.jitter_ms) if spec else (config.latency_ms, config.latency_jitter_ms)
            )
            latency = fixed_ms / 1000.0
            if jitter_ms > 0:
                latency += self._rng.uniform(0, jitter_ms) / 1000.0
            revoke = authenticated and self._happens(_rate(config.revoke_rate, endpoint))
            spurious = self._happens(_rate(config.spurious_429_rate, endpoint))
            error = None
            if self._happens(_rate(config.error_rate, endpoint)):
                error = self._rng.choice((500, 503))
            lost = self._happens(_rate(config.lost_response_rate, endpoint))
            return FaultPlan(latency, error, spurious, lost, revoke)

    def slow_validation_extra(self) -> float:
        with self._lock:
            if self._happens(self.config.slow_validation_rate):
                return self.config.slow_validation_seconds
            return 0.0
