"""Fixtures for the observability tests: a local Sentry collector with the real SDK pointed
at it, and a root logger restored after each test that reconfigures it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sentry_collector import SentryCollector  # noqa: E402

from connector_core.observability.redaction import unregister_all_secrets  # noqa: E402
from connector_core.observability.sentry import close_sentry  # noqa: E402


@pytest.fixture
def collector() -> Iterator[SentryCollector]:
    with SentryCollector() as running:
        yield running
    # The SDK client is process-global: switch it off so no later test reports anywhere.
    close_sentry(timeout=2)


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    unregister_all_secrets()
    yield
    unregister_all_secrets()


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)
