"""The frozen, stratified, deterministic split (the volatility classes are a dbt unit test of market_categories)."""

from __future__ import annotations

from datetime import date

import polars as pl

from features.splits import REGISTRY_SCHEMA, assign_splits


def _classes(n: int, start: int = 0) -> pl.DataFrame:
    kinds = ["stable"] * 5 + ["moderate"] * 4 + ["volatile"]
    return pl.DataFrame({"market_ticker": [f"KX-{i:05d}" for i in range(start, start + n)],
                         "volatility_class": [kinds[i % 10] for i in range(start, start + n)]})


def test_300_markets_split_250_25_25_stratified():
    registry = assign_splits(pl.DataFrame(schema=REGISTRY_SCHEMA), _classes(300), date(2026, 11, 1))
    counts = dict(registry.group_by("split").len().iter_rows())
    assert counts == {"train": 250, "validation": 25, "test": 25}
    per_class = registry.group_by("volatility_class", "split").len()
    for klass, size in (("stable", 150), ("moderate", 120), ("volatile", 30)):
        held_out = per_class.filter((pl.col("volatility_class") == klass) & (pl.col("split") != "train"))["len"].sum()
        assert abs(held_out - size * 50 / 300) <= 2, klass
    assert registry["market_ticker"].is_unique().all()


def test_same_input_same_split_and_seed_matters():
    first = assign_splits(pl.DataFrame(schema=REGISTRY_SCHEMA), _classes(300), date(2026, 11, 1))
    again = assign_splits(pl.DataFrame(schema=REGISTRY_SCHEMA), _classes(300).reverse(), date(2026, 11, 1))
    other = assign_splits(pl.DataFrame(schema=REGISTRY_SCHEMA), _classes(300), date(2026, 11, 1), seed=1)
    assert first.equals(again)
    assert not first["split"].equals(other["split"])


def test_adding_markets_never_moves_an_existing_one():
    registry = assign_splits(pl.DataFrame(schema=REGISTRY_SCHEMA), _classes(300), date(2026, 11, 1))
    # The same markets come back with different classes (more data), plus 60 new ones.
    reclassified = _classes(300).with_columns(pl.lit("volatile").alias("volatility_class"))
    grown = assign_splits(registry, pl.concat([reclassified, _classes(60, start=300)]), date(2026, 11, 2))
    kept = grown.join(registry, on="market_ticker", suffix="_before")
    assert kept.height == 300
    assert (kept["split"] == kept["split_before"]).all() and (kept["assigned_on"] == date(2026, 11, 1)).all()
    assert dict(grown.group_by("split").len().iter_rows()) == {"train": 300, "validation": 30, "test": 30}
    assert grown["market_ticker"].is_unique().all()
