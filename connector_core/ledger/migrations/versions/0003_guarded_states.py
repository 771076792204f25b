"""Columns the guarded state machine needs.

* ``submissions.claimed_at``: when the current holder claimed a submission (to send, re-send or
  reconcile it); a claim older than any call can last was left by a connector that stopped.
* ``submissions.first_sent_at``: the reconciliation search window starts from the first send,
  so it does not slide with every re-send.
* ``documents.refused_as_batch``: a rejection of the whole batch (400/403 on the envelope) is not
  about the invoice's content; setting the ERP row back to pending sends it again.
* ``documents.report_attempts`` / ``report_error`` / ``next_report_at``: an outcome the ERP
  refuses to take is retried with back-off on its own, without blocking the others.
* an index on ``(profile, number)``: the same invoice number on two ERP rows is found at once;
* ``locks``: one row per lock name; a writer that updates it holds it until commit. Recording
  fetched invoices holds the profile's row, so two connectors never both see an invoice
  number as free.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("refused_as_batch", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("report_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("report_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_report_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_documents_profile_number", "documents", ["profile", "number"])
    op.create_table(
        "locks",
        sa.Column("name", sa.String(150), primary_key=True),
        sa.Column("taken", sa.Integer(), nullable=False),
    )
    op.execute("UPDATE submissions SET first_sent_at = sent_at, claimed_at = sent_at")


def downgrade() -> None:
    op.drop_table("locks")
    op.drop_index("ix_documents_profile_number", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("next_report_at")
        batch.drop_column("report_error")
        batch.drop_column("report_attempts")
        batch.drop_column("refused_as_batch")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("first_sent_at")
        batch.drop_column("claimed_at")
