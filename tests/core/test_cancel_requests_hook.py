"""The ``fetch_cancel_requests`` hook through the plugin host's facade, with a plugin of the test's own."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from connector_core import hookimpl
from connector_core.contract import CancelRequest, Source
from connector_core.plugins import HookFailed, PluginHost


class _Options(BaseModel):
    pass


class _Erp:
    __name__ = "erp"

    def __init__(self, requests):
        self.requests = requests
        self.finished = False

    @hookimpl
    def register_source_kinds(self, register):
        register("erp", _Options)

    @hookimpl
    def fetch_cancel_requests(self, source):
        yield from self.requests
        self.finished = True  # where a plugin marks what it returned


def _source() -> Source:
    return Source(name="s", kind="erp", profile="p", options=_Options())


def test_fetch_cancel_requests_yields_the_owning_plugins_requests_and_finishes_its_generator():
    erp = _Erp([CancelRequest("K-1", "wrong price"), CancelRequest("K-2", "duplicate", "table t id 2")])
    host = PluginHost(load_entry_points=False, extra_plugins=(erp,))
    got = list(host.fetch_cancel_requests(_source()))
    assert got == [CancelRequest("K-1", "wrong price"), CancelRequest("K-2", "duplicate", "table t id 2")]
    assert erp.finished


def test_fetch_cancel_requests_refuses_anything_but_cancel_requests():
    erp = _Erp([CancelRequest("K-1", "wrong price"), "K-2"])
    host = PluginHost(load_entry_points=False, extra_plugins=(erp,))
    got = []
    with pytest.raises(HookFailed, match="must yield CancelRequest objects, got str"):
        for request in host.fetch_cancel_requests(_source()):
            got.append(request)
    assert got == [CancelRequest("K-1", "wrong price")] and not erp.finished


def test_fetch_cancel_requests_is_optional():
    class Quiet:
        __name__ = "quiet"

        @hookimpl
        def register_source_kinds(self, register):
            register("erp", _Options)

    host = PluginHost(load_entry_points=False, extra_plugins=(Quiet(),))
    assert list(host.fetch_cancel_requests(_source())) == []
