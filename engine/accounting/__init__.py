"""The ledger entries the engine books: every entry is built here (pure builders) from the holdings
read inside the booking transaction."""
