"""predictions: prediction set, set size, margin and head/kNN disagreement (the review queue orders by them)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 15:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prediction_set', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('set_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('margin', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('disagreement', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('disagreement')
        batch_op.drop_column('margin')
        batch_op.drop_column('set_size')
        batch_op.drop_column('prediction_set')
