"""The first schema: portraits, jobs, orders, the mail outbox and workers.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full (no imports from impasto.service.core.models), so later model changes
never alter what this migration creates.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _status(name: str, *values: str) -> sa.Enum:
    """A status column: VARCHAR(16) with a CHECK constraint, as ``models._str_enum`` makes it."""
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table('emails',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('to', sa.String(length=320), nullable=False),
    sa.Column('template', sa.String(length=64), nullable=False),
    sa.Column('context', sa.JSON(), nullable=False),
    sa.Column('status', _status('email_status', 'pending', 'sent', 'failed'), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_emails')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_emails_dedupe_key'))
    )
    op.create_index('ix_emails_due', 'emails', ['status', 'next_attempt_at'], unique=False)
    op.create_table('portraits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('photo_key', sa.String(length=512), nullable=False),
    sa.Column('consent', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_portraits')),
    sa.UniqueConstraint('public_id', name=op.f('uq_portraits_public_id'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('portrait_id', sa.Integer(), nullable=False),
    sa.Column('parent_job_id', sa.Integer(), nullable=True),
    sa.Column('kind', _status('job_kind', 'preview', 'print'), nullable=False),
    sa.Column('style', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('status', _status('job_status', 'queued', 'running', 'done', 'failed', 'cancelled'),
              nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('iteration', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('result_key', sa.String(length=512), nullable=True),
    sa.Column('state_key', sa.String(length=512), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['parent_job_id'], ['jobs.id'],
                            name=op.f('fk_jobs_parent_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['portrait_id'], ['portraits.id'],
                            name=op.f('fk_jobs_portrait_id_portraits'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_claim', 'jobs', ['status', 'priority', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_jobs_portrait_id'), 'jobs', ['portrait_id'], unique=False)
    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=16), nullable=False),
    sa.Column('portrait_id', sa.Integer(), nullable=False),
    sa.Column('preview_job_id', sa.Integer(), nullable=True),
    sa.Column('print_job_id', sa.Integer(), nullable=True),
    sa.Column('print_size', sa.String(length=16), nullable=False),
    sa.Column('price_cents', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('shipping_name', sa.String(length=200), nullable=False),
    sa.Column('shipping_address', sa.Text(), nullable=False),
    sa.Column('status', _status('order_status', 'ordered', 'rendering', 'ready', 'printed', 'shipped',
                                'cancelled'), nullable=False),
    sa.Column('payment_method', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('printed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('shipped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['portrait_id'], ['portraits.id'],
                            name=op.f('fk_orders_portrait_id_portraits'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['preview_job_id'], ['jobs.id'],
                            name=op.f('fk_orders_preview_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['print_job_id'], ['jobs.id'],
                            name=op.f('fk_orders_print_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('number', name=op.f('uq_orders_number'))
    )
    op.create_index(op.f('ix_orders_portrait_id'), 'orders', ['portrait_id'], unique=False)
    op.create_index(op.f('ix_orders_print_job_id'), 'orders', ['print_job_id'], unique=False)
    op.create_table('workers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('device', sa.String(length=64), nullable=False),
    sa.Column('memory_bytes', sa.BigInteger(), nullable=True),
    sa.Column('queues', sa.JSON(), nullable=False),
    sa.Column('current_job_id', sa.Integer(), nullable=True),
    sa.Column('jobs_done', sa.Integer(), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['current_job_id'], ['jobs.id'],
                            name=op.f('fk_workers_current_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers')),
    sa.UniqueConstraint('name', name=op.f('uq_workers_name'))
    )


def downgrade() -> None:
    op.drop_table('workers')
    op.drop_index(op.f('ix_orders_print_job_id'), table_name='orders')
    op.drop_index(op.f('ix_orders_portrait_id'), table_name='orders')
    op.drop_table('orders')
    op.drop_index(op.f('ix_jobs_portrait_id'), table_name='jobs')
    op.drop_index('ix_jobs_claim', table_name='jobs')
    op.drop_table('jobs')
    op.drop_table('portraits')
    op.drop_index('ix_emails_due', table_name='emails')
    op.drop_table('emails')
