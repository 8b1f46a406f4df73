"""Kalshi's exchange rules, in one place: the 1..99 cent ladder, fees, taker fills against the book,
liquidation value and the trading rules every strategy plays by.

The environment, the baselines and their compiled backtester, the forecast trader, the policy, the live
decisions and the ingest's row checks all take these from here; a test fails when a fee coefficient or a
price bound is written anywhere else.

Prices are integer cents. A contract pays `PAYOUT_CENTS` at settlement on its side, so a YES price p is a NO
price 100 - p: a book's YES ask is 100 minus its best NO bid. Kalshi charges a fee per order, rounded up to
the next cent: `ceil(rate x C x P x (1 - P))` dollars for C contracts at P dollars, with the taker rate 0.07
and, on the series that charge makers, the maker rate 0.0175; cancels are free. The fee is computed in
integers (the rate as a fraction), so every user gets the same cents, whether it holds Python ints, NumPy
arrays, torch tensors or runs inside a numba kernel.

Taker fills: an order meets the book as it is when the order arrives; up to the best level's displayed size
fills at the best price and the rest one cent worse (the feature store keeps only the best level's size),
each part paying its own fee. A position is worth what it would sell for now: contracts x best bid minus the
fee of selling them (nothing without a bid).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np

MIN_PRICE_CENTS = 1
MAX_PRICE_CENTS = 99
PAYOUT_CENTS = 100         # what a contract pays on its side's settlement; a YES and a NO price sum to it
NO_BID = 0                 # "no bid on this side" as a best bid price
NO_ASK = PAYOUT_CENTS      # "no ask on this side" as a best ask price

TAKER_FEE_RATE = Fraction(7, 100)
MAKER_FEE_RATE = Fraction(175, 10_000)
_TAKER_NUMERATOR, _TAKER_DENOMINATOR = TAKER_FEE_RATE.numerator, TAKER_FEE_RATE.denominator * PAYOUT_CENTS
_MAKER_NUMERATOR, _MAKER_DENOMINATOR = MAKER_FEE_RATE.numerator, MAKER_FEE_RATE.denominator * PAYOUT_CENTS
TAKER_FEE_PER_PROBABILITY = float(TAKER_FEE_RATE)  # the fee of one contract at probability p: rate x p (1 - p)


@dataclass(frozen=True)
class TradingRules:
    """What every strategy plays by: a fixed lot per order, a position cap per side and market, and the time
    from the event an order reacts to until it meets the book."""

    contracts: int = 10       # lot size of every order
    position_limit: int = 50  # contracts per side per market
    latency_ms: int = 100     # a sweep arrives as deltas milliseconds apart: no order fills between them


# -- the ladder ---------------------------------------------------------------------------------

def is_valid_price(price) -> bool:
    """A tradable price: an integer number of cents in 1..99."""
    return MIN_PRICE_CENTS <= price <= MAX_PRICE_CENTS


def no_price(yes_price):
    """The NO price of a YES price (and back): the two sides of one contract sum to the payout."""
    return PAYOUT_CENTS - yes_price


def one_cent_worse_to_buy(price):
    """Where the rest of a buy beyond the best level fills: a cent higher, never above the ladder (ints,
    arrays or tensors)."""
    worse = price + 1
    return worse.clip(max=MAX_PRICE_CENTS) if hasattr(worse, "clip") else min(worse, MAX_PRICE_CENTS)


def one_cent_worse_to_sell(price):
    """Where the rest of a sell beyond the best level fills: a cent lower, never below the ladder."""
    worse = price - 1
    return worse.clip(min=MIN_PRICE_CENTS) if hasattr(worse, "clip") else max(worse, MIN_PRICE_CENTS)


# -- fees ---------------------------------------------------------------------------------------

def taker_fee_cents(contracts, price_cents):
    """Kalshi's taker fee in cents for `contracts` at `price_cents`, rounded up to the cent; 0 for no
    contracts. Works elementwise on ints, NumPy arrays and integer torch tensors."""
    exact = _TAKER_NUMERATOR * contracts * price_cents * (PAYOUT_CENTS - price_cents)
    return (exact + _TAKER_DENOMINATOR - 1) // _TAKER_DENOMINATOR * (contracts > 0)


def maker_fee_cents(contracts, price_cents):
    """Kalshi's maker fee in cents (series that charge makers), rounded up to the cent; 0 for no contracts."""
    exact = _MAKER_NUMERATOR * contracts * price_cents * (PAYOUT_CENTS - price_cents)
    return (exact + _MAKER_DENOMINATOR - 1) // _MAKER_DENOMINATOR * (contracts > 0)


