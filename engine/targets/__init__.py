"""From prices to target positions: price imports, signal rules and forecasts, volatility sizing,
and the immutable, reviewed target runs."""
