"""Initial ledger: documents, submissions, counters, incidents.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
# Documents reach 300 KB: MariaDB's TEXT stops at 64 KB.
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("profile", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("submission_uid", sa.String(40), nullable=True),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("document_count", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("accepted_at", TZ, nullable=True),
        sa.Column("next_poll_at", TZ, nullable=True),
        sa.Column("last_polled_at", TZ, nullable=True),
        sa.Column("poll_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("overall_status", sa.String(30), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("reconcile_attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_submissions_state_profile", "submissions", ["state", "profile"])
    op.create_index("ix_submissions_uid", "submissions", ["submission_uid"])
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("source_key", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(100), nullable=False),
        sa.Column("number", sa.String(100), nullable=False),
        sa.Column("document_type", sa.String(2), nullable=True),
        sa.Column("issuer_tin", sa.String(20), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("invoice_json", LONG_TEXT, nullable=True),
        sa.Column("document", LONG_TEXT, nullable=True),
        sa.Column("document_hash", sa.String(64), nullable=True),
        sa.Column("issued_at", TZ, nullable=True),
        sa.Column(
            "submission_id",
            sa.Integer,
            sa.ForeignKey("submissions.id", name="fk_documents_submission_id"),
            nullable=True,
        ),
        sa.Column("uuid", sa.String(40), nullable=True),
        sa.Column("long_id", sa.String(120), nullable=True),
        sa.Column("validation_link", sa.String(400), nullable=True),
        sa.Column("errors", sa.Text, nullable=True),
        sa.Column("error_details", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fetched_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("submitted_at", TZ, nullable=True),
        sa.Column("final_at", TZ, nullable=True),
        sa.Column("reported_at", TZ, nullable=True),
        sa.UniqueConstraint("source", "source_key", "version", name="uq_documents_source_key_version"),
    )
    op.create_index("ix_documents_state_profile", "documents", ["state", "profile"])
    op.create_index("ix_documents_submission_id", "documents", ["submission_id"])
    op.create_index("ix_documents_uuid", "documents", ["uuid"])
    op.create_index("ix_documents_unreported", "documents", ["source", "reported_at", "state"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("incidents")
    op.drop_table("counters")
    op.drop_table("documents")
    op.drop_table("submissions")
