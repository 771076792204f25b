"""Fixtures of the simulator's tests; the helpers themselves are in helpers.py."""

from __future__ import annotations

import pytest

from .helpers import make_client


def pytest_collection_modifyitems(items):
    # starlette warns that its TestClient will move to another httpx package; not our concern here.
    for item in items:
        if "tests/simulator" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("ignore:Using `httpx`"))


@pytest.fixture()
def client():
    with make_client() as test_client:
        yield test_client
