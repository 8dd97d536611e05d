"""One name for each thing in what a person reads: the user's strategy names, never the beancount
account components they map to (`trend_slow`, not `Trend-slow`; `unattributed` for positions no
strategy owns). The beancount names appear only in the export and in account names."""

from __future__ import annotations

UNATTRIBUTED = "unattributed"


class Names:
    def __init__(self, config):
        self._by_component = {s.account_name: s.name for s in config.strategies.values()}

    def strategy(self, component: str | None) -> str:
        """The user's name of a holder component ("" / None / "Unattributed" -> unattributed)."""
        if not component or component == "Unattributed":
            return UNATTRIBUTED
        return self._by_component.get(component, component)

    def keys(self, mapping: dict) -> dict:
        """A dict keyed by holder components, keyed by the user's names instead."""
        return {self.strategy(k): v for k, v in mapping.items()}

    def listed(self, text: str) -> str:
        """"Etf-trend, Tactical" -> "etf_trend, tactical"."""
        return ", ".join(self.strategy(part.strip()) for part in text.split(",")) if text else text
