"""The daemon's poll cycle prunes the bodies of documents final for longer than
``ledger.keep_bodies_days``, and ``status`` says how many are kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from connector_core.ledger.schema import document_bodies, documents
from tests.core.test_end_to_end import demo_config, run_cli


def test_a_poll_cycle_prunes_bodies_past_the_retention_and_status_tells(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's CSV folders are relative to the working directory
    from connector_core.runtime import Connector
    from connector_core.settings import load_settings

    config = demo_config(tmp_path)
    with Connector(load_settings(config)) as connector:
        connector.run_once()
        engine = connector.ledger.engine
        with engine.connect() as conn:
            final = conn.execute(select(func.count()).where(documents.c.final_at.is_not(None))).scalar()
            kept = conn.execute(select(func.count()).select_from(document_bodies)).scalar()
        assert final and kept  # every demo invoice is final; those read from the ERP have a body
        connector.poll_cycle()
        assert connector.ledger.bodies.stored() == {"kept": kept}  # within the retention: kept
        # A month on (the default retention is 30 days).
        with engine.begin() as conn:
            conn.execute(update(documents).values(final_at=datetime.now(UTC) - timedelta(days=31)))
        connector.ledger.bodies._last_run = None  # the next look is due (once a minute otherwise)
        connector.poll_cycle()
        assert connector.ledger.bodies.stored() == {"kept": 0}
        with engine.connect() as conn:
            audit = conn.execute(
                select(documents.c.document_hash, documents.c.uuid).where(documents.c.state == "valid")
            ).all()
        assert audit and all(h and u for h, u in audit)  # what an audit needs stays
    result = run_cli("--config", str(config), "status", "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["document_bodies"] == {"kept": 0, "keep_days": 30.0}
