"""Volatility-targeted position sizing with a position buffer (Carver, "Systematic Trading").

The model: a strategy is given a share of capital and an annual risk target (the expected
annualised standard deviation of its returns, e.g. 20%). Each instrument gets a slice of that
risk, through its instrument weight times the instrument diversification multiplier (IDM). The
position is the number of contracts whose daily P&L volatility, in base currency, matches the
daily cash volatility target, scaled by how strongly the forecast asks for it (forecast / 10):

    block_value            = |price| * multiplier * 0.01     value of a 1% price move, one contract
    price_vol_pct          = daily_price_vol / |price| * 100 daily price volatility in percent
    instrument_currency_vol= block_value * price_vol_pct     = daily_price_vol * multiplier
    value_vol              = instrument_currency_vol * fx_rate          (base currency)
    daily_cash_vol_target  = capital * capital_share * annual_risk_target / 16
    vol_scalar             = daily_cash_vol_target / value_vol
    subsystem_position     = vol_scalar * forecast / 10
    unrounded_target       = subsystem_position * instrument_weight * idm

(16 ~ sqrt(256 business days) turns annual into daily volatility.) `instrument_currency_vol` is
computed as ``daily_price_vol * multiplier``, which the first three lines reduce to exactly;
this keeps it exact in Decimal and defined for futures whose price is zero or negative.

The buffer avoids trading on small changes of the optimum (which would pay costs for noise):

    average_position = vol_scalar * instrument_weight * idm       (the position at forecast 10)
    buffer_width     = buffer_fraction * average_position
    buffer           = [unrounded_target - buffer_width, unrounded_target + buffer_width]

If the current position lies inside the buffer, the target is the current position: no trade.
Otherwise the position trades only as far as the nearer edge of the buffer, rounded to whole
contracts toward the unrounded optimum (up from the lower edge, down from the upper edge), so the
rounded target still lies inside the buffer. When the buffer is narrower than one contract and
holds no whole number at all (always the case with buffer_fraction 0 and a fractional optimum),
rounding an edge toward the optimum would overshoot past the other edge; the target is then the
optimum rounded to the nearest whole contract (half to even), the best whole position there is.

Everything money or quantity is ``Decimal``; the float forecast enters as ``Decimal(str(f))`` so
that, e.g., 12.3 is 12.3 and not 12.300000000000000710542735760100185871124267578125. The
result carries every intermediate figure so that a person reviewing a target run can redo it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from tradeledger.errors import UserError
from tradeledger.engine.targets.signals import validate_forecast
from tradeledger.ledger.numbers import exact_decimal

BUSINESS_DAYS_SQRT = Decimal(16)  # sqrt(256): annual -> daily volatility
FORECAST_AVERAGE = Decimal(10)
ONE_PERCENT = Decimal("0.01")
HUNDRED = Decimal(100)
ZERO = Decimal(0)
ONE = Decimal(1)


@dataclass(frozen=True, kw_only=True)
class SizingInput:
    """Everything one sizing decision depends on, for one (strategy, instrument).

    Keyword-only on purpose: thirteen Decimals in a row are too easy to pass in the wrong order.
    `allow_nonpositive_price` is for futures, whose prices can be zero or negative (spreads,
    WTI in April 2020); shares and ETFs cannot have such a price, so there it is an error.
    """

    capital: Decimal  # base currency
    capital_share: Decimal  # fraction of capital given to this strategy, 0..1
    annual_risk_target: Decimal  # e.g. Decimal("0.20")
    instrument_weight: Decimal  # 0..1
    idm: Decimal  # instrument diversification multiplier
    forecast: float  # combined, capped forecast in [-20, 20]
    price: Decimal  # instrument currency
    multiplier: Decimal  # contract multiplier (1 for shares)
    fx_rate: Decimal  # instrument currency -> base currency
    daily_price_vol: Decimal  # std dev of daily price changes, price units
    buffer_fraction: Decimal = Decimal("0.10")
    current: Decimal  # current position, whole contracts, signed
    allow_nonpositive_price: bool = False


@dataclass(frozen=True)
class SizingResult:
    """The target and every figure that led to it (see the module docstring for formulas)."""

    inputs: SizingInput
    forecast: Decimal  # the forecast as it entered the Decimal arithmetic
    contract_notional: Decimal  # |price| * multiplier * fx, base currency, one contract
    block_value: Decimal  # instrument currency
    price_vol_pct: Decimal | None  # None when the price is zero (percent is undefined)
    instrument_currency_vol: Decimal
    value_vol: Decimal  # base currency
    daily_cash_vol_target: Decimal  # base currency
    vol_scalar: Decimal
    subsystem_position: Decimal
    average_position: Decimal  # position at forecast 10
    unrounded_target: Decimal
    buffer_width: Decimal
    buffer_lower: Decimal
    buffer_upper: Decimal
    target: Decimal  # whole contracts
    change: Decimal  # target - current
    notional_exposure: Decimal  # target * contract_notional, signed, base currency

    @property
    def within_buffer(self) -> bool:
        """True when the current position was inside the buffer, so nothing trades."""
        return self.buffer_lower <= self.inputs.current <= self.buffer_upper


def size_position(
    inp: SizingInput, *, allow_nonpositive_price: bool | None = None
) -> SizingResult:
    """Size one position. Pure; raises ValueError naming the bad input.

    `allow_nonpositive_price`, when given, overrides the field of the same name on `inp`.
    """
    allow = allow_nonpositive_price
    if allow is None:
        allow = inp.allow_nonpositive_price
    inp = _validated(inp, allow)
    forecast = Decimal(str(validate_forecast(inp.forecast)))

    abs_price = abs(inp.price)
    block_value = abs_price * inp.multiplier * ONE_PERCENT
    price_vol_pct = inp.daily_price_vol / abs_price * HUNDRED if abs_price else None
    icv = inp.daily_price_vol * inp.multiplier  # == block_value * price_vol_pct, exactly
    value_vol = icv * inp.fx_rate
    daily_target = inp.capital * inp.capital_share * inp.annual_risk_target / BUSINESS_DAYS_SQRT
    vol_scalar = daily_target / value_vol
    subsystem = vol_scalar * forecast / FORECAST_AVERAGE
    weight = inp.instrument_weight * inp.idm
    unrounded = subsystem * weight
    average = vol_scalar * weight
    width = inp.buffer_fraction * average
    lower, upper = unrounded - width, unrounded + width

    target = _buffered_target(inp.current, unrounded, lower, upper)
    contract_notional = abs_price * inp.multiplier * inp.fx_rate
    return SizingResult(
        inputs=inp,
        forecast=forecast,
        contract_notional=contract_notional,
        block_value=block_value,
        price_vol_pct=price_vol_pct,
        instrument_currency_vol=icv,
        value_vol=value_vol,
        daily_cash_vol_target=daily_target,
        vol_scalar=vol_scalar,
        subsystem_position=subsystem,
        average_position=average,
        unrounded_target=unrounded,
        buffer_width=width,
        buffer_lower=lower,
        buffer_upper=upper,
        target=target,
        change=target - inp.current,
        notional_exposure=target * contract_notional,
    )


def _buffered_target(
    current: Decimal, unrounded: Decimal, lower: Decimal, upper: Decimal
) -> Decimal:
    if lower <= current <= upper:
        return current
    if current < lower:
        edge = lower.to_integral_value(rounding=ROUND_CEILING)  # up, toward the optimum
        inside = edge <= upper
    else:
        edge = upper.to_integral_value(rounding=ROUND_FLOOR)  # down, toward the optimum
        inside = edge >= lower
    if inside:
        return _whole(edge)
    # No whole number inside the buffer: the edge rounded toward the optimum would overshoot it
    # and leave the buffer on the other side. Take the nearest whole position instead.
    return _whole(unrounded.to_integral_value(rounding=ROUND_HALF_EVEN))


def _whole(x: Decimal) -> Decimal:
    # Normalise -0 and exponents so that targets print and compare as plain integers.
    return Decimal(int(x))


_DECIMAL_FIELDS = (
    "capital", "capital_share", "annual_risk_target", "instrument_weight", "idm", "price",
    "multiplier", "fx_rate", "daily_price_vol", "buffer_fraction", "current",
)


def _validated(inp: SizingInput, allow_nonpositive_price: bool) -> SizingInput:
    """Check every input; return the record with ints turned into Decimals."""
    inp = replace(inp, **{name: exact_decimal(getattr(inp, name), name) for name in _DECIMAL_FIELDS})
    _require(inp.capital >= 0, f"capital must be >= 0, got {inp.capital}")
    _require(
        ZERO <= inp.capital_share <= ONE,
        f"capital_share must be in [0, 1], got {inp.capital_share}",
    )
    _require(
        inp.annual_risk_target > 0, f"annual_risk_target must be > 0, got {inp.annual_risk_target}"
    )
    _require(
        inp.instrument_weight >= 0, f"instrument_weight must be >= 0, got {inp.instrument_weight}"
    )
    _require(inp.idm > 0, f"idm must be > 0, got {inp.idm}")
    _require(inp.multiplier > 0, f"multiplier must be > 0, got {inp.multiplier}")
    _require(inp.fx_rate > 0, f"fx_rate must be > 0, got {inp.fx_rate}")
    _require(
        inp.daily_price_vol > 0,
        f"daily_price_vol must be > 0 (no volatility, no sizing), got {inp.daily_price_vol}",
    )
    _require(inp.buffer_fraction >= 0, f"buffer_fraction must be >= 0, got {inp.buffer_fraction}")
    _require(
        inp.current == inp.current.to_integral_value(),
        f"current position must be whole contracts, got {inp.current}",
    )
    if not allow_nonpositive_price:
        _require(
            inp.price > 0,
            f"price must be > 0, got {inp.price} (pass allow_nonpositive_price=True for futures)",
        )
    return inp


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)
