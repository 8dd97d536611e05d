"""The errors a user sees: a refusal or a mistake to fix, said in one line (non-zero exit).

`UserError` is the base of every error whose message is meant for the person at the command
line: the CLI prints it as one line and exits non-zero. Anything else that escapes a command
(a bare ValueError, a KeyError, ...) is a bug and is reported as an internal error.

This module imports nothing of tradeledger, so ledger/, broker/ and engine/ can all derive
their errors from it. (UserError derives from ValueError so that older callers that catch
ValueError around a refusal keep working.)
"""

from __future__ import annotations


class UserError(ValueError):
    """A request that cannot be carried out, or an input to fix; the message says what and why."""


class AdjustError(UserError):
    """A maintenance request that cannot be carried out; the message says why."""


class CorrectionUnsupported(UserError):
    """An execution correction that cannot be booked automatically; the message says why."""


class CorporateActionError(UserError):
    """A corporate action that cannot be stored or booked as given; the message says why and what to do."""


class UnknownName(UserError):
    """A strategy, instrument, contract (or other named thing) that is not known: one line naming
    it, the closest known spelling when there is one, and the known ones (or where to find them).

    `UnknownName("strategy", "trend_slwo", ["trend_fast", "trend_slow"])` says
    `unknown strategy 'trend_slwo' (did you mean 'trend_slow'?; known: trend_fast, trend_slow)`."""

    SHOWN = 25  # beyond this many known names, the message points to the command that lists them

    def __init__(self, kind: str, name: object, known=(), see: str | None = None):
        """`known`: the known names (None: too many to say, `see` says where they are listed)."""
        import difflib

        listed = known is not None
        known = sorted({str(k) for k in known or ()})
        self.kind, self.name, self.known = kind, name, known
        parts = []
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6) or \
            [k for k in known if k.lower() == str(name).lower()]
        if close:
            parts.append(f"did you mean {close[0]!r}?")
        if known and len(known) <= self.SHOWN:
            parts.append(f"known: {', '.join(known)}")
        elif listed and not known:
            parts.append(f"no {kind} is known yet")
        if see:
            parts.append(f"see `{see}`")
        super().__init__(f"unknown {kind} {name!r} ({'; '.join(parts)})")
