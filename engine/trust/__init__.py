"""Trust in the books: broker snapshots, reconciliation, adoption, typed exceptions and locks,
monitoring, and the maintenance adjustments a person makes."""
