"""POST /connect/token: taxpayer and intermediary logins, refusals, token lifetime."""

from __future__ import annotations

import time

import pytest

from .helpers import BUYER_TIN, INTERMEDIARY, TAXPAYER_TIN, invoice, login, make_client, submit

FORM = {"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret", "grant_type": "client_credentials",
        "scope": "InvoicingAPI"}


def test_taxpayer_login_returns_an_opaque_bearer_token_with_its_lifetime(client):
    response = client.post("/connect/token", data=FORM)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "InvoicingAPI"
    assert len(body["access_token"]) >= 32


def test_scope_may_be_omitted(client):
    form = {k: v for k, v in FORM.items() if k != "scope"}
    assert client.post("/connect/token", data=form).status_code == 200


def test_token_lifetime_is_configurable_and_expired_tokens_get_401():
    lifetime = 3  # seconds of margin for the first call, even on a busy machine
    client = make_client(token_lifetime_seconds=lifetime)
    response = client.post("/connect/token", data=FORM)
    issued_by = time.time()  # the simulator issued the token before its answer came back
    assert response.json()["expires_in"] == lifetime
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert client.get("/api/v1.0/documentsubmissions/NOPE", headers=headers).status_code == 404
    # Sleeping past the lifetime is safe on any machine: a sleep is never shorter than asked.
    time.sleep(max(0.0, issued_by + lifetime - time.time()) + 0.1)
    expired = client.get("/api/v1.0/documentsubmissions/NOPE", headers=headers)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "Unauthorized"
    assert expired.headers["correlationId"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}])
def test_missing_or_unknown_token_is_401_on_every_api(client, headers):
    calls = [
        ("POST", "/api/v1.0/documentsubmissions"),
        ("GET", "/api/v1.0/documentsubmissions/X"),
        ("GET", "/api/v1.0/documents/X/details"),
        ("GET", "/api/v1.0/documents/X/raw"),
        ("PUT", "/api/v1.0/documents/state/X/state"),
        ("GET", "/api/v1.0/documents/search"),
        ("GET", "/api/v1.0/documents/recent"),
        ("GET", f"/api/v1.0/taxpayer/validate/{TAXPAYER_TIN}"),
        ("GET", "/api/v1.0/taxpayer/search/tin"),
        ("GET", "/api/v1.0/taxpayers/qrcodeinfo/X"),
    ]
    for method, path in calls:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert "correlationId" in response.headers


def test_wrong_secret_is_invalid_client(client):
    response = client.post("/connect/token", data={**FORM, "client_secret": "wrong"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"


def test_unknown_client_is_invalid_client(client):
    response = client.post("/connect/token", data={**FORM, "client_id": "nobody"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("client_id", ["", "0", "YOUR_CLIENT_ID"])
def test_placeholder_client_ids_are_refused(client, client_id):
    response = client.post("/connect/token", data={**FORM, "client_id": client_id})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_missing_client_id_is_refused(client):
    form = {k: v for k, v in FORM.items() if k != "client_id"}
    assert client.post("/connect/token", data=form).json()["error"] == "invalid_request"


def test_other_grant_types_and_scopes_are_refused(client):
    assert client.post("/connect/token", data={**FORM, "grant_type": "password"}).json()["error"] == "unsupported_grant_type"
    assert client.post("/connect/token", data={**FORM, "scope": "Everything"}).json()["error"] == "invalid_scope"


def test_login_body_must_be_form_encoded(client):
    response = client.post("/connect/token", json=FORM)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("onbehalfof", [TAXPAYER_TIN, f"{TAXPAYER_TIN}:202001234567"])
def test_intermediary_acts_for_a_permitted_taxpayer(client, onbehalfof):
    headers = login(client, INTERMEDIARY, onbehalfof=onbehalfof)
    response = submit(client, headers, [(invoice("INT-1"), "INT-1")])
    assert response.status_code == 202
    assert len(response.json()["acceptedDocuments"]) == 1


def test_intermediary_token_is_bound_to_the_represented_taxpayer(client):
    headers = login(client, INTERMEDIARY, onbehalfof="C10000000010")
    response = submit(client, headers, [(invoice("INT-2"), "INT-2")])  # supplier C25845632020
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "IncorrectSubmitter"


def test_intermediary_refused_for_a_taxpayer_it_does_not_represent(client):
    response = client.post("/connect/token", headers={"onbehalfof": BUYER_TIN},
                           data={**FORM, "client_id": INTERMEDIARY[0], "client_secret": INTERMEDIARY[1]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_intermediary_refused_with_the_wrong_registration_number(client):
    response = client.post("/connect/token", headers={"onbehalfof": f"{TAXPAYER_TIN}:999999999999"},
                           data={**FORM, "client_id": INTERMEDIARY[0], "client_secret": INTERMEDIARY[1]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_intermediary_without_onbehalfof_is_refused(client):
    response = client.post("/connect/token", data={**FORM, "client_id": INTERMEDIARY[0], "client_secret": INTERMEDIARY[1]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_configured_accounts_replace_the_demo_ones():
    client = make_client(taxpayers=[{"client_id": "erp-1", "client_secret": "s3cret", "tin": "C20880050010",
                                     "brn": "201001000001", "name": "Acme"}], intermediaries=[])
    assert client.post("/connect/token", data=FORM).json()["error"] == "invalid_client"
    login(client, ("erp-1", "s3cret"))
    stats = client.get("/_simulator/stats").json()
    assert stats["logins"] == {"erp-1": 1}


def test_unknown_paths_answer_in_the_api_error_shape(client):
    response = client.get("/api/v1.0/no-such-api")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
    assert response.headers["correlationId"]
    assert client.delete("/connect/token").status_code == 405


def test_default_configuration_holds_the_documented_demo_accounts():
    from connector_core.simulator import SimulatorConfig

    config = SimulatorConfig()
    taxpayers = {t.client_id: (t.client_secret, t.tin, t.brn, t.name) for t in config.taxpayers}
    assert taxpayers["demo-taxpayer"] == ("demo-taxpayer-secret", "C25845632020", "202001234567",
                                          "Syarikat Demo Sdn. Bhd.")
    assert taxpayers["demo-taxpayer-2"] == ("demo-taxpayer-2-secret", "C10000000010", "201901000001",
                                            "Kedai Contoh Enterprise")
    assert taxpayers["demo-buyer"][:3] == ("demo-buyer-secret", "C58101234560", "200501012345")
    (intermediary,) = config.intermediaries
    assert (intermediary.client_id, intermediary.client_secret) == ("demo-intermediary", "demo-intermediary-secret")
    assert intermediary.acts_for == ["C25845632020", "C10000000010"]
    assert config.token_lifetime_seconds == 3600
    assert config.rate_limits.profile == "production" and config.rate_limits.window_seconds == 60
    assert config.overall_status_style == "documented"
