"""Exact numbers in the database: Decimals stored as scaled 64-bit integers.

SQLite has no decimal type and SQLAlchemy's `Numeric` on SQLite rounds through float, so every
quantity, price and amount is stored as an integer count of nano-units (10**-9). Sums in SQL are
then exact integer sums on both SQLite and PostgreSQL (`sums.py` keeps them from overflowing
64 bits on SQLite).

The price of exactness is a range: nine decimal places and an absolute value below about 9.2e9.
A number outside it is refused with a clear error, never rounded.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from tradeledger.errors import UserError
from tradeledger.ledger.times import iso_time

SCALE = 9
_FACTOR = 10**SCALE
_LIMIT = 2**63 - 1
MAX_ABS = Decimal(_LIMIT) / _FACTOR


class NumberError(UserError):
    """A number that the ledger cannot store exactly."""


def to_decimal(value: object, what: str = "number") -> Decimal:
    """Parse a user- or broker-supplied number into a finite Decimal; floats are refused."""
    if isinstance(value, float):
        raise NumberError(f"{what}: float {value!r} refused; pass a Decimal or a string")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise NumberError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite():
        raise NumberError(f"{what}: {value!r} is not a finite number")
    return number


def exact_decimal(value: object, what: str = "number") -> Decimal:
    """A finite Decimal from a Decimal or an int, for values computed in code (not typed by a
    user): strings and floats are refused, because money must never have been a float."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise ValueError(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def to_scaled(number: Decimal, what: str = "number") -> int:
    """Decimal -> nano-units, exactly, or NumberError."""
    if not isinstance(number, Decimal) or not number.is_finite():
        raise NumberError(f"{what}: {number!r} is not a finite Decimal")
    scaled = number.scaleb(SCALE)
    if scaled != scaled.to_integral_value():
        raise NumberError(f"{what}: {number} has more than {SCALE} decimal places")
    result = int(scaled)
    if abs(result) > _LIMIT:
        raise NumberError(f"{what}: {number} is beyond the storable range (+/-{MAX_ABS:.0f})")
    return result


def from_scaled(value: int | None) -> Decimal | None:
    """Nano-units -> Decimal, normalised without an exponent form (0.1, not 1E-1)."""
    if value is None:
        return None
    whole, rest = divmod(value, _FACTOR)
    if rest == 0:  # the common case (whole contracts, round prices) without Decimal arithmetic
        return Decimal(whole)
    return Decimal(value).scaleb(-SCALE).normalize()  # a fraction: the exponent stays negative


def plain(number: Decimal) -> Decimal:
    """Strip trailing zeros but never print in exponent form (100, not 1E+2)."""
    if number == 0:
        return Decimal(0)
    normal = number.normalize()
    if normal.as_tuple().exponent > 0:
        return normal.quantize(Decimal(1))
    return normal


def cents_adding_up(exact: dict) -> dict:
    """Each figure to the cent such that they add up to their sum to the cent (half even), each
    within a cent of its exact value: every figure rounded alone (half even), then the cents the
    roundings lost or made up given back where the rounding moved a figure most (ties in key
    order). Figures already in cents stay as they are. For P&L cut by strategy or by instrument,
    whose rows must add up to the account's total: rounding each row alone can miss it by a cent
    per row."""
    cent = Decimal("0.01")
    rounded = {k: v.quantize(cent) + 0 for k, v in exact.items()}  # + 0: never -0.00
    short = int((sum(exact.values(), Decimal(0)).quantize(cent) - sum(rounded.values(), Decimal(0))) / cent)
    if short:
        step = cent if short > 0 else -cent
        # the figures rounded furthest against the direction of the correction first
        order = sorted(exact, key=lambda k: (-(exact[k] - rounded[k]) * (1 if short > 0 else -1), str(k)))
        for k in order[:abs(short)]:
            rounded[k] += step
    return rounded


# Currencies whose minor unit is not the cent (ISO 4217); every other currency has two decimals.
MINOR_UNITS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "HUF": 2, "VND": 0, "TWD": 2, "BHD": 3, "KWD": 3,
               "JOD": 3, "OMR": 3, "TND": 3}


def money_text(number: Decimal, currency: str | None = None) -> str:
    """An amount as a person reads it: at its currency's minor unit (half to even: 21975.045 ->
    21975.04), a non-zero amount smaller than the unit as it is (never shown as 0.00)."""
    unit = Decimal(1).scaleb(-MINOR_UNITS.get(str(currency or "").upper(), 2))
    number = Decimal(number)
    return f"{number.quantize(unit):f}" if number == number.quantize(unit) or abs(number) >= unit \
        else f"{number.normalize():f}"


def money_exact(number: Decimal, currency: str | None = None) -> str:
    """An amount as booked, for a message that reports it: at least its currency's minor unit
    (2 -> 2.00, 200 JPY -> 200), never rounded (3.0125 stays 3.0125), so that a change the
    message reports, however small, shows in its figures."""
    unit = Decimal(1).scaleb(-MINOR_UNITS.get(str(currency or "").upper(), 2))
    number = plain(Decimal(number))
    at_unit = number.quantize(unit)
    return f"{at_unit:f}" if at_unit == number else f"{number:f}"


def jsonable(value):
    """Decimals as exact text, dates as ISO text, times (datetimes and the ledger's stored time text)
    as ISO 8601 with their zone (`times.iso_time`), tuples as lists, all the way down: a value
    `json.dumps` writes without losing a digit."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (str, dt.datetime)):
        return iso_time(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
