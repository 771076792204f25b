"""The ledger: durable state of every document and submission, in one SQL database.

It is split by who writes what, each part one job over the same engine:

* :attr:`Ledger.intake` — the fetch stage records invoices (:mod:`.intake`);
* :attr:`Ledger.sends` — claims, submit answers and reconciliation (:mod:`.sends`);
* :attr:`Ledger.polls` — what Get Submission said (:mod:`.polls`);
* :attr:`Ledger.writeback` — outcomes offered to the ERP (:mod:`.writeback`);
* :attr:`Ledger.status` — read-only questions (:mod:`.queries`);
* :attr:`Ledger.journal` — counters and incidents (:mod:`.journal`).

Every state change goes through the declared state machine of :mod:`.states`, as a
compare-and-set; each public method is one transaction.
"""

from __future__ import annotations

from connector_core.ledger import migrate
from connector_core.ledger.database import make_engine
from connector_core.ledger.intake import Intake
from connector_core.ledger.journal import Journal
from connector_core.ledger.polls import Polls
from connector_core.ledger.queries import Status
from connector_core.ledger.sends import Sends
from connector_core.ledger.writeback import WriteBack


class Ledger:
    """All durable state. Thread-safe: each method uses its own connection and transaction."""

    def __init__(self, url: str, *, sender: str | None = None, echo: bool = False) -> None:
        """``sender`` names this connector instance on the submissions it claims (stable across
        restarts of one installation), so that connectors sharing a ledger tell their own
        interrupted work from another's call in progress."""
        self.url = url
        self.sender = sender
        self.engine = make_engine(url, echo=echo)
        migrate.upgrade(self.engine)
        self.intake = Intake(self.engine, sender)
        self.sends = Sends(self.engine, sender)
        self.polls = Polls(self.engine, sender)
        self.writeback = WriteBack(self.engine, sender)
        self.status = Status(self.engine, sender)
        self.journal = Journal(self.engine, sender)

    def schema_revision(self) -> str | None:
        return migrate.current_revision(self.engine)

    def close(self) -> None:
        self.engine.dispose()
