"""The ledger: durable state of every document and submission, in one SQL database.

It is split by who writes what, each part one job over the same engine:

* :attr:`Ledger.intake` — the fetch stage records invoices (:mod:`.intake`);
* :attr:`Ledger.sends` — claims, submit answers and reconciliation (:mod:`.sends`);
* :attr:`Ledger.polls` — what Get Submission said (:mod:`.polls`);
* :attr:`Ledger.watch` — what it said after Valid, while the window is open (:mod:`.watch`);
* :attr:`Ledger.writeback` — outcomes offered to the ERP (:mod:`.writeback`);
* :attr:`Ledger.cancels` — our cancellations, before and after the call (:mod:`.cancels`);
* :attr:`Ledger.status` — read-only questions (:mod:`.queries`);
* :attr:`Ledger.lookup` — read-only questions about one invoice, and exports (:mod:`.lookup`);
* :attr:`Ledger.journal` — counters and incidents (:mod:`.journal`);
* :attr:`Ledger.bodies` — invoice JSON and built bytes, and their pruning (:mod:`.bodies`).

Every state change goes through the declared state machine of :mod:`.states`, as a
compare-and-set; each public method is one transaction.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from connector_core.ledger import migrate
from connector_core.ledger.bodies import Bodies
from connector_core.ledger.cancels import Cancels
from connector_core.ledger.database import make_engine
from connector_core.ledger.intake import Intake
from connector_core.ledger.journal import Journal
from connector_core.ledger.lookup import Lookup
from connector_core.ledger.polls import Polls
from connector_core.ledger.queries import Status
from connector_core.ledger.sends import Sends
from connector_core.ledger.watch import Watch
from connector_core.ledger.writeback import WriteBack


class NoLedgerYet(Exception):
    """Opened for reading where no ledger exists: nothing has run with this configuration."""


class Ledger:
    """All durable state. Thread-safe: each method uses its own connection and transaction."""

    def __init__(self, url: str, *, sender: str | None = None, echo: bool = False, create: bool = True) -> None:
        """``sender`` names this connector instance on the submissions it claims (stable across
        restarts of one installation), so that connectors sharing a ledger tell their own
        interrupted work from another's call in progress.

        ``create=False`` is for commands that only read (``status``): a missing SQLite file or
        a database without the connector's schema raises :class:`NoLedgerYet` instead of being
        created, and nothing is migrated (a read must never change what it reads)."""
        self.url = url
        self.sender = sender
        if not create and _missing_sqlite_file(url):
            raise NoLedgerYet(url)
        self.engine = make_engine(url, echo=echo)
        if create:
            migrate.upgrade(self.engine)
        elif migrate.current_revision(self.engine) is None:
            self.engine.dispose()
            raise NoLedgerYet(url)
        self.intake = Intake(self.engine, sender)
        self.sends = Sends(self.engine, sender)
        self.polls = Polls(self.engine, sender)
        self.watch = Watch(self.engine, sender)
        self.writeback = WriteBack(self.engine, sender)
        self.cancels = Cancels(self.engine, sender)
        self.status = Status(self.engine, sender)
        self.lookup = Lookup(self.engine, sender)
        self.journal = Journal(self.engine, sender)
        self.bodies = Bodies(self.engine, sender)

    def schema_revision(self) -> str | None:
        return migrate.current_revision(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def _missing_sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return False
    return not Path(database).expanduser().exists()
