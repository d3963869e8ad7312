"""predictions: the answer given (in a hierarchical taxonomy possibly a parent of the top label), its level and path

Rows stored before it answered with their top label unless they abstained, so ``answer`` is filled from
``label`` for them; their level and path are unknown (null).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 01:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answer', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('level', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('path', sa.JSON(), nullable=True))
    predictions = sa.table(
        'predictions', sa.column('answer', sa.String), sa.column('label', sa.String), sa.column('abstained', sa.Boolean)
    )
    op.execute(predictions.update().where(predictions.c.abstained.is_(False)).values(answer=predictions.c.label))


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('path')
        batch_op.drop_column('level')
        batch_op.drop_column('answer')
