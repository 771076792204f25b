"""The baseline: LHDN's polling pseudo-code followed literally, with httpx and nothing else.

For each invoice, in order: submit it alone (one document per submission), then call Get
Submission until its overall status is no longer "in progress", sleeping a fixed interval
between polls. The token is cached for its ``expires_in`` (LHDN's first anti-pattern is avoided),
and every 429 is honoured: the client sleeps for ``Retry-After`` and repeats the same call. So
it is a faithful, well-behaved client, only a sequential one.

The fixed sleep is ``--poll-sleep`` seconds (default 3 s: the short end of LHDN's advised 3-5 s,
i.e. the choice most favourable to the baseline). Documents are built with the connector's own
builder from the same SQLite staging tables, so only the integration pattern differs.

The run is bounded by ``--max-seconds`` and ``--max-documents`` (one document per ~4 s cannot
drain a 20,000-invoice backlog in a benchmark); its rate is documents validated per minute of
the run. Prints one JSON object on stdout.

    python benchmarks/naive_client.py --base-url http://127.0.0.1:PORT --erp erp.sqlite --max-seconds 120
"""

from __future__ import annotations

import argparse
import email.utils
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from connector_core.document import build
from myinvois_sql.engines import engine_for
from myinvois_sql.options import SqlSourceOptions
from myinvois_sql.store import store_for

CLIENT_ID = "demo-taxpayer"
CLIENT_SECRET = "demo-taxpayer-secret"


def retry_after_seconds(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, (parsed - datetime.now(UTC)).total_seconds())


class NaiveClient:
    def __init__(self, base_url: str, *, default_retry_after: float = 5.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60.0)
        self.default_retry_after = default_retry_after
        self.token: str | None = None
        self.token_expires = 0.0
        self.calls: dict[str, int] = {"login": 0, "submit": 0, "get_submission": 0}
        self.rate_limited = 0

    def _send(self, name: str, method: str, url: str, **kwargs) -> httpx.Response:  # noqa: ANN003
        """One call; a 429 is waited out as told and the same call repeated."""
        while True:
            self.calls[name] += 1
            response = self.http.request(method, url, **kwargs)
            if response.status_code != 429:
                response.raise_for_status()
                return response
            self.rate_limited += 1
            time.sleep(retry_after_seconds(response.headers.get("Retry-After"), self.default_retry_after))

    def bearer(self) -> dict[str, str]:
        # Cached for the token's lifetime (a minute early), as the pseudo-code's comment says.
        if self.token is None or time.monotonic() >= self.token_expires:
            answer = self._send(
                "login",
                "POST",
                "/connect/token",
                data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials", "scope": "InvoicingAPI"},
            ).json()
            self.token = answer["access_token"]
            self.token_expires = time.monotonic() + max(1.0, float(answer["expires_in"]) - 60.0)
        return {"Authorization": f"Bearer {self.token}"}

    def submit_documents(self, entry: dict[str, str]) -> str:
        response = self._send("submit", "POST", "/api/v1.0/documentsubmissions", json={"documents": [entry]}, headers=self.bearer())
        return response.json()["submissionUid"]

    def poll_submission_status(self, uid: str, sleep_s: float) -> str:
        while True:
            answer = self._send("get_submission", "GET", f"/api/v1.0/documentsubmissions/{uid}", headers=self.bearer()).json()
            status = str(answer.get("overallStatus", "")).lower().replace(" ", "")
            if status != "inprogress":
                return status
            time.sleep(sleep_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--erp", type=Path, required=True, help="SQLite staging database")
    parser.add_argument("--poll-sleep", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--max-documents", type=int, default=1000)
    args = parser.parse_args()

    options = SqlSourceOptions(url=f"sqlite:///{args.erp.resolve()}")
    invoices = list(store_for("naive", options, engine_for(options)).pending(args.max_documents))
    client = NaiveClient(args.base_url)
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    for invoice in invoices:
        if time.monotonic() - started >= args.max_seconds:
            break
        built = build(invoice, datetime.now(UTC).replace(microsecond=0))
        uid = client.submit_documents(built.submission_entry())
        status = client.poll_submission_status(uid, args.poll_sleep)
        outcomes[status] = outcomes.get(status, 0) + 1
    elapsed = time.monotonic() - started
    done = sum(outcomes.values())
    print(
        json.dumps(
            {
                "documents": done,
                "valid": outcomes.get("valid", 0),
                "outcomes": outcomes,
                "elapsed_s": round(elapsed, 2),
                "documents_per_minute": round(outcomes.get("valid", 0) / elapsed * 60, 2) if elapsed else 0.0,
                "calls": client.calls,
                "rate_limited_429": client.rate_limited,
                "poll_sleep_s": args.poll_sleep,
            }
        )
    )


if __name__ == "__main__":
    main()
