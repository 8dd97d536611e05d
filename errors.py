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