def taker_fee_table(max_contracts: int):
    """int64 [max_contracts + 1, PAYOUT_CENTS + 1]: `taker_fee_cents(c, p)` at [c, p], for callers that look fees
    up instead of computing them (the batched simulator: one gather per fill instead of six tensor ops)."""
    contracts, price = np.meshgrid(np.arange(max_contracts + 1), np.arange(PAYOUT_CENTS + 1), indexing="ij")
    return taker_fee_cents(contracts.astype(np.int64), price.astype(np.int64))


def taker_fee_probability(probability):
    """The taker fee of one contract as a probability (a share of the payout), unrounded: what a forecast
    must beat, per contract and per side of a round trip. Works on floats, arrays and tensors."""
    return TAKER_FEE_PER_PROBABILITY * probability * (1 - probability)


def round_trip_cost_probability(mid_probability, spread_probability):
    """What a position must gain, as a probability, to pay for itself: the spread plus a taker fee on entry
    and on exit."""
    return spread_probability + 2 * taker_fee_probability(mid_probability)


# -- taker fills and liquidation ------------------------------------------------------------------

def taker_fill(contracts, best_price, best_size, worse_price, minimum=min, fee=taker_fee_cents):
    """(cents paid or received for `contracts`: the best level's size at `best_price` and the rest at
    `worse_price`, the taker fee of both parts). `minimum` is the elementwise minimum of the caller's numbers
    (`torch.minimum` for tensors, `numpy.minimum` for arrays; the builtin for scalars); `fee` may be a lookup
    of `taker_fee_table`."""
    at_best = minimum(contracts, best_size)
    rest = contracts - at_best
    return at_best * best_price + rest * worse_price, fee(at_best, best_price) + fee(rest, worse_price)


def liquidation_value(contracts, bid, fee=taker_fee_cents):
    """What `contracts` sell for at `bid` now, net of the taker fee of selling them (0 without a bid)."""
    return (contracts * bid - fee(contracts, bid)) * (bid > NO_BID)


def cost_after_sale(cost_cents, sold, held):
    """The cost basis of a position after `sold` of its `held` contracts are sold: what it paid, less the
    average cost of what was sold (in whole cents, rounded in the seller's favour). Works on tensors too."""
    return cost_cents - cost_cents * sold // held


def no_bid_of(yes_ask):
    """The best NO bid of a book whose best YES ask is `yes_ask` (NO_BID when the YES side has no ask)."""
    return (PAYOUT_CENTS - yes_ask) * (yes_ask < NO_ASK)


# -- the same rules inside numba kernels (the compiled backtester, scalars only) -------------------

taker_fee_cents_kernel = numba.njit(cache=True)(taker_fee_cents)


@numba.njit(cache=True)
def taker_fill_kernel(contracts, best_price, best_size, worse_price):
    """`taker_fill` on scalars, compiled."""
    at_best = min(contracts, best_size)
    rest = contracts - at_best
    return (at_best * best_price + rest * worse_price,
            taker_fee_cents_kernel(at_best, best_price) + taker_fee_cents_kernel(rest, worse_price))


@numba.njit(cache=True)
def liquidation_value_kernel(contracts, bid):
    """`liquidation_value` on scalars, compiled."""
    return contracts * bid - taker_fee_cents_kernel(contracts, bid) if bid > NO_BID else 0


@numba.njit(cache=True)
def one_cent_worse_to_buy_kernel(price):
    return min(price + 1, MAX_PRICE_CENTS)


@numba.njit(cache=True)
def one_cent_worse_to_sell_kernel(price):
    return max(price - 1, MIN_PRICE_CENTS)
