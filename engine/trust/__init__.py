"""Trust in the books: broker snapshots, reconciliation, adoption, typed exceptions and locks,
monitoring, and the maintenance adjustments a person makes."""

# Here rather than in adjust.py so that the CLI can offer the choice without importing the
# engine; adjust.py re-exports it.
CASH_KINDS = ("interest", "fee", "deposit", "withdrawal", "adjustment")
