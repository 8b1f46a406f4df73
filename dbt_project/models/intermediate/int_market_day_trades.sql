{{ config(materialized='external', location=kfs_location('int_market_day_trades'),
          options={'partition_by': 'trade_date', 'overwrite_or_ignore': true}) }}
{#- Daily trade-flow aggregates per market, rebuilt over every ingested day (a few seconds for millions of
    trades), written as Hive partitions by trade_date for researchers. -#}
select
    market_ticker,
    count(*) as trades,
    sum(contracts) as contracts,
    sum(case when taker_side = 'yes' then contracts else 0 end) as yes_taker_contracts,
    sum(case when taker_side = 'no' then contracts else 0 end) as no_taker_contracts,
    (sum(case when taker_side = 'yes' then contracts else 0 end)
        - sum(case when taker_side = 'no' then contracts else 0 end)) / sum(contracts)::double as net_taker_flow,
    sum(case when contracts >= 100 then contracts else 0 end) / sum(contracts)::double as large_trade_share,
    sum(contracts * yes_price_cents) / sum(contracts)::double as vwap_yes_cents,
    min(trade_ts_ms) as first_trade_ts_ms,
    max(trade_ts_ms) as last_trade_ts_ms,
    trade_date
from {{ ref('stg_raw__trades') }}
group by market_ticker, trade_date
order by trade_date, market_ticker
