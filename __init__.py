"""tradeledger: a ledger-centric double-entry trading layer.

signals -> target positions -> orders -> fills -> positions -> P&L, every step a balanced
transaction in a real database, exported to beancount as the accounting oracle.
"""

__version__ = "0.1.0"
