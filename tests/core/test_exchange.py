"""The exchange's rules: Kalshi's fee schedule in cents, fills against the book, and one home for them.

The last test reads every production module (ast, nothing imported): a fee coefficient or a bound of the
1..99 ladder written outside core/exchange.py fails it, so the environment, the baselines, the forecast
trader, the policy, the live path and the checks cannot drift apart.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

from core import exchange
from tests.test_architecture import production_modules

EXCHANGE_MODULE = "core.exchange"
# A price bound (99: the ladder's top) or a fee coefficient (0.07 taker, 0.0175 maker, and the 9_999 that
# rounds an integer fee up) as a literal is the exchange's rule written a second time.
FORBIDDEN_LITERALS = {99, 0.07, 0.0175, 9_999}


@pytest.mark.parametrize(("contracts", "price", "taker", "maker"), [
    (1, 50, 2, 1),        # 0.07 x 0.25 = 1.75 c -> 2; maker 0.4375 c -> 1
    (10, 50, 18, 5),      # 17.5 c -> 18; 4.375 c -> 5
    (100, 50, 175, 44),   # exactly 175 c; 43.75 -> 44
    (10, 1, 1, 1),        # 0.0693 c -> 1: a fee is never zero on a fill
    (10, 99, 1, 1),
    (0, 50, 0, 0),        # no contracts, no fee
])
def test_fees_follow_kalshis_schedule_rounded_up_to_the_cent(contracts, price, taker, maker):
    assert exchange.taker_fee_cents(contracts, price) == taker
    assert exchange.maker_fee_cents(contracts, price) == maker


def test_every_form_of_the_fee_gives_the_same_cents():
    contracts, price = np.meshgrid(np.arange(0, 60), np.arange(1, 100), indexing="ij")
    contracts, price = contracts.ravel(), price.ravel()
    expected = [int(-(-7 * c * p * (100 - p) // 10_000)) for c, p in zip(contracts, price)]  # ceil, by hand
    assert exchange.taker_fee_cents(contracts, price).tolist() == expected
    assert exchange.taker_fee_cents(torch.from_numpy(contracts), torch.from_numpy(price)).tolist() == expected
    assert [exchange.taker_fee_cents_kernel(int(c), int(p)) for c, p in zip(contracts, price)] == expected
    assert [exchange.taker_fee_cents(int(c), int(p)) for c, p in zip(contracts, price)] == expected


def test_a_fill_takes_the_best_level_then_one_cent_worse_and_pays_each_parts_fee():
    paid, fee = exchange.taker_fill(10, 40, 4, exchange.one_cent_worse_to_buy(40))
    assert paid == 4 * 40 + 6 * 41
    assert fee == exchange.taker_fee_cents(4, 40) + exchange.taker_fee_cents(6, 41)
    assert exchange.taker_fill_kernel(10, 40, 4, 41) == (paid, fee)
    tensors = exchange.taker_fill(torch.tensor([10]), torch.tensor([40]), torch.tensor([4]), torch.tensor([41]),
                                  minimum=torch.minimum)
    assert [int(t) for t in tensors] == [paid, fee]
    assert exchange.one_cent_worse_to_buy(99) == 99 and exchange.one_cent_worse_to_sell(1) == 1
    assert exchange.one_cent_worse_to_buy(torch.tensor([98, 99])).tolist() == [99, 99]
    assert exchange.one_cent_worse_to_sell(np.array([1, 2])).tolist() == [1, 1]


def test_a_position_is_worth_its_sale_net_of_the_fee_and_nothing_without_a_bid():
    assert exchange.liquidation_value(10, 60) == 600 - exchange.taker_fee_cents(10, 60)
    assert exchange.liquidation_value(10, 0) == 0
    assert exchange.liquidation_value_kernel(10, 60) == exchange.liquidation_value(10, 60)
    assert exchange.liquidation_value(torch.tensor([10, 10]), torch.tensor([60, 0])).tolist() == \
        [exchange.liquidation_value(10, 60), 0]
    assert exchange.no_bid_of(exchange.NO_ASK) == exchange.NO_BID and exchange.no_bid_of(61) == 39


def test_the_round_trip_cost_is_the_spread_and_two_taker_fees():
    assert exchange.round_trip_cost_probability(0.5, 0.01) == pytest.approx(0.01 + 2 * 0.07 * 0.25)


def _literals(tree: ast.AST) -> list[ast.Constant]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and not isinstance(node.value, (str, bytes, bool)) and node.value in FORBIDDEN_LITERALS]


def test_no_fee_coefficient_or_price_bound_is_written_outside_the_exchange_module():
    offenders = [f"{module}:{node.lineno}: {node.value!r}" for module, path in production_modules().items()
                 if module != EXCHANGE_MODULE for node in _literals(ast.parse(path.read_text()))]
    assert offenders == [], "the exchange's rules written outside core/exchange.py:\n" + "\n".join(offenders)
