"""Name the connector that is sending a submission.

Several connectors may share one ledger (PostgreSQL, several hosts). At start-up a connector
must treat its own interrupted sends as in doubt, but not another live connector's call in
progress; the sender column tells them apart.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("sender", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("sender")
