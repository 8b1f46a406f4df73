{#- Settled markets with their outcome and last traded price before close: the history the
    resolution features draw on (only markets settled before t enter a feature at time t). -#}
with last_trades as (
    select t.market_ticker, arg_max(t.yes_price_cents, t.trade_ts_ms) / 100.0 as last_price_prob
    from {{ ref('stg_raw__trades') }} t
    join {{ ref('stg_raw__markets') }} m using (market_ticker)
    where m.close_ts is null or t.trade_ts_ms < epoch_ms(m.close_ts)
    group by 1
)
select
    m.market_ticker,
    m.category,
    m.series_ticker,
    m.settled_ts,
    case when m.result = 'yes' then 1.0 else 0.0 end as outcome,
    l.last_price_prob,
    power(l.last_price_prob - case when m.result = 'yes' then 1.0 else 0.0 end, 2) as brier
from {{ ref('stg_raw__markets') }} m
left join last_trades l using (market_ticker)
where m.result in ('yes', 'no') and m.settled_ts is not null
