"""The ``search_lag_seconds`` fault: Search and Recent Documents see a document only some time
after it was received (MyInvois indexes asynchronously), while Get Submission, Get Document
Details and the duplicate-submission check know it at once."""

from __future__ import annotations

import time
from datetime import timedelta

from click.testing import CliRunner

from connector_core.simulator.cli import config_from_options, simulator_command

from .helpers import invoice, login, make_client, now_utc, submit, submit_one

#: Long enough that the calls made during the lag get seconds of margin on a busy machine.
LAG = 3.0


def _window() -> dict[str, str]:
    now = now_utc()
    return {
        "submissionDateFrom": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "submissionDateTo": (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _search(client, headers, **params) -> set[str]:
    response = client.get("/api/v1.0/documents/search", params={**_window(), **params}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["uuid"] for item in response.json()["result"]}


def _recent(client, headers) -> set[str]:
    response = client.get("/api/v1.0/documents/recent", params={"InvoiceDirection": "Sent"}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["uuid"] for item in response.json()["result"]}


def _faults(client) -> dict[str, int]:
    return client.get("/_simulator/stats").json()["faults_injected"]


def test_search_and_recent_hide_a_document_until_the_lag_has_passed():
    with make_client(faults={"search_lag_seconds": LAG}) as client:
        headers = login(client)
        uuid = submit_one(client, headers, invoice("LAG-1"), "LAG-1")
        received_by = time.time()  # the simulator received the document before its answer came back
        # The submission itself knows the document at once: only the listings lag.
        assert client.get(f"/api/v1.0/documents/{uuid}/details", headers=headers).status_code == 200
        assert _search(client, headers, searchQuery="LAG-1") == set()
        assert _recent(client, headers) == set()
        assert _faults(client)["search_lag"] == 2  # one per listing call that hid a document
        # A search that would not have matched anyway is not counted as hidden by the lag.
        assert _search(client, headers, searchQuery="OTHER-9") == set()
        assert _faults(client)["search_lag"] == 2

        # Sleeping past the lag is safe on any machine: a sleep is never shorter than asked.
        time.sleep(max(0.0, received_by + LAG - time.time()) + 0.1)
        assert _search(client, headers, searchQuery="LAG-1") == {uuid}
        assert _recent(client, headers) == {uuid}
        assert _faults(client)["search_lag"] == 2


def test_an_identical_resend_during_the_lag_is_a_duplicate_submission():
    # What the connector meets when it reconciles a lost submit: the search does not find the
    # documents, and the identical re-send is refused with 422 because MyInvois has them.
    with make_client(faults={"search_lag_seconds": 30}) as client:
        headers = login(client)
        document = invoice("LAG-2")
        first = submit(client, headers, [(document, "LAG-2")])
        assert first.status_code == 202
        assert _search(client, headers, searchQuery="LAG-2") == set()
        again = submit(client, headers, [(document, "LAG-2")])
        assert again.status_code == 422
        assert again.json()["error"]["code"] == "DuplicateSubmission"
        assert int(again.headers["Retry-After"]) > 0


def test_lag_can_be_switched_at_run_time_and_defaults_to_none():
    with make_client() as client:
        headers = login(client)
        uuid = submit_one(client, headers, invoice("LAG-3"), "LAG-3")
        assert _search(client, headers, searchQuery="LAG-3") == {uuid}
        assert client.post("/_simulator/faults", json={"search_lag_seconds": 60}).status_code == 200
        assert _search(client, headers, searchQuery="LAG-3") == set()
        assert _faults(client)["search_lag"] == 1
        assert client.post("/_simulator/faults", json={"search_lag_seconds": -1}).status_code == 400


def test_command_line_flag_sets_the_lag():
    config = config_from_options(None, {"search_lag_seconds": 2.5})
    assert config.faults.search_lag_seconds == 2.5
    assert "--search-lag-seconds" in CliRunner().invoke(simulator_command, ["--help"]).output
