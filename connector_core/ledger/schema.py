"""The ledger's tables (SQLAlchemy Core). Migrations in ``migrations/versions`` create them;
this module is what the code reads and writes through.

Core rather than the ORM: the ledger moves tens of thousands of rows per cycle in bulk
statements, and the benchmarks hold it to well under a millisecond of CPU per document.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

# Documents reach 300 KB: MariaDB's TEXT stops at 64 KB.
LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: One row per version of an ERP invoice. A changed invoice after an invalid or rejected
#: result gets a new row with ``version + 1``; the old row keeps its history.
documents = Table(
    "documents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(100), nullable=False),
    Column("source_key", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("profile", String(100), nullable=False),
    Column("number", String(100), nullable=False),
    Column("document_type", String(2), nullable=True),
    Column("issuer_tin", String(20), nullable=True),
    Column("state", String(20), nullable=False),
    # The SHA-256 of the exact bytes sent (the bytes themselves are in ``document_bodies``):
    # kept for good, for audit and for MyInvois's DS302 "identical document" check.
    Column("document_hash", String(64), nullable=True),
    Column("issued_at", DateTime(timezone=True), nullable=True),
    Column("submission_id", Integer, ForeignKey("submissions.id"), nullable=True),
    Column("uuid", String(40), nullable=True),
    Column("long_id", String(120), nullable=True),
    Column("validation_link", String(400), nullable=True),
    Column("errors", Text, nullable=True),
    Column("error_details", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=True),
    Column("final_at", DateTime(timezone=True), nullable=True),
    Column("reported_at", DateTime(timezone=True), nullable=True),
    # Rejected because the whole batch was refused (400/403): not about this invoice's content.
    Column("refused_as_batch", Boolean, nullable=False, default=False),
    # Write-back of this outcome failed: how often, why, and when it is offered again.
    Column("report_attempts", Integer, nullable=False, default=0),
    Column("report_error", Text, nullable=True),
    Column("next_report_at", DateTime(timezone=True), nullable=True),
    # After Valid (migration 0005). ``validated_at``: MyInvois's dateTimeValidated, else our poll
    # time; ``watch_until``: the end of the cancellation window plus a margin, NULL when not
    # watched. ``status_reason``/``event_at``: a rejection request's or cancellation's reason
    # and time, as Get Submission gave them.
    Column("validated_at", DateTime(timezone=True), nullable=True),
    Column("watch_until", DateTime(timezone=True), nullable=True),
    Column("status_reason", Text, nullable=True),
    Column("event_at", DateTime(timezone=True), nullable=True),
    # Our own cancel: its reason (at most 300 characters at MyInvois), when it was asked, the
    # last refusal (JSON, with its advice) and how often it was tried.
    Column("cancel_reason", String(300), nullable=True),
    Column("cancel_requested_at", DateTime(timezone=True), nullable=True),
    Column("cancel_error", Text, nullable=True),
    Column("cancel_attempts", Integer, nullable=False, default=0),
    UniqueConstraint("source", "source_key", "version", name="uq_documents_source_key_version"),
    # Every query run per cycle or per document reads through one of these (a test checks the
    # plans: tests/core/test_query_plans.py); none of them scans the table, which only grows.
    # The pending claim: ``id`` last, so PostgreSQL reads the oldest first without a sort.
    Index("ix_documents_state_profile", "state", "profile", "id"),
    Index("ix_documents_submission_id", "submission_id"),
    Index("ix_documents_uuid", "uuid"),
    # ``reported_at`` first: outcomes not yet written back are a short range at the front
    # (NULL), with or without a source.
    Index("ix_documents_unreported", "reported_at", "source", "state"),
    Index("ix_documents_profile_number", "profile", "number"),
    # The oldest open document (the monitoring gauge): one seek per open state.
    Index("ix_documents_state_fetched_at", "state", "fetched_at"),
    # Pruning of bodies: final documents in the order they became final.
    Index("ix_documents_final_at", "final_at", "id"),
)

#: What a document was built from and the exact bytes sent, written once beside its row and
#: dropped ``ledger.keep_bodies_days`` after it is final (see :mod:`.bodies`). Several KB each:
#: on the hot row they made every scan and every page of the documents table heavy, and they
#: are only read to build, to send, and to re-send the identical bytes.
document_bodies = Table(
    "document_bodies",
    metadata,
    Column("document_id", Integer, ForeignKey("documents.id"), primary_key=True, autoincrement=False),
    Column("invoice_json", LONG_TEXT, nullable=True),
    # The exact bytes sent (persisted before sending): a re-send after an in-doubt submit is
    # then byte-identical, which is what lets MyInvois's 422 and DS302 duplicate checks
    # recognise it.
    Column("document", LONG_TEXT, nullable=True),
)

#: One row per submit request. ``state`` tells what the connector knows about its outcome.
submissions = Table(
    "submissions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("profile", String(100), nullable=False),
    Column("state", String(20), nullable=False),
    Column("submission_uid", String(40), nullable=True),
    Column("payload_hash", String(64), nullable=False),
    Column("document_count", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("accepted_at", DateTime(timezone=True), nullable=True),
    Column("next_poll_at", DateTime(timezone=True), nullable=True),
    Column("last_polled_at", DateTime(timezone=True), nullable=True),
    Column("poll_count", Integer, nullable=False, default=0),
    Column("overall_status", String(30), nullable=True),
    Column("error", Text, nullable=True),
    Column("reconcile_attempts", Integer, nullable=False, default=0),
    # Which connector instance (see Ledger.sender) claimed it for its current send.
    Column("sender", String(100), nullable=True),
    # When the current holder claimed it (send, re-send, reconciliation): older than any call
    # can last means its connector stopped.
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    # The reconciliation search window starts here, however often it was re-sent.
    Column("first_sent_at", DateTime(timezone=True), nullable=True),
    Index("ix_submissions_state_profile", "state", "profile"),
    Index("ix_submissions_uid", "submission_uid"),
)

#: Monotonic counters shown by ``status`` (429s received, logins, plugin errors...).
counters = Table(
    "counters",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Integer, nullable=False),
)

#: Cycle-level problems (a plugin hook that raised, a refused login, a refused batch), newest
#: last, shown by ``status``. Messages are written by our code and never contain secrets.
incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("subject", String(255), nullable=True),
    Column("message", Text, nullable=False),
)

#: Row locks by name: a transaction that updates a row holds it until it commits (the same on
#: SQLite, PostgreSQL and MariaDB). See ``database.hold``.
locks = Table(
    "locks",
    metadata,
    Column("name", String(150), primary_key=True),
    Column("taken", Integer, nullable=False),
)

#: Where a periodic job over an ever-growing table stopped, so that its next run reads only what
#: came after (pruning of bodies: the last pruned document in ``(final_at, id)`` order).
bookmarks = Table(
    "bookmarks",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("last_id", Integer, nullable=False),
)
