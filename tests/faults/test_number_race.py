"""One invoice number on two ERP rows, recorded by two connectors at the same moment (issue
"Exactly once for every invoice").

A company with two ERP databases that number alike (two sites, a migration) gives each its own
source on one profile; two connector daemons share one PostgreSQL ledger, one reading each
source. The ledger must still let only one row hold a number: the other row is written back
locally invalid, naming the holder, and MyInvois ends with one Valid document per number.

In one connector the sources are fetched one after the other, so the second row always finds the
first one recorded (tests/faults/test_fault_paths.py). Two connectors record at the same time:
the ERPs here add their twins in bursts, so that both daemons' next fetches record them in
overlapping transactions.

Without a lock this failed: the check "does another row hold this number?" and the insert of
the new row were one transaction that nothing serialised against another connector's, so under
READ COMMITTED both connectors saw no holder and both rows went out (hundreds of the 1,800
numbers ended Valid twice). Recording now holds a per-profile lock row of the ledger
(connector_core/ledger/database.py, ``hold``) for its transaction.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests import state_log
from tests.faults import harness as h

pytestmark = [pytest.mark.slow, pytest.mark.services]

#: Twin rows each ERP adds per burst (one page, one ledger transaction per daemon).
TWINS_PER_BURST = 300
BURSTS = 6
#: The daemons fetch again as soon as a cycle ends (and a cycle lasts as long as its sending),
#: so each burst is recorded by both at moments that differ from burst to burst.
FETCH_INTERVAL_SECONDS = 0.2
OTHER_BUYER = "Pembeli Lain Sdn. Bhd."
START_DEADLINE_SECONDS = 120
SETTLE_DEADLINE_SECONDS = 150


class SameNumberSentTwice(AssertionError):
    """Both rows of one invoice number were sent, and MyInvois holds two documents with it."""


def test_twins_recorded_by_two_connectors_at_once_are_sent_once(tmp_path: Path):
    rng = random.Random(23)
    with h.scratch_postgres_ledger() as ledger_url, h.start_simulator(seed=23) as sim:
        # Two ERPs with one row of their own each, then numbering alike: rows 1, 2, ... in both.
        erp_a = h.Erp(tmp_path / "erp-a.db", first=900_001, count=1)
        erp_b = h.Erp(tmp_path / "erp-b.db", first=950_001, count=1)
        erp_a.staging.next_key = erp_b.staging.next_key = 1
        daemons = []
        for name, erp in (("a", erp_a), ("b", erp_b)):
            directory = tmp_path / f"connector-{name}"
            directory.mkdir()
            config = h.write_config(
                directory,
                api_url=sim.base_url,
                erp=erp,
                rate_backend=f"sqlite:///{tmp_path}/rate.db",
                max_documents=50,
                source_name=f"erp_{name}",
            )
            h.set_option(config, "cycles", "fetch_interval_seconds", FETCH_INTERVAL_SECONDS)
            h.set_option(config, "ledger", "url", ledger_url)
            daemons.append(h.Daemon(config, name))
        try:
            for daemon in daemons:
                daemon.start()

            def check_alive() -> None:
                for daemon in daemons:
                    problem = daemon.exited_by_itself()
                    assert problem is None, problem

            def written_back(erps) -> bool:
                check_alive()
                return all(h.FINAL_ERP_STATUSES >= {r["myinvois_status"] for r in e.rows_by_key().values()} for e in erps)

            # Both daemons running (each has recorded and sent its own first row).
            assert h.wait_until(lambda: written_back([erp_a, erp_b]), START_DEADLINE_SECONDS, 0.2), (
                f"see {daemons[0].log} and {daemons[1].log}"
            )
            twins: list[tuple[str, str]] = []
            for _ in range(BURSTS):
                keys_a = erp_a.add(TWINS_PER_BURST)
                keys_b = erp_b.add(TWINS_PER_BURST, buyer_name=OTHER_BUYER)  # same numbers, other content
                twins += list(zip(keys_a, keys_b, strict=True))
                time.sleep(rng.uniform(1.0, 3.0))
            assert h.wait_until(lambda: written_back([erp_a, erp_b]), SETTLE_DEADLINE_SECONDS, 0.5), (
                f"not every invoice final and written back; see {daemons[0].log} and {daemons[1].log}"
            )
            for daemon in daemons:
                assert daemon.stop() == 0, daemon.log_tail()
        finally:
            for daemon in daemons:
                if daemon.running:
                    daemon.kill()

        rows_a, rows_b = erp_a.rows_by_key(), erp_b.rows_by_key()
        documents = h.simulator_documents(sim)
        sent_twice, refused_by_myinvois = [], []
        for key_a, key_b in twins:
            a, b = rows_a[key_a], rows_b[key_b]
            number = a["invoice_number"]
            assert b["invoice_number"] == number
            if a["myinvois_status"] == b["myinvois_status"] == "valid":
                sent_twice.append(number)
                continue
            # Exactly one of the two holds the number; the other names it, and never has its uuid.
            (held, held_source, held_key), (refused, _, _) = sorted(
                [(a, "erp_a", key_a), (b, "erp_b", key_b)], key=lambda r: r[0]["myinvois_status"] != "valid"
            )
            assert held["myinvois_status"] == "valid", (a, b)
            assert documents[held["myinvois_uuid"]] == (number, "Valid"), held
            assert refused["myinvois_status"] == "locally_invalid", refused
            assert refused["myinvois_uuid"] != held["myinvois_uuid"], (held, refused)
            assert f"row {held_key} of source {held_source}" in (refused["myinvois_errors"] or ""), refused
            if refused["myinvois_uuid"] is not None:
                # It was sent too, in the same second as its twin: MyInvois refused it (DS302),
                # and the row keeps its own Invalid document's uuid.
                assert documents[refused["myinvois_uuid"]] == (number, "Invalid"), refused
                refused_by_myinvois.append(number)
        print(f"\n== {len(twins)} twin numbers: {len(sent_twice)} sent from both rows and valid twice, "
              f"{len(refused_by_myinvois)} sent from both rows and the second refused by MyInvois (DS302), "
              f"the others refused by the ledger before sending")
        sim_stats = h.stats(sim.base_url)
        assert h.pg_state_changes(ledger_url) - state_log.DECLARED == set()
        erp_a.close()
        erp_b.close()
        if sent_twice:
            raise SameNumberSentTwice(
                f"{len(sent_twice)} of {len(twins)} invoice numbers were sent from both ERP rows and are Valid twice at "
                f"MyInvois (duplicate_documents {sim_stats['duplicate_documents']}), e.g. {sent_twice[:5]}; "
                f"{len(refused_by_myinvois)} more were sent from both rows in the same second and refused as DS302"
            )
        assert sim_stats["duplicate_documents"] == 0
