"""The four roles: select markets come out of the training split, stratified, and never reach a fit."""

from __future__ import annotations

from collections import Counter

from tests.training.synthetic import synthetic_data, synthetic_market
from training.data.roles import SELECT_SHARE, selection_tickers


def _universe(n_train: int):
    classes = ("stable", "moderate", "volatile")
    markets = [synthetic_market(f"KX{i:03d}", 60, klass=classes[i % 3]) for i in range(n_train)]
    markets += [synthetic_market("KXVAL", 60, split="validation"), synthetic_market("KXTEST", 60, split="test")]
    return synthetic_data(*markets)


def test_select_markets_are_a_stratified_share_of_the_training_markets():
    data = _universe(250)
    fit, select = data.of_role("fit"), data.of_role("select")
    assert len(select) == round(250 * SELECT_SHARE) == 50 and len(fit) == 200
    assert not {m.ticker for m in fit} & {m.ticker for m in select}
    assert {m.split for m in fit + select} == {"train"}
    assert [m.ticker for m in data.of_role("validation")] == ["KXVAL"] and len(data.of_role("train")) == 250
    per_class = Counter(m.volatility_class for m in select)
    assert all(abs(count - 50 / 3) <= 1 for count in per_class.values()), per_class


def test_roles_are_a_fixed_function_of_the_training_markets():
    first, again = _universe(40), _universe(40)
    assert first.selection() == again.selection() and len(first.selection()) == 8
    train = sorted(first.of_split("train"), key=lambda m: m.ticker)
    assert selection_tickers(train, first.feature_names, seed=1) != first.selection()


def test_tiny_universes_keep_a_market_to_fit():
    assert len(_universe(1).of_role("fit")) == 1 and not _universe(1).of_role("select")
    two = _universe(2)
    assert len(two.of_role("fit")) == 1 and len(two.of_role("select")) == 1
