{{ config(materialized='external', location=kfs_location('markets_mart')) }}
{#- One row per market with events: metadata, statistics, volatility class, frozen split, resolution. -#}
with trades as (
    select market_ticker, sum(trades) as trades, sum(contracts) as contracts
    from {{ ref('int_market_day_trades') }} group by 1
)
select
    c.market_ticker,
    m.series_ticker,
    m.event_ticker,
    coalesce(m.category, 'other') as category,
    m.open_ts,
    m.close_ts,
    m.status,
    m.result,
    m.settled_ts,
    s.events,
    s.active_days,
    s.first_event_ms,
    s.last_event_ms,
    s.mean_yes_mid_prob,
    s.last_yes_mid_prob,
    s.mean_yes_spread_prob,
    s.valid_share,
    c.volatility,
    c.volatility_class,
    r.split,
    r.volatility_class_at_assignment,
    r.assigned_on as split_assigned_on,
    coalesce(t.trades, 0) as trades,
    coalesce(t.contracts, 0) as contracts,
    h.last_price_prob as last_trade_prob_before_close,
    h.brier
from {{ ref('market_categories') }} c
join {{ ref('int_market_stats') }} s using (market_ticker)
left join {{ ref('stg_raw__markets') }} m using (market_ticker)
left join {{ ref('stg_splits__registry') }} r using (market_ticker)
left join trades t using (market_ticker)
left join {{ ref('stg_features__resolution_history') }} h using (market_ticker)
order by c.market_ticker
