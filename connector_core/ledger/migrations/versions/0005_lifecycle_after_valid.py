"""What happens to a document after Valid: the watch of its cancellation window and our cancel.

``documents`` gains:

* ``validated_at``: MyInvois's dateTimeValidated (else the time we saw it Valid);
* ``watch_until``: the end of the cancellation window plus ``cycles.watch_margin_seconds``;
  NULL means the document is not watched (every row before this migration);
* ``status_reason``, ``event_at``: the reason and time of a buyer's rejection request or of a
  cancellation, as Get Submission reports them;
* ``cancel_reason``, ``cancel_requested_at``, ``cancel_error``, ``cancel_attempts``: our own
  cancel request, its last refusal (JSON with its advice) and how often it was tried.

New states need no schema change (``state`` is a string): ``rejection_requested`` and
``cancelling`` for documents, ``watching`` for submissions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("validated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("watch_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("event_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.String(300), nullable=True))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_error", sa.Text(), nullable=True))
        # A server default fills the rows already there (NOT NULL on a table with rows).
        batch.add_column(sa.Column("cancel_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        for column in (
            "cancel_attempts",
            "cancel_error",
            "cancel_requested_at",
            "cancel_reason",
            "event_at",
            "status_reason",
            "watch_until",
            "validated_at",
        ):
            batch.drop_column(column)
