"""What a broker raises: a refusal or failure fit to show a user, and a lost connection. Apart from
the broker's records (broker/base.py re-exports them) so that the simulated exchange's file
(broker/simstore.py) and the CLI's error policy need nothing else of the broker.
"""

from __future__ import annotations


class BrokerError(Exception):
    """A broker refused or failed a request; the message is fit to show a user."""


class BrokerDisconnected(BrokerError):
    """The connection to the broker is gone; the caller may reconnect and retry idempotently."""
