"""Alembic environment: migrations always run on a connection handed in by tradeledger."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - tradeledger always hands one in
    raise RuntimeError("run migrations through `tradeledger db upgrade`")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
