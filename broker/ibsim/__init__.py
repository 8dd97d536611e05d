"""A simulated Interactive Brokers gateway that speaks the TWS API wire protocol.

The unmodified ib_async client (and so `broker.ib.IBBroker`) connects to it over a real
socket, as to TWS or IB Gateway, while the account behind it is a `SimExchange`. Layers:

    wire.py       framing, field text, handshake          (no knowledge of message types)
    contracts.py  tradeledger Contract <-> wire contract  (conIds, one-digit-year local symbols)
    messages.py   one encoder per server -> client message, field for field as ib_async decodes
    history.py    historical bars from the exchange's price history
    session.py    one client connection: handshake and request handlers
    server.py     IBSimServer: listening socket, client ids, the publisher of live pushes
"""

from tradeledger.broker.ibsim.server import IBSimServer

__all__ = ["IBSimServer"]
