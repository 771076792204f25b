"""Observability: structured logs without secrets, Sentry without personal data, Prometheus
metrics, and the health verdict behind ``/healthz``.

| Module | Its one job |
| --- | --- |
| ``redaction`` | The registry of secret values and the patterns masked everywhere |
| ``logs`` | ``configure_logging``, document-context log lines, the redacting handler filter |
| ``sentry`` | ``init_sentry``, the event scrubber, tagging scopes and capture helpers |
| ``metrics`` | ``ConnectorMetrics``: every metric, in its own registry |
| ``health`` | ``HealthMonitor``: late cycles and failing logins make the connector unhealthy |
| ``server`` | ``build_app`` (the Starlette app: ``/metrics``, ``/healthz``) and ``MetricsServer`` (uvicorn, in a thread) |
| ``settings`` | ``ObservabilitySettings``: the ``[observability]`` configuration table |
"""

from connector_core.observability.health import HealthMonitor
from connector_core.observability.logs import configure_logging, document_logger, log_document
from connector_core.observability.metrics import ConnectorMetrics
from connector_core.observability.redaction import register_secret
from connector_core.observability.server import MetricsServer
from connector_core.observability.settings import ObservabilitySettings

__all__ = [
    "ConnectorMetrics",
    "HealthMonitor",
    "MetricsServer",
    "ObservabilitySettings",
    "configure_logging",
    "document_logger",
    "log_document",
    "register_secret",
]
